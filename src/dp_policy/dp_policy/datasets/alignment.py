"""Aligning streams on a dt grid driven by a reference stream; gaps reported, never filled.

The grid of an episode starts at the reference stream's first message in the episode and steps
by dt (ideal times ``g_k = t0 + k*dt``) up to its last message (with a quarter step of
slack). Each grid point takes the
reference message nearest to ``g_k`` (within dt/2) and that message's stamp becomes the frame
time, so timer jitter of a camera never makes a frame pick the previous image, while the grid
keeps dt on average (a faster reference stream is subsampled). Every other stream takes its
latest message at or before the frame time, at most ``max_age`` older. A frame where any stream
has nothing fresh is invalid: invalid frames at the ends of an episode are trimmed, invalid
frames inside it are a gap that splits it into fragments. Both are reported, none is filled.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Gap:
    """Consecutive invalid frames: where, how many and which streams were not fresh."""

    time_ns: int
    frames: int
    streams: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"time_ns": self.time_ns, "frames": self.frames, "streams": list(self.streams)}


@dataclass
class FrameReport:
    """What alignment dropped from one episode."""

    grid_frames: int = 0
    trimmed_start: int = 0
    trimmed_end: int = 0
    gaps: list[Gap] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.trimmed_start + self.trimmed_end + sum(gap.frames for gap in self.gaps)

    def to_dict(self) -> dict:
        return {
            "grid_frames": self.grid_frames,
            "trimmed_start": self.trimmed_start,
            "trimmed_end": self.trimmed_end,
            "gaps": [gap.to_dict() for gap in self.gaps],
        }


def reference_grid(
    reference_ns: np.ndarray, dt_ns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames driven by sorted reference stamps ``(M,)``.

    Returns frame times ``(K,)``, the reference message index of each frame ``(K,)`` and a
    validity mask ``(K,)`` (False where no reference message lies within dt/2 of the grid).
    """
    if reference_ns.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool)
    first, last = int(reference_ns[0]), int(reference_ns[-1])
    # Up to the last message, with a quarter step of slack for the jitter of its stamp.
    count = int(np.floor((last - first) / dt_ns + 0.25)) + 1
    ideal = first + np.arange(count, dtype=np.int64) * dt_ns
    after = np.clip(np.searchsorted(reference_ns, ideal, side="left"), 0, reference_ns.size - 1)
    before = np.clip(after - 1, 0, reference_ns.size - 1)
    distance_after = np.abs(reference_ns[after] - ideal)
    distance_before = np.abs(reference_ns[before] - ideal)
    nearest = np.where(distance_before <= distance_after, before, after)
    valid = np.abs(reference_ns[nearest] - ideal) * 2 <= dt_ns
    return reference_ns[nearest].astype(np.int64), nearest.astype(np.int64), valid


def latest_at_or_before(
    stamps_ns: np.ndarray, frame_ns: np.ndarray, max_age_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index of each frame's latest message at or before it ``(K,)`` and freshness ``(K,)``.

    ``stamps_ns`` is sorted; among equal stamps the last received wins.
    """
    index = np.searchsorted(stamps_ns, frame_ns, side="right") - 1
    valid = index >= 0
    safe = np.clip(index, 0, max(stamps_ns.size - 1, 0))
    if stamps_ns.size:
        valid &= frame_ns - stamps_ns[safe] <= max_age_ns
    return safe.astype(np.int64), valid


def valid_runs(
    frame_ns: np.ndarray, validity: Mapping[str, np.ndarray]
) -> tuple[list[tuple[int, int]], FrameReport]:
    """Contiguous runs ``[start, stop)`` of frames where every stream is fresh, and the report."""
    count = frame_ns.size
    report = FrameReport(grid_frames=count)
    if count == 0:
        return [], report
    ok = np.ones(count, dtype=bool)
    for mask in validity.values():
        ok &= mask
    runs: list[tuple[int, int]] = []
    edges = np.diff(np.concatenate([[0], ok.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    runs = [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]
    if not runs:
        report.trimmed_start = count
        report.gaps = []
        return [], report
    report.trimmed_start = runs[0][0]
    report.trimmed_end = count - runs[-1][1]
    for (_, previous_stop), (next_start, _) in itertools.pairwise(runs):
        missing = tuple(
            sorted(
                key for key, mask in validity.items() if not np.all(mask[previous_stop:next_start])
            )
        )
        report.gaps.append(Gap(int(frame_ns[previous_stop]), next_start - previous_stop, missing))
    return runs, report
