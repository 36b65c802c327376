"""The tasks behind ``dp_sim.tasks.SimTask`` without ROS: PushT as the sim node exposes it."""

from __future__ import annotations

import numpy as np
import pytest

from dp_sim.mapping import JOINT_NAMES, pixels_to_joints, task_pose_to_world
from dp_sim.pusht_task import COMMAND_TOPIC, IMAGE_TOPIC, PushTTask
from dp_sim.tasks import TASK_NAMES, make_task, task_cameras


@pytest.fixture(scope="module")
def pusht() -> PushTTask:
    task = make_task("pusht", image_size=(64, 48), max_steps=5)
    yield task
    task.close()


def test_pusht_publishes_what_it_declares_and_holds_the_pusher_after_a_reset(pusht) -> None:
    assert "pusht" in TASK_NAMES and pusht.name == "pusht" and pusht.control_period == 0.1
    assert pusht.score_name == "coverage"
    assert pusht.commands == {COMMAND_TOPIC: JOINT_NAMES}
    assert task_cameras("pusht") == {"camera": IMAGE_TOPIC}
    pusht.reset(100000)
    messages = pusht.messages()
    assert messages.keys() == pusht.published.keys()
    image = messages[IMAGE_TOPIC]
    assert (image.width, image.height) == (64, 48)
    assert pusht.frame().shape == (48, 64, 3)
    held = pusht.held_setpoints()
    np.testing.assert_allclose(held[COMMAND_TOPIC], pixels_to_joints(pusht.state.agent_position))
    np.testing.assert_allclose(held[COMMAND_TOPIC], messages["joint_states"].position)
    # Seed 100000 starts with the T on part of the goal: the score says so before any step.
    assert pusht.score == pusht.state.coverage > 0.05
    assert pusht.episode_details()["max_reward"] == 0.0  # no step yet


def test_pusht_steps_with_joint_set_points_and_reports_its_episode(pusht) -> None:
    pusht.reset(100001)
    assert not pusht.outside_limits({COMMAND_TOPIC: np.array([0.256, -0.256])})
    assert pusht.outside_limits({COMMAND_TOPIC: np.array([0.3, 0.0])})
    target = np.array([0.05, -0.02])  # m: 50 mm right of the centre, 20 mm below it
    target_px = np.array([306.0, 276.0])  # x right, y down from the top-left corner
    start = np.linalg.norm(pusht.state.agent_position - target_px)
    rewards = []
    while not pusht.done:
        pusht.step({COMMAND_TOPIC: target})
        rewards.append(pusht.state.reward)
    assert pusht.steps == 5  # the task's step limit, as made
    assert pusht.score == pusht.state.coverage
    details = pusht.episode_details()
    assert details["max_reward"] == max(rewards)
    state = pusht.state
    assert details["final_agent_position"] == pixels_to_joints(state.agent_position).tolist()
    assert details["final_block_pose"] == list(task_pose_to_world(state.block_pose))
    # The pusher went towards the target.
    assert np.linalg.norm(state.agent_position - target_px) < start - 10.0


def test_the_pusht_expert_solves_a_seed_through_the_task_interface() -> None:
    task = make_task("pusht")
    try:
        task.reset(100002)
        expert = task.make_expert()
        while not task.done:
            setpoint = expert.act(task.messages())
            assert setpoint.shape == (2,)
            task.step({COMMAND_TOPIC: setpoint})
        assert task.success and task.steps < 300
    finally:
        task.close()


def test_unknown_tasks_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown task 'push'"):
        make_task("push")
    with pytest.raises(ValueError, match="unknown task"):
        task_cameras("push")
