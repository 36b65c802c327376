"""The PushT task (gym-pusht through ``PushTRobot``) as a ``dp_sim.tasks.SimTask``. ROS-free.

Seen as ``dp_sim.sim_node`` exposes it: its messages are those the node publishes for a state
(``pusht_messages``: duck-typed, the ROS messages' field names, built with ``dp_sim.mapping``
as the node builds them), and it is commanded as the node's trajectory controller is, with
the gantry's joint positions in metres, converted to the task's pixel target by
``dp_sim.mapping.joints_to_pixels``. Its score is the coverage of the goal; its expert is
``dp_sim.expert.PushTExpert`` seeing the messages as ``dp_sim.expert_node`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np

from dp_sim.expert import PushTExpert
from dp_sim.mapping import (
    JOINT_LOWER_LIMIT,
    JOINT_NAMES,
    JOINT_UPPER_LIMIT,
    joints_to_pixels,
    pixel_velocity_to_joints,
    pixels_to_joints,
    quaternion_to_yaw,
    task_pose_to_world,
    world_pose_to_task,
    yaw_to_quaternion,
)
from dp_sim.pusht_robot import CONTROL_PERIOD_S, MAX_EPISODE_STEPS, PushTRobot, TaskState
from dp_sim.tasks import (
    BOOL,
    FLOAT64,
    IMAGE,
    JOINT_STATE,
    POSE_STAMPED,
    StateTaskMixin,
    image_message,
    pose_message,
)

# The sim node's topics, relative to its namespace.
CAMERA_NAME = "camera"
IMAGE_TOPIC = "camera/image_raw"
JOINT_STATE_TOPIC = "joint_states"
COMMAND_TOPIC = "joint_trajectory_controller/joint_trajectory"
PUBLISHED = {
    IMAGE_TOPIC: IMAGE,
    JOINT_STATE_TOPIC: JOINT_STATE,
    "pusht/block_pose": POSE_STAMPED,
    "pusht/goal_pose": POSE_STAMPED,
    "pusht/coverage": FLOAT64,
    "pusht/reward": FLOAT64,
    "pusht/success": BOOL,
}
COMMANDS = {COMMAND_TOPIC: JOINT_NAMES}  # the gantry's trajectory controller and its joints
# The camera's size when no stream needs the image (low-dim policies): the sim node's default.
DEFAULT_IMAGE_SIZE = (96, 96)


def _task_pose_message(pose_px: np.ndarray) -> SimpleNamespace:
    """A task pose as the sim node publishes it (``sim_node._pose``): world frame, yaw as a
    quaternion about z."""
    x, y, yaw = task_pose_to_world(pose_px)
    return pose_message(np.array([x, y, 0.0]), np.array(yaw_to_quaternion(yaw)))


def pusht_messages(state: TaskState) -> dict[str, Any]:
    """The messages the sim node publishes for ``state``, by relative topic (no stamps).

    Mirrors ``dp_sim.sim_node.PushTSimNode._publish_state``: rgb8 image, joint positions (m)
    and velocities (m/s) without efforts, poses in ``world`` with the yaw as a quaternion.
    """
    joints = SimpleNamespace(
        name=list(JOINT_NAMES),
        position=pixels_to_joints(state.agent_position).tolist(),
        velocity=pixel_velocity_to_joints(state.agent_velocity).tolist(),
        effort=[],
    )
    return {
        IMAGE_TOPIC: image_message(state.image),
        JOINT_STATE_TOPIC: joints,
        "pusht/block_pose": _task_pose_message(state.block_pose),
        "pusht/goal_pose": _task_pose_message(state.goal_pose),
        "pusht/coverage": SimpleNamespace(data=float(state.coverage)),
        "pusht/reward": SimpleNamespace(data=float(state.reward)),
        "pusht/success": SimpleNamespace(data=bool(state.success)),
    }


def _task_pose(message: Any) -> np.ndarray:
    pose = message.pose
    q = pose.orientation
    yaw = quaternion_to_yaw(q.x, q.y, q.z, q.w)
    return world_pose_to_task(pose.position.x, pose.position.y, yaw)


class PushTTaskExpert:
    """dp_sim's scripted PushT expert, seeing the sim's messages as ``dp_sim.expert_node``
    does: the pusher's joints, the T's pose and the goal, each turned into the task's pixels."""

    def __init__(self) -> None:
        self._expert = PushTExpert()

    def act(self, messages: Mapping[str, Any]) -> np.ndarray:
        agent = joints_to_pixels(np.asarray(messages[JOINT_STATE_TOPIC].position))
        block = _task_pose(messages["pusht/block_pose"])
        goal = _task_pose(messages["pusht/goal_pose"])
        # One point, held until the next: the joystick-style command the expert node sends.
        return pixels_to_joints(self._expert.act(agent, block, goal))


class PushTTask(StateTaskMixin):
    """One PushT environment as a ``SimTask``: score = coverage of the goal."""

    name = "pusht"
    control_period = CONTROL_PERIOD_S
    score_name = "coverage"
    published = PUBLISHED
    commands = COMMANDS

    def __init__(
        self, image_size: tuple[int, int] | None = None, max_steps: int | None = None
    ) -> None:
        width, height = image_size or DEFAULT_IMAGE_SIZE
        self.robot = PushTRobot(width, height, max_steps or MAX_EPISODE_STEPS)
        self._max_reward = 0.0

    @property
    def state(self) -> TaskState:
        if self.robot.state is None:
            raise RuntimeError("reset() must be called first")
        return self.robot.state

    def reset(self, seed: int) -> None:
        self.robot.reset(seed)
        self._max_reward = 0.0

    def messages(self) -> dict[str, Any]:
        return pusht_messages(self.state)

    def held_setpoints(self) -> dict[str, np.ndarray]:
        # As the sim's follower after a reset: hold the pusher where it is until a command.
        return {COMMAND_TOPIC: pixels_to_joints(self.state.agent_position)}

    def step(self, setpoints: Mapping[str, np.ndarray]) -> None:
        joints = np.asarray(setpoints[COMMAND_TOPIC], dtype=np.float64)
        state = self.robot.step(joints_to_pixels(joints))
        self._max_reward = max(self._max_reward, state.reward)

    def outside_limits(self, setpoints: Mapping[str, np.ndarray]) -> bool:
        joints = np.asarray(setpoints[COMMAND_TOPIC])
        return bool(np.any((joints < JOINT_LOWER_LIMIT) | (joints > JOINT_UPPER_LIMIT)))

    @property
    def score(self) -> float:
        return float(self.state.coverage)

    def frame(self) -> np.ndarray:
        return self.state.image

    def episode_details(self) -> dict[str, Any]:
        """The highest reward (gym-pusht's min(coverage / 0.95, 1)) over the episode's steps,
        the pusher's final joints (m) and the T's final pose (world x m, y m, yaw rad)."""
        state = self.state
        return {
            "max_reward": float(self._max_reward),
            "final_agent_position": [float(v) for v in pixels_to_joints(state.agent_position)],
            "final_block_pose": list(task_pose_to_world(state.block_pose)),
        }

    def make_expert(self) -> PushTTaskExpert:
        return PushTTaskExpert()

    def close(self) -> None:
        self.robot.close()
