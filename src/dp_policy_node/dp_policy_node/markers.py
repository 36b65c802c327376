"""Predicted paths for RViz: one coloured line per sampled chunk.

ROS-free: the node turns each ``MarkerPath`` into a ``LINE_STRIP`` marker. Each path runs
over the rows from ``To-1`` (now) to the end of the prediction, so the look-ahead beyond the
executed actions is visible too. With several samples per inference, the lines show the
modes of the action distribution; sample 0 (the executed one) is drawn opaque, the others
translucent in distinct colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EXECUTED_COLOUR = (0.1, 0.85, 0.2, 1.0)
# Distinct hues for the alternative samples (tab10 without green).
_ALTERNATIVE_COLOURS = (
    (0.12, 0.47, 0.71),
    (1.0, 0.5, 0.05),
    (0.84, 0.15, 0.16),
    (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.5, 0.5, 0.5),
    (0.74, 0.74, 0.13),
    (0.09, 0.75, 0.81),
)
ALTERNATIVE_ALPHA = 0.6


@dataclass(frozen=True)
class MarkerPath:
    """Points ``(n, 3)`` of one sample's path and its colour (r, g, b, a in [0, 1])."""

    sample: int
    points: np.ndarray
    rgba: tuple[float, float, float, float]


def sample_colour(sample: int) -> tuple[float, float, float, float]:
    if sample == 0:
        return EXECUTED_COLOUR
    red, green, blue = _ALTERNATIVE_COLOURS[(sample - 1) % len(_ALTERNATIVE_COLOURS)]
    return (red, green, blue, ALTERNATIVE_ALPHA)


def marker_paths(
    samples: np.ndarray, dims: Sequence[int], observation_horizon: int
) -> list[MarkerPath]:
    """Paths of ``samples (S, Tp, Da)`` using action dims ``dims`` as x, y (, z); z=0 if absent."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"samples must be (S, Tp, Da), got shape {samples.shape}")
    if not 1 <= len(dims) <= 3 or max(dims) >= samples.shape[2]:
        raise ValueError(f"dims {list(dims)} do not fit {samples.shape[2]} action dimensions")
    future = samples[:, observation_horizon - 1 :, :]
    paths = []
    for index, sample in enumerate(future):
        points = np.zeros((sample.shape[0], 3))
        points[:, : len(dims)] = sample[:, list(dims)]
        if np.all(np.isfinite(points)):
            paths.append(MarkerPath(index, points, sample_colour(index)))
    return paths
