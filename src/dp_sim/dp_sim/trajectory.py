"""Trajectory following with the semantics of ros2_control's ``joint_trajectory_controller``.

ROS-free: times are seconds on the node's clock (float), positions are per-joint arrays in
the controller's joint order. What a ``trajectory_msgs/JointTrajectory`` means here, as in
the controller of ROS 2 Jazzy and Kilted:

- A new trajectory replaces the running one entirely.
- ``header.stamp`` zero means "start now"; otherwise the trajectory starts at that time and is
  rejected when its last point is already in the past.
- ``time_from_start`` must increase strictly from point to point; joint names must be the
  controller's joints (any order, every one of them, each once); every point needs one
  position per joint, velocities and accelerations are optional but then one per joint;
  effort is not supported; NaN or infinite values are rejected.
- Before the first point, the setpoint moves from the state at the time the trajectory was
  received to the first point (a first point at or before that time means no ramp).
- Between points: linear interpolation of positions, cubic when both points have velocities,
  quintic when both also have accelerations. After the last point, its position is held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class TrajectoryRejectedError(ValueError):
    """A trajectory that the controller refuses; the message says why, in one line."""


@dataclass(frozen=True)
class TrajectoryPoint:
    """One point as in the message, values in the message's joint order."""

    time_from_start: float
    positions: Sequence[float]
    velocities: Sequence[float] = ()
    accelerations: Sequence[float] = ()
    effort: Sequence[float] = ()


@dataclass(frozen=True)
class _Knot:
    time: float
    position: np.ndarray
    velocity: np.ndarray | None
    acceleration: np.ndarray | None


def points_of(message) -> list[TrajectoryPoint]:
    """The points of a ``trajectory_msgs/JointTrajectory`` (or anything with its fields)."""
    return [
        TrajectoryPoint(
            time_from_start=point.time_from_start.sec + point.time_from_start.nanosec * 1e-9,
            positions=list(point.positions),
            velocities=list(point.velocities),
            accelerations=list(point.accelerations),
            effort=list(point.effort),
        )
        for point in message.points
    ]


class TrajectoryFollower:
    """Holds the active trajectory and gives the setpoint at any time."""

    def __init__(self, joint_names: Sequence[str]) -> None:
        self.joint_names = tuple(joint_names)
        self._hold = np.zeros(len(self.joint_names))
        self._knots: list[_Knot] = []

    def hold(self, position: Sequence[float]) -> None:
        """Drop any trajectory and hold ``position`` (activation, reset)."""
        self._hold = np.array(position, dtype=float)
        self._knots = []

    @property
    def end_time(self) -> float | None:
        """Time of the last point of the active trajectory, None when only holding."""
        return self._knots[-1].time if self._knots else None

    def set_trajectory(
        self,
        joint_names: Sequence[str],
        points: Sequence[TrajectoryPoint],
        start_time: float,
        now: float,
        position: Sequence[float],
        velocity: Sequence[float] | None = None,
    ) -> None:
        """Replace the running trajectory; raise TrajectoryRejectedError (and keep it) if invalid.

        ``start_time`` is the header stamp in seconds, 0 for "now"; ``position`` and
        ``velocity`` are the measured joint state now, where a ramp to the first point starts.
        """
        order = self._joint_order(joint_names)
        start = now if start_time == 0.0 else start_time
        if not points:
            raise TrajectoryRejectedError("trajectory has no points")
        if start_time != 0.0:
            end = start + points[-1].time_from_start
            if end < now:
                raise TrajectoryRejectedError(
                    f"trajectory ends in the past: its last point is at {end:.3f} s, "
                    f"now is {now:.3f} s"
                )
        knots = [self._knot(index, point, order, start) for index, point in enumerate(points)]
        for index in range(1, len(points)):
            previous, current = points[index - 1].time_from_start, points[index].time_from_start
            if not current > previous:
                raise TrajectoryRejectedError(
                    f"time_from_start must increase strictly: point {index} is at {current:.3f}"
                    f" s, point {index - 1} at {previous:.3f} s"
                )
        state_velocity = np.zeros(len(order)) if velocity is None else np.array(velocity, float)
        ramp_start = _Knot(now, np.array(position, dtype=float), state_velocity, None)
        self._knots = [ramp_start, *knots] if knots[0].time > now else knots

    def sample(self, time: float) -> tuple[np.ndarray, np.ndarray]:
        """Setpoint (position, velocity) at ``time``."""
        knots = self._knots
        if not knots:
            return self._hold.copy(), np.zeros_like(self._hold)
        if time <= knots[0].time:
            return knots[0].position.copy(), np.zeros_like(knots[0].position)
        if time >= knots[-1].time:
            return knots[-1].position.copy(), np.zeros_like(knots[-1].position)
        index = int(np.searchsorted([knot.time for knot in knots], time, side="right")) - 1
        return _interpolate(knots[index], knots[index + 1], time)

    # -- validation ---------------------------------------------------------------------------

    def _joint_order(self, joint_names: Sequence[str]) -> list[int]:
        """Index in the message of each controller joint, or TrajectoryRejectedError."""
        if not joint_names:
            raise TrajectoryRejectedError("trajectory has no joint names")
        names = list(joint_names)
        for name in names:
            if name not in self.joint_names:
                raise TrajectoryRejectedError(
                    f"joint '{name}' is not one of the controller's joints {list(self.joint_names)}"
                )
            if names.count(name) > 1:
                raise TrajectoryRejectedError(f"joint '{name}' is named more than once")
        missing = [name for name in self.joint_names if name not in names]
        if missing:
            raise TrajectoryRejectedError(f"trajectory does not name joint(s) {missing}")
        return [names.index(name) for name in self.joint_names]

    def _knot(self, index: int, point: TrajectoryPoint, order: list[int], start: float) -> _Knot:
        count = len(order)
        fields = {
            "positions": point.positions,
            "velocities": point.velocities,
            "accelerations": point.accelerations,
        }
        for field, values in fields.items():
            required = field == "positions"
            if (required or len(values) > 0) and len(values) != count:
                raise TrajectoryRejectedError(
                    f"point {index} has {len(values)} {field} for {count} joints"
                )
            if not all(math.isfinite(value) for value in values):
                raise TrajectoryRejectedError(
                    f"point {index} has a NaN or infinite value in {field}"
                )
        if len(point.effort) > 0:
            raise TrajectoryRejectedError(
                f"point {index} has effort values, which are not supported"
            )
        if not math.isfinite(point.time_from_start) or point.time_from_start < 0.0:
            raise TrajectoryRejectedError(
                f"point {index} has time_from_start {point.time_from_start} s"
            )

        def reorder(values: Sequence[float]) -> np.ndarray | None:
            return np.array([values[i] for i in order], dtype=float) if len(values) else None

        return _Knot(
            start + point.time_from_start,
            reorder(point.positions),
            reorder(point.velocities),
            reorder(point.accelerations),
        )


def _interpolate(first: _Knot, second: _Knot, time: float) -> tuple[np.ndarray, np.ndarray]:
    """Position and velocity between two knots: the highest order both knots support."""
    duration = second.time - first.time
    s = time - first.time
    p0, p1 = first.position, second.position
    if first.velocity is None or second.velocity is None:
        return p0 + (p1 - p0) * (s / duration), (p1 - p0) / duration
    v0, v1 = first.velocity, second.velocity
    if first.acceleration is None or second.acceleration is None:
        # Cubic with the given positions and velocities at both ends.
        c2 = (3.0 * (p1 - p0) - (2.0 * v0 + v1) * duration) / duration**2
        c3 = (2.0 * (p0 - p1) + (v0 + v1) * duration) / duration**3
        return p0 + v0 * s + c2 * s**2 + c3 * s**3, v0 + 2.0 * c2 * s + 3.0 * c3 * s**2
    a0, a1 = first.acceleration, second.acceleration
    # Quintic with positions, velocities and accelerations at both ends.
    T = duration
    c3 = (20 * (p1 - p0) - (8 * v1 + 12 * v0) * T - (3 * a0 - a1) * T**2) / (2 * T**3)
    c4 = (30 * (p0 - p1) + (14 * v1 + 16 * v0) * T + (3 * a0 - 2 * a1) * T**2) / (2 * T**4)
    c5 = (12 * (p1 - p0) - 6 * (v1 + v0) * T - (a0 - a1) * T**2) / (2 * T**5)
    position = p0 + v0 * s + a0 / 2 * s**2 + c3 * s**3 + c4 * s**4 + c5 * s**5
    velocity = v0 + a0 * s + 3 * c3 * s**2 + 4 * c4 * s**3 + 5 * c5 * s**4
    return position, velocity
