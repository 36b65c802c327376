"""Continuous encodings of orientation fields for low-dim observations.

A data spec's ``fields`` entry is a dotted path to a number (``pose.position.x``) or, with an
encoding after a colon, a path to an orientation that becomes several numbers:

- ``pose.orientation:yaw_sincos``: a ``geometry_msgs/Quaternion`` as (sin yaw, cos yaw), the
  heading of the rotated x axis in the xy plane. For planar poses (a block on a table, a mobile
  base) this is the whole rotation.
- ``pose.orientation:quaternion``: (x, y, z, w) normalised and with w >= 0. q and -q are the
  same rotation and perception systems report either; the canonical sign makes the same
  rotation always the same vector.
- ``pose.orientation:rotation_6d``: the first two columns of the rotation matrix (Zhou et al.,
  CVPR 2019), continuous for every rotation, unlike any quaternion or Euler angle encoding.
- ``theta:angle_sincos``: a number holding an angle in radians (``geometry_msgs/Pose2D.theta``)
  as (sin, cos).

Why: a network sees a raw (z, w) pair of a planar yaw jump from (0, -1) to (0, 1) when the
yaw crosses 0 (or when the publisher flips the sign); the same pose then has two inputs far
apart, which a policy learns slowly and serves badly. Every encoding here is continuous in the
rotation and sign-invariant.

Written here rather than taken from a library: the formulas are a few lines, the node calls
them on every message, and no rotation library is a dependency of dp_policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

SEPARATOR = ":"


class FieldEncodingError(ValueError):
    """A field value that the encoding cannot take (not a quaternion, zero norm, not finite)."""


def _quaternion(value: Any, path: str) -> np.ndarray:
    try:
        q = np.array([float(value.x), float(value.y), float(value.z), float(value.w)])
    except (AttributeError, TypeError, ValueError) as error:
        raise FieldEncodingError(
            f"field {path!r} is not a quaternion (x, y, z, w numbers): {value!r}"
        ) from error
    if not np.all(np.isfinite(q)):
        raise FieldEncodingError(f"field {path!r} is not finite: {q}")
    # Scaled by the largest component first: beyond about 1e154 the squares overflow, the norm
    # is inf and q / inf would pass for the identity rotation, whatever q says.
    scale = float(np.max(np.abs(q)))
    unit = q / scale if scale > 0 else q
    norm = scale * float(np.linalg.norm(unit))
    # A zero (or denormal) quaternion is no rotation at all: an uninitialised message.
    if norm < 1e-6:
        raise FieldEncodingError(f"field {path!r} is a zero quaternion, not a rotation")
    return unit / np.linalg.norm(unit)


def _rotation_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def yaw_sincos(value: Any, path: str) -> list[float]:
    matrix = _rotation_matrix(_quaternion(value, path))
    cos_yaw, sin_yaw = matrix[0, 0], matrix[1, 0]
    norm = math.hypot(cos_yaw, sin_yaw)
    if norm < 1e-6:
        raise FieldEncodingError(
            f"field {path!r} points the x axis straight up or down: its yaw is undefined"
        )
    return [sin_yaw / norm, cos_yaw / norm]


def canonical_quaternion(value: Any, path: str) -> list[float]:
    q = _quaternion(value, path)
    # The sign of the first non-zero component from w backwards decides, so that rotations by
    # pi (w = 0) are canonical too.
    for component in (q[3], q[2], q[1], q[0]):
        if abs(component) > 1e-12:
            return (q if component > 0 else -q).tolist()
    return q.tolist()  # pragma: no cover - a unit quaternion has a non-zero component


def rotation_6d(value: Any, path: str) -> list[float]:
    matrix = _rotation_matrix(_quaternion(value, path))
    return [*matrix[:, 0].tolist(), *matrix[:, 1].tolist()]


def angle_sincos(value: Any, path: str) -> list[float]:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise FieldEncodingError(f"field {path!r} is not a number (an angle): {value!r}")
    angle = float(value)
    if not math.isfinite(angle):
        raise FieldEncodingError(f"field {path!r} is not finite: {angle}")
    return [math.sin(angle), math.cos(angle)]


# name -> (function, names of the values it gives)
ENCODINGS: dict[str, tuple[Callable[[Any, str], list[float]], tuple[str, ...]]] = {
    "yaw_sincos": (yaw_sincos, ("sin_yaw", "cos_yaw")),
    "quaternion": (canonical_quaternion, ("x", "y", "z", "w")),
    "rotation_6d": (rotation_6d, ("r00", "r10", "r20", "r01", "r11", "r21")),
    "angle_sincos": (angle_sincos, ("sin", "cos")),
}


def split_field(entry: str) -> tuple[str, str | None]:
    """``"pose.orientation:yaw_sincos"`` -> ``("pose.orientation", "yaw_sincos")``."""
    path, separator, encoding = entry.partition(SEPARATOR)
    return path, (encoding if separator else None)


def check_field(entry: str) -> None:
    """Raises ValueError naming the problem for an entry that is not ``path[:encoding]``."""
    path, encoding = split_field(entry)
    if not path or not all(part.isidentifier() for part in path.split(".")):
        raise ValueError(f"field {entry!r}: {path!r} is not a dotted path of field names")
    if encoding is not None and encoding not in ENCODINGS:
        raise ValueError(
            f"field {entry!r}: unknown encoding {encoding!r} (known: {', '.join(ENCODINGS)})"
        )


def field_names(entries: Sequence[str]) -> tuple[str, ...]:
    """One name per value the entries give (``pose.orientation:yaw_sincos.sin_yaw``, ...)."""
    names: list[str] = []
    for entry in entries:
        _, encoding = split_field(entry)
        if encoding is None:
            names.append(entry)
        else:
            names.extend(f"{entry}.{value}" for value in ENCODINGS[encoding][1])
    return tuple(names)


def encode(value: Any, entry: str) -> list[float]:
    """The numbers of one field entry whose value was read from the message."""
    _, encoding = split_field(entry)
    if encoding is None:
        raise ValueError(f"field {entry!r} has no encoding")
    return ENCODINGS[encoding][0](value, entry)
