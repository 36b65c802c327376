"""Min-max normalizer and the power-warmup EMA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dp_policy_test_factories import fitted_policy, tiny_config

from dp_policy import PolicyEMA
from dp_policy.normalizer import Normalizer


def test_min_max_maps_data_range_onto_minus_one_to_one():
    normalizer = Normalizer(action_dim=3, low_dim={"joints": 2})
    actions = torch.tensor([[0.0, -5.0, 7.0], [10.0, 5.0, 7.0], [5.0, 0.0, 7.0]])
    joints = np.array([[[1.0, 2.0]], [[3.0, 2.0]]])  # (N, T, D): leading axes are samples
    normalizer.fit(actions, {"joints": joints})
    normalized = normalizer.normalize("action", actions)
    assert torch.allclose(normalized[:, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert torch.equal(normalized[:, 2], torch.zeros(3))  # constant dimension: no division by 0
    assert torch.allclose(normalizer.unnormalize("action", normalized), actions)
    assert torch.allclose(
        normalizer.normalize("joints", torch.tensor([2.0, 2.0])), torch.tensor([0.0, 0.0])
    )
    assert torch.equal(
        normalizer.normalize_image(torch.tensor([0.0, 1.0])), torch.tensor([-1.0, 1.0])
    )


def test_fit_refuses_wrong_keys_sizes_and_nan():
    normalizer = Normalizer(action_dim=2, low_dim={"joints": 2})
    with pytest.raises(ValueError, match="low-dim keys"):
        normalizer.fit(torch.zeros(4, 2), {})
    with pytest.raises(ValueError, match="last dimension 2"):
        normalizer.fit(torch.zeros(4, 3), {"joints": torch.zeros(4, 2)})
    with pytest.raises(ValueError, match="NaN"):
        normalizer.fit(torch.full((4, 2), float("nan")), {"joints": torch.zeros(4, 2)})


def test_ema_uses_the_paper_power_warmup_and_averages():
    policy = fitted_policy(tiny_config("unet", cameras=False))
    ema = PolicyEMA(policy)
    parameter = next(policy.noise_net.parameters())
    start = parameter.detach().clone()
    for step in range(1, 6):
        with torch.no_grad():
            parameter.add_(1.0)
        ema.step(policy)
        expected = 0.0 if step == 1 else 1 - (1 + (step - 1)) ** -0.75
        assert ema.decay == pytest.approx(expected)
    averaged = ema.averaged_policy(policy)
    averaged_parameter = next(averaged.noise_net.parameters())
    assert not averaged.training
    assert torch.all(averaged_parameter > start) and torch.all(averaged_parameter < parameter)
    assert torch.equal(
        averaged.normalizer.ranges["action"].max, policy.normalizer.ranges["action"].max
    )
