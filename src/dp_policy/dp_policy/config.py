"""Policy configuration: dataclasses validated at construction, serialisable to plain JSON dicts.

Every impossible combination is refused with a ``ValueError`` when the object is built, so a
config that exists is one a policy can be built from. ``to_dict``/``from_dict`` round-trip through
plain JSON types (lists instead of tuples); ``from_dict`` rejects unknown keys so a typo in a
config file is an error instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

BACKBONES = ("unet", "transformer")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

# Keys become module and buffer names inside the policy's state dict; a "." would split them.
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-/]+$")
_RESERVED_KEYS = ("action",)

T = TypeVar("T")


def _check_keys(cls: type, data: dict[str, Any]) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown key(s) {unknown}; known keys are {sorted(known)}"
        )


def _require_positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


def _validate_key(owner: str, key: Any) -> None:
    if not isinstance(key, str) or not _KEY_PATTERN.match(key):
        raise ValueError(
            f"{owner}: observation key {key!r} must be a non-empty string of letters, digits, "
            "'_', '-' or '/' (no '.')"
        )
    if key in _RESERVED_KEYS:
        raise ValueError(f"{owner}: observation key {key!r} is reserved")


class _DictMixin:
    """Plain-dict serialisation shared by the flat config dataclasses."""

    _tuple_fields: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            result[f.name] = list(value) if isinstance(value, tuple) else value
        return result

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        _check_keys(cls, data)
        kwargs = dict(data)
        for name in cls._tuple_fields:  # type: ignore[attr-defined]
            if isinstance(kwargs.get(name), list):
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)


@dataclass(frozen=True)
class ObservationSpec:
    """What the policy observes at each of the To steps.

    cameras: key -> image shape (C, H, W); images enter as float in [0, 1].
    low_dim: key -> vector size (joint positions, agent position, ...).
    Order matters: features are concatenated cameras first, then low-dim, in insertion order.
    """

    cameras: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    low_dim: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = "ObservationSpec"
        if not isinstance(self.cameras, dict) or not isinstance(self.low_dim, dict):
            raise ValueError(f"{owner}: cameras and low_dim must be dicts")
        if not self.cameras and not self.low_dim:
            raise ValueError(f"{owner}: at least one camera or low-dim observation is required")
        normalised: dict[str, tuple[int, int, int]] = {}
        for key, shape in self.cameras.items():
            _validate_key(owner, key)
            shape = tuple(shape)
            if len(shape) != 3:
                raise ValueError(f"{owner}: camera {key!r} shape must be (C, H, W), got {shape}")
            for size in shape:
                _require_positive_int(owner, f"camera {key!r} shape entry", size)
            normalised[key] = shape  # type: ignore[assignment]
        for key, size in self.low_dim.items():
            _validate_key(owner, key)
            _require_positive_int(owner, f"low-dim {key!r} size", size)
        duplicated = sorted(set(self.cameras) & set(self.low_dim))
        if duplicated:
            raise ValueError(f"{owner}: keys {duplicated} are both camera and low-dim")
        # Frozen dataclass: lists from JSON become tuples so shapes compare equal.
        object.__setattr__(self, "cameras", normalised)
        object.__setattr__(self, "low_dim", dict(self.low_dim))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.cameras) + tuple(self.low_dim)

    @property
    def low_dim_size(self) -> int:
        return sum(self.low_dim.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "cameras": {key: list(shape) for key, shape in self.cameras.items()},
            "low_dim": dict(self.low_dim),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObservationSpec:
        _check_keys(cls, data)
        return cls(**data)


@dataclass(frozen=True)
class ActionSpec(_DictMixin):
    """The action vector: ``dim`` values named ``names`` (e.g. joint names), one every ``dt`` s."""

    dim: int
    dt: float
    names: tuple[str, ...] = ()

    _tuple_fields: ClassVar[tuple[str, ...]] = ("names",)

    def __post_init__(self) -> None:
        _require_positive_int("ActionSpec", "dim", self.dim)
        if isinstance(self.dt, bool) or not isinstance(self.dt, (int, float)):
            raise ValueError(f"ActionSpec: dt must be a number of seconds, got {self.dt!r}")
        if not math.isfinite(self.dt) or self.dt <= 0:
            raise ValueError(f"ActionSpec: dt must be positive and finite, got {self.dt!r}")
        names = tuple(self.names) if self.names else tuple(f"action_{i}" for i in range(self.dim))
        if len(names) != self.dim:
            raise ValueError(f"ActionSpec: {len(names)} names given for dim {self.dim}")
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"ActionSpec: names must be unique non-empty strings, got {names}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "dt", float(self.dt))


@dataclass(frozen=True)
class HorizonConfig(_DictMixin):
    """Horizons in steps of dt.

    observation_horizon: To, observations the policy conditions on.
    prediction_horizon: Tp, actions predicted per chunk.
    action_horizon: Ta, actions executed per chunk, taken from index To-1 of the prediction.
    """

    observation_horizon: int = 2
    prediction_horizon: int = 16
    action_horizon: int = 8

    def __post_init__(self) -> None:
        for name in ("observation_horizon", "prediction_horizon", "action_horizon"):
            _require_positive_int("HorizonConfig", name, getattr(self, name))
        To, Tp, Ta = self.observation_horizon, self.prediction_horizon, self.action_horizon
        if Ta > Tp - To + 1:
            raise ValueError(
                f"HorizonConfig: action_horizon Ta={Ta} exceeds Tp - To + 1 = {Tp - To + 1} "
                f"(executed actions start at index To-1={To - 1} of a {Tp}-step prediction)"
            )


@dataclass(frozen=True)
class VisionConfig(_DictMixin):
    """ResNet-18 camera encoder with GroupNorm and spatial-softmax keypoints.

    crop_shape: (H, W) random crop in training, centre crop in eval; None disables cropping.
    pretrained_weights: local safetensors file with torchvision resnet18 weights; never downloaded.
    """

    crop_shape: tuple[int, int] | None = (84, 84)
    num_keypoints: int = 32
    feature_dim: int = 64
    share_encoder: bool = False
    pretrained_weights: str | None = None

    _tuple_fields: ClassVar[tuple[str, ...]] = ("crop_shape",)

    def __post_init__(self) -> None:
        if self.crop_shape is not None:
            crop = tuple(self.crop_shape)
            if len(crop) != 2:
                raise ValueError(f"VisionConfig: crop_shape must be (H, W), got {crop}")
            for size in crop:
                _require_positive_int("VisionConfig", "crop_shape entry", size)
            object.__setattr__(self, "crop_shape", crop)
        _require_positive_int("VisionConfig", "num_keypoints", self.num_keypoints)
        _require_positive_int("VisionConfig", "feature_dim", self.feature_dim)
        if not isinstance(self.share_encoder, bool):
            raise ValueError("VisionConfig: share_encoder must be true or false")
        if self.pretrained_weights is not None and not isinstance(self.pretrained_weights, str):
            raise ValueError("VisionConfig: pretrained_weights must be a file path or null")


@dataclass(frozen=True)
class UNetConfig(_DictMixin):
    """1-D temporal U-Net with FiLM conditioning (paper defaults)."""

    down_dims: tuple[int, ...] = (512, 1024, 2048)
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 128

    _tuple_fields: ClassVar[tuple[str, ...]] = ("down_dims",)

    def __post_init__(self) -> None:
        dims = tuple(self.down_dims)
        if not dims:
            raise ValueError("UNetConfig: down_dims must not be empty")
        for dim in dims:
            _require_positive_int("UNetConfig", "down_dims entry", dim)
        _require_positive_int("UNetConfig", "kernel_size", self.kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"UNetConfig: kernel_size must be odd, got {self.kernel_size}")
        _require_positive_int("UNetConfig", "n_groups", self.n_groups)
        for dim in dims:
            if dim % self.n_groups:
                raise ValueError(
                    f"UNetConfig: every down_dims entry must be divisible by n_groups="
                    f"{self.n_groups}, got {dims}"
                )
        _require_positive_int(
            "UNetConfig", "diffusion_step_embed_dim", self.diffusion_step_embed_dim
        )
        if self.diffusion_step_embed_dim % 2:
            raise ValueError("UNetConfig: diffusion_step_embed_dim must be even (sin and cos)")
        object.__setattr__(self, "down_dims", dims)

    @property
    def downsampling_factor(self) -> int:
        """Tp must be a multiple of this: the path halves the length len(down_dims)-1 times."""
        return 2 ** (len(self.down_dims) - 1)


@dataclass(frozen=True)
class TransformerConfig(_DictMixin):
    """Time-series diffusion transformer (paper defaults for the transformer backbone)."""

    n_layer: int = 8
    n_head: int = 4
    n_emb: int = 256
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.3
    causal_attn: bool = True
    n_cond_layers: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_emb"):
            _require_positive_int("TransformerConfig", name, getattr(self, name))
        if self.n_emb % self.n_head:
            raise ValueError(
                f"TransformerConfig: n_emb={self.n_emb} must be divisible by n_head={self.n_head}"
            )
        if self.n_emb % 2:
            raise ValueError("TransformerConfig: n_emb must be even (sinusoidal step embedding)")
        for name in ("p_drop_emb", "p_drop_attn"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"TransformerConfig: {name} must be in [0, 1), got {value!r}")
        if not isinstance(self.causal_attn, bool):
            raise ValueError("TransformerConfig: causal_attn must be true or false")
        if isinstance(self.n_cond_layers, bool) or not isinstance(self.n_cond_layers, int):
            raise ValueError("TransformerConfig: n_cond_layers must be an integer")
        if self.n_cond_layers < 0:
            raise ValueError("TransformerConfig: n_cond_layers must be >= 0")


@dataclass(frozen=True)
class NoiseScheduleConfig(_DictMixin):
    """DDPM training schedule and the default inference sampler (any diffusers scheduler)."""

    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    inference_scheduler: str = "DDIMScheduler"
    num_inference_steps: int = 10

    def __post_init__(self) -> None:
        _require_positive_int(
            "NoiseScheduleConfig", "num_train_timesteps", self.num_train_timesteps
        )
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"NoiseScheduleConfig: unknown beta_schedule {self.beta_schedule!r}; "
                f"choose one of {BETA_SCHEDULES}"
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"NoiseScheduleConfig: unknown prediction_type {self.prediction_type!r}; "
                f"choose one of {PREDICTION_TYPES}"
            )
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError("NoiseScheduleConfig: need 0 < beta_start < beta_end < 1")
        if not isinstance(self.clip_sample, bool):
            raise ValueError("NoiseScheduleConfig: clip_sample must be true or false")
        if not self.clip_sample_range > 0:
            raise ValueError("NoiseScheduleConfig: clip_sample_range must be positive")
        # Imported here: the scheduler module pulls in diffusers, which is slow to import.
        from dp_policy.schedulers import check_scheduler_name

        check_scheduler_name(self.inference_scheduler)
        _require_positive_int(
            "NoiseScheduleConfig", "num_inference_steps", self.num_inference_steps
        )
        if self.num_inference_steps > self.num_train_timesteps:
            raise ValueError(
                f"NoiseScheduleConfig: num_inference_steps={self.num_inference_steps} exceeds "
                f"num_train_timesteps={self.num_train_timesteps}"
            )


@dataclass(frozen=True)
class EMAConfig(_DictMixin):
    """Power-warmup EMA of the weights (paper: power 0.75, max decay 0.9999)."""

    power: float = 0.75
    inv_gamma: float = 1.0
    min_decay: float = 0.0
    max_decay: float = 0.9999
    update_after_step: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_decay <= self.max_decay < 1.0:
            raise ValueError("EMAConfig: need 0 <= min_decay <= max_decay < 1")
        if not self.power > 0 or not self.inv_gamma > 0:
            raise ValueError("EMAConfig: power and inv_gamma must be positive")
        if isinstance(self.update_after_step, bool) or not isinstance(self.update_after_step, int):
            raise ValueError("EMAConfig: update_after_step must be an integer")
        if self.update_after_step < 0:
            raise ValueError("EMAConfig: update_after_step must be >= 0")


@dataclass(frozen=True)
class PolicyConfig:
    """Everything needed to build a policy: data spec, horizons, architecture, noise schedule."""

    observation: ObservationSpec
    action: ActionSpec
    horizon: HorizonConfig = field(default_factory=HorizonConfig)
    backbone: str = "unet"
    unet: UNetConfig = field(default_factory=UNetConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    noise: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)

    _sections: ClassVar[dict[str, type]] = {
        "observation": ObservationSpec,
        "action": ActionSpec,
        "horizon": HorizonConfig,
        "unet": UNetConfig,
        "transformer": TransformerConfig,
        "vision": VisionConfig,
        "noise": NoiseScheduleConfig,
        "ema": EMAConfig,
    }

    def __post_init__(self) -> None:
        for name, section_type in self._sections.items():
            if not isinstance(getattr(self, name), section_type):
                raise ValueError(f"PolicyConfig: {name} must be a {section_type.__name__}")
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"PolicyConfig: unknown backbone {self.backbone!r}; choose one of {BACKBONES}"
            )
        Tp = self.horizon.prediction_horizon
        if self.backbone == "unet" and Tp % self.unet.downsampling_factor:
            raise ValueError(
                f"PolicyConfig: the U-Net with {len(self.unet.down_dims)} levels halves the "
                f"sequence {len(self.unet.down_dims) - 1} times, so prediction_horizon Tp must "
                f"be a multiple of {self.unet.downsampling_factor}; got Tp={Tp}"
            )
        self._validate_cameras()

    def _validate_cameras(self) -> None:
        cameras = self.observation.cameras
        crop = self.vision.crop_shape
        if crop is not None:
            for key, (_, height, width) in cameras.items():
                if crop[0] > height or crop[1] > width:
                    raise ValueError(
                        f"PolicyConfig: crop_shape {crop} is larger than camera {key!r} image "
                        f"{height}x{width}"
                    )
        if self.vision.share_encoder and len({shape[0] for shape in cameras.values()}) > 1:
            raise ValueError(
                "PolicyConfig: a shared camera encoder needs the same channel count on every camera"
            )

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"backbone": self.backbone}
        for name in self._sections:
            result[name] = getattr(self, name).to_dict()
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        _check_keys(cls, data)
        for required in ("observation", "action"):
            if required not in data:
                raise ValueError(f"PolicyConfig: missing required key {required!r}")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            section_type = cls._sections.get(name)
            kwargs[name] = section_type.from_dict(value) if section_type else value  # type: ignore[attr-defined]
        return cls(**kwargs)
