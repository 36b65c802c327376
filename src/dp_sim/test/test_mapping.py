"""The pixel <-> SI mapping: one function pair, exact round trips, REP-103 orientation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dp_sim.mapping import (
    JOINT_LOWER_LIMIT,
    JOINT_UPPER_LIMIT,
    joints_to_pixels,
    pixel_velocity_to_joints,
    pixels_to_joints,
    quaternion_to_yaw,
    task_pose_to_world,
    world_pose_to_task,
    yaw_to_quaternion,
)


def test_workspace_centre_is_the_joint_origin_and_corners_are_the_limits() -> None:
    assert pixels_to_joints(np.array([256.0, 256.0])) == pytest.approx([0.0, 0.0])
    # Image top-right corner: world +x (right) and +y (up in the image).
    assert pixels_to_joints(np.array([512.0, 0.0])) == pytest.approx([0.256, 0.256])
    assert pixels_to_joints(np.array([0.0, 512.0])) == pytest.approx([-0.256, -0.256])
    assert pytest.approx(-0.256) == JOINT_LOWER_LIMIT
    assert pytest.approx(0.256) == JOINT_UPPER_LIMIT


def test_positions_round_trip_for_arrays_of_any_shape() -> None:
    points = np.random.default_rng(0).uniform(0.0, 512.0, size=(7, 3, 2))
    assert joints_to_pixels(pixels_to_joints(points)) == pytest.approx(points)


def test_velocity_follows_the_same_axes() -> None:
    # Moving right and down in the image is +x and -y in the world, 1 px/s = 1 mm/s.
    assert pixel_velocity_to_joints(np.array([10.0, 10.0])) == pytest.approx([0.01, -0.01])
    step = pixels_to_joints(np.array([110.0, 110.0])) - pixels_to_joints(np.array([100.0, 100.0]))
    assert step == pytest.approx(pixel_velocity_to_joints(np.array([10.0, 10.0])))


def test_task_angles_become_yaw_about_z_up() -> None:
    # The goal of PushT: centre of the image, turned by pi/4 from x towards y (clockwise on
    # screen) -> yaw -pi/4 about z up.
    x, y, yaw = task_pose_to_world(np.array([256.0, 256.0, math.pi / 4]))
    assert (x, y, yaw) == pytest.approx((0.0, 0.0, -math.pi / 4))
    # Angles the task reports unwrapped come back in [-pi, pi).
    assert task_pose_to_world(np.array([0.0, 0.0, 2 * math.pi + 0.5]))[2] == pytest.approx(-0.5)


def test_poses_round_trip() -> None:
    for pose in ([100.0, 400.0, 0.3], [12.5, 3.0, -2.9], [256.0, 256.0, 3.0]):
        assert world_pose_to_task(*task_pose_to_world(np.array(pose))) == pytest.approx(pose)


@pytest.mark.parametrize("yaw", [-3.1, -1.0, 0.0, 0.7, 3.1])
def test_quaternion_round_trip(yaw: float) -> None:
    quaternion = yaw_to_quaternion(yaw)
    assert sum(value * value for value in quaternion) == pytest.approx(1.0)
    assert quaternion_to_yaw(*quaternion) == pytest.approx(yaw)
