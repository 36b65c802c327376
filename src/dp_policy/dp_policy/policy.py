"""The diffusion policy: observation encoder, noise-prediction network, schedulers, normalizer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn
from torch.nn import functional

from dp_policy.config import PolicyConfig
from dp_policy.normalizer import ACTION_KEY, Normalizer
from dp_policy.schedulers import make_scheduler, make_training_scheduler, step_accepts_generator
from dp_policy.transformer import DiffusionTransformer
from dp_policy.unet import ConditionalUnet1D
from dp_policy.vision import ObservationEncoder

Observations = Mapping[str, torch.Tensor | np.ndarray]


@dataclass(frozen=True)
class ActionPrediction:
    """A sampled chunk in the action's own units.

    action_sequence: ``(B, Tp, Da)``, or ``(B, S, Tp, Da)`` when ``num_samples = S > 1``.
    executable: the part to execute, ``action_sequence[..., To-1 : To-1+Ta, :]``; its first
        action belongs to the time of the latest observation.
    """

    action_sequence: torch.Tensor
    executable: torch.Tensor


class DiffusionPolicy(nn.Module):
    """Diffusion Policy (Chi et al., RSS 2023) with a U-Net or transformer backbone."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        spec = config.observation
        self.normalizer = Normalizer(config.action.dim, spec.low_dim)
        self.obs_encoder = ObservationEncoder(spec.cameras, spec.low_dim, config.vision)
        feature_dim = self.obs_encoder.feature_dim
        To = config.horizon.observation_horizon
        self.noise_net: nn.Module
        if config.backbone == "unet":
            self.noise_net = ConditionalUnet1D(config.action.dim, feature_dim * To, config.unet)
        else:
            self.noise_net = DiffusionTransformer(
                config.action.dim,
                feature_dim,
                config.horizon.prediction_horizon,
                To,
                config.transformer,
            )
        self.training_scheduler = make_training_scheduler(config.noise)
        # Schedulers keep per-call state (timesteps, multistep history): predict_action is not
        # re-entrant; run one inference at a time per policy object.
        self._inference_schedulers: dict[str, SchedulerMixin] = {}
        # Filled by load_checkpoint with the extra_metadata given at save time.
        self.checkpoint_metadata: dict = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def fit_normalizer(
        self,
        actions: torch.Tensor | np.ndarray,
        low_dim_observations: Observations | None = None,
    ) -> None:
        """Fit min/max ranges: ``actions (..., Da)``, ``low_dim_observations {key: (..., D)}``."""
        self.normalizer.fit(actions, low_dim_observations)

    def inference_scheduler(self, name: str | None = None) -> SchedulerMixin:
        """The (cached) sampling scheduler ``name``; default from the config."""
        name = name or self.config.noise.inference_scheduler
        if name not in self._inference_schedulers:
            self._inference_schedulers[name] = make_scheduler(name, self.config.noise)
        return self._inference_schedulers[name]

    def check_observations(self, observations: Observations) -> dict[str, torch.Tensor]:
        """Raw observations ``{key: (B, To, ...)}`` checked (keys, shapes, one batch size,
        finite values; ValueError naming the key otherwise) and on the model, in its dtype:
        images in [0, 1] (uint8 scaled), low-dim values in their own units."""
        spec = self.config.observation
        To = self.config.horizon.observation_horizon
        expected = {**spec.cameras, **{key: (size,) for key, size in spec.low_dim.items()}}
        missing = [key for key in expected if key not in observations]
        if missing:
            raise ValueError(
                f"observation keys {missing} missing; the policy needs {list(expected)}"
            )
        checked: dict[str, torch.Tensor] = {}
        batch: int | None = None
        for key, shape in expected.items():
            value = torch.as_tensor(observations[key], device=self.device)
            if value.ndim < 2 or tuple(value.shape[1:]) != (To, *shape):
                raise ValueError(
                    f"observation {key!r} must have shape (B, {To}, {', '.join(map(str, shape))}), "
                    f"got {tuple(value.shape)}"
                )
            if batch is not None and value.shape[0] != batch:
                raise ValueError(f"observation {key!r} has batch {value.shape[0]}, others {batch}")
            batch = value.shape[0]
            if value.dtype == torch.uint8 and key in spec.cameras:
                value = value.float() / 255.0
            value = value.to(self.dtype)
            if not torch.isfinite(value).all():
                raise ValueError(f"observation {key!r} contains NaN or infinite values")
            checked[key] = value
        return checked

    def _prepare_observations(self, observations: Observations) -> tuple[dict, int]:
        """Check, move to the model and normalise; returns (obs, B)."""
        checked = self.check_observations(observations)
        prepared = {
            key: self.normalizer.normalize_image(value)
            if key in self.config.observation.cameras
            else self.normalizer.normalize(key, value)
            for key, value in checked.items()
        }
        return prepared, next(iter(checked.values())).shape[0]

    def encode_observations(self, observations: Observations) -> torch.Tensor:
        """Raw observations ``{key: (B, To, ...)}`` -> conditioning features ``(B, To, F)``."""
        prepared, _ = self._prepare_observations(observations)
        return self.obs_encoder(prepared)

    def predict_noise(
        self, sample: torch.Tensor, timesteps: torch.Tensor | int, obs_features: torch.Tensor
    ) -> torch.Tensor:
        """Network output for ``sample (B, Tp, Da)`` given features ``(B, To, F)``."""
        if self.config.backbone == "unet":
            return self.noise_net(sample, timesteps, obs_features.flatten(1))
        return self.noise_net(sample, timesteps, obs_features)

    def compute_loss(self, batch: Mapping) -> torch.Tensor:
        """Denoising loss for ``{"obs": {key: (B, To, ...)}, "action": (B, Tp, Da)}``."""
        Tp, Da = self.config.horizon.prediction_horizon, self.config.action.dim
        actions = torch.as_tensor(batch["action"], device=self.device).to(self.dtype)
        if actions.ndim != 3 or tuple(actions.shape[1:]) != (Tp, Da):
            raise ValueError(
                f"batch['action'] must have shape (B, {Tp}, {Da}), got {tuple(actions.shape)}"
            )
        features = self.encode_observations(batch["obs"])
        if features.shape[0] != actions.shape[0]:
            raise ValueError("batch['obs'] and batch['action'] differ in batch size")
        clean = self.normalizer.normalize(ACTION_KEY, actions)
        noise = torch.randn_like(clean)
        scheduler = self.training_scheduler
        timesteps = torch.randint(
            0, scheduler.config.num_train_timesteps, (clean.shape[0],), device=clean.device
        )
        noisy = scheduler.add_noise(clean, noise, timesteps)
        prediction = self.predict_noise(noisy, timesteps, features)
        prediction_type = self.config.noise.prediction_type
        if prediction_type == "epsilon":
            target = noise
        elif prediction_type == "sample":
            target = clean
        else:
            target = scheduler.get_velocity(clean, noise, timesteps)
        return functional.mse_loss(prediction, target)

    @torch.no_grad()
    def sample_normalized(
        self,
        obs_features: torch.Tensor,
        noise: torch.Tensor,
        num_inference_steps: int | None = None,
        scheduler_name: str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Run the reverse process from ``noise (N, Tp, Da)`` given features ``(N, To, F)``."""
        steps = num_inference_steps or self.config.noise.num_inference_steps
        if steps < 1 or steps > self.config.noise.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {self.config.noise.num_train_timesteps}], "
                f"got {steps}"
            )
        scheduler = self.inference_scheduler(scheduler_name)
        scheduler.set_timesteps(steps, device=noise.device)
        extra = {"generator": generator} if step_accepts_generator(scheduler) else {}
        sample = noise * scheduler.init_noise_sigma
        for timestep in scheduler.timesteps:
            model_input = scheduler.scale_model_input(sample, timestep)
            model_output = self.predict_noise(model_input, timestep, obs_features)
            sample = scheduler.step(model_output, timestep, sample, **extra).prev_sample
        return sample

    @torch.no_grad()
    def predict_action(
        self,
        observations: Observations,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        num_samples: int = 1,
        scheduler: str | None = None,
    ) -> ActionPrediction:
        """Sample action chunks for raw observations ``{key: (B, To, ...)}``.

        Images are float in [0, 1] ``(B, To, C, H, W)`` (uint8 is accepted and scaled); low-dim
        values are in their own units. Sampling always uses eval behaviour (centre crop, no
        dropout); the module's train/eval mode is restored afterwards. ``generator`` (on the CPU
        or the policy's device) makes the initial and, for stochastic samplers, per-step noise
        reproducible.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        was_training = self.training
        if was_training:
            self.eval()
        try:
            features = self.encode_observations(observations)
            batch = features.shape[0]
            features = features.repeat_interleave(num_samples, dim=0)
            Tp, Da = self.config.horizon.prediction_horizon, self.config.action.dim
            # A CPU generator may drive a CUDA policy (reproducible across devices): draw where
            # the generator lives, then move.
            noise_device = generator.device if generator is not None else self.device
            noise = torch.randn(
                (batch * num_samples, Tp, Da),
                generator=generator,
                device=noise_device,
                dtype=self.dtype,
            ).to(self.device)
            normalized = self.sample_normalized(
                features, noise, num_inference_steps, scheduler, generator
            )
        finally:
            if was_training:
                self.train()
        actions = self.normalizer.unnormalize(ACTION_KEY, normalized)
        if num_samples > 1:
            actions = actions.reshape(batch, num_samples, Tp, Da)
        start = self.config.horizon.observation_horizon - 1
        executable = actions[..., start : start + self.config.horizon.action_horizon, :]
        return ActionPrediction(action_sequence=actions, executable=executable)
