"""1-D temporal U-Net noise-prediction network with FiLM conditioning."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from dp_policy.config import UNetConfig


class SinusoidalStepEmbedding(nn.Module):
    """Diffusion step ``(B,)`` -> ``(B, dim)`` sin/cos features at geometric frequencies."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        # Always float32, even in a half-precision model: bf16 cannot resolve steps near 100.
        half = self.dim // 2
        index = torch.arange(half, device=timesteps.device, dtype=torch.float32)
        frequencies = torch.exp(index * (-math.log(10000.0) / max(half - 1, 1)))
        angles = timesteps.to(torch.float32)[:, None] * frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def broadcast_timesteps(
    timesteps: torch.Tensor | int, batch: int, device: torch.device
) -> torch.Tensor:
    """Scalar or ``(B,)`` diffusion steps -> ``(B,)`` on ``device``."""
    timesteps = torch.as_tensor(timesteps, device=device)
    if timesteps.ndim == 0:
        timesteps = timesteps.expand(batch)
    return timesteps


class Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish on ``(B, C, L)``, length preserved."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int
    ) -> None:
        super().__init__(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; between them every channel is scaled and shifted by the condition.

    ``x (B, Cin, L)``, ``cond (B, cond_dim)`` -> ``(B, Cout, L)``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int, n_groups: int
    ) -> None:
        super().__init__()
        self.first = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.second = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_channels))
        self.out_channels = out_channels
        self.residual = (
            nn.Conv1d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        hidden = self.first(x)
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        hidden = scale * hidden + bias
        return self.second(hidden) + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """Noise prediction ``(B, Tp, Da)`` from a noisy action sequence, step and global condition.

    The global condition is the flattened observation features of the To steps ``(B, To*F)``;
    with the diffusion-step embedding it drives the FiLM of every residual block.
    Tp must be divisible by ``2 ** (len(down_dims) - 1)`` (checked by ``PolicyConfig``).
    """

    def __init__(self, action_dim: int, global_cond_dim: int, config: UNetConfig) -> None:
        super().__init__()
        step_dim = config.diffusion_step_embed_dim
        self.step_embedding = SinusoidalStepEmbedding(step_dim)
        self.step_encoder = nn.Sequential(
            nn.Linear(step_dim, 4 * step_dim),
            nn.Mish(),
            nn.Linear(4 * step_dim, step_dim),
        )
        cond_dim = step_dim + global_cond_dim
        k, g = config.kernel_size, config.n_groups
        dims = (action_dim, *config.down_dims)
        levels = list(itertools.pairwise(dims))

        self.down = nn.ModuleList()
        for index, (dim_in, dim_out) in enumerate(levels):
            last = index == len(levels) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        FiLMResidualBlock(dim_in, dim_out, cond_dim, k, g),
                        FiLMResidualBlock(dim_out, dim_out, cond_dim, k, g),
                        nn.Identity()
                        if last
                        else nn.Conv1d(dim_out, dim_out, 3, stride=2, padding=1),
                    ]
                )
            )
        bottom = config.down_dims[-1]
        self.middle = nn.ModuleList(
            [
                FiLMResidualBlock(bottom, bottom, cond_dim, k, g),
                FiLMResidualBlock(bottom, bottom, cond_dim, k, g),
            ]
        )
        self.up = nn.ModuleList()
        for dim_in, dim_out in reversed(levels[1:]):
            self.up.append(
                nn.ModuleList(
                    [
                        FiLMResidualBlock(2 * dim_out, dim_in, cond_dim, k, g),
                        FiLMResidualBlock(dim_in, dim_in, cond_dim, k, g),
                        nn.ConvTranspose1d(dim_in, dim_in, 4, stride=2, padding=1),
                    ]
                )
            )
        first = config.down_dims[0]
        self.head = nn.Sequential(
            Conv1dBlock(first, first, k, g),
            nn.Conv1d(first, action_dim, 1),
        )

    def forward(
        self, sample: torch.Tensor, timesteps: torch.Tensor | int, global_cond: torch.Tensor
    ) -> torch.Tensor:
        """``sample (B, Tp, Da)``, ``timesteps`` scalar or ``(B,)``, ``global_cond (B, G)``."""
        x = sample.transpose(1, 2)  # convolutions run over time: (B, Da, Tp)
        steps = broadcast_timesteps(timesteps, x.shape[0], x.device)
        step_features = self.step_embedding(steps).to(global_cond.dtype)
        cond = torch.cat([self.step_encoder(step_features), global_cond], dim=-1)
        skips = []
        for first_block, second_block, downsample in self.down:
            x = second_block(first_block(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for block in self.middle:
            x = block(x, cond)
        for first_block, second_block, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(second_block(first_block(x, cond), cond))
        return self.head(x).transpose(1, 2)
