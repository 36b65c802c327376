"""Configuration: paper defaults, JSON round trip, and refusal of impossible combinations."""

from __future__ import annotations

import json

import pytest
from dp_policy_test_factories import tiny_config

from dp_policy import (
    ActionSpec,
    HorizonConfig,
    NoiseScheduleConfig,
    ObservationSpec,
    PolicyConfig,
    TransformerConfig,
    UNetConfig,
    VisionConfig,
)


def paper_image_config() -> PolicyConfig:
    return PolicyConfig(
        observation=ObservationSpec(cameras={"image": (3, 96, 96)}, low_dim={"agent_pos": 2}),
        action=ActionSpec(dim=2, dt=0.1),
    )


def test_defaults_follow_the_paper_image_configuration():
    config = paper_image_config()
    assert (config.horizon.observation_horizon, config.horizon.prediction_horizon) == (2, 16)
    assert config.horizon.action_horizon == 8
    assert config.backbone == "unet"
    assert config.unet.down_dims == (512, 1024, 2048)
    assert (config.unet.kernel_size, config.unet.n_groups) == (5, 8)
    assert config.unet.diffusion_step_embed_dim == 128
    noise = config.noise
    assert (noise.num_train_timesteps, noise.beta_schedule) == (100, "squaredcos_cap_v2")
    assert (noise.prediction_type, noise.clip_sample) == ("epsilon", True)
    assert (noise.inference_scheduler, noise.num_inference_steps) == ("DDIMScheduler", 10)
    assert config.vision.crop_shape == (84, 84)
    assert config.action.names == ("action_0", "action_1")


@pytest.mark.parametrize("config", [paper_image_config(), tiny_config("transformer", False)])
def test_round_trip_through_json(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert PolicyConfig.from_dict(data) == config


@pytest.mark.parametrize(
    "path",
    [(), ("unet",), ("observation",), ("noise",), ("horizon",), ("action",), ("vision",)],
)
def test_unknown_keys_are_rejected(path):
    data = paper_image_config().to_dict()
    section = data
    for name in path:
        section = section[name]
    section["colour"] = 1
    with pytest.raises(ValueError, match=r"unknown key.*colour"):
        PolicyConfig.from_dict(data)


def test_missing_required_section_is_rejected():
    data = paper_image_config().to_dict()
    del data["action"]
    with pytest.raises(ValueError, match="missing required key 'action'"):
        PolicyConfig.from_dict(data)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: tiny_config(
                horizon=HorizonConfig(2, 10, 4), unet=UNetConfig(down_dims=(8, 16, 32), n_groups=4)
            ),
            "multiple of 4",
        ),
        (
            lambda: HorizonConfig(observation_horizon=2, prediction_horizon=16, action_horizon=16),
            "exceeds Tp - To \\+ 1",
        ),
        (lambda: tiny_config(backbone="lstm"), "unknown backbone"),
        (
            lambda: NoiseScheduleConfig(inference_scheduler="FancyScheduler"),
            "unknown inference scheduler",
        ),
        (
            lambda: NoiseScheduleConfig(inference_scheduler="UNet2DModel"),
            "unknown inference scheduler",
        ),
        (lambda: NoiseScheduleConfig(beta_schedule="cosine"), "unknown beta_schedule"),
        (lambda: NoiseScheduleConfig(prediction_type="noise"), "unknown prediction_type"),
        (lambda: NoiseScheduleConfig(num_inference_steps=101), "exceeds num_train_timesteps"),
        (lambda: tiny_config(vision=VisionConfig(crop_shape=(40, 40))), "larger than camera"),
        (lambda: UNetConfig(kernel_size=4), "odd"),
        (lambda: UNetConfig(down_dims=(12, 24), n_groups=8), "divisible by n_groups"),
        (lambda: TransformerConfig(n_emb=30, n_head=4), "divisible by n_head"),
        (lambda: ObservationSpec(), "at least one"),
        (lambda: ObservationSpec(cameras={"image": (3, 96)}), r"\(C, H, W\)"),
        (lambda: ObservationSpec(low_dim={"arm.joints": 7}), "no '.'"),
        (lambda: ObservationSpec(cameras={"a": (3, 8, 8)}, low_dim={"a": 2}), "both camera"),
        (lambda: ObservationSpec(low_dim={"action": 2}), "reserved"),
        (lambda: ActionSpec(dim=2, dt=0.1, names=("a",)), "1 names given for dim 2"),
        (lambda: ActionSpec(dim=2, dt=0.0), "dt must be positive"),
        (lambda: ActionSpec(dim=0, dt=0.1), "positive integer"),
        (
            lambda: tiny_config(
                observation=ObservationSpec(cameras={"a": (3, 32, 32), "b": (1, 32, 32)}),
                vision=VisionConfig(crop_shape=(24, 24), share_encoder=True),
            ),
            "same channel count",
        ),
    ],
)
def test_impossible_combinations_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_unet_horizon_check_accepts_divisible_horizons():
    config = tiny_config(
        horizon=HorizonConfig(2, 12, 4), unet=UNetConfig(down_dims=(8, 16, 32), n_groups=4)
    )
    assert config.horizon.prediction_horizon == 12
    # The transformer has no such constraint.
    assert tiny_config("transformer", horizon=HorizonConfig(2, 10, 4)).backbone == "transformer"
