"""Learning: the loss falls, and a bimodal demonstration set yields both modes, not their mean."""

from __future__ import annotations

import math

import pytest
import torch
from dp_policy_test_factories import fitted_policy, make_batch, tiny_config

from dp_policy import (
    ActionSpec,
    DiffusionPolicy,
    HorizonConfig,
    ObservationSpec,
    PolicyConfig,
    UNetConfig,
)

START = (-1.0, 0.0)
BEND = 0.8  # the paths pass the obstacle at the origin this far above or below it


def train(policy: DiffusionPolicy, batches, steps: int, lr: float, one_cycle: bool = False):
    """AdamW; ``one_cycle``: warm up for 10 % of the steps, then cosine-anneal to zero, which
    leaves the last weights settled instead of mid-jump (it balances the bimodal test's modes)."""
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=1e-6)
    schedule = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
        if one_cycle
        else None
    )
    losses = []
    for step in range(steps):
        loss = policy.compute_loss(batches(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    ("backbone", "cameras", "batch", "steps"),
    [("unet", False, 16, 60), ("transformer", True, 4, 30)],  # the ResNet-18 makes steps dear
)
def test_loss_falls_on_a_small_dataset(backbone, cameras, batch, steps):
    config = tiny_config(backbone, cameras)
    policy = fitted_policy(config).train()
    data = make_batch(config, batch=batch, seed=1)
    torch.manual_seed(0)
    losses = train(policy, lambda step: data, steps=steps, lr=3e-3)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)


def bimodal_batch(batch: int, generator: torch.Generator, horizon: int = 16) -> dict:
    """Two equally likely paths from START to (1, 0), above or below an obstacle at the origin;
    the observation is the same for both, so only a multimodal policy can be right."""
    progress = torch.arange(horizon) / (horizon - 1)
    x = (-1.0 + 2.0 * progress).expand(batch, horizon)
    side = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    y = side[:, None] * BEND * torch.sin(math.pi * progress)
    actions = torch.stack([x, y], dim=-1) + 0.02 * torch.randn(
        (batch, horizon, 2), generator=generator
    )
    observations = torch.tensor(START).expand(batch, 2, 2).clone()
    return {"obs": {"position": observations}, "action": actions}


def test_bimodal_demonstrations_give_both_modes_and_not_their_mean():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    config = PolicyConfig(
        observation=ObservationSpec(low_dim={"position": 2}),
        action=ActionSpec(dim=2, dt=0.1),
        horizon=HorizonConfig(observation_horizon=2, prediction_horizon=16, action_horizon=8),
        unet=UNetConfig(down_dims=(32, 64), kernel_size=5, n_groups=8, diffusion_step_embed_dim=32),
    )
    policy = DiffusionPolicy(config)
    fit_data = bimodal_batch(2048, generator)
    policy.fit_normalizer(fit_data["action"], {"position": fit_data["obs"]["position"]})
    losses = train(policy, lambda step: bimodal_batch(64, generator), 300, 3e-3, one_cycle=True)
    assert sum(losses[-20:]) / 20 < 0.1

    observation = {"position": torch.tensor(START).expand(1, 2, 2)}
    samples = policy.predict_action(
        observation, generator=torch.Generator().manual_seed(1), num_samples=200
    ).action_sequence[0]  # (200, Tp, 2)
    assert samples.shape == (200, 16, 2)
    # Height of each sampled path where it passes the obstacle (middle of the horizon).
    height = samples[:, 5:11, 1].mean(dim=1)
    above = (height > BEND / 2).float().mean().item()
    below = (height < -BEND / 2).float().mean().item()
    through_obstacle = (height.abs() < BEND / 4).float().mean().item()
    assert above >= 0.2 and below >= 0.2, (above, below)
    assert through_obstacle < 0.1, through_obstacle
    # Both modes are followed end to end, from the start towards the goal.
    assert (samples[:, 0, 0] + 1.0).abs().mean() < 0.2
    assert (samples[:, -1, 0] - 1.0).abs().mean() < 0.2
