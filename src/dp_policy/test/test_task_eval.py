"""Offline evaluation on the arm tasks: the spec bound to dp_sim's task, the generic rollout."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from dp_policy.data_spec import DataSpec
from dp_policy.evaluation.config import EvalConfig
from dp_policy.evaluation.task_binding import TaskBinding, UnmappableSpecError
from dp_policy.evaluation.task_eval import run_task_evaluation, task_of_spec, write_task_outputs

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@pytest.fixture(scope="module")
def lift_task():
    from dp_sim.tasks import make_task

    task = make_task("lift")
    task.reset(100000)
    yield task
    task.close()


@pytest.fixture(scope="module")
def lift_spec() -> DataSpec:
    return DataSpec.from_yaml(CONFIG_DIR / "lift_lowdim_data_spec.yaml")


def test_the_shipped_spec_reads_what_the_sim_publishes(lift_task, lift_spec) -> None:
    assert task_of_spec(lift_spec) == "lift"
    binding = TaskBinding(lift_spec, lift_task)
    binding.check_messages()
    observation = binding.observe()
    state = lift_task.state
    np.testing.assert_allclose(observation["joints"][:7], state.arm_position)
    np.testing.assert_allclose(observation["eef_position"], state.eef_position)
    np.testing.assert_allclose(observation["object_pose"][:3], state.object_position)
    assert observation["object_pose"].shape == (7,)  # position and a canonical quaternion
    # Actions come in the spec's order (arm, gripper) and go to the task's controllers.
    vector = binding.command_vector(np.arange(8.0))
    setpoints = binding.split(vector)
    assert list(setpoints) == [
        "joint_trajectory_controller/joint_trajectory",
        "gripper_trajectory_controller/joint_trajectory",
    ]
    np.testing.assert_array_equal(setpoints["gripper_trajectory_controller/joint_trajectory"], [7])


def test_action_streams_in_another_order_and_joint_order_are_matched_by_name(
    lift_task, lift_spec
) -> None:
    data = lift_spec.to_dict()
    data["actions"] = list(reversed(data["actions"]))
    data["actions"][1]["joints"] = list(reversed(data["actions"][1]["joints"]))
    binding = TaskBinding(DataSpec.from_dict(data), lift_task)
    # Spec order: finger, joint7 .. joint1; the task wants joint1 .. joint7, finger.
    vector = binding.command_vector(np.arange(8.0))
    np.testing.assert_array_equal(vector, [7, 6, 5, 4, 3, 2, 1, 0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["actions"].pop(1), "commands no joints on"),
        (lambda d: d["actions"][1].update(topic="/gripper/command"), "is commanded with"),
        (lambda d: d["observations"][1].update(topic="/lift/wrist_pose"), "publishes no such"),
        (lambda d: d.update(dt=0.1), "control period"),
        (lambda d: d["actions"][0].update(joints=["panda_joint1"]), "takes the positions"),
    ],
)
def test_specs_the_task_cannot_serve_are_refused_naming_the_stream(
    lift_task, lift_spec, change, message
) -> None:
    data = copy.deepcopy(lift_spec.to_dict())
    change(data)
    with pytest.raises(UnmappableSpecError, match=message):
        TaskBinding(DataSpec.from_dict(data), lift_task)


def test_the_expert_through_the_generic_harness_solves_lift(tmp_path) -> None:
    config = EvalConfig(
        policy="expert", episodes=3, start_seed=100000, max_steps=400, progress=False
    )
    result = run_task_evaluation(config, "lift")
    assert [episode.success for episode in result.episodes] == [True, True, True]
    assert all(30 < episode.success_step < 80 for episode in result.episodes)
    report = write_task_outputs(result, tmp_path)
    assert report["results"]["success_rate"] == 1.0
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "outcomes.png").is_file()
    # The latency of the ROS loop (one step) does not change the outcome.
    late = run_task_evaluation(
        EvalConfig(
            policy="expert",
            episodes=1,
            start_seed=100000,
            max_steps=400,
            latency_steps=1,
            progress=False,
        ),
        "lift",
    )
    assert late.episodes[0].success
