"""Shapes and behaviour of the encoder and the two noise-prediction networks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from dp_policy_test_factories import fitted_policy, make_batch, make_observations, tiny_config
from safetensors.torch import save_file
from torch import nn

from dp_policy import DiffusionPolicy, UNetConfig, VisionConfig
from dp_policy.transformer import DiffusionTransformer
from dp_policy.unet import ConditionalUnet1D
from dp_policy.vision import CameraEncoder, SpatialSoftmax, crop_images


@pytest.mark.parametrize("cameras", [True, False])
def test_prediction_and_loss_shapes(backbone, cameras):
    config = tiny_config(backbone, cameras)
    policy = fitted_policy(config)
    observations = make_observations(config, batch=3)
    To, Tp, Ta = 2, 8, 4

    prediction = policy.predict_action(observations, num_inference_steps=3)
    assert prediction.action_sequence.shape == (3, Tp, 2)
    assert prediction.executable.shape == (3, Ta, 2)
    assert torch.equal(prediction.executable, prediction.action_sequence[:, To - 1 : To - 1 + Ta])

    several = policy.predict_action(observations, num_inference_steps=2, num_samples=5)
    assert several.action_sequence.shape == (3, 5, Tp, 2)
    assert several.executable.shape == (3, 5, Ta, 2)

    loss = policy.compute_loss(make_batch(config, batch=4))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in policy.noise_net.parameters())


def test_encoder_has_no_batchnorm_and_uses_groups_of_16_channels():
    encoder = CameraEncoder(3, VisionConfig())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in encoder.modules())
    norms = [m for m in encoder.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 20
    assert all(m.num_groups == m.num_channels // 16 for m in norms)
    assert not any(
        isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) for m in encoder.modules()
    )


def test_spatial_softmax_keypoints_lie_in_unit_square():
    layer = SpatialSoftmax(in_channels=8, num_keypoints=5)
    features = 50.0 * torch.randn(4, 8, 3, 7)
    keypoints = layer(features)
    assert keypoints.shape == (4, 5, 2)
    assert keypoints.abs().max() <= 1.0
    # A single hot pixel pulls its keypoint onto that pixel's coordinates.
    with torch.no_grad():
        layer.keypoint_maps.weight.zero_()
        layer.keypoint_maps.weight[:, 0] = 1.0
        layer.keypoint_maps.bias.zero_()
    hot = torch.zeros(1, 8, 3, 7)
    hot[0, 0, 2, 6] = 100.0
    assert torch.allclose(layer(hot)[0, 0], torch.tensor([1.0, 1.0]))


def test_random_crop_in_training_and_centre_crop_in_eval():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    centre = crop_images(images, (4, 4), random=False)
    assert torch.equal(centre, images[:, :, 1:5, 1:5])
    torch.manual_seed(0)
    crops = torch.stack([crop_images(images, (4, 4), random=True) for _ in range(20)])
    assert crops.shape == (20, 2, 1, 4, 4)
    top_left = crops[:, :, 0, 0, 0]
    assert len(set(top_left[:, 0].tolist())) > 1  # windows move between calls ...
    assert not torch.equal(top_left[:, 0] - images[0, 0, 0, 0], top_left[:, 1] - images[1, 0, 0, 0])
    for crop in crops.reshape(-1, 1, 4, 4):  # ... and every crop is a contiguous window
        assert torch.equal(crop[0, :, 1:] - crop[0, :, :-1], torch.ones(4, 3))


def test_pretrained_weights_come_from_a_local_safetensors_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    encoder = CameraEncoder(3, VisionConfig(pretrained_weights=str(path)))
    assert torch.equal(encoder.trunk[0].weight, reference.conv1.weight)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors"):
        CameraEncoder(3, VisionConfig(pretrained_weights=str(tmp_path / "nowhere.safetensors")))


def test_shared_encoder_serves_every_camera():
    config = tiny_config(
        observation=tiny_config().observation.__class__(
            cameras={"left": (3, 32, 32), "right": (3, 32, 32)}, low_dim={"joints": 3}
        ),
        vision=VisionConfig(
            crop_shape=(24, 24), num_keypoints=4, feature_dim=8, share_encoder=True
        ),
    )
    policy = DiffusionPolicy(config)
    assert list(policy.obs_encoder.encoders) == ["shared"]
    assert policy.obs_encoder.feature_dim == 2 * 8 + 3


def test_film_conditioning_changes_the_output():
    torch.manual_seed(0)
    unet = ConditionalUnet1D(
        action_dim=2,
        global_cond_dim=6,
        config=UNetConfig(
            down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=8
        ),
    ).eval()
    sample = torch.randn(1, 8, 2)
    cond_a, cond_b = torch.randn(1, 6), torch.randn(1, 6)
    with torch.no_grad():
        out_a = unet(sample, 10, cond_a)
        out_b = unet(sample, 10, cond_b)
        assert out_a.shape == (1, 8, 2)
        assert (out_a - out_b).abs().max() > 1e-4
        assert (unet(sample, 90, cond_a) - out_a).abs().max() > 1e-4  # the step matters too

        for module in unet.modules():
            if hasattr(module, "film"):
                module.film[1].weight.zero_()
                module.film[1].bias.zero_()
        zeroed_a = unet(sample, 10, cond_a)
        assert (zeroed_a - out_a).abs().max() > 1e-4  # FiLM carries weight
        assert torch.allclose(zeroed_a, unet(sample, 10, cond_b))  # and it is the only path


def test_transformer_causal_attention_ignores_the_future():
    torch.manual_seed(0)
    config = tiny_config("transformer", cameras=False).transformer
    network = DiffusionTransformer(
        2, obs_feature_dim=3, prediction_horizon=8, observation_horizon=2, config=config
    ).eval()
    sample = torch.randn(1, 8, 2)
    features = torch.randn(1, 2, 3)
    with torch.no_grad():
        reference = network(sample, 5, features)
        later_action = sample.clone()
        later_action[:, 5:] += 1.0
        changed = network(later_action, 5, features)
        assert torch.allclose(changed[:, :5], reference[:, :5], atol=1e-6)
        assert not torch.allclose(changed[:, 5:], reference[:, 5:])
        later_obs = features.clone()
        later_obs[:, 1] += 1.0  # observation step 1 is visible from action 1 on
        changed = network(sample, 5, later_obs)
        assert torch.allclose(changed[:, :1], reference[:, :1], atol=1e-6)
        assert not torch.allclose(changed[:, 1:], reference[:, 1:])


# diffusers' DPM-Solver trips a numpy 2 deprecation in its own code; not ours to fix.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize(
    ("scheduler", "steps"),
    [("DDPMScheduler", 100), ("DDIMScheduler", 16), ("DPMSolverMultistepScheduler", 5)],
)
def test_any_diffusers_scheduler_samples(scheduler, steps):
    config = tiny_config("unet", cameras=False)
    policy = fitted_policy(config)
    prediction = policy.predict_action(
        make_observations(config, 2), num_inference_steps=steps, scheduler=scheduler
    )
    assert prediction.action_sequence.shape == (2, 8, 2)
    assert torch.isfinite(prediction.action_sequence).all()


def test_same_generator_seed_gives_the_same_chunk(backbone):
    config = tiny_config(backbone, cameras=True)
    policy = fitted_policy(config)
    observations = make_observations(config, 2)
    first = policy.predict_action(observations, generator=torch.Generator().manual_seed(3))
    again = policy.predict_action(observations, generator=torch.Generator().manual_seed(3))
    other = policy.predict_action(observations, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first.action_sequence, again.action_sequence)
    assert not torch.equal(first.action_sequence, other.action_sequence)


def test_predict_restores_training_mode():
    config = tiny_config("unet", cameras=True)
    policy = fitted_policy(config).train()
    policy.predict_action(make_observations(config, 1), num_inference_steps=2)
    assert policy.training


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o: o.pop("joints"), "missing"),
        (lambda o: o.__setitem__("joints", o["joints"][:, :1]), r"shape \(B, 2, 3\)"),
        (lambda o: o.__setitem__("front", o["front"][..., :30]), r"shape \(B, 2, 3, 32, 32\)"),
        (lambda o: o["joints"].__setitem__((0, 0, 0), float("nan")), "NaN"),
        (lambda o: o.__setitem__("joints", o["joints"][:1]), "batch"),
    ],
)
def test_bad_observations_are_refused(change, message):
    config = tiny_config("unet", cameras=True)
    policy = fitted_policy(config)
    observations = make_observations(config, 2)
    change(observations)
    with pytest.raises(ValueError, match=message):
        policy.predict_action(observations, num_inference_steps=1)


def test_unfitted_normalizer_is_an_error():
    config = tiny_config("unet", cameras=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        DiffusionPolicy(config).predict_action(make_observations(config, 1))
