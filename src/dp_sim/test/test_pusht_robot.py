"""PushTRobot: the gym-pusht task behind a small robot-like interface, without ROS."""

from __future__ import annotations

import numpy as np
import pytest

from dp_sim.pusht_robot import PushTRobot


@pytest.fixture(scope="module")
def robot() -> PushTRobot:
    robot = PushTRobot(image_width=64, image_height=48, max_episode_steps=3)
    yield robot
    robot.close()


def test_images_have_the_configured_size(robot: PushTRobot) -> None:
    state = robot.reset(1)
    assert state.image.shape == (48, 64, 3)
    assert state.image.dtype == np.uint8
    assert state.image.flags["C_CONTIGUOUS"]


def test_the_same_seed_gives_the_same_initial_state(robot: PushTRobot) -> None:
    first = robot.reset(42)
    robot.reset(43)
    again = robot.reset(42)
    assert np.array_equal(first.block_pose, again.block_pose)
    assert np.array_equal(first.agent_position, again.agent_position)
    assert np.array_equal(first.image, again.image)
    assert not np.array_equal(first.block_pose, robot.reset(43).block_pose)
    assert first.goal_pose == pytest.approx([256.0, 256.0, np.pi / 4])


def test_steps_move_the_pusher_towards_the_target_until_the_episode_ends(
    robot: PushTRobot,
) -> None:
    start = robot.reset(5).agent_position
    target = np.clip(start + np.array([40.0, 0.0]), 30.0, 480.0)
    state = robot.step(target)
    assert state.steps == 1 and not state.done
    assert 0.0 < state.agent_position[0] - start[0] < 40.0
    assert state.agent_velocity[0] > 0.0
    assert 0.0 <= state.coverage <= 1.0 and 0.0 <= state.reward <= 1.0
    robot.step(target)
    assert robot.step(target).done  # max_episode_steps=3
    with pytest.raises(RuntimeError, match="episode is over"):
        robot.step(target)


def test_targets_outside_the_action_space_are_clamped(robot: PushTRobot) -> None:
    robot.reset(7)
    for _ in range(2):
        state = robot.step(np.array([1e6, -1e6]))
    assert np.all(np.isfinite(state.agent_position))
    assert state.agent_position[0] <= 512.0 and state.agent_position[1] >= 0.0


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="seed"):
        PushTRobot(image_width=8, image_height=8).reset(-1)
    with pytest.raises(ValueError, match="image size"):
        PushTRobot(image_width=0)
