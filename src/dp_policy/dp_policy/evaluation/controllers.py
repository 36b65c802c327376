"""What drives the robot during an evaluation: a diffusion policy checkpoint or the expert.

A controller receives, for a batch of episodes (slots) that need a new plan, the observation
histories ``{key: (B, To, ...)}`` and the latest task states, and returns for each a plan: the
joint set points ``(n, 2)`` (x, y in metres) due at the plan's step and the ``n - 1`` steps
after it. The rollout decides when to ask and which set point is executed when.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import torch

from dp_policy.checkpoint import CheckpointError
from dp_policy.config import PolicyConfig
from dp_policy.data_spec import DataSpec
from dp_policy.evaluation.pusht_adapter import sim_messages
from dp_policy.normalizer import ACTION_KEY
from dp_policy.policy import DiffusionPolicy
from dp_sim.expert import PushTExpert
from dp_sim.mapping import (
    joints_to_pixels,
    pixels_to_joints,
    quaternion_to_yaw,
    world_pose_to_task,
)
from dp_sim.pusht_robot import TaskState


class SpecAdapter(Protocol):
    """A checkpoint's data spec bound to a simulated task (``PushTAdapter``, ``TaskBinding``)."""

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
        states: Sequence[TaskState],
    ) -> np.ndarray:
        """Set points ``(B, n, 2)``: (x, y) joint positions in metres, one per step."""


def noise_generator(env_seed: int, noise_seed: int) -> torch.Generator:
    """The episode's sampling-noise generator, on the CPU so that CPU and GPU runs draw the
    same noise; mixing both seeds keeps episodes (and runs with other noise seeds) apart."""
    state = np.random.SeedSequence([noise_seed, env_seed]).generate_state(1, dtype=np.uint64)
    return torch.Generator(device="cpu").manual_seed(int(state[0]) & (2**63 - 1))


def check_policy_matches_spec(config: PolicyConfig, adapter: SpecAdapter) -> None:
    """The checkpoint's network must take what the spec's streams give and predict its joints."""
    spec = adapter.spec
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
        adapter: SpecAdapter,
        num_inference_steps: int | None = None,
        scheduler: str | None = None,
        noise_seed: int = 0,
        action_horizon: int | None = None,
    ) -> None:
        check_policy_matches_spec(policy.config, adapter)
        self.policy = policy.eval()
        self.adapter = adapter
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
        states: Sequence[TaskState],
    ) -> np.ndarray:
        sequence = self.sample(observations, [self._generators[slot] for slot in slots])
        start = self.observation_horizon - 1
        executable = sequence[:, start : start + self.action_horizon].to(torch.float64).cpu()
        actions = executable.numpy()
        self.predictions += 1
        if not np.all(np.isfinite(actions)):
            raise FloatingPointError("the policy predicted NaN or infinite actions")
        return self.adapter.command_vector(actions)


class ExpertController:
    """dp_sim's scripted expert, seeing the sim's messages as ``dp_sim.expert_node`` does."""

    observation_horizon = 1

    def __init__(self) -> None:
        self._experts: dict[int, PushTExpert] = {}
        self.predictions = 0

    def reset(self, slot: int, seed: int) -> None:
        self._experts[slot] = PushTExpert()

    def plan(
        self,
        slots: Sequence[int],
        observations: Mapping[str, np.ndarray],
        states: Sequence[TaskState],
    ) -> np.ndarray:
        plans = []
        for slot, state in zip(slots, states, strict=True):
            messages = sim_messages(state)
            agent = joints_to_pixels(np.asarray(messages["joint_states"].position))
            block = _task_pose(messages["pusht/block_pose"])
            goal = _task_pose(messages["pusht/goal_pose"])
            target = self._experts[slot].act(agent, block, goal)
            # One point, held until the next: the joystick-style command the expert node sends.
            plans.append(pixels_to_joints(target)[None])
        self.predictions += 1
        return np.stack(plans)


def _task_pose(message: object) -> np.ndarray:
    pose = message.pose  # type: ignore[attr-defined]
    q = pose.orientation
    yaw = quaternion_to_yaw(q.x, q.y, q.z, q.w)
    return world_pose_to_task(pose.position.x, pose.position.y, yaw)
