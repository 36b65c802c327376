"""The training state beside a checkpoint, for resuming: safetensors and JSON, never pickle.

``training_state/`` in a periodic checkpoint holds what the served weights (EMA) do not:

- ``tensors.safetensors``: the raw (non-averaged) weights ``model.*``, the EMA's averaged
  parameters ``ema.<i>``, the optimiser's per-parameter state ``optimizer.<param>.<name>``
  (AdamW's ``exp_avg``, ``exp_avg_sq``, ``step``) and each rank's RNG states ``rng.*``;
- ``state.json``: step, epoch, position in the epoch, best validation loss, the optimiser's
  parameter groups and other plain values, the LR scheduler's state, the EMA's counters.

Loading restores them all, so a resumed CPU run continues bit for bit where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dp_policy.ema import PolicyEMA

STATE_DIR = "training_state"
TENSORS_FILE = "tensors.safetensors"
JSON_FILE = "state.json"
STATE_FORMAT = "dp_policy.training_state"
STATE_VERSION = 1


class TrainingStateError(ValueError):
    """A training state that is missing, malformed or does not fit the run resuming it."""


@dataclass
class Progress:
    """Where training is: optimiser steps done, epoch, batches done in that epoch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val_loss: float | None = None
    total_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _ema_model(ema: PolicyEMA) -> Any:
    # PolicyEMA exposes no state_dict of its own; diffusers' EMAModel inside it has one.
    return ema._ema


def rng_state(device: torch.device) -> torch.Tensor:
    """This process's torch RNG state(s) as one uint8 tensor (CPU, then CUDA if used)."""
    parts = [torch.get_rng_state()]
    if device.type == "cuda":
        parts.append(torch.cuda.get_rng_state(device))
    return torch.cat([part.to(torch.uint8).reshape(-1) for part in parts])


def set_rng_state(state: torch.Tensor, device: torch.device) -> None:
    cpu_size = torch.get_rng_state().numel()
    torch.set_rng_state(state[:cpu_size].clone())
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[cpu_size:].clone(), device)


def save_training_state(
    directory: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: PolicyEMA,
    progress: Progress,
    rng_states: Sequence[torch.Tensor],
) -> Path:
    """Write ``directory/training_state``; ``rng_states`` holds one tensor per rank."""
    target = Path(directory) / STATE_DIR
    target.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        tensors[f"model.{name}"] = value.detach()
    ema_state = dict(_ema_model(ema).state_dict())
    shadow = ema_state.pop("shadow_params")
    for index, value in enumerate(shadow):
        tensors[f"ema.{index}"] = value.detach()
    optimizer_state = optimizer.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for parameter, values in optimizer_state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{parameter}.{name}"] = value.detach()
            else:
                plain_state.setdefault(str(parameter), {})[name] = value
    for rank, state in enumerate(rng_states):
        tensors[f"rng.{rank}"] = state
    tensors = {k: v.to("cpu").contiguous() for k, v in tensors.items()}
    save_file(tensors, str(target / TENSORS_FILE), metadata={"format": STATE_FORMAT})
    document = {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "progress": asdict(progress),
        "optimizer": {"param_groups": optimizer_state["param_groups"], "state": plain_state},
        "scheduler": _json_safe(scheduler.state_dict()),
        "ema": _json_safe(ema_state),
        "ema_parameters": len(shadow),
        "world_size": len(rng_states),
    }
    (target / JSON_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return target


def has_training_state(directory: str | os.PathLike) -> bool:
    return (Path(directory) / STATE_DIR / JSON_FILE).is_file()


def load_training_state(
    directory: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: PolicyEMA,
    device: torch.device,
) -> tuple[Progress, list[torch.Tensor]]:
    """Restore everything ``save_training_state`` wrote; returns progress and RNG states."""
    source = Path(directory) / STATE_DIR
    json_path = source / JSON_FILE
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
        if (
            document.get("format") != STATE_FORMAT
            or document.get("format_version") != STATE_VERSION
        ):
            raise TrainingStateError(f"{json_path}: not a version {STATE_VERSION} training state")
        with safe_open(str(source / TENSORS_FILE), framework="pt") as file:
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    except (OSError, json.JSONDecodeError) as error:
        raise TrainingStateError(f"{source}: cannot read the training state ({error})") from error
    except TrainingStateError:
        raise
    except Exception as error:  # safetensors raises several types for corrupt files
        raise TrainingStateError(f"{source}: corrupt training state ({error})") from error

    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise TrainingStateError(
            f"{source}: the saved weights do not fit this policy's architecture ({error})"
        ) from error

    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, parameter, name = key.split(".", 2)
            state.setdefault(int(parameter), {})[name] = value
    for parameter, values in document["optimizer"]["state"].items():
        state.setdefault(int(parameter), {}).update(values)
    optimizer.load_state_dict(
        {"state": state, "param_groups": document["optimizer"]["param_groups"]}
    )
    scheduler.load_state_dict(document["scheduler"])

    shadow = [tensors[f"ema.{i}"].to(device) for i in range(document["ema_parameters"])]
    ema_values = dict(document["ema"])
    for name in ("decay", "min_decay"):
        if name in ema_values:  # JSON writes 0.0 as 0; EMAModel insists on floats
            ema_values[name] = float(ema_values[name])
    _ema_model(ema).load_state_dict({**ema_values, "shadow_params": shadow})

    rng = [tensors[f"rng.{rank}"] for rank in range(document["world_size"])]
    return Progress(**document["progress"]), rng


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return None  # callables (LambdaLR's lr_lambdas) are rebuilt from the config
