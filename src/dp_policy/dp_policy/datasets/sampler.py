"""Training windows over episodes, padded by repetition, and the validation split by episode.

A window is ``Tp`` consecutive frames of one episode: the policy sees its first ``To``
observations and learns all ``Tp`` actions. Windows start from ``-(To-1)`` to
``L - Tp + (Ta-1)`` within an episode of ``L`` frames; frames before the start or after the end
repeat the first or last frame (Diffusion Policy's padding), so the first observation of an
episode and its last executed actions are trained on too. An episode therefore needs at least
``Tp - (To-1) - (Ta-1)`` frames to give one window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dp_policy.datasets.errors import EmptyDatasetError, EpisodeTooShortError


@dataclass(frozen=True)
class Horizons:
    """To, Tp and Ta in frames; the padding they imply."""

    observation: int
    prediction: int
    action: int

    def __post_init__(self) -> None:
        for name in ("observation", "prediction", "action"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Horizons: {name} must be a positive integer, got {value!r}")
        if self.observation > self.prediction:
            raise ValueError("Horizons: To must not exceed Tp")

    @property
    def pad_before(self) -> int:
        return self.observation - 1

    @property
    def pad_after(self) -> int:
        return self.action - 1

    @property
    def min_episode_frames(self) -> int:
        return max(1, self.prediction - self.pad_before - self.pad_after)


class SequenceSampler:
    """All windows of the chosen episodes; ``frame_indices`` turns windows into buffer rows."""

    def __init__(
        self,
        episode_ends: np.ndarray,
        horizons: Horizons,
        episodes: Sequence[int],
        episode_names: Sequence[str] | None = None,
        skip_short: bool = False,
        tolerated_short: Sequence[int] = (),
    ) -> None:
        """``episodes``: indices into ``episode_ends`` to sample from.

        Raises EpisodeTooShortError for an episode with fewer frames than one window needs,
        unless ``skip_short`` or the episode is in ``tolerated_short`` (the fragments that a
        gap cut off, already reported): then it is left out and listed in ``skipped``.
        """
        self.horizons = horizons
        ends = np.asarray(episode_ends, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]])
        names = list(episode_names) if episode_names is not None else None
        minimum = horizons.min_episode_frames
        first_offset = -horizons.pad_before
        window_starts: list[np.ndarray] = []
        window_episodes: list[np.ndarray] = []
        self.skipped: list[tuple[int, int]] = []
        too_short = []
        tolerated = set(tolerated_short)
        for episode in episodes:
            length = int(ends[episode] - starts[episode])
            if length < minimum:
                (self.skipped if episode in tolerated else too_short).append((episode, length))
                continue
            last_offset = length - horizons.prediction + horizons.pad_after
            offsets = np.arange(first_offset, last_offset + 1, dtype=np.int64)
            window_starts.append(offsets)
            window_episodes.append(np.full(offsets.size, episode, dtype=np.int64))
        if too_short and not skip_short:
            listed = ", ".join(
                f"{names[e] if names else f'episode {e}'} ({n} frames)" for e, n in too_short[:5]
            )
            more = f" and {len(too_short) - 5} more" if len(too_short) > 5 else ""
            raise EpisodeTooShortError(
                f"{len(too_short)} episode(s) shorter than one training sample: {listed}{more}. "
                f"With To={horizons.observation}, Tp={horizons.prediction}, "
                f"Ta={horizons.action} an episode needs at least Tp-(To-1)-(Ta-1) = {minimum} "
                "frames: record longer episodes, shorten the horizons, or set "
                "data.skip_short_episodes: true"
            )
        self.skipped.extend(too_short)
        if not window_starts:
            raise EmptyDatasetError("no episode left to sample training windows from")
        self._offsets = np.concatenate(window_starts)
        self._episodes = np.concatenate(window_episodes)
        self._episode_starts = starts
        self._episode_lengths = ends - starts

    def __len__(self) -> int:
        return int(self._offsets.size)

    def frame_indices(self, windows: np.ndarray, length: int | None = None) -> np.ndarray:
        """Buffer rows ``(B, T)`` of the first ``length`` frames (default Tp) of ``windows (B,)``.

        Clamping to the episode's first and last frame is the padding by repetition.
        """
        length = self.horizons.prediction if length is None else length
        windows = np.asarray(windows, dtype=np.int64)
        episodes = self._episodes[windows]
        relative = self._offsets[windows][:, None] + np.arange(length, dtype=np.int64)[None, :]
        relative = np.clip(relative, 0, self._episode_lengths[episodes][:, None] - 1)
        return self._episode_starts[episodes][:, None] + relative


def split_episodes(
    num_episodes: int, val_ratio: float, seed: int, max_val_episodes: int | None = None
) -> tuple[list[int], list[int]]:
    """Training and validation episode indices: a seeded random choice of whole episodes.

    With ``val_ratio > 0`` and at least two episodes, at least one is held out and at least one
    is kept for training.
    """
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    if num_episodes < 1:
        raise EmptyDatasetError("no episode to split into training and validation")
    count = round(num_episodes * val_ratio)
    held_out_possible = val_ratio > 0 and num_episodes > 1
    count = min(max(1, count), num_episodes - 1) if held_out_possible else 0
    if max_val_episodes is not None:
        count = min(count, max_val_episodes)
    rng = np.random.default_rng(seed)
    validation = sorted(int(i) for i in rng.choice(num_episodes, size=count, replace=False))
    held_out = set(validation)
    return [i for i in range(num_episodes) if i not in held_out], validation
