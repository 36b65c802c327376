"""Chunk timing (the runtime's rule, in nanoseconds) and the safety checks on predictions."""

from __future__ import annotations

import numpy as np
import pytest

from dp_policy import time_chunk
from dp_policy_node.trajectory_builder import (
    NOT_FINITE,
    OUTSIDE_LIMITS,
    STEP_TOO_LARGE,
    PredictionRejectedError,
    SafetyLimits,
    check_chunk,
    finite_difference_velocities,
    plan_chunk,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S
TO, TP, TA, DT = 2, 16, 8, 0.1
NAMES = ("x_joint", "y_joint")


def sequence() -> np.ndarray:
    rows = np.arange(TP, dtype=np.float64)
    return np.stack([0.01 * rows, -0.02 * rows + 0.1 * np.sin(rows)], axis=1)


def limits(step: float = 1.0) -> SafetyLimits:
    return SafetyLimits(NAMES, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), np.full(2, step))


@pytest.mark.parametrize("latency", [0.0, 0.03, 0.1, 0.25, 0.69, 0.75])
def test_timing_agrees_with_the_runtime_of_dp_policy(latency: float) -> None:
    now = T0 + round(latency * S)
    plan = plan_chunk(sequence(), T0, DT, TO, TA, now, min_lead_ns=20_000_000)
    reference = time_chunk(sequence(), 0.0, DT, TO, TA, now=latency, min_lead=0.02)
    np.testing.assert_array_equal(plan.indices, reference.indices)
    np.testing.assert_allclose((plan.due_ns - T0) / S, reference.due_times, atol=1e-9)
    np.testing.assert_array_equal(plan.positions, reference.actions)


def test_points_are_due_when_predicted_and_past_ones_are_dropped() -> None:
    now = T0 + 230_000_000  # observation stamp + 0.23 s of latency
    plan = plan_chunk(sequence(), T0, DT, TO, TA, now, min_lead_ns=20_000_000)
    # Actions 0, 1, 2 were due at +0, +0.1, +0.2 s: past. Action 3 onwards (row To-1+3) stays.
    np.testing.assert_array_equal(plan.indices, np.arange(TO - 1 + 3, TO - 1 + TA))
    np.testing.assert_array_equal(plan.due_ns, T0 + (plan.indices - (TO - 1)) * 100_000_000)
    np.testing.assert_array_equal(plan.time_from_start_ns, plan.due_ns - now)
    assert plan.time_from_start_ns[0] == 70_000_000 > 0
    assert np.all(np.diff(plan.time_from_start_ns) > 0)
    assert plan.end_ns == T0 + (TA - 1) * 100_000_000


def test_a_point_closer_than_the_minimum_lead_is_dropped_so_none_is_at_zero() -> None:
    now = T0 + 290_000_000  # action 3 would be 10 ms ahead
    plan = plan_chunk(sequence(), T0, DT, TO, TA, now, min_lead_ns=20_000_000)
    assert plan.indices[0] == TO - 1 + 4
    exactly = plan_chunk(sequence(), T0, DT, TO, TA, T0 + 300_000_000, min_lead_ns=0)
    assert exactly.time_from_start_ns[0] > 0  # the action due exactly now is not sent


def test_a_chunk_that_arrives_after_its_last_action_is_empty() -> None:
    plan = plan_chunk(sequence(), T0, DT, TO, TA, T0 + S, min_lead_ns=20_000_000)
    assert len(plan) == 0


def test_velocities_are_finite_differences_over_dt_and_the_final_point_is_at_rest() -> None:
    values = sequence()
    velocities = finite_difference_velocities(values, DT)
    k = 5
    np.testing.assert_allclose(velocities[k], (values[k + 1] - values[k - 1]) / (2 * DT))
    np.testing.assert_allclose(velocities[0], (values[1] - values[0]) / DT)
    plan = plan_chunk(values, T0, DT, TO, TA, T0, min_lead_ns=20_000_000)
    np.testing.assert_allclose(plan.velocities[:-1], velocities[plan.indices[:-1]])
    np.testing.assert_array_equal(plan.velocities[-1], [0.0, 0.0])


def test_a_good_chunk_passes_every_check() -> None:
    plan = plan_chunk(sequence(), T0, DT, TO, TA, T0, 0)
    check_chunk(sequence(), TO, TA, limits(), plan, current_position=plan.positions[0])


def test_nan_anywhere_is_refused() -> None:
    values = sequence()
    values[TP - 1, 1] = np.nan  # even in the look-ahead: the model is not to be trusted
    with pytest.raises(PredictionRejectedError) as refused:
        check_chunk(values, TO, TA, limits())
    assert refused.value.cause == NOT_FINITE and "15" in refused.value.message


def test_a_position_outside_the_limits_is_refused_naming_the_joint() -> None:
    values = sequence()
    values[TO - 1 + 2, 1] = 1.5
    with pytest.raises(PredictionRejectedError) as refused:
        check_chunk(values, TO, TA, limits())
    assert refused.value.cause == OUTSIDE_LIMITS
    assert "y_joint = 1.5 at action 2" in refused.value.message
    # The look-ahead beyond the executed actions is not commanded: not checked against limits.
    values = sequence()
    values[TP - 1, 0] = 5.0
    check_chunk(values, TO, TA, limits(step=10.0))


def test_a_step_larger_than_max_step_is_refused() -> None:
    with pytest.raises(PredictionRejectedError) as refused:
        check_chunk(sequence(), TO, TA, limits(step=0.05))
    assert refused.value.cause == STEP_TOO_LARGE and "y_joint moves" in refused.value.message


def test_a_first_point_far_from_the_measured_position_is_refused() -> None:
    plan = plan_chunk(sequence(), T0, DT, TO, TA, T0, 0)
    far = plan.positions[0] + np.array([0.0, 0.6])
    with pytest.raises(PredictionRejectedError) as refused:
        check_chunk(sequence(), TO, TA, limits(step=0.5), plan, current_position=far)
    assert "measured position" in refused.value.message


def test_a_joint_without_a_measured_position_leaves_the_others_checked() -> None:
    # Several controllers: a gripper without a recent joint state (NaN) must not exempt the arm.
    plan = plan_chunk(sequence(), T0, DT, TO, TA, T0, 0)
    unknown_y = np.array([plan.positions[0][0], np.nan])
    check_chunk(sequence(), TO, TA, limits(step=0.5), plan, current_position=unknown_y)
    far_x = np.array([plan.positions[0][0] + 0.6, np.nan])
    with pytest.raises(PredictionRejectedError) as refused:
        check_chunk(sequence(), TO, TA, limits(step=0.5), plan, current_position=far_x)
    assert "puts x_joint at" in refused.value.message
