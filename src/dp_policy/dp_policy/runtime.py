"""Receding-horizon runtime without ROS: observation history on the dt grid and chunk timing.

Times are seconds as floats (a ROS node converts its stamps). The conventions are those of
training, so that serving sees what the model was trained on:

* The history at time t holds, for each grid time ``t - (To-1)*dt, ..., t``, the latest
  observation stamped at or before that time; grid times before the first observation of the
  episode repeat the earliest one (the dataset pads episode starts the same way).
* Action i of the executable part (sequence index ``To-1+i``) belongs to
  ``obs_stamp + i*dt``, where ``obs_stamp`` is the stamp of the latest observation used.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Grid times are computed as t - k*dt in floating point; a stamp that is "at" a grid time may
# come out a few ulps after it. Anything within this many seconds counts as at or before.
STAMP_TOLERANCE = 1e-6


def _check_time(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value}")
    return value


@dataclass(frozen=True)
class HistorySnapshot:
    """The To observations for one query time.

    grid_times: ``(To,)`` the grid times ``t-(To-1)*dt .. t``.
    source_stamps: ``(To,)`` stamp of the observation used for each grid time.
    observations: ``{key: (To, ...)}``.
    """

    grid_times: np.ndarray
    source_stamps: np.ndarray
    observations: dict[str, np.ndarray]


class ObservationHistory:
    """Timestamped observations of one episode, sampled on the dt grid for the policy."""

    def __init__(
        self,
        observation_horizon: int,
        dt: float,
        keys: Sequence[str] | None = None,
        max_age: float | None = None,
    ) -> None:
        """``max_age``: refuse a query whose newest observation is older than this (seconds)."""
        if observation_horizon < 1:
            raise ValueError(f"observation_horizon must be >= 1, got {observation_horizon}")
        if not dt > 0:
            raise ValueError(f"dt must be positive, got {dt}")
        if max_age is not None and not max_age >= 0:
            raise ValueError(f"max_age must be >= 0 or None, got {max_age}")
        self.observation_horizon = observation_horizon
        self.dt = float(dt)
        self.keys = tuple(keys) if keys is not None else None
        self.max_age = max_age
        self._stamps: list[float] = []
        self._observations: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def latest_stamp(self) -> float | None:
        return self._stamps[-1] if self._stamps else None

    def reset(self) -> None:
        """Forget everything: the next observation starts a new episode (and is padded)."""
        self._stamps.clear()
        self._observations.clear()

    def add(self, stamp: float, observation: Mapping[str, Any]) -> None:
        """Append an observation; stamps must increase strictly within an episode."""
        stamp = _check_time("observation stamp", stamp)
        if self._stamps and stamp <= self._stamps[-1]:
            raise ValueError(
                f"observation stamp {stamp:.6f} is not after the previous one "
                f"{self._stamps[-1]:.6f}; stamps must increase (reset() starts a new episode)"
            )
        if self.keys is not None and set(observation) != set(self.keys):
            raise ValueError(
                f"observation keys {sorted(observation)} differ from the expected "
                f"{sorted(self.keys)}"
            )
        self._stamps.append(stamp)
        self._observations.append({k: np.array(v, copy=True) for k, v in observation.items()})
        self._prune()

    def _prune(self) -> None:
        # Queries are at or after the latest stamp, so the oldest grid time ever needed again is
        # latest - (To-1)*dt; keep the last observation at or before it and everything newer.
        window_start = self._stamps[-1] - (self.observation_horizon - 1) * self.dt
        first_needed = bisect.bisect_right(self._stamps, window_start + STAMP_TOLERANCE) - 1
        if first_needed > 0:
            del self._stamps[:first_needed]
            del self._observations[:first_needed]

    def grid_times(self, t: float) -> np.ndarray:
        """``(To,)`` grid times ``t-(To-1)*dt .. t``."""
        offsets = np.arange(self.observation_horizon - 1, -1, -1, dtype=np.float64)
        return float(t) - offsets * self.dt

    def snapshot(self, t: float | None = None) -> HistorySnapshot:
        """The history at time ``t`` (default: the latest stamp); ``t`` must not precede it."""
        if not self._stamps:
            raise ValueError("observation history is empty: no observation received yet")
        t = self._stamps[-1] if t is None else _check_time("query time", t)
        if t < self._stamps[-1] - STAMP_TOLERANCE:
            raise ValueError(
                f"query time {t:.6f} precedes the latest observation {self._stamps[-1]:.6f}"
            )
        grid = self.grid_times(t)
        indices = [max(bisect.bisect_right(self._stamps, g + STAMP_TOLERANCE) - 1, 0) for g in grid]
        sources = np.array([self._stamps[i] for i in indices])
        age = t - sources[-1]
        if self.max_age is not None and age > self.max_age:
            raise ValueError(
                f"newest observation is {age:.3f} s old at {t:.6f}, "
                f"more than max_age {self.max_age} s"
            )
        keys = self._observations[indices[-1]].keys()
        observations = {k: np.stack([self._observations[i][k] for i in indices]) for k in keys}
        return HistorySnapshot(grid_times=grid, source_stamps=sources, observations=observations)

    def at(self, t: float | None = None) -> dict[str, np.ndarray]:
        """Observations ``{key: (To, ...)}`` at time ``t``; add a batch axis for the policy."""
        return self.snapshot(t).observations


@dataclass(frozen=True)
class TimedChunk:
    """The executable actions still ahead of ``now``.

    indices: ``(n,)`` positions in the predicted sequence (``To-1 <= index < To-1+Ta``).
    actions: ``(n, Da)``.
    due_times: ``(n,)`` absolute times the actions belong to.
    time_from_now: ``(n,)`` ``due_times - now``, all positive (for ``time_from_start``).
    """

    indices: np.ndarray
    actions: np.ndarray
    due_times: np.ndarray
    time_from_now: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def time_chunk(
    action_sequence: Any,
    obs_stamp: float,
    dt: float,
    observation_horizon: int,
    action_horizon: int,
    now: float,
    min_lead: float = 0.0,
) -> TimedChunk:
    """Time a predicted chunk ``(Tp, Da)`` and drop the actions whose time has passed.

    ``now`` is typically ``obs_stamp`` plus the measured inference latency. An action is kept if
    it is due more than ``min_lead`` seconds after ``now`` (never exactly now: a trajectory point
    at time 0 would mean "jump without a ramp").
    """
    sequence = np.asarray(
        action_sequence.detach().cpu() if hasattr(action_sequence, "detach") else action_sequence,
        dtype=np.float64,
    )
    obs_stamp = _check_time("obs_stamp", obs_stamp)
    now = _check_time("now", now)
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt}")
    if sequence.ndim != 2:
        raise ValueError(f"action_sequence must be (Tp, Da), got shape {sequence.shape}")
    start = observation_horizon - 1
    if observation_horizon < 1 or action_horizon < 1 or start + action_horizon > sequence.shape[0]:
        raise ValueError(
            f"To={observation_horizon}, Ta={action_horizon} do not fit a chunk of "
            f"{sequence.shape[0]} actions"
        )
    if now < obs_stamp - STAMP_TOLERANCE:
        raise ValueError(f"now {now:.6f} precedes the observation stamp {obs_stamp:.6f}")
    steps = np.arange(action_horizon)
    due = obs_stamp + steps * float(dt)
    keep = due > now + min_lead
    return TimedChunk(
        indices=start + steps[keep],
        actions=sequence[start + steps[keep]],
        due_times=due[keep],
        time_from_now=due[keep] - now,
    )
