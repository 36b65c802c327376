"""TrajectoryFollower: the joint_trajectory_controller semantics, without ROS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dp_sim.trajectory import TrajectoryFollower, TrajectoryPoint, TrajectoryRejectedError

JOINTS = ("pusher_x_joint", "pusher_y_joint")
NOW = 1000.0


def follower_at(position=(0.0, 0.0)) -> TrajectoryFollower:
    follower = TrajectoryFollower(JOINTS)
    follower.hold(position)
    return follower


def send(follower: TrajectoryFollower, points, start=0.0, names=JOINTS, now=NOW, state=(0, 0)):
    follower.set_trajectory(list(names), points, start, now, np.array(state, dtype=float))


def test_holds_its_position_without_a_trajectory() -> None:
    follower = follower_at((0.1, -0.2))
    position, velocity = follower.sample(NOW + 5.0)
    assert position == pytest.approx([0.1, -0.2])
    assert velocity == pytest.approx([0.0, 0.0])
    assert follower.end_time is None


def test_linear_interpolation_with_a_ramp_from_the_current_state() -> None:
    follower = follower_at()
    send(follower, [TrajectoryPoint(1.0, [0.1, 0.0]), TrajectoryPoint(2.0, [0.1, 0.2])])
    assert follower.sample(NOW)[0] == pytest.approx([0.0, 0.0])
    assert follower.sample(NOW + 0.5)[0] == pytest.approx([0.05, 0.0])  # the ramp
    assert follower.sample(NOW + 1.0)[0] == pytest.approx([0.1, 0.0])
    position, velocity = follower.sample(NOW + 1.25)
    assert position == pytest.approx([0.1, 0.05])
    assert velocity == pytest.approx([0.0, 0.2])
    # After the last point: hold it.
    assert follower.sample(NOW + 10.0)[0] == pytest.approx([0.1, 0.2])
    assert follower.sample(NOW + 10.0)[1] == pytest.approx([0.0, 0.0])
    assert follower.end_time == pytest.approx(NOW + 2.0)


def test_a_first_point_at_time_zero_means_no_ramp() -> None:
    follower = follower_at()
    send(follower, [TrajectoryPoint(0.0, [0.1, 0.1]), TrajectoryPoint(1.0, [0.2, 0.1])])
    assert follower.sample(NOW)[0] == pytest.approx([0.1, 0.1])
    assert follower.sample(NOW + 0.5)[0] == pytest.approx([0.15, 0.1])


def test_joints_are_matched_by_name_in_any_order() -> None:
    follower = follower_at()
    send(follower, [TrajectoryPoint(0.0, [0.2, 0.1])], names=tuple(reversed(JOINTS)))
    assert follower.sample(NOW)[0] == pytest.approx([0.1, 0.2])


def test_a_new_trajectory_replaces_the_running_one() -> None:
    follower = follower_at()
    send(follower, [TrajectoryPoint(2.0, [0.2, 0.0])])
    # Halfway, a new one arrives: it starts from the state then, the old one is gone.
    send(follower, [TrajectoryPoint(1.0, [0.0, 0.1])], now=NOW + 1.0, state=(0.1, 0.0))
    assert follower.sample(NOW + 1.5)[0] == pytest.approx([0.05, 0.05])
    assert follower.sample(NOW + 5.0)[0] == pytest.approx([0.0, 0.1])


def test_a_stamp_in_the_future_delays_the_points_and_ramps_until_the_first() -> None:
    follower = follower_at()
    send(follower, [TrajectoryPoint(0.5, [0.2, 0.0])], start=NOW + 1.5)
    # The ramp goes from the state at arrival (NOW) to the first point at NOW + 2.
    assert follower.sample(NOW + 1.0)[0] == pytest.approx([0.1, 0.0])
    assert follower.sample(NOW + 2.0)[0] == pytest.approx([0.2, 0.0])


def test_a_stamp_in_the_past_skips_to_where_the_trajectory_is_now() -> None:
    follower = follower_at()
    send(follower, [TrajectoryPoint(0.0, [0.0, 0.0]), TrajectoryPoint(2.0, [0.2, 0.0])], NOW - 1)
    assert follower.sample(NOW)[0] == pytest.approx([0.1, 0.0])


def test_cubic_interpolation_when_velocities_are_given() -> None:
    follower = follower_at()
    points = [
        TrajectoryPoint(0.0, [0.0, 0.0], velocities=[0.0, 0.0]),
        TrajectoryPoint(1.0, [0.1, 0.0], velocities=[0.0, 0.0]),
    ]
    send(follower, points)
    # A smooth start and stop: slower than linear at first, symmetric about the middle.
    assert follower.sample(NOW + 0.25)[0][0] < 0.025
    assert follower.sample(NOW + 0.5)[0] == pytest.approx([0.05, 0.0])
    assert follower.sample(NOW + 0.5)[1][0] == pytest.approx(0.15)  # 1.5 * mean speed
    assert follower.sample(NOW + 0.999)[1][0] == pytest.approx(0.0, abs=1e-2)


def test_quintic_interpolation_meets_positions_velocities_and_accelerations() -> None:
    follower = follower_at()
    points = [
        TrajectoryPoint(0.0, [0.0, 0.0], [0.1, 0.0], [0.0, 0.0]),
        TrajectoryPoint(2.0, [0.3, 0.1], [0.0, 0.05], [0.0, 0.0]),
    ]
    send(follower, points)
    for time_s, position, velocity in ((1e-9, [0, 0], [0.1, 0]), (2 - 1e-9, [0.3, 0.1], [0, 0.05])):
        sampled_position, sampled_velocity = follower.sample(NOW + time_s)
        assert sampled_position == pytest.approx(position, abs=1e-6)
        assert sampled_velocity == pytest.approx(velocity, abs=1e-6)
    # The acceleration (finite difference of the velocity) starts at zero as requested.
    dv = follower.sample(NOW + 2e-4)[1] - follower.sample(NOW + 1e-4)[1]
    assert dv / 1e-4 == pytest.approx([0.0, 0.0], abs=1e-2)


BAD = {
    "no joint names": ([], [TrajectoryPoint(1.0, [0.1, 0.1])], 0.0, "no joint names"),
    "unknown joint": (
        ["pusher_x_joint", "elbow"],
        [TrajectoryPoint(1.0, [0.1, 0.1])],
        0.0,
        "'elbow' is not one of",
    ),
    "missing joint": (["pusher_x_joint"], [TrajectoryPoint(1.0, [0.1])], 0.0, "does not name"),
    "joint twice": (
        ["pusher_x_joint", "pusher_x_joint"],
        [TrajectoryPoint(1.0, [0.1, 0.1])],
        0.0,
        "more than once",
    ),
    "no points": (list(JOINTS), [], 0.0, "no points"),
    "times not increasing": (
        list(JOINTS),
        [TrajectoryPoint(1.0, [0.1, 0.1]), TrajectoryPoint(1.0, [0.2, 0.1])],
        0.0,
        "increase strictly",
    ),
    "times decreasing": (
        list(JOINTS),
        [TrajectoryPoint(1.0, [0.1, 0.1]), TrajectoryPoint(0.5, [0.2, 0.1])],
        0.0,
        "increase strictly",
    ),
    "NaN position": (list(JOINTS), [TrajectoryPoint(1.0, [math.nan, 0.1])], 0.0, "NaN"),
    "infinite velocity": (
        list(JOINTS),
        [TrajectoryPoint(1.0, [0.1, 0.1], velocities=[math.inf, 0.0])],
        0.0,
        "NaN or infinite",
    ),
    "too few positions": (list(JOINTS), [TrajectoryPoint(1.0, [0.1])], 0.0, "1 positions"),
    "wrong velocity count": (
        list(JOINTS),
        [TrajectoryPoint(1.0, [0.1, 0.1], velocities=[0.0])],
        0.0,
        "1 velocities",
    ),
    "effort": (list(JOINTS), [TrajectoryPoint(1.0, [0.1, 0.1], effort=[1, 1])], 0.0, "effort"),
    "ends in the past": (
        list(JOINTS),
        [TrajectoryPoint(0.5, [0.1, 0.1]), TrajectoryPoint(1.0, [0.2, 0.1])],
        NOW - 2.0,
        "ends in the past",
    ),
    "negative time": (list(JOINTS), [TrajectoryPoint(-1.0, [0.1, 0.1])], 0.0, "time_from_start"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_trajectories_are_rejected_and_the_running_one_continues(case: str) -> None:
    names, points, start, reason = BAD[case]
    follower = follower_at()
    send(follower, [TrajectoryPoint(1.0, [0.1, 0.0])])
    with pytest.raises(TrajectoryRejectedError, match=reason):
        send(follower, points, start=start, names=names, now=NOW + 0.5, state=(0.05, 0.0))
    assert follower.sample(NOW + 2.0)[0] == pytest.approx([0.1, 0.0])


def test_a_stamp_whose_last_point_is_still_ahead_is_accepted() -> None:
    follower = follower_at()
    send(follower, [TrajectoryPoint(0.5, [0.1, 0.0]), TrajectoryPoint(3.0, [0.2, 0.0])], NOW - 2)
    assert follower.sample(NOW + 0.5)[0] == pytest.approx([0.18, 0.0])
