"""The evaluation harness: the served timing, batched sampling, the CLI, the expert, repeats."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dp_policy import (
    DiffusionPolicy,
    HorizonConfig,
    PolicyConfig,
    UNetConfig,
    VisionConfig,
    save_checkpoint,
)
from dp_policy.data_spec import DataSpec, data_spec_metadata
from dp_policy.eval import main
from dp_policy.evaluation import (
    EvalConfig,
    TaskBinding,
    plan_execution,
    run_evaluation,
    task_factory,
)
from dp_policy.evaluation.controllers import DiffusionController, ExpertController, noise_generator
from dp_policy.evaluation.rollout import PlanSchedule, RolloutRunner, RolloutSettings
from dp_sim.pusht_robot import PushTRobot
from dp_sim.pusht_task import PushTTask, PushTTaskExpert

CONFIG = Path(__file__).resolve().parents[1] / "config"
IMAGE_SPEC = DataSpec.from_yaml(CONFIG / "pusht_data_spec.yaml")
LOWDIM_SPEC = DataSpec.from_yaml(CONFIG / "pusht_lowdim_data_spec.yaml")


def tiny_policy(spec: DataSpec, seed: int = 0) -> DiffusionPolicy:
    """An untrained policy for ``spec``: small U-Net, Ta = 4, normalizer over the table."""
    torch.manual_seed(seed)
    config = PolicyConfig(
        observation=spec.observation_spec(),
        action=spec.action_spec(),
        horizon=HorizonConfig(observation_horizon=2, prediction_horizon=8, action_horizon=4),
        unet=UNetConfig(down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16),
        vision=VisionConfig(crop_shape=(84, 84), num_keypoints=4, feature_dim=8),
    )
    policy = DiffusionPolicy(config)
    generator = torch.Generator().manual_seed(seed)
    low_dim = {
        key: 0.4 * torch.rand((64, size), generator=generator) - 0.2
        for key, size in config.observation.low_dim.items()
    }
    policy.fit_normalizer(0.4 * torch.rand((64, 2), generator=generator) - 0.2, low_dim)
    return policy


def tiny_checkpoint(directory: Path, spec: DataSpec = IMAGE_SPEC) -> Path:
    save_checkpoint(tiny_policy(spec), directory, extra_metadata=data_spec_metadata(spec))
    return directory


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("checkpoint") / "tiny_image")


@pytest.fixture(scope="module")
def pusht_task():
    task = PushTTask()
    task.reset(100000)
    yield task
    task.close()


# -- the served timing ----------------------------------------------------------------------


def _executed(latency: int, chunk: int, steps: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Steps at which plans are asked for, and (plan step, index) executed at each step."""
    schedule = PlanSchedule(latency, hold=np.array([-1.0, -1.0]))
    asked, executed = [], []
    for step in range(steps):
        if schedule.needs_plan(step):
            asked.append(step)
            schedule.add(step, np.array([[step, i] for i in range(chunk)], dtype=float))
        executed.append(tuple(int(v) for v in schedule.setpoint(step)))
    return asked, executed


def test_paper_protocol_executes_each_chunk_whole_then_replans() -> None:
    asked, executed = _executed(latency=0, chunk=4, steps=10)
    assert asked == [0, 4, 8]
    assert executed == [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (4, 0),
        (4, 1),
        (4, 2),
        (4, 3),
        (8, 0),
        (8, 1),
    ]


def test_latency_drops_past_actions_and_replans_early_enough() -> None:
    asked, executed = _executed(latency=1, chunk=4, steps=8)
    # The first plan arrives one step late: the reset position is held meanwhile.
    assert executed[0] == (-1, -1)
    assert asked == [0, 3, 6]
    assert executed[1:] == [(0, 1), (0, 2), (0, 3), (3, 1), (3, 2), (3, 3), (6, 1)]
    # A one-point plan (the expert's) is held: the action for step k is from step k-1.
    asked, executed = _executed(latency=1, chunk=1, steps=4)
    assert asked == [0, 1, 2, 3]
    assert executed == [(-1, -1), (0, 0), (1, 0), (2, 0)]
    # Inference slower than a chunk: plans back to back, each one's last point held.
    asked, executed = _executed(latency=3, chunk=2, steps=6)
    assert asked == [0, 1, 2, 3, 4, 5]
    assert executed == [(-1, -1)] * 3 + [(0, 1), (1, 1), (2, 1)]


# -- sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "DDPMScheduler"])
def test_batched_sampling_is_predict_action_with_one_generator_per_episode(
    scheduler, pusht_task
) -> None:
    policy = tiny_policy(LOWDIM_SPEC).eval()
    controller = DiffusionController(
        policy, TaskBinding(LOWDIM_SPEC, pusht_task), num_inference_steps=5, scheduler=scheduler
    )
    generator = torch.Generator().manual_seed(3)
    observations = {
        "agent_pos": (0.2 * torch.randn((2, 2, 2), generator=generator)).numpy(),
        "block_pose": (0.2 * torch.randn((2, 2, 4), generator=generator)).numpy(),
    }
    batched = controller.sample(observations, [noise_generator(s, 0) for s in (7, 8)])
    for row, seed in enumerate((7, 8)):
        one = {key: value[row : row + 1] for key, value in observations.items()}
        reference = policy.predict_action(
            one, num_inference_steps=5, generator=noise_generator(seed, 0), scheduler=scheduler
        )
        alone = controller.sample(one, [noise_generator(seed, 0)])
        torch.testing.assert_close(alone, reference.action_sequence, rtol=0, atol=0)
        torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1])


# -- the command and its outputs -----------------------------------------------------------


def test_cli_runs_a_checkpoint_in_two_workers_and_writes_json_and_png(
    image_checkpoint, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    arguments = ["--checkpoint", str(image_checkpoint), "--episodes", "2", "--max-steps", "20"]
    arguments += ["--workers", "2", "--num-inference-steps", "3", "--out", str(out)]
    assert main([*arguments, "--no-progress"]) == 0
    assert "score" in capsys.readouterr().out
    report = json.loads((out / "eval.json").read_text())
    assert report["format"] == "dp_policy.eval"
    assert report["execution"]["workers"] == 2
    assert report["policy"]["checkpoint"]["num_inference_steps"] == 3
    protocol = report["protocol"]
    assert protocol["seeds"] == [100000, 100001] and protocol["max_steps"] == 20
    assert (protocol["observation_horizon"], protocol["action_horizon"]) == (2, 4)
    assert [e["seed"] for e in report["episodes"]] == [100000, 100001]
    for episode in report["episodes"]:
        assert 1 <= episode["steps"] <= 20 and 0.0 <= episode["max_reward"] <= 1.0
        assert episode["plans"] == 5  # 20 steps, 4 actions per chunk
    results = report["results"]
    assert results["episodes"] == 2
    expected = sum(e["max_reward"] for e in report["episodes"]) / 2
    assert results["mean_score"] == pytest.approx(expected, abs=1e-6)
    assert report["wall_time_s"] > 0 and report["machine"]["cpu_count"] >= 1
    assert report["montage"] == "montage.png"
    assert (out / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The outcome over time: coverage after every step, and its plot.
    for episode in report["episodes"]:
        trace = episode["coverage_trace"]
        assert len(trace) == episode["steps"]
        assert all(0.0 <= value <= 1.0 for value in trace)
        assert max(trace) == pytest.approx(episode["max_coverage"], abs=5e-5)
        assert trace[-1] == pytest.approx(episode["final_coverage"], abs=5e-5)
    assert report["coverage_plot"] == "coverage.png"
    assert (out / "coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Each worker ran one episode alone; one process running each alone gives the same.
    again = run_evaluation(
        EvalConfig(
            checkpoint=image_checkpoint,
            episodes=2,
            max_steps=20,
            num_inference_steps=3,
            workers=1,
            batch_size=1,
            threads=1,
            montage_episodes=0,
            progress=False,
        )
    )
    assert [e.to_json("coverage") for e in again.episodes] == report["episodes"]


def test_same_seeds_give_the_same_rollouts_and_other_noise_seeds_do_not(image_checkpoint) -> None:
    def run(noise_seed: int) -> list[dict]:
        config = EvalConfig(
            checkpoint=image_checkpoint,
            episodes=2,
            max_steps=12,
            num_inference_steps=2,
            noise_seed=noise_seed,
            workers=1,
            threads=1,  # OpenMP threads only slow tiny networks down, more so on a busy machine
            montage_episodes=0,
            progress=False,
        )
        return [episode.to_json("coverage") for episode in run_evaluation(config).episodes]

    first = run(0)
    assert run(0) == first
    positions = [e["final_agent_position"] for e in first]
    assert positions[0] != positions[1]
    assert [e["final_agent_position"] for e in run(1)] != positions


def test_the_expert_through_the_harness_solves_its_seeds() -> None:
    for latency in (0, 1):
        config = EvalConfig(
            policy="expert",
            episodes=2,
            start_seed=100002,
            workers=1,
            latency_steps=latency,
            montage_episodes=1,
            progress=False,
        )
        result = run_evaluation(config)
        assert [e.success for e in result.episodes] == [True, True], latency
        assert result.mean_score == 1.0 and result.success_rate == 1.0
        first = result.episodes[0]
        assert first.success_step == first.steps < 300 and first.max_score > 0.95
        assert first.frames and first.frames[-1][0] == first.steps


def _reference_coverage(block_pose: np.ndarray, goal_pose: np.ndarray) -> float:
    """The goal's area covered by the T, from the poses alone (gym-pusht's T, scale 30)."""
    from shapely.affinity import rotate, translate
    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    # gym-pusht's add_tee: the bar and the stem, in the body frame (px).
    shape = unary_union(
        [
            Polygon([(-60, 30), (60, 30), (60, 0), (-60, 0)]),
            Polygon([(-15, 30), (-15, 120), (15, 120), (15, 30)]),
        ]
    )

    def placed(pose: np.ndarray):
        rotated = rotate(shape, float(pose[2]), origin=(0, 0), use_radians=True)
        return translate(rotated, float(pose[0]), float(pose[1]))

    goal = placed(goal_pose)
    return goal.intersection(placed(block_pose)).area / goal.area


def test_montage_frames_show_the_coverage_of_the_state_they_show() -> None:
    # Seed 100000 starts with the T on part of the goal: the reset frame must say so (the task
    # computes coverage in step() only, so a reset used to report 0).
    seed = 100000
    settings = RolloutSettings(max_steps=10, montage_frames=3)
    robot = PushTRobot()
    try:
        start = robot.reset(seed)
    finally:
        robot.close()
    make_task = task_factory(None, "pusht", settings.max_steps)
    runner = RolloutRunner(make_task, ExpertController(PushTTaskExpert), None, settings)
    try:
        (episode,) = runner.run([seed], montage_seeds=frozenset({seed}))
    finally:
        runner.close()
    expected = _reference_coverage(start.block_pose, start.goal_pose)
    assert expected > 0.05  # the premise: the T overlaps the goal at the reset
    assert start.coverage == pytest.approx(expected, abs=1e-6)
    steps = [step for step, _, _ in episode.frames]
    assert steps == [0, 5, 10]
    assert episode.frames[0][2] == pytest.approx(expected, abs=1e-6)
    # Later frames: the coverage recorded for the step they show.
    for step, _, coverage in episode.frames[1:]:
        assert coverage == episode.score_trace[step - 1]
    assert len(episode.score_trace) == episode.steps == 10
    assert max(episode.score_trace) == episode.max_score


def test_checkpoints_the_sim_cannot_serve_fail_clearly(tmp_path, capsys) -> None:
    data = copy.deepcopy(LOWDIM_SPEC.to_dict())
    data["observations"][1]["topic"] = "/mocap/block"
    spec = DataSpec.from_dict(data)
    unmappable = tiny_checkpoint(tmp_path / "mocap", spec)
    assert main(["--checkpoint", str(unmappable), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "observation stream 'block_pose' (topic /mocap/block" in error
    assert "publishes no such topic" in error

    policy = tiny_policy(LOWDIM_SPEC)
    save_checkpoint(policy, tmp_path / "no_spec")
    assert main(["--checkpoint", str(tmp_path / "no_spec"), "--no-progress"]) == 2
    assert "has no data spec" in capsys.readouterr().err


def test_a_failing_worker_stops_the_evaluation_with_its_error(image_checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        (broken / name).write_bytes((image_checkpoint / name).read_bytes())
    # The manifest (read before the workers start) is fine; the weights each worker loads are not.
    (broken / "model.safetensors").write_bytes(b"not safetensors" * 100)
    arguments = ["--checkpoint", str(broken), "--episodes", "2", "--max-steps", "4"]
    assert main([*arguments, "--workers", "2", "--no-progress", "--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "evaluation worker" in error and "not a readable safetensors file" in error
    assert not (tmp_path / "eval.json").exists()


def test_configuration_is_validated_and_the_plan_follows_the_policy_kind(tmp_path) -> None:
    with pytest.raises(ValueError, match="episodes must be a positive integer"):
        EvalConfig(checkpoint=tmp_path, episodes=0)
    with pytest.raises(ValueError, match="needs a checkpoint"):
        EvalConfig()
    with pytest.raises(ValueError, match="takes no checkpoint"):
        EvalConfig(policy="expert", checkpoint=tmp_path)
    with pytest.raises(ValueError, match="latency_steps"):
        EvalConfig(checkpoint=tmp_path, latency_steps=-1)
    plan = plan_execution(EvalConfig(checkpoint=tmp_path, device="cpu"), cpu_count=2)
    assert (plan.workers, plan.batch_size, plan.threads) == (2, 25, 1)
    assert plan.shares(list(range(5))) == [[0, 1, 2], [3, 4]]
    plan = plan_execution(EvalConfig(policy="expert", episodes=3), cpu_count=16)
    assert (plan.workers, plan.batch_size, plan.threads) == (3, 1, 5)
    plan = plan_execution(EvalConfig(checkpoint=tmp_path, device="cpu", workers=1), cpu_count=2)
    assert (plan.workers, plan.batch_size, plan.threads) == (1, 50, 2)


def test_action_horizon_override_sets_how_much_of_each_plan_runs(pusht_task) -> None:
    # Tp 8, To 2: seven set points of a plan are executable; the node replans before its Ta.
    policy = tiny_policy(LOWDIM_SPEC)
    binding = TaskBinding(LOWDIM_SPEC, pusht_task)
    observations = {
        "agent_pos": np.zeros((1, 2, 2), dtype=np.float32),
        "block_pose": np.zeros((1, 2, 4), dtype=np.float32),
    }
    for action_horizon, expected in ((None, 4), (2, 2), (7, 7)):
        controller = DiffusionController(
            policy, binding, num_inference_steps=2, action_horizon=action_horizon
        )
        controller.reset(0, 100000)
        messages = pusht_task.messages()
        assert controller.plan([0], observations, [messages]).shape == (1, expected, 2)
    for wrong in (0, 8):
        with pytest.raises(ValueError, match="action_horizon must be in"):
            DiffusionController(policy, binding, action_horizon=wrong)
    with pytest.raises(ValueError, match="action_horizon"):
        EvalConfig(checkpoint=Path("x"), action_horizon=0)
