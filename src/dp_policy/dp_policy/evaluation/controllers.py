"""What drives the robot during an evaluation: a diffusion policy checkpoint or the expert.

A controller receives, for a batch of episodes (slots) that need a new plan, the observation
histories ``{key: (B, To, ...)}`` and the task's latest messages per episode, and returns for
each a plan: the set-point vectors ``(n, D)`` (the task's command joints side by side, in its
order, SI units) due at the plan's step and the ``n - 1`` steps after it. The rollout decides
when to ask and which set point is executed when.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from dp_policy.checkpoint import CheckpointError
from dp_policy.config import PolicyConfig
from dp_policy.data_spec import DataSpec
from dp_policy.normalizer import ACTION_KEY
from dp_policy.policy import DiffusionPolicy


class SpecBinding(Protocol):
    """A checkpoint's data spec bound to a simulated task (``TaskBinding``)."""

    spec: DataSpec

    def command_vector(self, actions: np.ndarray) -> np.ndarray:
        """Actions ``(..., Da)`` in the spec's order -> the task's set-point vectors."""


class Controller(Protocol):
    """Plans joint set points for a batch of episodes."""

    observation_horizon: int

    def reset(self, slot: int, seed: int) -> None:
        """A new episode with env seed ``seed`` starts in ``slot``."""

    def plan(
        self,
        slots: Sequence[int],
        observations: Mapping[str, np.ndarray],
        messages: Sequence[Mapping[str, Any]],
    ) -> np.ndarray:
        """Set points ``(B, n, D)`` in the task's command order, one vector per step."""


def noise_generator(env_seed: int, noise_seed: int) -> torch.Generator:
    """The episode's sampling-noise generator, on the CPU so that CPU and GPU runs draw the
    same noise; mixing both seeds keeps episodes (and runs with other noise seeds) apart."""
    state = np.random.SeedSequence([noise_seed, env_seed]).generate_state(1, dtype=np.uint64)
    return torch.Generator(device="cpu").manual_seed(int(state[0]) & (2**63 - 1))


def check_policy_matches_spec(config: PolicyConfig, binding: SpecBinding) -> None:
    """The checkpoint's network must take what the spec's streams give and predict its joints."""
    spec = binding.spec
    expected = spec.observation_spec()
    observed = config.observation
    if dict(observed.cameras) != dict(expected.cameras) or dict(observed.low_dim) != dict(
        expected.low_dim
    ):
        raise CheckpointError(
            f"the checkpoint's network observes cameras {dict(observed.cameras)} and low-dim "
            f"{dict(observed.low_dim)}, but its data spec gives {dict(expected.cameras)} and "
            f"{dict(expected.low_dim)}"
        )
    if config.action.dim != spec.action_spec().dim:
        raise CheckpointError(
            f"the checkpoint's network predicts {config.action.dim} action values, its "
            f"data spec commands {spec.action_spec().dim} joints"
        )


class DiffusionController:
    """A checkpoint sampled in batches, with one noise generator per episode.

    Sampling is ``DiffusionPolicy.predict_action``'s (encode, reverse process, unnormalise,
    the executable slice ``To-1 .. To-1+Ta``), except that the initial noise and any noise the
    scheduler draws per step come from each episode's own generator: an episode's actions then
    depend on its seed only, not on which episodes share its batch. With one episode per call
    this is exactly ``predict_action(..., generator=that generator)`` (tested).
    """

    def __init__(
        self,
        policy: DiffusionPolicy,
        binding: SpecBinding,
        num_inference_steps: int | None = None,
        scheduler: str | None = None,
        noise_seed: int = 0,
        action_horizon: int | None = None,
    ) -> None:
        check_policy_matches_spec(policy.config, binding)
        self.policy = policy.eval()
        self.binding = binding
        self.num_inference_steps = num_inference_steps or policy.config.noise.num_inference_steps
        self.scheduler = scheduler or policy.config.noise.inference_scheduler
        policy.inference_scheduler(self.scheduler)  # fail now on an unknown scheduler name
        self.noise_seed = noise_seed
        horizon = policy.config.horizon
        self.observation_horizon = horizon.observation_horizon
        # Ta only decides how much of each predicted sequence runs: a trained network serves any
        # Ta up to what its Tp leaves after the observation steps.
        executable = horizon.prediction_horizon - horizon.observation_horizon + 1
        self.action_horizon = horizon.action_horizon if action_horizon is None else action_horizon
        if not 1 <= self.action_horizon <= executable:
            raise ValueError(
                f"action_horizon must be in [1, {executable}] for this checkpoint "
                f"(Tp {horizon.prediction_horizon}, To {horizon.observation_horizon}), "
                f"got {self.action_horizon}"
            )
        self._generators: dict[int, torch.Generator] = {}
        self.predictions = 0

    def reset(self, slot: int, seed: int) -> None:
        self._generators[slot] = noise_generator(seed, self.noise_seed)

    def sample(
        self, observations: Mapping[str, np.ndarray], generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """Action sequences ``(B, Tp, Da)`` in the action's units."""
        policy = self.policy
        device = policy.device
        Tp, Da = policy.config.horizon.prediction_horizon, policy.config.action.dim
        with torch.inference_mode():
            batch = {
                key: torch.from_numpy(np.ascontiguousarray(value)).to(device)
                for key, value in observations.items()
            }
            features = policy.encode_observations(batch)
            noise = torch.cat(
                [torch.randn((1, Tp, Da), generator=g, dtype=policy.dtype) for g in generators]
            ).to(device)
            # diffusers takes one generator per batch element for the noise of stochastic steps.
            step_generator = list(generators) if len(generators) > 1 else generators[0]
            normalized = policy.sample_normalized(
                features, noise, self.num_inference_steps, self.scheduler, step_generator
            )
            return policy.normalizer.unnormalize(ACTION_KEY, normalized)

    def plan(
        self,
        slots: Sequence[int],
        observations: Mapping[str, np.ndarray],
        messages: Sequence[Mapping[str, Any]],
    ) -> np.ndarray:
        sequence = self.sample(observations, [self._generators[slot] for slot in slots])
        start = self.observation_horizon - 1
        executable = sequence[:, start : start + self.action_horizon].to(torch.float64).cpu()
        actions = executable.numpy()
        self.predictions += 1
        if not np.all(np.isfinite(actions)):
            raise FloatingPointError("the policy predicted NaN or infinite actions")
        return self.binding.command_vector(actions)


class ExpertController:
    """A task's scripted expert (``SimTask.make_expert``), one per episode, seeing the task's
    messages as its expert node does; each plan is one set point, held until the next."""

    observation_horizon = 1

    def __init__(self, make_expert: Callable[[], Any]) -> None:
        self._make_expert = make_expert
        self._experts: dict[int, Any] = {}
        self.predictions = 0

    def reset(self, slot: int, seed: int) -> None:
        self._experts[slot] = self._make_expert()

    def plan(
        self,
        slots: Sequence[int],
        observations: Mapping[str, np.ndarray],
        messages: Sequence[Mapping[str, Any]],
    ) -> np.ndarray:
        plans = [
            np.asarray(self._experts[slot].act(latest), dtype=np.float64)[None]
            for slot, latest in zip(slots, messages, strict=True)
        ]
        self.predictions += 1
        return np.stack(plans)
