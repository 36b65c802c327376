"""Min-max normalisation of actions and low-dim observations to [-1, 1], images to [-1, 1].

Statistics live in buffers so that they travel inside ``model.safetensors`` with the weights;
``checkpoint.py`` also writes them to ``config.json`` for people and tools to read.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

# A dimension whose range is below this is constant in the data: it maps to 0 instead of
# dividing by (almost) zero and blowing up noise at inference.
RANGE_EPSILON = 1e-4

ACTION_KEY = "action"


def _as_float_tensor(name: str, values: torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    tensor = torch.as_tensor(values, dtype=torch.float64)
    if tensor.ndim == 0 or tensor.shape[-1] != size:
        raise ValueError(
            f"normalizer: {name!r} must have last dimension {size}, got {tuple(tensor.shape)}"
        )
    tensor = tensor.reshape(-1, size)
    if tensor.shape[0] == 0:
        raise ValueError(f"normalizer: no samples for {name!r}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"normalizer: {name!r} contains NaN or infinite values")
    return tensor


class RangeNormalizer(nn.Module):
    """Per-dimension affine map of ``[min, max]`` onto ``[-1, 1]`` for one key, ``(..., D)``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("min", torch.full((size,), -1.0))
        self.register_buffer("max", torch.full((size,), 1.0))

    def set_range(self, minimum: torch.Tensor, maximum: torch.Tensor) -> None:
        self.min.copy_(minimum.to(self.min))
        self.max.copy_(maximum.to(self.max))

    def _scale_and_offset(self) -> tuple[torch.Tensor, torch.Tensor]:
        data_range = self.max - self.min
        constant = data_range < RANGE_EPSILON
        scale = torch.where(constant, torch.ones_like(data_range), 2.0 / data_range)
        centre = (self.max + self.min) / 2
        return scale, centre

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        scale, centre = self._scale_and_offset()
        return (x - centre) * scale

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        scale, centre = self._scale_and_offset()
        return x / scale + centre


class Normalizer(nn.Module):
    """Normalises actions ``(..., Da)`` and low-dim observations ``(..., D)``; images ``x*2-1``."""

    def __init__(self, action_dim: int, low_dim: Mapping[str, int]) -> None:
        super().__init__()
        sizes = {ACTION_KEY: action_dim, **low_dim}
        self.ranges = nn.ModuleDict({key: RangeNormalizer(size) for key, size in sizes.items()})
        self.register_buffer("fitted", torch.zeros((), dtype=torch.uint8))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted.item())

    def fit(
        self,
        actions: torch.Tensor | np.ndarray,
        low_dim_observations: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    ) -> None:
        """Fit min/max per dimension; inputs ``(..., D)``, every leading dimension is a sample."""
        low_dim_observations = dict(low_dim_observations or {})
        expected = set(self.ranges) - {ACTION_KEY}
        if set(low_dim_observations) != expected:
            raise ValueError(
                f"normalizer: fit needs exactly the low-dim keys {sorted(expected)}, "
                f"got {sorted(low_dim_observations)}"
            )
        data = {ACTION_KEY: actions, **low_dim_observations}
        for key, range_normalizer in self.ranges.items():
            values = _as_float_tensor(key, data[key], range_normalizer.min.shape[0])
            range_normalizer.set_range(values.min(dim=0).values, values.max(dim=0).values)
        self.fitted.fill_(1)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("normalizer is not fitted: call policy.fit_normalizer(...) first")

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return self.ranges[key].normalize(x)

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return self.ranges[key].unnormalize(x)

    @staticmethod
    def normalize_image(x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] to [-1, 1]."""
        return x * 2.0 - 1.0

    def statistics(self) -> dict[str, dict[str, list[float]]]:
        """Plain-JSON view of the fitted ranges: ``{key: {"min": [...], "max": [...]}}``."""
        return {
            key: {"min": r.min.tolist(), "max": r.max.tolist()} for key, r in self.ranges.items()
        }
