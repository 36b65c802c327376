"""The simulated Panda without ROS: seeding, tracking, kinematics, the scripted expert."""

from __future__ import annotations

import numpy as np
import pytest

from dp_sim.arm_expert import make_expert
from dp_sim.arm_kinematics import ArmKinematics, rotation_about_z
from dp_sim.arm_robot import CONTROL_PERIOD_S, FINGER_RANGE_M, ArmRobot


@pytest.fixture(scope="module")
def lift() -> ArmRobot:
    robot = ArmRobot("lift")
    yield robot
    robot.close()


def test_a_seed_gives_the_same_episode_in_any_instance(lift) -> None:
    first = lift.reset(5)
    lift.reset(6)
    again = lift.reset(5)
    other = ArmRobot("lift")
    try:
        fresh = other.reset(5)
    finally:
        other.close()
    for state in (again, fresh):
        np.testing.assert_array_equal(state.object_position, first.object_position)
        np.testing.assert_array_equal(state.arm_position, first.arm_position)
    assert not np.allclose(lift.reset(6).object_position, first.object_position)


def test_joint_and_finger_set_points_are_tracked(lift) -> None:
    state = lift.reset(0)
    target = state.arm_position + np.array([0.2, -0.1, 0.1, 0.1, 0.0, 0.1, -0.2])
    for _ in range(30):  # 1.5 s
        state = lift.step(target, 0.01)
    np.testing.assert_allclose(state.arm_position, target, atol=2e-3)
    assert state.finger_position == pytest.approx([0.01, 0.01], abs=2e-3)
    assert state.steps == 30 and not state.success


def test_set_points_beyond_the_limits_are_clamped(lift) -> None:
    state = lift.reset(0)
    wild = state.arm_position.copy()
    wild[0] = 10.0  # far beyond the Panda's 2.8973 rad
    for _ in range(5):
        state = lift.step(wild, 1.0)
    assert np.all(np.isfinite(state.arm_position))
    assert state.finger_position.max() <= FINGER_RANGE_M[1] + 1e-3


def test_inverse_kinematics_reaches_a_pose_and_forward_agrees(lift) -> None:
    kinematics = ArmKinematics(lift)
    state = lift.reset(0)
    hand, _ = kinematics.forward(state.arm_position)
    np.testing.assert_allclose(hand, state.eef_position, atol=1e-6)  # the same grip site
    target = hand + np.array([0.05, -0.08, -0.1])
    rotation = rotation_about_z(0.4) @ kinematics.rest_orientation
    solution = kinematics.inverse(target, rotation, state.arm_position, iterations=100)
    assert solution.converged, solution
    reached, turned = kinematics.forward(solution.joints)
    np.testing.assert_allclose(reached, target, atol=2e-3)
    np.testing.assert_allclose(turned, rotation, atol=2e-2)


@pytest.mark.parametrize(("task", "seeds"), [("lift", (100000, 100001)), ("can", (100000,))])
def test_the_expert_solves_the_task(task, seeds) -> None:
    robot = ArmRobot(task)
    try:
        expert = make_expert(robot, CONTROL_PERIOD_S)
        for seed in seeds:
            state = robot.reset(seed)
            expert.reset()
            while not state.done:
                arm, fingers = expert.act(
                    state.arm_position,
                    state.object_position,
                    state.object_quaternion,
                    state.goal_position,
                )
                state = robot.step(arm, fingers)
            assert state.success, (task, seed, state.steps, expert.phase)
    finally:
        robot.close()


def test_cameras_render_rgb_images_the_right_way_up() -> None:
    robot = ArmRobot(
        "lift", cameras=("agentview", "robot0_eye_in_hand"), image_width=32, image_height=24
    )
    try:
        state = robot.reset(0)
    finally:
        robot.close()
    for camera in ("agentview", "robot0_eye_in_hand"):
        image = state.images[camera]
        assert image.shape == (24, 32, 3) and image.dtype == np.uint8
        assert image.std() > 5  # a scene, not a blank frame
    # The front camera looks at the table from above and in front: the floor/table at the
    # bottom of the picture is lit differently from the background at the top.
    front = state.images["agentview"].astype(float)
    assert abs(front[:4].mean() - front[-4:].mean()) > 5


def test_unknown_task_and_camera_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        ArmRobot("stack")
    with pytest.raises(ValueError, match="unknown camera"):
        ArmRobot("lift", cameras=("frontview",))
