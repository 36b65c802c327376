"""EMA of the policy weights for evaluation and serving.

diffusers' ``EMAModel`` with ``use_ema_warmup=True`` implements exactly the paper's power-warmup
decay ``1 - (1 + step / inv_gamma) ** -power`` clamped to ``[min_decay, max_decay]``, so it is
used as is. It tracks parameters only; that is sufficient here because the policy's only
buffers are the normalizer statistics (fitted once, not trained) and GroupNorm has no running
statistics. ``averaged_policy`` copies those buffers from the live policy.
"""

from __future__ import annotations

import copy

import torch
from diffusers.training_utils import EMAModel

from dp_policy.config import EMAConfig
from dp_policy.policy import DiffusionPolicy


class PolicyEMA:
    """Exponential moving average of a ``DiffusionPolicy``'s parameters."""

    def __init__(self, policy: DiffusionPolicy, config: EMAConfig | None = None) -> None:
        config = config or policy.config.ema
        self.config = config
        self._ema = EMAModel(
            policy.parameters(),
            decay=config.max_decay,
            min_decay=config.min_decay,
            update_after_step=config.update_after_step,
            use_ema_warmup=True,
            inv_gamma=config.inv_gamma,
            power=config.power,
        )

    @property
    def decay(self) -> float | None:
        """The decay used by the last ``step`` (None before the first)."""
        return self._ema.cur_decay_value

    @property
    def optimization_step(self) -> int:
        return self._ema.optimization_step

    def step(self, policy: DiffusionPolicy) -> None:
        """Fold the current weights in; call once after every optimiser step."""
        self._ema.step(policy.parameters())

    def copy_to(self, policy: DiffusionPolicy) -> None:
        """Overwrite ``policy``'s parameters with the averaged ones."""
        self._ema.copy_to(policy.parameters())

    def averaged_policy(self, policy: DiffusionPolicy) -> DiffusionPolicy:
        """A copy of ``policy`` (buffers included) with the averaged parameters, in eval mode."""
        averaged = copy.deepcopy(policy)
        self.copy_to(averaged)
        return averaged.eval()

    def state_dict(self) -> dict:
        """diffusers' EMA state (decay settings, step, ``shadow_params`` list) for resuming."""
        return self._ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._ema.load_state_dict(state)

    def to(self, device: str | torch.device) -> PolicyEMA:
        self._ema.to(device=device)
        return self
