"""``trajectory_msgs/JointTrajectory`` commands as actions: what position is commanded at t.

The action of kind ``joint_trajectory`` at a grid time t is the newest command received at or
before t, evaluated at t the way ``joint_trajectory_controller`` reads it:

- the trajectory starts at ``header.stamp``, or at its receive time when the stamp is zero;
- its points are interpolated linearly in ``time_from_start``; before the first point the
  first point holds, after the last point the last one holds (the controller keeps the last
  set point);
- the command is fresh while t is at most ``max_age`` after both its receive time and its last
  point, so a long chunk stays valid until it runs out, and a silent commander makes a gap.

Commands that the controller would reject (no points, times not strictly increasing, values
missing) are not used; their number is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dp_policy.datasets.errors import MissingJointError

_POINT_FIELDS = {"position": "positions", "velocity": "velocities", "effort": "effort"}


@dataclass(frozen=True)
class TrajectoryCommand:
    """One command: ``times_ns (P,)`` after ``start_ns``, ``values (P, D)`` in spec joint order."""

    received_ns: int
    start_ns: int
    times_ns: np.ndarray
    values: np.ndarray

    @property
    def end_ns(self) -> int:
        """When the last point is reached."""
        return self.start_ns + int(self.times_ns[-1])

    def evaluate(self, at_ns: np.ndarray) -> np.ndarray:
        """Commanded values ``(N, D)`` at times ``at_ns (N,)`` (clamped to the first/last point)."""
        relative = (np.asarray(at_ns, dtype=np.int64) - self.start_ns).astype(np.float64)
        times = self.times_ns.astype(np.float64)
        return np.stack(
            [np.interp(relative, times, self.values[:, d]) for d in range(self.values.shape[1])],
            axis=-1,
        )


class RejectedCommandError(ValueError):
    """A trajectory that joint_trajectory_controller would refuse; never used as an action."""


def parse_trajectory(
    message: Any,
    received_ns: int,
    joints: Sequence[str],
    joint_field: str = "position",
) -> TrajectoryCommand:
    """A JointTrajectory message as a TrajectoryCommand for ``joints`` (in that order).

    Raises MissingJointError when a joint is absent (a spec/robot mismatch, fatal), and
    RejectedCommandError for a command the controller would refuse (skipped by the caller).
    """
    names = list(message.joint_names)
    index = {name: i for i, name in enumerate(names)}
    missing = [joint for joint in joints if joint not in index]
    if missing:
        raise MissingJointError(
            f"JointTrajectory lacks joint(s) {missing} named by the data spec (it has {names})"
        )
    points = list(message.points)
    if not points:
        raise RejectedCommandError("trajectory has no points")
    attribute = _POINT_FIELDS[joint_field]
    columns = [index[joint] for joint in joints]
    times = np.empty(len(points), dtype=np.int64)
    values = np.empty((len(points), len(joints)), dtype=np.float64)
    for i, point in enumerate(points):
        times[i] = int(point.time_from_start.sec) * 1_000_000_000 + int(
            point.time_from_start.nanosec
        )
        row = np.asarray(getattr(point, attribute), dtype=np.float64)
        if row.shape != (len(names),):
            raise RejectedCommandError(
                f"point {i} has {row.size} {attribute} for {len(names)} joints"
            )
        values[i] = row[columns]
    if np.any(np.diff(times) <= 0) or times[0] < 0:
        raise RejectedCommandError("time_from_start does not increase strictly")
    if not np.all(np.isfinite(values)):
        raise RejectedCommandError("trajectory values are not finite")
    stamp = message.header.stamp
    stamp_ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return TrajectoryCommand(
        received_ns=int(received_ns),
        start_ns=stamp_ns if stamp_ns != 0 else int(received_ns),
        times_ns=times,
        values=values,
    )


def evaluate_commands(
    commands: Sequence[TrajectoryCommand], at_ns: np.ndarray, max_age_ns: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Actions ``(N, D)`` at frame times ``at_ns (N,)`` and a validity mask ``(N,)``.

    ``commands`` must be sorted by receive time; invalid rows are NaN.
    """
    at_ns = np.asarray(at_ns, dtype=np.int64)
    result = np.full((at_ns.size, dim), np.nan)
    valid = np.zeros(at_ns.size, dtype=bool)
    if not commands or at_ns.size == 0:
        return result, valid
    received = np.array([command.received_ns for command in commands], dtype=np.int64)
    newest = np.searchsorted(received, at_ns, side="right") - 1
    for command_index in np.unique(newest[newest >= 0]):
        rows = np.flatnonzero(newest == command_index)
        command = commands[command_index]
        fresh_until = max(command.received_ns, command.end_ns) + max_age_ns
        rows = rows[at_ns[rows] <= fresh_until]
        if rows.size:
            result[rows] = command.evaluate(at_ns[rows])
            valid[rows] = True
    return result, valid
