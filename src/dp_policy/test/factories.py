"""Tiny policies shared by the tests: everything here must stay fast on 2 CPU cores."""

from __future__ import annotations

import torch

from dp_policy import (
    ActionSpec,
    DiffusionPolicy,
    HorizonConfig,
    ObservationSpec,
    PolicyConfig,
    TransformerConfig,
    UNetConfig,
    VisionConfig,
)

IMAGE_SHAPE = (3, 32, 32)
CROP = (24, 24)


def tiny_config(backbone: str = "unet", cameras: bool = True, **overrides) -> PolicyConfig:
    """A policy small enough to build and run in milliseconds (the ResNet-18 trunk dominates)."""
    observation = ObservationSpec(
        cameras={"front": IMAGE_SHAPE} if cameras else {},
        low_dim={"joints": 3},
    )
    settings = dict(
        observation=observation,
        action=ActionSpec(dim=2, dt=0.1, names=("x", "y")),
        horizon=HorizonConfig(observation_horizon=2, prediction_horizon=8, action_horizon=4),
        backbone=backbone,
        unet=UNetConfig(down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16),
        transformer=TransformerConfig(n_layer=1, n_head=2, n_emb=16, p_drop_attn=0.0),
        vision=VisionConfig(crop_shape=CROP, num_keypoints=4, feature_dim=8),
    )
    settings.update(overrides)
    return PolicyConfig(**settings)


def make_observations(config: PolicyConfig, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random raw observations ``{key: (B, To, ...)}``: images in [0, 1], low-dim in units."""
    generator = torch.Generator().manual_seed(seed)
    To = config.horizon.observation_horizon
    observations = {
        key: torch.rand((batch, To, *shape), generator=generator)
        for key, shape in config.observation.cameras.items()
    }
    for key, size in config.observation.low_dim.items():
        observations[key] = 10.0 * torch.randn((batch, To, size), generator=generator)
    return observations


def make_batch(config: PolicyConfig, batch: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed + 1000)
    Tp, Da = config.horizon.prediction_horizon, config.action.dim
    return {
        "obs": make_observations(config, batch, seed),
        "action": 5.0 * torch.randn((batch, Tp, Da), generator=generator),
    }


def fitted_policy(config: PolicyConfig, seed: int = 0) -> DiffusionPolicy:
    torch.manual_seed(seed)
    policy = DiffusionPolicy(config)
    data = make_batch(config, 64, seed)
    policy.fit_normalizer(
        data["action"], {key: data["obs"][key] for key in config.observation.low_dim}
    )
    return policy
