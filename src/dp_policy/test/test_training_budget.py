"""Training for a wall-clock budget: durations, the budget's LR schedule, the run's end."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
import yaml

from dp_policy import read_checkpoint_manifest
from dp_policy.train import main
from dp_policy.training.budget import TrainingBudget, budget_lr_lambda, parse_duration
from dp_policy.training.config import ConfigError, OptimizerConfig, build_config
from dp_policy.training.loop import UNLIMITED_STEPS, make_scheduler
from dp_testing import demonstration_bags as bf

LOWDIM_SPEC = {
    "dt": 0.1,
    "reference": "agent_pos",
    "observations": [
        bf.PUSHT_SPEC["observations"][1],
        {
            "key": "block_pose",
            "topic": bf.BLOCK_TOPIC,
            "kind": "fields",
            "message_type": "geometry_msgs/msg/PoseStamped",
            "fields": ["pose.position.x", "pose.orientation:yaw_sincos"],
        },
    ],
    "action": bf.PUSHT_SPEC["action"],
}


@pytest.fixture(scope="module")
def demonstrations(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demonstrations")
    for index in range(4):
        bf.write_pusht_bag(
            root / f"episode_{index}",
            [bf.EpisodePlan(20 + index)],
            image_size=(16, 16),
            first_frame=100 * index,
            seed=index,
        )
    return root


def write_config(path: Path, output: Path) -> Path:
    (path.parent / "spec.yaml").write_text(yaml.safe_dump(LOWDIM_SPEC))
    config = {
        "output_dir": str(output),
        "data": {"spec": "spec.yaml", "cache_dir": str(path.parent / "cache"), "val_ratio": 0.25},
        "policy": {
            "horizon": {"observation_horizon": 2, "prediction_horizon": 8, "action_horizon": 4},
            "unet": {
                "down_dims": [16, 32],
                "kernel_size": 3,
                "n_groups": 4,
                "diffusion_step_embed_dim": 16,
            },
        },
        "optimizer": {"warmup_steps": 2},
        "training": {
            "batch_size": 8,
            "max_steps": 4,
            "num_epochs": None,
            "log_every_steps": 5,
            "progress_bar": False,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400), ("90s", 90), (45, 45)],
)
def test_durations_read_as_users_write_them(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "30x", "0", "-5m", True, None])
def test_bad_durations_are_refused(text) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_lr_follows_the_budget_not_the_steps() -> None:
    clock = FakeClock()
    budget = TrainingBudget(100.0, start=clock.now, clock=clock)
    clock.now += 20.0  # dataset building
    budget.start_loop()
    factor = budget_lr_lambda(10, "cosine", budget.fraction)
    assert factor(5) == pytest.approx(0.5)  # warm-up is in steps
    assert factor(50) == pytest.approx(1.0)  # no time used yet
    clock.now += 40.0  # half of the loop's 80 s
    assert factor(50) == pytest.approx(0.5)
    assert factor(5000) == pytest.approx(0.5)  # steps do not matter, time does
    clock.now += 40.0
    assert factor(60) == pytest.approx(0.0, abs=1e-12)
    assert budget.exhausted()
    # Resumed with 30 s used before: 70 s remain.
    resumed = TrainingBudget(100.0, start=clock.now, used_before=30.0, clock=clock)
    assert resumed.remaining() == pytest.approx(70.0)


def test_with_steps_and_budget_the_first_limit_ends_the_cosine() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    config = OptimizerConfig(warmup_steps=0)
    used = {"fraction": 0.1}
    scheduler = make_scheduler(optimizer, config, 10, lambda: used["fraction"])
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    # Half the steps, a tenth of the time: the steps lead.
    assert scheduler.get_last_lr()[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    used["fraction"] = 0.9
    optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    # The state stays JSON-safe (training_state is JSON, no pickle).
    json.dumps({k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"})
    assert all(entry is None for entry in scheduler.state_dict()["lr_lambdas"])
    unlimited = make_scheduler(optimizer, config, UNLIMITED_STEPS, lambda: 0.0)
    assert unlimited.get_last_lr()[0] == pytest.approx(1.0)


def test_max_time_is_checked_and_alone_is_enough(tmp_path) -> None:
    config = write_config(tmp_path / "train.yaml", tmp_path / "run")
    built = build_config(config, ["training.max_steps=null", "training.max_time=1h30m"])
    assert built.training.max_time_s == 5400
    with pytest.raises(ConfigError, match=r"training\.max_time"):
        build_config(config, ["training.max_time=soon"])
    with pytest.raises(ConfigError, match="max_time"):
        build_config(config, ["training.max_steps=null"])


def test_a_budget_run_stops_in_time_with_its_last_checkpoint(tmp_path, demonstrations) -> None:
    """--budget 12s: no step limit, timed checkpoints, the end validated and saved in time."""
    config = write_config(tmp_path / "train.yaml", tmp_path / "run")
    started = time.monotonic()
    code = main(
        [
            "--config",
            str(config),
            "--bags",
            str(demonstrations),
            "--budget",
            "12s",
            "training.checkpoint_every_time=4s",
            "training.keep_checkpoints=20",
            "training.val_every_steps=50",
        ]
    )
    took = time.monotonic() - started
    assert code == 0
    assert took < 12.0 + 3.0  # the budget, plus what a final validation may overrun
    run = tmp_path / "run"
    steps = sorted(p for p in (run / "checkpoints").glob("step_*"))
    assert len(steps) >= 3  # two or more timed ones and the last
    clocks = [
        read_checkpoint_manifest(p)["extra_metadata"]["training"]["wall_clock_s"] for p in steps
    ]
    assert clocks == sorted(clocks) and 8.0 < clocks[-1] <= 12.5
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs[-1] < 0.2 * max(lrs)  # the cosine ran out with the budget
