"""A predicted chunk to timed trajectory points, and the safety checks before it is sent.

ROS-free; absolute times are integer nanoseconds on the node clock. Timing (DESIGN.md and
``dp_policy.runtime.time_chunk``): row ``To-1+i`` of the predicted sequence is due at
``observation_stamp + i*dt`` for the Ta executed actions ``i = 0 .. Ta-1``. At publishing
time ``now``, rows due no later than ``now + min_lead`` are dropped (they are past, or too close
for the controller to ramp to them); the others get ``time_from_start = due - now``, which
therefore increases strictly and is never 0. The node sends them with a zero header stamp:
``joint_trajectory_controller`` starts such a trajectory on receipt, so each point lands at
the wall-clock time it was predicted for, up to the transport delay.

Velocities are finite differences over dt of the whole predicted sequence (central inside,
one-sided at its ends), so the look-ahead rows shape the velocity at the last executed
action -- except that the final point is sent with zero velocity: if no newer chunk replaces
this one in time, the controller holds the final point, and the robot should arrive there at
rest rather than stop abruptly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NS_PER_S = 1_000_000_000

# Causes of refused predictions (once-per-cause logging, PolicyStatus).
NOT_FINITE = "prediction_not_finite"
OUTSIDE_LIMITS = "prediction_outside_limits"
STEP_TOO_LARGE = "prediction_step_too_large"


class PredictionRejectedError(ValueError):
    """A chunk that must not be sent; ``cause`` is one of the constants above."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


@dataclass(frozen=True)
class SafetyLimits:
    """Per action joint: position limits and the largest change between consecutive points."""

    joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    max_step: np.ndarray


@dataclass(frozen=True)
class TrajectoryPlan:
    """Points still ahead of ``now``: rows of the sequence, due times, offsets, values."""

    indices: np.ndarray
    due_ns: np.ndarray
    time_from_start_ns: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def end_ns(self) -> int:
        return int(self.due_ns[-1])


def finite_difference_velocities(sequence: np.ndarray, dt: float) -> np.ndarray:
    """``(Tp, Da)`` velocities of the predicted sequence: central differences, one-sided ends."""
    if sequence.shape[0] < 2:
        return np.zeros_like(sequence)
    return np.gradient(sequence, float(dt), axis=0)


def plan_chunk(
    sequence: np.ndarray,
    observation_stamp_ns: int,
    dt: float,
    observation_horizon: int,
    action_horizon: int,
    now_ns: int,
    min_lead_ns: int,
) -> TrajectoryPlan:
    """Time the executed part of ``sequence (Tp, Da)`` at ``now_ns``; may come back empty."""
    sequence = np.asarray(sequence, dtype=np.float64)
    start = observation_horizon - 1
    if sequence.ndim != 2 or start + action_horizon > sequence.shape[0]:
        raise ValueError(
            f"To={observation_horizon}, Ta={action_horizon} do not fit a chunk of shape "
            f"{sequence.shape}"
        )
    dt_ns = round(dt * NS_PER_S)
    steps = np.arange(action_horizon, dtype=np.int64)
    due = observation_stamp_ns + steps * dt_ns
    keep = due > now_ns + min_lead_ns
    rows = start + steps[keep]
    velocities = finite_difference_velocities(sequence, dt)[rows]
    if len(rows):
        velocities[-1] = 0.0
    return TrajectoryPlan(
        indices=rows,
        due_ns=due[keep],
        time_from_start_ns=due[keep] - now_ns,
        positions=sequence[rows],
        velocities=velocities,
    )


def check_chunk(
    sequence: np.ndarray,
    observation_horizon: int,
    action_horizon: int,
    limits: SafetyLimits,
    plan: TrajectoryPlan | None = None,
    current_position: Sequence[float] | None = None,
) -> None:
    """Refuse (PredictionRejectedError) NaN, positions outside limits and steps above max_step.

    Checked on every executed action (not only those still ahead): a model that predicts
    something unsafe for any of them is not trusted with the rest. With ``plan`` and
    ``current_position``, the first point sent must also be within max_step of where the
    joints are; a joint whose measured position is NaN (not known) is left out of that
    check, the others are not: a gripper without a recent joint state does not exempt the arm.
    """
    sequence = np.asarray(sequence, dtype=np.float64)
    names = limits.joint_names
    if not np.all(np.isfinite(sequence)):
        bad = np.argwhere(~np.isfinite(sequence))
        rows = sorted({int(row) for row in bad[:, 0]})
        row, joint = (int(i) for i in bad[0])
        raise PredictionRejectedError(
            NOT_FINITE,
            f"the predicted chunk contains NaN or infinite values (first: {names[joint]} = "
            f"{sequence[row, joint]} at row {row}; rows {rows})",
        )
    start = observation_horizon - 1
    executed = sequence[start : start + action_horizon]
    below = executed < limits.lower
    above = executed > limits.upper
    if below.any() or above.any():
        step, joint = (int(i) for i in np.argwhere(below | above)[0])
        raise PredictionRejectedError(
            OUTSIDE_LIMITS,
            f"predicted {names[joint]} = {executed[step, joint]:.4g} at action {step} is "
            f"outside its limits [{limits.lower[joint]:.4g}, {limits.upper[joint]:.4g}]",
        )
    steps = np.abs(np.diff(executed, axis=0))
    if (steps > limits.max_step).any():
        step, joint = (int(i) for i in np.argwhere(steps > limits.max_step)[0])
        raise PredictionRejectedError(
            STEP_TOO_LARGE,
            f"predicted {names[joint]} moves {steps[step, joint]:.4g} between actions {step} "
            f"and {step + 1} (max_step {limits.max_step[joint]:.4g})",
        )
    if plan is not None and len(plan) and current_position is not None:
        measured = np.asarray(current_position, dtype=np.float64)
        jump = np.abs(plan.positions[0] - measured)
        too_far = np.isfinite(jump) & (jump > limits.max_step)
        if too_far.any():
            joint = int(np.argmax(too_far))
            action = int(plan.indices[0]) - start
            raise PredictionRejectedError(
                STEP_TOO_LARGE,
                f"the first point (action {action}) puts {names[joint]} at "
                f"{plan.positions[0][joint]:.4g}, {jump[joint]:.4g} away from its measured "
                f"position {measured[joint]:.4g} (max_step {limits.max_step[joint]:.4g})",
            )
