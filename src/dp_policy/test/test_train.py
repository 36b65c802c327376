"""Training end to end on record-free bags: dataset, steps, checkpoints, reload, resume."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dp_policy import load_checkpoint, read_checkpoint_manifest
from dp_policy.data_spec import DataSpec, data_spec_from_checkpoint
from dp_policy.train import main, resolve_config_path
from dp_policy.training.config import ConfigError, build_config
from dp_policy.training.data import prepare_data
from dp_policy.training.distributed import DistributedContext
from dp_policy.training.loop import Trainer
from dp_testing import demonstration_bags as bf

IMAGE_SPEC = {
    **bf.PUSHT_SPEC,
    "observations": [
        {"key": "image", "topic": bf.IMAGE_TOPIC, "kind": "image", "shape": [3, 16, 16]},
        bf.PUSHT_SPEC["observations"][1],
    ],
}
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
            "fields": ["pose.position.x", "pose.position.y"],
        },
    ],
    "action": bf.PUSHT_SPEC["action"],
}
TINY_POLICY = {
    "horizon": {"observation_horizon": 2, "prediction_horizon": 8, "action_horizon": 4},
    "unet": {
        "down_dims": [16, 32],
        "kernel_size": 3,
        "n_groups": 4,
        "diffusion_step_embed_dim": 16,
    },
    "vision": {"crop_shape": [12, 12], "num_keypoints": 4, "feature_dim": 8},
}


@pytest.fixture(scope="module")
def demonstrations(tmp_path_factory) -> Path:
    """Five one-episode bags, MCAP and sqlite3, 16x16 camera."""
    root = tmp_path_factory.mktemp("demonstrations")
    for index in range(5):
        bf.write_pusht_bag(
            root / f"episode_{index}",
            [bf.EpisodePlan(14 + index)],
            storage="sqlite3" if index % 2 else "mcap",
            image_size=(16, 16),
            first_frame=100 * index,
            seed=index,
        )
    return root


def write_config(path: Path, spec: dict, cache: Path, output: Path, **training) -> Path:
    (path.parent / "spec.yaml").write_text(yaml.safe_dump(spec))
    config = {
        "output_dir": str(output),
        "data": {"spec": "spec.yaml", "cache_dir": str(cache), "val_ratio": 0.2},
        "policy": TINY_POLICY,
        "optimizer": {"warmup_steps": 2},
        "training": {
            "batch_size": 8,
            "max_steps": 4,
            "num_epochs": None,
            "log_every_steps": 2,
            "checkpoint_every_steps": 1000,
            "progress_bar": False,
            **training,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_bags_to_a_checkpoint_the_node_can_serve(tmp_path, demonstrations, capsys) -> None:
    config = write_config(
        tmp_path / "train.yaml", IMAGE_SPEC, tmp_path / "cache", tmp_path / "run", val_every_steps=2
    )
    assert main(["--config", str(config), "--bags", str(demonstrations)]) == 0
    run = tmp_path / "run"
    best, latest = run / "checkpoints" / "best", run / "checkpoints" / "latest"
    assert latest.is_symlink() and latest.resolve().name == "step_00000004"
    # The served checkpoint: EMA weights and the data spec the node reads back.
    manifest = read_checkpoint_manifest(best)
    assert manifest["weights"] == "ema"
    assert manifest["extra_metadata"]["training"]["step"] in (2, 4)
    assert data_spec_from_checkpoint(best) == DataSpec.from_dict(IMAGE_SPEC)
    policy = load_checkpoint(best)
    assert policy.config.observation.cameras == {"image": (3, 16, 16)}
    assert policy.config.action.names == tuple(bf.JOINTS)
    observations = {
        "image": torch.rand(1, 2, 3, 16, 16),
        "agent_pos": torch.tensor([[[0.1, -0.2], [0.101, -0.202]]]),
    }
    prediction = policy.predict_action(observations, generator=torch.Generator().manual_seed(0))
    assert prediction.executable.shape == (1, 4, 2)
    assert torch.isfinite(prediction.action_sequence).all()
    # The normalizer was fitted on the training actions (metres near the fixture's values).
    statistics = manifest["normalizer"]["action"]
    assert 0.0 < statistics["max"][0] < 1.0
    # Logs: metrics with validation, TensorBoard events, the loss curve.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4]
    assert all(np.isfinite(r.get("loss", 0.0)) for r in records)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    described = json.loads((run / "dataset.json").read_text())
    assert described["kind"] == "bags" and described["cache_hit"] is False
    assert len(described["val_episodes"]) == 1 and len(described["train_episodes"]) == 4
    capsys.readouterr()
    # A second run over the same bags finds the dataset in the cache.
    assert (
        main(["--config", str(config), "--bags", str(demonstrations), "--build-dataset-only"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["cache_hit"] is True


def _trainer(tmp_path: Path, demonstrations: Path, name: str, **training) -> Trainer:
    config_path = write_config(
        tmp_path / f"{name}.yaml", LOWDIM_SPEC, tmp_path / "cache", tmp_path / name, **training
    )
    config = build_config(config_path, [f"data.bags=[{demonstrations}]"])
    context = DistributedContext()
    data = prepare_data(config, context, show_progress=False)
    return Trainer(config, data, context, tmp_path / name)


def test_same_seed_gives_identical_losses_on_the_cpu(tmp_path, demonstrations) -> None:
    first = _trainer(tmp_path, demonstrations, "first", max_steps=5).run()
    second = _trainer(tmp_path, demonstrations, "second", max_steps=5).run()
    other = _trainer(tmp_path, demonstrations, "other", max_steps=5, seed=7).run()
    assert len(first.losses) == 5
    assert first.losses == second.losses
    assert first.val_losses == second.val_losses
    assert other.losses != first.losses


def test_resume_continues_at_the_same_step_optimizer_and_ema(tmp_path, demonstrations) -> None:
    straight = _trainer(tmp_path, demonstrations, "straight", max_steps=6, checkpoint_every_steps=3)
    whole = straight.run()
    checkpoint = tmp_path / "straight" / "checkpoints" / "step_00000003"
    resumed = _trainer(tmp_path, demonstrations, "resumed", max_steps=6)
    resumed.resume_from(checkpoint)
    assert resumed.progress.step == 3
    assert resumed.optimizer.state_dict()["state"][0]["step"].item() == 3
    assert resumed.ema.optimization_step == 3
    second_half = resumed.run()
    assert second_half.losses == whole.losses[3:]
    for name, value in straight.policy.state_dict().items():
        assert torch.equal(value, resumed.policy.state_dict()[name]), name
    for a, b in zip(straight.ema._ema.shadow_params, resumed.ema._ema.shadow_params, strict=True):
        assert torch.equal(a, b)
    assert resumed.scheduler.get_last_lr() == straight.scheduler.get_last_lr()


def test_cli_resume_auto_and_refusal_to_overwrite_a_run(tmp_path, demonstrations, capsys) -> None:
    config = write_config(
        tmp_path / "train.yaml", LOWDIM_SPEC, tmp_path / "cache", tmp_path / "run", max_steps=2
    )
    arguments = ["--config", str(config), "--bags", str(demonstrations)]
    assert main(arguments) == 0
    assert main([*arguments, "training.max_steps=4"]) == 2
    assert "pass --resume auto" in capsys.readouterr().err
    assert main([*arguments, "--resume", "auto", "training.max_steps=4"]) == 0
    run = tmp_path / "run" / "checkpoints"
    assert (run / "latest").resolve().name == "step_00000004"
    state = json.loads((run / "latest" / "training_state" / "state.json").read_text())
    assert state["progress"]["step"] == 4


def test_training_on_a_zarr_replay_buffer(tmp_path) -> None:
    from dp_policy.training.config import TrainConfig

    test_zarr = importlib.util.spec_from_file_location(
        "dp_policy_test_zarr_replay", Path(__file__).with_name("test_zarr_replay.py")
    )
    module = importlib.util.module_from_spec(test_zarr)
    test_zarr.loader.exec_module(module)
    module.write_pusht_replay(tmp_path / "pusht.zarr", episode_lengths=(12, 9, 10))
    config = TrainConfig.from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "data": {
                "spec": module.SPEC.to_dict(),
                "zarr": {
                    "path": str(tmp_path / "pusht.zarr"),
                    "keys": {k: v.to_dict() for k, v in module.MAPPINGS.items()},
                },
                "val_ratio": 0.3,
            },
            "policy": {
                **TINY_POLICY,
                "vision": {"crop_shape": None, "num_keypoints": 2, "feature_dim": 4},
            },
            "training": {
                "batch_size": 4,
                "max_steps": 2,
                "num_epochs": None,
                "progress_bar": False,
            },
        }
    )
    context = DistributedContext()
    data = prepare_data(config, context, show_progress=False)
    assert data.source == {"kind": "zarr", "path": str(tmp_path / "pusht.zarr")}
    result = Trainer(config, data, context, tmp_path / "run").run()
    assert result.step == 2 and len(result.losses) == 2
    policy = load_checkpoint(result.latest_checkpoint)
    assert policy.checkpoint_metadata["training"]["dataset"]["kind"] == "zarr"


def test_config_overrides_and_errors(tmp_path) -> None:
    config = write_config(
        tmp_path / "train.yaml", LOWDIM_SPEC, tmp_path / "cache", tmp_path / "run"
    )
    built = build_config(
        config, ["training.batch_size=3", "optimizer.grad_clip_norm=null", "data.bags=[a, b]"]
    )
    assert built.training.batch_size == 3 and built.optimizer.grad_clip_norm is None
    assert built.data.bags == ("a", "b")
    assert built.data.spec == str(tmp_path / "spec.yaml")  # relative to the config file
    with pytest.raises(ConfigError, match=r"training: unknown key\(s\) \['batch'\]"):
        build_config(config, ["training.batch=3"])
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        build_config(config, ["training.batch_size=0"])
    (tmp_path / "image.yaml").write_text(yaml.safe_dump(IMAGE_SPEC))
    image_spec = f"data.spec={tmp_path / 'image.yaml'}"
    # The architecture is checked against the spec's shapes before any data is touched.
    with pytest.raises(ConfigError, match=r"crop_shape .* is larger than camera 'image'"):
        build_config(config, [image_spec, "policy.vision.crop_shape=[84, 84]"])
    with pytest.raises(ConfigError, match="either bags or zarr"):
        build_config(config, ["data.bags=[a]", "data.zarr.path=x.zarr"])
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        build_config(config, ["training.batch_size"])


def test_installed_configs_are_valid(tmp_path, capsys) -> None:
    configs = ("train_pusht_image", "train_pusht_lowdim", "train_pusht_lowdim_cpu")
    for name in (*configs, "train_pusht_image_zarr"):
        path = resolve_config_path(name)
        config = build_config(path)
        spec = config.data.load_spec()
        policy = config.policy_config(spec)
        assert policy.action.names == ("pusher_x_joint", "pusher_y_joint")
        assert spec.dt == pytest.approx(0.1)
    image = build_config(resolve_config_path("train_pusht_image"))
    assert image.policy_config(image.data.load_spec()).observation.cameras == {"image": (3, 96, 96)}
    assert main(["--config", "train_pusht_image"]) == 2
    assert "no demonstrations: pass --bags" in capsys.readouterr().err
    assert main(["--config", "train_pusht_lowdim", "--print-config", "training.seed=3"]) == 0
    assert "seed: 3" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="train_pusht_image"):
        resolve_config_path("no_such_config")


ARM_ACTION = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")


@pytest.mark.parametrize(
    "name",
    [
        "train_lift_lowdim_cpu",
        "train_can_lowdim_cpu",
        "train_lift_image",
        "train_can_image",
        "train_lift_image_cpu",
        "train_can_image_cpu",
    ],
)
def test_installed_arm_configs_are_valid(name: str) -> None:
    config = build_config(resolve_config_path(name))
    spec = config.data.load_spec()
    policy = config.policy_config(spec)
    # Two controllers: the arm's seven joints, then the gripper's finger, every 0.05 s.
    assert spec.action_keys == ("arm", "gripper")
    assert policy.action.names == ARM_ACTION and spec.dt == pytest.approx(0.05)
    if "_image" in name:
        cameras = {"front_image": (3, 84, 84), "wrist_image": (3, 84, 84)}
        assert policy.observation.cameras == cameras


def test_bad_input_exits_with_a_message_and_writes_nothing(tmp_path, capsys) -> None:
    bags = tmp_path / "bags"
    bf.write_pusht_bag(bags / "a", topics=(bf.IMAGE_TOPIC, bf.JOINT_TOPIC, bf.COMMAND_TOPIC))
    config = write_config(
        tmp_path / "train.yaml", LOWDIM_SPEC, tmp_path / "cache", tmp_path / "run"
    )
    assert main(["--config", str(config), "--bags", str(bags)]) == 2
    assert (
        "topic /pusht/block_pose of stream 'block_pose' is not in the bag"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_episode_too_short_for_the_horizons_stops_before_training(tmp_path, capsys) -> None:
    bags = tmp_path / "bags"
    bf.write_pusht_bag(bags / "long", [bf.EpisodePlan(20)])
    bf.write_pusht_bag(bags / "short", [bf.EpisodePlan(5)], first_frame=50)
    config = write_config(
        tmp_path / "train.yaml", LOWDIM_SPEC, tmp_path / "cache", tmp_path / "run"
    )
    arguments = ["--config", str(config), "--bags", str(bags), "data.val_ratio=0"]
    # Tp=8, To=2, Ta=4: an episode needs 8 - 1 - 3 = 4 frames; make it need 12.
    assert main([*arguments, "policy.horizon.prediction_horizon=16"]) == 2
    assert "shorter than one training sample" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
