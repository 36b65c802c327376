"""Multi-process training with torch DDP, launched by torchrun: two CPU processes on gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

import dp_policy
from dp_testing import demonstration_bags as bf


def test_torchrun_two_processes_train_and_only_rank_zero_writes(tmp_path) -> None:
    for index in range(4):
        bf.write_pusht_bag(
            tmp_path / "bags" / f"episode_{index}", [bf.EpisodePlan(16)], first_frame=50 * index
        )
    spec = {
        "dt": 0.1,
        "reference": "agent_pos",
        "observations": [bf.PUSHT_SPEC["observations"][1]],
        "action": bf.PUSHT_SPEC["action"],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    config = {
        "output_dir": str(tmp_path / "run"),
        "data": {"spec": "spec.yaml", "cache_dir": str(tmp_path / "cache"), "val_ratio": 0.25},
        "policy": {
            "horizon": {"observation_horizon": 2, "prediction_horizon": 8, "action_horizon": 4},
            "unet": {
                "down_dims": [8, 16],
                "kernel_size": 3,
                "n_groups": 4,
                "diffusion_step_embed_dim": 8,
            },
        },
        "optimizer": {"warmup_steps": 1},
        "training": {
            "batch_size": 4,
            "max_steps": 3,
            "num_epochs": None,
            "device": "cpu",
            "log_every_steps": 1,
            "val_every_steps": 3,
            "progress_bar": False,
        },
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    package_root = str(Path(dp_policy.__file__).resolve().parents[1])
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [package_root, *filter(None, [environment.get("PYTHONPATH")])]
    )
    environment["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "dp_policy.train",
        "--config",
        str(tmp_path / "train.yaml"),
        "--bags",
        str(tmp_path / "bags"),
    ]
    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("trained 3 steps") == 1  # rank 0 reports, rank 1 is quiet
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]  # written once, not twice
    assert [r["step"] for r in records if "val_loss" in r] == [3]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    state = json.loads(
        (run / "checkpoints" / "latest" / "training_state" / "state.json").read_text()
    )
    assert state["world_size"] == 2 and state["progress"]["step"] == 3
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()
