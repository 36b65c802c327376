"""Time-series diffusion transformer noise-prediction network.

Action tokens (one per predicted step) are the decoder input; the memory they cross-attend to is
a diffusion-step token followed by one token per observation step.
"""

from __future__ import annotations

import torch
from torch import nn

from dp_policy.config import TransformerConfig
from dp_policy.unet import SinusoidalStepEmbedding, broadcast_timesteps


class DiffusionTransformer(nn.Module):
    """``sample (B, Tp, Da)``, step, ``obs_features (B, To, F)`` -> noise ``(B, Tp, Da)``.

    With ``causal_attn`` action token i attends to action tokens <= i, to the step token and to
    observation tokens <= i, which keeps the prediction of early actions independent of later ones.
    """

    def __init__(
        self,
        action_dim: int,
        obs_feature_dim: int,
        prediction_horizon: int,
        observation_horizon: int,
        config: TransformerConfig,
    ) -> None:
        super().__init__()
        width = config.n_emb
        self.action_embedding = nn.Linear(action_dim, width)
        self.action_positions = nn.Parameter(torch.randn(1, prediction_horizon, width) * 0.02)
        self.step_embedding = SinusoidalStepEmbedding(width)
        self.obs_embedding = nn.Linear(obs_feature_dim, width)
        self.memory_positions = nn.Parameter(torch.randn(1, 1 + observation_horizon, width) * 0.02)
        self.dropout = nn.Dropout(config.p_drop_emb)

        if config.n_cond_layers > 0:
            self.memory_encoder: nn.Module = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(
                    width,
                    config.n_head,
                    4 * width,
                    config.p_drop_attn,
                    activation="gelu",
                    batch_first=True,
                    norm_first=True,
                ),
                config.n_cond_layers,
                enable_nested_tensor=False,
            )
        else:
            self.memory_encoder = nn.Sequential(
                nn.Linear(width, 4 * width), nn.Mish(), nn.Linear(4 * width, width)
            )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(
                width,
                config.n_head,
                4 * width,
                config.p_drop_attn,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            ),
            config.n_layer,
        )
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, action_dim)

        self.causal = config.causal_attn
        if self.causal:
            action_index = torch.arange(prediction_horizon)
            memory_index = torch.arange(1 + observation_horizon)
            # Boolean masks: True forbids attention. Memory token 0 is the step token.
            self.register_buffer(
                "action_mask", action_index[None, :] > action_index[:, None], persistent=False
            )
            self.register_buffer(
                "memory_mask", memory_index[None, :] - 1 > action_index[:, None], persistent=False
            )
        else:
            self.action_mask = None
            self.memory_mask = None

    def forward(
        self, sample: torch.Tensor, timesteps: torch.Tensor | int, obs_features: torch.Tensor
    ) -> torch.Tensor:
        batch = sample.shape[0]
        steps = broadcast_timesteps(timesteps, batch, sample.device)
        step_token = self.step_embedding(steps).to(obs_features.dtype)[:, None, :]
        memory = torch.cat([step_token, self.obs_embedding(obs_features)], dim=1)
        memory = self.memory_encoder(self.dropout(memory + self.memory_positions))
        tokens = self.dropout(self.action_embedding(sample) + self.action_positions)
        # Saying whether the mask is causal spares torch from comparing it with a generated
        # one on every call, a data-dependent branch that torch.compile cannot trace.
        hidden = self.decoder(
            tokens,
            memory,
            tgt_mask=self.action_mask,
            memory_mask=self.memory_mask,
            tgt_is_causal=self.causal,
        )
        return self.head(self.final_norm(hidden))
