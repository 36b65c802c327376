"""The end-to-end demo in a tiny configuration: every stage runs for real (sim, expert,
recorder, training, inference node, offline eval) and leaves the artefacts it should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMMAND_TOPIC = "/joint_trajectory_controller/joint_trajectory"
TINY = [
    "--episodes", "2",
    "--record-rtf", "10",
    "--train-steps", "5",
    "--serve-episodes", "1",
    "--serve-max-steps", "30",
    "--eval-episodes", "1",
    # Five training steps predict noise: let the node's step limit pass it so that the sim
    # visibly executes the chunks.
    "--max-step-fraction", "1.0",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, ros_environment: dict[str, str]) -> Path:
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "scripts.demo", *TINY, "--out", str(run_dir)],
        cwd=ROOT,
        env=ros_environment,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return run_dir


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.ros
def test_recorded_bags_have_the_topics_and_outcomes(tiny_run: Path) -> None:
    recorded = _summary(tiny_run)["record"]
    assert recorded["episodes"] == 2
    bags = sorted(p.parent for p in (tiny_run / "bags").glob("*/metadata.yaml"))
    assert len(bags) == 2
    by_bag = {Path(e["bag"]): e for e in recorded["episodes_list"]}
    for bag in bags:
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        counts = {
            t["topic_metadata"]["name"]: t["message_count"]
            for t in info["topics_with_message_count"]
        }
        for topic in ("/dp/episode", "/joint_states", "/pusht/block_pose", COMMAND_TOPIC):
            assert counts.get(topic, 0) > 0, (bag, topic, counts)
        # START first, STOP last.
        assert counts["/dp/episode"] == 2
        episode = by_bag[bag]
        # The sim's verdict reached the bag's metadata through the episode bridge.
        custom = info["custom_data"]
        assert custom["success"] == ("true" if episode["success"] else "false")
        assert custom["outcome"] == ("success" if episode["success"] else "failure")
        assert custom["task"] == "push_t"
        # Fast simulated time, yet (almost) every step is in the bag.
        assert counts["/joint_states"] >= 0.9 * episode["sim_steps"]


@pytest.mark.ros
def test_training_wrote_a_checkpoint(tiny_run: Path) -> None:
    trained = _summary(tiny_run)["train"]
    checkpoint = Path(trained["checkpoint"])
    assert (checkpoint / "model.safetensors").is_file()
    assert (checkpoint / "config.json").is_file()
    assert trained["final_train_loss"] is not None


@pytest.mark.ros
def test_the_node_drove_the_simulated_robot(tiny_run: Path) -> None:
    served = _summary(tiny_run)["serve"]
    assert served["episodes"] == 1
    episode = served["episodes_list"][0]
    assert episode["steps"] == 30
    assert episode["chunks_received"] > 0
    assert episode["pusher_travel_m"] > 0.01
    # The node's own counters over the episode (its logs throttle refusals to one a minute).
    assert episode["predictions_rejected"] >= 0 and episode["observations_dropped"] >= 0
    assert served["predictions_rejected"] == episode["predictions_rejected"]


@pytest.mark.ros
def test_offline_eval_and_summary(tiny_run: Path) -> None:
    summary = _summary(tiny_run)
    evaluated = summary["eval"]
    assert evaluated["episodes"] == 1
    assert 0.0 <= evaluated["mean_score"] <= 1.0
    assert Path(evaluated["eval_json"]).is_file()
    assert set(summary["timings_s"]) == {"record", "train", "serve", "eval", "eval_node_timing"}
    # The served seed again offline with the node's timing: one step of latency and the
    # chunk period the node showed.
    node_timing = summary["eval_node_timing"]
    assert node_timing["latency_steps"] == 1
    assert 2 <= node_timing["action_horizon"] <= 8
    (row,) = summary["online_vs_offline"]
    assert row["seed"] == 100000
    assert row["offline_max_coverage"] is not None
    assert row["offline_node_timing_max_coverage"] is not None


@pytest.mark.parametrize(
    ("argv", "config", "serve_rtf", "budget"),
    [
        ([], "train_pusht_lowdim_cpu", 1.0, "10m"),
        (["--task", "lift"], "train_lift_lowdim_cpu", 1.0, "10m"),
        # Two software-rendered cameras are slower than 20 Hz on a CPU: served in slow motion.
        (["--task", "lift", "--policy", "image"], "train_lift_image_cpu", 0.2, "30m"),
        (["--task", "can", "--policy", "image", "--device", "cuda"], "train_can_image", 1.0, "30m"),
        (["--policy", "image", "--device", "cuda"], "train_pusht_image", 1.0, "10m"),
    ],
)
def test_the_options_choose_the_recipe_and_the_serving_rate(
    argv: list[str], config: str, serve_rtf: float, budget: str
) -> None:
    sys.path.insert(0, str(ROOT))
    from scripts.demo.__main__ import parse_arguments, train_command

    args = parse_arguments(argv)
    assert args.serve_rtf == serve_rtf and args.train_budget == budget
    command = train_command(args, Path("bags"), Path("train"), Path("cache"))
    assert command[command.index("--config") + 1] == config


def test_an_arm_task_refuses_the_paper_size_low_dim_recipe(capsys) -> None:
    sys.path.insert(0, str(ROOT))
    from scripts.demo.__main__ import parse_arguments

    with pytest.raises(SystemExit):
        parse_arguments(["--task", "lift", "--full-size"])
    assert "no paper-size low-dim recipe" in capsys.readouterr().err
