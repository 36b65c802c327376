"""DDIM (eta = 0) and DDPM reverse steps with every coefficient precomputed as a Python float.

diffusers' ``step`` indexes its schedule with the timestep tensor and compares it with Python
``if``s, which synchronises the GPU every step and cannot be captured in a CUDA graph. Here the
schedule is resolved once per (scheduler, step count); a step is pure tensor arithmetic, equal
to diffusers' up to float rounding (checked by the tests and by bench/inference_latency.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from dp_policy.config import NoiseScheduleConfig
from dp_policy.schedulers import make_scheduler


@dataclass(frozen=True)
class StaticSchedule:
    """A resolved sampling schedule; index i is the i-th reverse step.

    DDIM: ``x_prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps``.
    DDPM: ``x_prev = coef_x0 * x0 + coef_sample * x + noise_std * z`` with fresh ``z``.
    ``x0``/``eps`` come from the model output per ``prediction_type``; ``x0`` is clipped.
    """

    kind: str
    prediction_type: str
    timesteps: tuple[int, ...]
    sqrt_alpha: tuple[float, ...]
    sqrt_one_minus_alpha: tuple[float, ...]
    coef_x0: tuple[float, ...]
    coef_second: tuple[float, ...]
    noise_std: tuple[float, ...]
    clip_range: float | None

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def needs_step_noise(self) -> bool:
        return any(std > 0 for std in self.noise_std)

    def coefficients(self, index: int) -> tuple[float, float, float, float, float]:
        """Step ``index``'s ``(sqrt_alpha, sqrt_one_minus_alpha, coef_x0, coef_second,
        noise_std)``, the argument ``combine`` takes."""
        return (
            self.sqrt_alpha[index],
            self.sqrt_one_minus_alpha[index],
            self.coef_x0[index],
            self.coef_second[index],
            self.noise_std[index],
        )

    def coefficient_table(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """All steps' coefficients as a float32 ``(S, 5)`` tensor.

        A compiled step takes its row as a tensor: with Python floats torch.compile would
        specialise (and recompile) on every step's values.
        """
        rows = [self.coefficients(index) for index in range(self.num_steps)]
        return torch.tensor(rows, dtype=torch.float64).to(device=device, dtype=torch.float32)

    def step(
        self,
        index: int,
        sample: torch.Tensor,
        model_output: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One reverse step for ``sample``/``model_output (N, Tp, Da)``; ``noise`` for DDPM."""
        if self.noise_std[index] > 0 and noise is None:
            raise ValueError(f"step {index} of a {self.kind} schedule needs noise")
        noise = noise if self.noise_std[index] > 0 else None
        return self.combine(self.coefficients(index), sample, model_output, noise)

    def combine(
        self,
        coefficients: tuple | torch.Tensor,
        sample: torch.Tensor,
        model_output: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The reverse-step arithmetic for one step's ``coefficients``: the floats of
        ``coefficients(i)`` or the row ``coefficient_table()[i]``. ``noise`` is added when
        given (a zero ``noise_std`` makes it a no-op)."""
        a, b, coef_x0, coef_second, noise_std = coefficients
        if self.prediction_type == "epsilon":
            original = (sample - b * model_output) / a
            epsilon = model_output
        elif self.prediction_type == "sample":
            original = model_output
            epsilon = (sample - a * original) / b
        else:  # v_prediction
            original = a * sample - b * model_output
            epsilon = a * model_output + b * sample
        if self.clip_range is not None:
            original = original.clamp(-self.clip_range, self.clip_range)
        second = epsilon if self.kind == "ddim" else sample
        previous = coef_x0 * original + coef_second * second
        if noise is not None:
            previous = previous + noise_std * noise
        return previous


def static_schedule(
    config: NoiseScheduleConfig, scheduler_name: str | None = None, num_steps: int | None = None
) -> StaticSchedule:
    """Resolve the diffusers schedule ``scheduler_name`` (DDIM or DDPM) for ``num_steps`` steps."""
    scheduler_name = scheduler_name or config.inference_scheduler
    num_steps = num_steps or config.num_inference_steps
    scheduler = make_scheduler(scheduler_name, config)
    if not isinstance(scheduler, (DDIMScheduler, DDPMScheduler)):
        raise ValueError(
            f"static schedules exist for DDIMScheduler and DDPMScheduler, not {scheduler_name}"
        )
    if scheduler.config.get("thresholding"):
        raise ValueError("dynamic thresholding is not supported by static schedules")
    scheduler.set_timesteps(num_steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    # Same float32 table as diffusers, then double precision for the derived coefficients.
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    sqrt_alpha, sqrt_one_minus, coef_x0, coef_second, noise_std = [], [], [], [], []
    for index, t in enumerate(timesteps):
        alpha = float(alphas[t])
        if isinstance(scheduler, DDIMScheduler):
            prev = t - scheduler.config.num_train_timesteps // num_steps
            alpha_prev = float(alphas[prev]) if prev >= 0 else float(scheduler.final_alpha_cumprod)
            coef_x0.append(alpha_prev**0.5)
            coef_second.append((1 - alpha_prev) ** 0.5)
            noise_std.append(0.0)
        else:
            prev = timesteps[index + 1] if index + 1 < len(timesteps) else -1
            alpha_prev = float(alphas[prev]) if prev >= 0 else 1.0
            current_alpha = alpha / alpha_prev
            current_beta = 1 - current_alpha
            coef_x0.append(alpha_prev**0.5 * current_beta / (1 - alpha))
            coef_second.append(current_alpha**0.5 * (1 - alpha_prev) / (1 - alpha))
            variance = max((1 - alpha_prev) / (1 - alpha) * current_beta, 1e-20)
            noise_std.append(variance**0.5 if t > 0 else 0.0)
        sqrt_alpha.append(alpha**0.5)
        sqrt_one_minus.append((1 - alpha) ** 0.5)
    return StaticSchedule(
        kind="ddim" if isinstance(scheduler, DDIMScheduler) else "ddpm",
        prediction_type=config.prediction_type,
        timesteps=tuple(timesteps),
        sqrt_alpha=tuple(sqrt_alpha),
        sqrt_one_minus_alpha=tuple(sqrt_one_minus),
        coef_x0=tuple(coef_x0),
        coef_second=tuple(coef_second),
        noise_std=tuple(noise_std),
        clip_range=config.clip_sample_range if config.clip_sample else None,
    )
