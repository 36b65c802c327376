"""Checkpoints round-trip exactly and refuse anything that is not what they claim to be."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from dp_policy_test_factories import fitted_policy, make_observations, tiny_config
from safetensors.torch import load_file, save_file

from dp_policy import CheckpointError, PolicyEMA, load_checkpoint, save_checkpoint
from dp_policy.checkpoint import CONFIG_FILE, FORMAT_NAME, WEIGHTS_FILE

HEADER = {"dp_policy_format": FORMAT_NAME, "format_version": "1"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    config = tiny_config("unet", cameras=True)
    policy = fitted_policy(config)
    directory = tmp_path_factory.mktemp("checkpoint")
    save_checkpoint(policy, directory, {"task": "pusht", "epoch": 3})
    return directory


def copy_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (target / name).write_bytes((source / name).read_bytes())
    return target


@pytest.mark.parametrize("cameras", [True, False])
def test_round_trip_gives_identical_predictions(tmp_path, backbone, cameras):
    config = tiny_config(backbone, cameras)
    policy = fitted_policy(config).eval()
    ema = PolicyEMA(policy)
    ema.step(policy)
    save_checkpoint(policy, tmp_path, {"note": "test"}, ema=ema)
    loaded = load_checkpoint(tmp_path, device="cpu")
    assert loaded.config == config
    assert loaded.checkpoint_metadata == {"note": "test"}
    assert not loaded.training
    observations = make_observations(config, 2)
    expected = policy.predict_action(observations, generator=torch.Generator().manual_seed(7))
    actual = loaded.predict_action(observations, generator=torch.Generator().manual_seed(7))
    assert torch.equal(expected.action_sequence, actual.action_sequence)
    manifest = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert manifest["weights"] == "ema"
    assert (
        manifest["normalizer"]["action"]["min"] == policy.normalizer.statistics()["action"]["min"]
    )
    assert manifest["schedulers"]["training"]["beta_schedule"] == "squaredcos_cap_v2"


def test_checkpoint_files_carry_no_pickle(saved):
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        assert b"\x80\x04\x95" not in (saved / name).read_bytes()[:64]


def rewrite_weights(directory: Path, change) -> None:
    tensors = load_file(str(directory / WEIGHTS_FILE))
    change(tensors)
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata=HEADER)


def rewrite_config(directory: Path, change) -> None:
    manifest = json.loads((directory / CONFIG_FILE).read_text())
    change(manifest)
    (directory / CONFIG_FILE).write_text(json.dumps(manifest))


def _first_conv(tensors):
    return next(k for k in tensors if k.endswith("weight") and tensors[k].ndim == 3)


BAD_CASES = {
    "missing weights": (lambda d: os.remove(d / WEIGHTS_FILE), WEIGHTS_FILE, "missing"),
    "missing config": (lambda d: os.remove(d / CONFIG_FILE), CONFIG_FILE, "missing"),
    "bad json": (
        lambda d: (d / CONFIG_FILE).write_text("{not json"),
        CONFIG_FILE,
        "not valid JSON",
    ),
    "json not an object": (
        lambda d: (d / CONFIG_FILE).write_text("[1, 2]"),
        CONFIG_FILE,
        "JSON object",
    ),
    "wrong format version": (
        lambda d: rewrite_config(d, lambda m: m.update(format_version=99)),
        CONFIG_FILE,
        "unsupported format_version 99",
    ),
    "wrong format name": (
        lambda d: rewrite_config(d, lambda m: m.update(format="something.else")),
        CONFIG_FILE,
        "format is",
    ),
    "invalid policy config": (
        lambda d: rewrite_config(d, lambda m: m["policy_config"].update(backbone="lstm")),
        CONFIG_FILE,
        "unknown backbone",
    ),
    "normalizer disagrees": (
        lambda d: rewrite_config(
            d, lambda m: m["normalizer"]["action"]["min"].__setitem__(0, -1e9)
        ),
        CONFIG_FILE,
        "disagree",
    ),
    "random bytes": (
        lambda d: (d / WEIGHTS_FILE).write_bytes(os.urandom(4096)),
        WEIGHTS_FILE,
        "not a readable safetensors",
    ),
    "empty weights file": (
        lambda d: (d / WEIGHTS_FILE).write_bytes(b""),
        WEIGHTS_FILE,
        "not a readable",
    ),
    "missing tensor": (
        lambda d: rewrite_weights(d, lambda t: t.pop(_first_conv(t))),
        WEIGHTS_FILE,
        "missing tensors",
    ),
    "extra tensor": (
        lambda d: rewrite_weights(d, lambda t: t.__setitem__("intruder.weight", torch.zeros(2))),
        WEIGHTS_FILE,
        "unexpected tensors.*intruder",
    ),
    "wrong shape": (
        lambda d: rewrite_weights(d, lambda t: t.__setitem__(_first_conv(t), torch.zeros(1, 1, 1))),
        WEIGHTS_FILE,
        "wrong shape",
    ),
    "foreign safetensors": (
        lambda d: save_file({"x": torch.zeros(2)}, str(d / WEIGHTS_FILE)),
        WEIGHTS_FILE,
        "not a dp_policy weights file",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_checkpoints_are_refused_naming_the_file(saved, tmp_path, case):
    damage, file_name, message = BAD_CASES[case]
    directory = copy_checkpoint(saved, tmp_path / "copy")
    damage(directory)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(directory)
    assert str(directory / file_name) in str(error.value)


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path / "nothing")


def test_unfitted_policy_and_unserialisable_metadata_are_not_saved(tmp_path):
    config = tiny_config("unet", cameras=False)
    with pytest.raises(ValueError, match="not fitted"):
        save_checkpoint(fitted_policy(config).__class__(config), tmp_path)
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(fitted_policy(config), tmp_path, {"when": object()})


def test_package_never_unpickles():
    package = Path(__file__).resolve().parents[1] / "dp_policy"
    for source in package.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        for forbidden in ("torch.load(", "import pickle", "pickle.load"):
            assert forbidden not in text, f"{source.relative_to(package)} uses {forbidden}"
