"""Timestamped buffers per observation stream, and the To-step history on the dt grid.

ROS-free; times are integer nanoseconds on the node's clock, so that stamps survive exactly
(an ``ActionChunk.observation_stamp`` equals the camera's ``header.stamp``). The alignment is
the dataset builder's and ``dp_policy.runtime.ObservationHistory``'s:

* The reference stream of the data spec drives the grid: the history ends at ``t``, the stamp
  of its newest message, and covers ``t - (To-1)*dt, ..., t``.
* Each stream contributes, for each grid time, its latest message stamped at or before that
  time (within ``STAMP_TOLERANCE``). Grid times before the stream's first message repeat the
  earliest one, as the dataset pads episode starts.
* A stream's message older than its ``max_age`` at a grid time is a gap (the dataset drops such
  samples). A message arriving after such a gap starts a new segment: older messages are
  forgotten, so the history after a silent spell is padded like an episode start rather than
  bridging the gap.

Refused here: stamps not after the stream's previous one (out of order), and stamps further
in the future than a tolerance. Both leave the buffer as it was.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dp_policy.runtime import STAMP_TOLERANCE
from dp_policy_node.observation_conversion import (
    FUTURE_STAMP,
    OUT_OF_ORDER,
    ObservationRejectedError,
)

NS_PER_S = 1_000_000_000
_TOLERANCE_NS = round(STAMP_TOLERANCE * NS_PER_S)


def to_ns(seconds: float) -> int:
    return round(seconds * NS_PER_S)


@dataclass(frozen=True)
class StreamTiming:
    """Timing rules of one stream: ``align_max_age`` as in training, ``stale_age`` for now."""

    key: str
    topic: str
    align_max_age: float
    stale_age: float


@dataclass(frozen=True)
class Readiness:
    """Whether a history can be taken now; ``state`` is ready, waiting or stale."""

    state: str
    key: str = ""
    message: str = ""

    @property
    def ready(self) -> bool:
        return self.state == READY


READY, WAITING, STALE = "ready", "waiting", "stale"


@dataclass(frozen=True)
class History:
    """The policy's input at one grid end ``stamp_ns``: ``{key: (To, ...)}`` and its sources."""

    stamp_ns: int
    grid_ns: np.ndarray
    observations: dict[str, np.ndarray]
    source_stamps_ns: dict[str, np.ndarray]


class StreamBuffer:
    """Messages of one stream in stamp order, pruned to what a history can still use."""

    def __init__(self, timing: StreamTiming, keep_ns: int) -> None:
        self.timing = timing
        self._align_ns = to_ns(timing.align_max_age)
        self._keep_ns = keep_ns
        self._stamps: list[int] = []
        self._values: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def latest_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        self._stamps.clear()
        self._values.clear()

    def add(self, stamp_ns: int, value: np.ndarray, now_ns: int, future_ns: int) -> None:
        topic = self.timing.topic
        if stamp_ns > now_ns + future_ns:
            raise ObservationRejectedError(
                FUTURE_STAMP,
                f"message on {topic} is stamped {(stamp_ns - now_ns) / NS_PER_S:.3f} s in the "
                f"future (tolerance {future_ns / NS_PER_S:.3f} s): check clock synchronisation "
                f"and use_sim_time",
            )
        latest = self.latest_ns
        if latest is not None and latest > now_ns + future_ns:
            # The clock went back (a simulation restarted): what we hold is from another time.
            self.clear()
            latest = None
        if latest is not None and stamp_ns <= latest:
            raise ObservationRejectedError(
                OUT_OF_ORDER,
                f"message on {topic} is stamped {(latest - stamp_ns) / NS_PER_S:.3f} s before "
                f"the previous one: stamps must increase",
            )
        if latest is not None and stamp_ns - latest > self._align_ns:
            self.clear()  # a gap: the history restarts here, as after an episode start
        self._stamps.append(stamp_ns)
        self._values.append(value)
        self._prune()

    def _prune(self) -> None:
        # Keep the last message at or before the oldest time a history may still ask for.
        oldest_needed = self._stamps[-1] - self._keep_ns
        first = bisect.bisect_right(self._stamps, oldest_needed) - 1
        if first > 0:
            del self._stamps[:first]
            del self._values[:first]

    def index_at(self, time_ns: int) -> int | None:
        """Index of the latest message at or before ``time_ns``; None if there is none."""
        index = bisect.bisect_right(self._stamps, time_ns + _TOLERANCE_NS) - 1
        return index if index >= 0 else None

    def sample(self, grid_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values and source stamps for each grid time (earliest message before the first)."""
        indices = []
        for grid_time in grid_ns:
            index = self.index_at(int(grid_time))
            indices.append(0 if index is None else index)
        values = np.stack([self._values[i] for i in indices])
        return values, np.array([self._stamps[i] for i in indices], dtype=np.int64)

    def stamp(self, index: int) -> int:
        return self._stamps[index]


class ObservationBuffers:
    """All streams of the data spec; ``check`` and ``history`` give the policy its input."""

    def __init__(
        self,
        streams: Sequence[StreamTiming],
        reference: str,
        dt: float,
        observation_horizon: int,
        future_tolerance: float,
    ) -> None:
        if reference not in {stream.key for stream in streams}:
            raise ValueError(f"reference {reference!r} is not one of the streams")
        self.reference = reference
        self.dt_ns = to_ns(dt)
        self.observation_horizon = observation_horizon
        self.future_ns = to_ns(future_tolerance)
        window = (observation_horizon - 1) * self.dt_ns
        # Generous: a non-reference stream may run ahead of the reference by up to its ages.
        self._buffers = {
            stream.key: StreamBuffer(
                stream, window + 2 * to_ns(max(stream.align_max_age, stream.stale_age))
            )
            for stream in streams
        }

    def stream_keys(self) -> tuple[str, ...]:
        return tuple(self._buffers)

    def reset(self) -> None:
        for buffer in self._buffers.values():
            buffer.clear()

    def add(self, key: str, stamp_ns: int, value: np.ndarray, now_ns: int) -> None:
        """Add one converted message; ObservationRejectedError for bad stamps (buffer unchanged)."""
        self._buffers[key].add(stamp_ns, value, now_ns, self.future_ns)

    def latest_ns(self, key: str) -> int | None:
        return self._buffers[key].latest_ns

    def ages(self, now_ns: int) -> dict[str, float | None]:
        """Seconds since each stream's newest stamp (None: nothing received)."""
        return {
            key: None if buffer.latest_ns is None else (now_ns - buffer.latest_ns) / NS_PER_S
            for key, buffer in self._buffers.items()
        }

    def check(self, now_ns: int) -> Readiness:
        """Ready, or the first stream that has no message yet or whose newest is stale."""
        for key, buffer in self._buffers.items():
            if buffer.latest_ns is None:
                return Readiness(
                    WAITING, key, f"waiting for the first message on {buffer.timing.topic}"
                )
        for key, buffer in self._buffers.items():
            age = (now_ns - buffer.latest_ns) / NS_PER_S
            if age > buffer.timing.stale_age:
                # No age in the text: it would change at every look (PolicyStatus has the age).
                return Readiness(
                    STALE,
                    key,
                    f"no fresh message on {buffer.timing.topic}: the newest is older than "
                    f"{buffer.timing.stale_age:.2f} s (max observation age)",
                )
        t = self._buffers[self.reference].latest_ns
        for key, buffer in self._buffers.items():
            index = buffer.index_at(t)
            if index is None:
                return Readiness(
                    WAITING,
                    key,
                    f"waiting for a message on {buffer.timing.topic} at or before the newest "
                    f"{self._buffers[self.reference].timing.topic} stamp",
                )
            lag = (t - buffer.stamp(index)) / NS_PER_S
            if lag > buffer.timing.align_max_age:
                return Readiness(
                    STALE,
                    key,
                    f"{buffer.timing.topic} lags the newest "
                    f"{self._buffers[self.reference].timing.topic} message by more than its "
                    f"max_age {buffer.timing.align_max_age:.2f} s",
                )
        return Readiness(READY)

    def history(self, now_ns: int) -> History:
        """The To-step history ending at the reference stream's newest stamp."""
        readiness = self.check(now_ns)
        if not readiness.ready:
            raise ValueError(readiness.message)
        t = self._buffers[self.reference].latest_ns
        offsets = np.arange(self.observation_horizon - 1, -1, -1, dtype=np.int64)
        grid = t - offsets * self.dt_ns
        observations, sources = {}, {}
        for key, buffer in self._buffers.items():
            observations[key], sources[key] = buffer.sample(grid)
        return History(
            stamp_ns=t, grid_ns=grid, observations=observations, source_stamps_ns=sources
        )
