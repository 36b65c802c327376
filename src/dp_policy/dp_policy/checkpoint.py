"""Checkpoints: a directory with ``model.safetensors`` and ``config.json``; never pickle.

``model.safetensors`` holds the weights to serve (the EMA weights when an EMA is passed to
``save_checkpoint``) including the normalizer buffers. ``config.json`` holds the format version,
the policy config (data spec, horizons, architecture, noise schedule), the normalizer
statistics (a readable copy, checked against the weights on load), the diffusers scheduler
configs, which weights were saved and the caller's extra metadata. Loading reads JSON and
safetensors only, so a checkpoint cannot execute code; anything that is not exactly what this
version wrote is refused with a ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dp_policy.config import PolicyConfig
from dp_policy.ema import PolicyEMA
from dp_policy.policy import DiffusionPolicy

FORMAT_NAME = "dp_policy.checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_REQUIRED_KEYS = ("format", "format_version", "policy_config", "normalizer", "weights")


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed or does not match the policy it describes."""


def _json_safe(value: Any) -> Any:
    """diffusers configs hold tuples and numpy scalars; JSON wants lists and plain numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _write_atomically(path: Path, write: Any) -> None:
    """Write via a temporary file and rename so a crash never leaves a half-written checkpoint."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def save_checkpoint(
    policy: DiffusionPolicy,
    directory: str | os.PathLike,
    extra_metadata: dict[str, Any] | None = None,
    ema: PolicyEMA | None = None,
) -> Path:
    """Write ``policy`` (or its EMA weights if ``ema`` is given) to ``directory``; returns it."""
    if not policy.normalizer.is_fitted:
        raise ValueError("cannot save a policy whose normalizer is not fitted")
    extra_metadata = dict(extra_metadata or {})
    try:
        json.dumps(extra_metadata)
    except (TypeError, ValueError) as error:
        raise ValueError(f"extra_metadata must be JSON-serialisable: {error}") from error
    served = ema.averaged_policy(policy) if ema is not None else policy
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    state = {k: v.detach().to("cpu").contiguous() for k, v in served.state_dict().items()}
    header = {"dp_policy_format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    _write_atomically(directory / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata=header))

    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "weights": "ema" if ema is not None else "raw",
        "policy_config": policy.config.to_dict(),
        "normalizer": served.normalizer.statistics(),
        "schedulers": {
            "training": _json_safe(dict(policy.training_scheduler.config)),
            "inference": _json_safe(dict(policy.inference_scheduler().config)),
        },
        "parameter_count": sum(p.numel() for p in policy.parameters()),
        "torch_version": torch.__version__,
        "extra_metadata": extra_metadata,
    }
    text = json.dumps(manifest, indent=2) + "\n"
    _write_atomically(directory / CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    return directory


def read_checkpoint_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Parse and check ``config.json`` without touching the weights."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a checkpoint directory needs {CONFIG_FILE})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    if manifest["format"] != FORMAT_NAME:
        raise CheckpointError(f"{path}: format is {manifest['format']!r}, expected {FORMAT_NAME!r}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported format_version {manifest['format_version']!r} "
            f"(this dp_policy reads version {FORMAT_VERSION})"
        )
    return manifest


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a checkpoint directory needs {WEIGHTS_FILE})")
    try:
        with safe_open(str(path), framework="pt") as file:
            header = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as error:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    if header.get("dp_policy_format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a dp_policy weights file (header {header})")
    if header.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: unsupported format_version {header.get('format_version')!r} "
            f"(this dp_policy reads version {FORMAT_VERSION})"
        )
    return tensors


def _check_weights(path: Path, tensors: dict[str, torch.Tensor], policy: DiffusionPolicy) -> None:
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = [
        f"{key} {tuple(tensors[key].shape)} != {tuple(expected[key].shape)}"
        for key in expected
        if key in tensors and tensors[key].shape != expected[key].shape
    ]
    wrong += [
        f"{key} dtype {tensors[key].dtype} != {expected[key].dtype}"
        for key in expected
        if key in tensors
        and tensors[key].dtype != expected[key].dtype
        and not (tensors[key].is_floating_point() and expected[key].is_floating_point())
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    if wrong:
        problems.append(f"wrong shape or type {wrong[:5]}{' ...' if len(wrong) > 5 else ''}")
    if problems:
        raise CheckpointError(
            f"{path}: does not match the policy in {CONFIG_FILE}: " + "; ".join(problems)
        )


def _check_normalizer(path: Path, manifest: dict[str, Any], policy: DiffusionPolicy) -> None:
    if not policy.normalizer.is_fitted:
        raise CheckpointError(f"{path}: the normalizer in the weights is not fitted")
    if manifest["normalizer"] != policy.normalizer.statistics():
        raise CheckpointError(
            f"{path}: normalizer statistics in {CONFIG_FILE} disagree with the weights"
        )


def load_checkpoint(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> DiffusionPolicy:
    """Load a checkpoint written by ``save_checkpoint``; the policy comes back in eval mode.

    ``policy.checkpoint_metadata`` holds the ``extra_metadata`` given at save time.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory")
    manifest = read_checkpoint_manifest(directory)
    config_path = directory / CONFIG_FILE
    try:
        config = PolicyConfig.from_dict(manifest["policy_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path}: invalid policy_config ({error})") from error
    weights_path = directory / WEIGHTS_FILE
    tensors = _read_weights(weights_path)
    policy = DiffusionPolicy(config)
    _check_weights(weights_path, tensors, policy)
    policy.load_state_dict(tensors, strict=True)
    _check_normalizer(config_path, manifest, policy)
    policy.checkpoint_metadata = dict(manifest.get("extra_metadata") or {})
    return policy.to(device).eval()
