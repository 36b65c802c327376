"""The PushT task (gym-pusht) as a robot: state in, pixel-frame setpoint out. ROS-free.

Wraps the task's gymnasium environment and keeps what a robot driver needs: the pusher's
position and velocity, the camera image, the T's pose, the goal, coverage, reward, success
and the episode's step count. Units are the task's (pixels, px/s, radians);
``dp_sim.mapping`` converts them to the robot's SI frame.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

with warnings.catch_warnings():
    # pygame, imported by gym-pusht, warns about pkg_resources on import.
    warnings.simplefilter("ignore", DeprecationWarning)
    import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

ENV_ID = "gym_pusht/PushT-v0"
CONTROL_PERIOD_S = 0.1  # the task's control rate is 10 Hz (its render_fps)
MAX_EPISODE_STEPS = 300  # the task's own limit (its registered TimeLimit)


@dataclass(frozen=True)
class TaskState:
    """Everything observable after a reset or a step, in task units."""

    image: np.ndarray  # (height, width, 3) uint8, RGB
    agent_position: np.ndarray  # (2,) px
    agent_velocity: np.ndarray  # (2,) px/s
    block_pose: np.ndarray  # (3,) x px, y px, angle rad (unwrapped, as the task reports it)
    goal_pose: np.ndarray  # (3,)
    coverage: float  # fraction of the goal covered by the T, after a reset too
    reward: float  # the last step's, min(coverage / 0.95, 1); 0 after a reset (no step yet)
    success: bool  # the last step's; False after a reset, as the task reports it
    steps: int  # steps taken in this episode
    done: bool  # success, or the step limit reached


class PushTRobot:
    """One PushT environment, stepped with absolute pusher targets in pixels."""

    def __init__(
        self,
        image_width: int = 96,
        image_height: int = 96,
        max_episode_steps: int = MAX_EPISODE_STEPS,
    ) -> None:
        if image_width < 1 or image_height < 1:
            raise ValueError(f"image size must be positive, got {image_width}x{image_height}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be positive, got {max_episode_steps}")
        self.max_episode_steps = max_episode_steps
        # The task renders its observation at the requested size itself (cv2.resize of the
        # 512x512 drawing), so any size comes out the way the 96x96 default does.
        self._env = gym.make(
            ENV_ID,
            obs_type="pixels_agent_pos",
            render_mode="rgb_array",
            observation_width=image_width,
            observation_height=image_height,
            max_episode_steps=max_episode_steps,
            disable_env_checker=True,
        )
        self.state: TaskState | None = None
        self.seed: int | None = None

    def reset(self, seed: int) -> TaskState:
        """Start an episode; the same seed always gives the same initial state."""
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        observation, info = self._env.reset(seed=seed)
        # gym-pusht computes coverage in step() only, so its reset info has none; without this
        # the initial state would claim 0 even where the T starts on the goal. The task's own
        # function, so that a reset reports exactly what a step from that state would.
        info = {**info, "coverage": float(self._env.unwrapped._get_coverage())}
        self.seed = seed
        self.state = self._state(observation, info, reward=0.0, steps=0, done=False)
        return self.state

    def step(self, target_px: np.ndarray) -> TaskState:
        """Advance the task by one control period towards the pusher target (pixels)."""
        if self.state is None:
            raise RuntimeError("reset() must be called before step()")
        if self.state.done:
            raise RuntimeError("the episode is over; reset() starts the next one")
        action = np.clip(np.asarray(target_px, dtype=np.float64), 0.0, 512.0)
        observation, reward, terminated, truncated, info = self._env.step(action)
        steps = self.state.steps + 1
        done = bool(terminated or truncated or steps >= self.max_episode_steps)
        self.state = self._state(observation, info, float(reward), steps, done)
        return self.state

    def close(self) -> None:
        self._env.close()

    @staticmethod
    def _state(observation: dict, info: dict, reward: float, steps: int, done: bool) -> TaskState:
        return TaskState(
            image=np.ascontiguousarray(observation["pixels"], dtype=np.uint8),
            agent_position=np.array(info["pos_agent"], dtype=float),
            agent_velocity=np.array(info["vel_agent"], dtype=float),
            block_pose=np.array(info["block_pose"], dtype=float),
            goal_pose=np.array(info["goal_pose"], dtype=float),
            coverage=float(info["coverage"]),
            reward=reward,
            success=bool(info.get("is_success", False)),
            steps=steps,
            done=done,
        )
