"""The training configuration: one YAML file, overridden from the command line.

Sections (every field is optional except ``data.spec`` and a data source)::

    output_dir: runs/pusht_image        # checkpoints, TensorBoard logs, loss curve
    data:        DataConfig             # where the demonstrations are and how to split them
    policy:      the PolicyConfig sections but observation/action (those come from the spec)
    optimizer:   OptimizerConfig        # AdamW, cosine schedule with warm-up, clipping
    training:    RunConfig              # batch, length, seed, device, precision, cadence

Overrides are ``dotted.key=value`` with YAML values (``training.batch_size=32``,
``data.bags=[/data/a,/data/b]``, ``optimizer.grad_clip_norm=null``). Unknown keys are
errors. ``data.spec`` in a file is relative to that file (a config and its spec travel
together); every other path (bags, zarr, cache_dir, output_dir) is relative to the working
directory.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dp_policy.config import PolicyConfig
from dp_policy.data_spec import DataSpec, DataSpecError
from dp_policy.datasets.episodes import EpisodeSelection
from dp_policy.datasets.replay_store import ArrayMapping
from dp_policy.training.budget import parse_duration

POLICY_SECTIONS = ("backbone", "horizon", "unet", "transformer", "vision", "noise", "ema")
PRECISIONS = ("auto", "no", "bf16", "fp16")
LR_SCHEDULES = ("cosine", "constant")


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the key."""


def _check_unknown(owner: str, data: Mapping[str, Any], known: Sequence[str]) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{owner}: expected a mapping, got {data!r}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{owner}: unknown key(s) {unknown}; known keys are {sorted(known)}")


def _positive_int(owner: str, name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner}: {name} must be a positive integer, got {value!r}")


def _non_negative_number(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{owner}: {name} must be a number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{owner}: {name} must be >= 0, got {value!r}")


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@dataclass(frozen=True)
class ZarrSource:
    """A Diffusion Policy replay buffer and where each spec key is in it."""

    path: str
    keys: dict[str, ArrayMapping]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ZarrSource:
        _check_unknown("data.zarr", data, ("path", "keys"))
        if not isinstance(data.get("path"), str) or not data["path"]:
            raise ConfigError("data.zarr.path must be the path of a zarr replay buffer")
        keys = data.get("keys") or {}
        if not isinstance(keys, Mapping):
            raise ConfigError("data.zarr.keys must map spec keys to zarr arrays")
        try:
            mappings = {str(k): ArrayMapping.from_value(v) for k, v in keys.items()}
        except ValueError as error:
            raise ConfigError(f"data.zarr.keys: {error}") from error
        return cls(path=data["path"], keys=mappings)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "keys": {k: v.to_dict() for k, v in self.keys.items()}}


@dataclass(frozen=True)
class DataConfig:
    """Demonstrations: bags (built into the dataset cache) or a zarr replay buffer."""

    spec: str | dict[str, Any] = ""
    bags: tuple[str, ...] = ()
    zarr: ZarrSource | None = None
    cache_dir: str | None = None
    episode_topic: str = "/dp/episode"
    include_failed: bool = False
    include_discarded: bool = False
    include_incomplete: bool = False
    tasks: tuple[str, ...] = ()
    skip_short_episodes: bool = False
    val_ratio: float = 0.05
    max_val_episodes: int | None = None
    in_memory: bool = True

    def __post_init__(self) -> None:
        owner = "data"
        if not self.spec:
            raise ConfigError(f"{owner}.spec: a data spec (YAML file or mapping) is required")
        object.__setattr__(self, "bags", tuple(str(b) for b in self.bags))
        object.__setattr__(self, "tasks", tuple(str(t) for t in self.tasks))
        if self.bags and self.zarr is not None:
            raise ConfigError(f"{owner}: give either bags or zarr, not both")
        for name in ("include_failed", "include_discarded", "include_incomplete"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{owner}.{name} must be true or false")
        for name in ("skip_short_episodes", "in_memory"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{owner}.{name} must be true or false")
        _non_negative_number(owner, "val_ratio", self.val_ratio)
        if self.val_ratio >= 1:
            raise ConfigError(f"{owner}.val_ratio must be below 1, got {self.val_ratio}")
        _positive_int(owner, "max_val_episodes", self.max_val_episodes, allow_none=True)
        if not isinstance(self.episode_topic, str) or not self.episode_topic.startswith("/"):
            raise ConfigError(f"{owner}.episode_topic must be an absolute topic name")

    @property
    def source(self) -> str:
        return "zarr" if self.zarr is not None else "bags"

    def selection(self) -> EpisodeSelection:
        return EpisodeSelection(
            include_failed=self.include_failed,
            include_discarded=self.include_discarded,
            include_incomplete=self.include_incomplete,
            tasks=self.tasks,
        )

    def load_spec(self) -> DataSpec:
        try:
            if isinstance(self.spec, dict):
                return DataSpec.from_dict(self.spec)
            return DataSpec.from_yaml(self.spec)
        except DataSpecError as error:
            raise ConfigError(f"data.spec: {error}") from error

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataConfig:
        _check_unknown("data", data, _fields(cls))
        kwargs = dict(data)
        if kwargs.get("zarr") is not None:
            kwargs["zarr"] = ZarrSource.from_dict(kwargs["zarr"])
        for name in ("bags", "tasks"):
            value = kwargs.get(name)
            if value is None:
                kwargs[name] = ()
            elif isinstance(value, str):
                kwargs[name] = (value,)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        data = {f: getattr(self, f) for f in _fields(type(self))}
        data["bags"] = list(self.bags)
        data["tasks"] = list(self.tasks)
        data["zarr"] = self.zarr.to_dict() if self.zarr else None
        return data


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with a warm-up then cosine (or constant) learning rate; the paper's defaults."""

    lr: float = 1.0e-4
    weight_decay: float = 1.0e-6
    betas: tuple[float, float] = (0.95, 0.999)
    eps: float = 1.0e-8
    warmup_steps: int = 500
    lr_schedule: str = "cosine"
    grad_clip_norm: float | None = 1.0

    def __post_init__(self) -> None:
        owner = "optimizer"
        for name in ("lr", "weight_decay", "eps"):
            _non_negative_number(owner, name, getattr(self, name))
        if not self.lr > 0:
            raise ConfigError(f"{owner}.lr must be positive")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
            raise ConfigError(f"{owner}.betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", betas)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int):
            raise ConfigError(f"{owner}.warmup_steps must be an integer")
        if self.warmup_steps < 0:
            raise ConfigError(f"{owner}.warmup_steps must be >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"{owner}.lr_schedule must be one of {LR_SCHEDULES}")
        if self.grad_clip_norm is not None:
            _non_negative_number(owner, "grad_clip_norm", self.grad_clip_norm)
            if not self.grad_clip_norm > 0:
                raise ConfigError(f"{owner}.grad_clip_norm must be positive or null (no clipping)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OptimizerConfig:
        _check_unknown("optimizer", data, _fields(cls))
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = {f: getattr(self, f) for f in _fields(type(self))}
        data["betas"] = list(self.betas)
        return data


@dataclass(frozen=True)
class RunConfig:
    """How long and where to train, and how often to log, validate and save.

    Training stops after ``max_steps`` optimiser steps, ``num_epochs`` passes over the
    training windows or ``max_time`` of wall clock (``30m``, ``2h``, seconds; counted from the
    start of the train command, dataset building included), whichever comes first (at least
    one must be set). With ``max_time`` the learning-rate schedule follows the budget used
    (``dp_policy.training.budget``). ``checkpoint_every_time`` also writes a periodic
    checkpoint every so much wall clock (for learning curves). ``val_every_steps``
    null validates at the end of every epoch. A CPU run is repeatable bit for bit for a given
    ``seed``; ``deterministic`` asks the same of GPU kernels (cuDNN, cuBLAS), at some speed.
    """

    batch_size: int = 64
    max_steps: int | None = None
    num_epochs: int | None = 100
    seed: int = 42
    device: str = "auto"
    mixed_precision: str = "auto"
    num_workers: int = 0
    log_every_steps: int = 10
    val_every_steps: int | None = None
    checkpoint_every_steps: int = 5000
    keep_checkpoints: int = 3
    max_time: str | float | None = None
    checkpoint_every_time: str | float | None = None
    progress_bar: bool = True
    deterministic: bool = False

    def __post_init__(self) -> None:
        owner = "training"
        _positive_int(owner, "batch_size", self.batch_size)
        _positive_int(owner, "max_steps", self.max_steps, allow_none=True)
        _positive_int(owner, "num_epochs", self.num_epochs, allow_none=True)
        for name in ("max_time", "checkpoint_every_time"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_duration(value)
                except ValueError as error:
                    raise ConfigError(f"{owner}.{name}: {error}") from error
        if self.max_steps is None and self.num_epochs is None and self.max_time is None:
            raise ConfigError(f"{owner}: set max_steps, num_epochs or max_time (or several)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"{owner}.seed must be an integer >= 0")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"{owner}.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"{owner}.mixed_precision must be one of {PRECISIONS}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int):
            raise ConfigError(f"{owner}.num_workers must be an integer >= 0")
        if self.num_workers < 0:
            raise ConfigError(f"{owner}.num_workers must be >= 0")
        _positive_int(owner, "log_every_steps", self.log_every_steps)
        _positive_int(owner, "val_every_steps", self.val_every_steps, allow_none=True)
        _positive_int(owner, "checkpoint_every_steps", self.checkpoint_every_steps)
        _positive_int(owner, "keep_checkpoints", self.keep_checkpoints)
        for name in ("progress_bar", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{owner}.{name} must be true or false")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        _check_unknown("training", data, _fields(cls))
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _fields(type(self))}

    @property
    def max_time_s(self) -> float | None:
        return None if self.max_time is None else parse_duration(self.max_time)

    @property
    def checkpoint_every_s(self) -> float | None:
        value = self.checkpoint_every_time
        return None if value is None else parse_duration(value)


@dataclass(frozen=True)
class TrainConfig:
    """The whole training run; validated at construction, the spec included."""

    data: DataConfig
    output_dir: str = "runs/dp_policy"
    policy: dict[str, Any] = field(default_factory=dict)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        _check_unknown("policy", self.policy, POLICY_SECTIONS)
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ConfigError("output_dir must be a directory path")
        # Building the policy config checks the architecture against the spec's shapes now,
        # not after the dataset has been built.
        self.policy_config(self.data.load_spec())

    def policy_config(self, spec: DataSpec) -> PolicyConfig:
        """The policy's config: the spec's observation and action, this file's architecture."""
        data = {
            "observation": spec.observation_spec().to_dict(),
            "action": spec.action_spec().to_dict(),
            # A section set to null (an override "policy.vision=null") means its defaults.
            **{k: copy.deepcopy(v) for k, v in self.policy.items() if v is not None},
        }
        try:
            return PolicyConfig.from_dict(data)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"policy: {error}") from error

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        _check_unknown("the training config", data, _fields(cls))
        if "data" not in data:
            raise ConfigError("the training config needs a data section (data.spec at least)")
        return cls(
            data=DataConfig.from_dict(data["data"] or {}),
            output_dir=data.get("output_dir", "runs/dp_policy"),
            policy=dict(data.get("policy") or {}),
            optimizer=OptimizerConfig.from_dict(data.get("optimizer") or {}),
            training=RunConfig.from_dict(data.get("training") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": self.output_dir,
            "data": self.data.to_dict(),
            "policy": copy.deepcopy(self.policy),
            "optimizer": self.optimizer.to_dict(),
            "training": self.training.to_dict(),
        }


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` (value parsed as YAML) to the raw config ``data``."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    dotted, _, text = override.partition("=")
    parts = [part for part in dotted.strip().split(".") if part]
    if not parts:
        raise ConfigError(f"override {override!r} names no key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(
            f"override {override!r}: the value is not valid YAML ({error})"
        ) from error
    target = data
    for part in parts[:-1]:
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
        target = child
    target[parts[-1]] = value


def _resolve_relative(data: dict[str, Any], base: Path) -> None:
    """Make the file's data spec path relative to the file itself (configs ship with specs)."""
    data_section = data.get("data") or {}
    spec = data_section.get("spec")
    if isinstance(spec, str) and spec:
        path = Path(spec).expanduser()
        data_section["spec"] = str(path if path.is_absolute() else base / path)


def load_config_dict(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a config file, its relative paths made relative to it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the training config ({error})") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a training config is a YAML mapping")
    _resolve_relative(data, path.resolve().parent)
    return data


def build_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config of file ``path`` (or none) with ``overrides`` applied; errors name the key."""
    data = load_config_dict(path) if path is not None else {}
    for override in overrides:
        apply_override(data, override)
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as error:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{error}") from error
    except TypeError as error:
        raise ConfigError(f"{path}: {error}") from error
