"""Simulated tasks behind one small interface, for offline evaluation (ROS-free).

Offline evaluation (``dp_policy.evaluation``) knows no task: it resets a ``SimTask`` with a
seed, reads the messages the task's ROS node would publish for the current state (duck-typed:
the ROS messages' field names, so the policy's observations come through the same message
conversions as in the dataset builder and the inference node), applies joint set points per
command topic, and reads success and a score. Each task also brings its scripted expert
(``make_expert``), seeing the same messages, and the task-specific facts of an episode for the
evaluation's report (``episode_details``). Adding a task means adding one class (the arm tasks
here, PushT in ``dp_sim.pusht_task``) and naming it in ``make_task``.

Topics are relative to the sim node's namespace, as the node names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np

from dp_sim.arm_robot import (
    ARM_COMMAND_TOPIC,
    ARM_JOINT_NAMES,
    ARM_LOWER_LIMITS,
    ARM_UPPER_LIMITS,
    CAMERA_TOPICS,
    CONTROL_PERIOD_S,
    FINGER_JOINT_NAMES,
    FINGER_RANGE_M,
    GRIPPER_COMMAND_TOPIC,
    GRIPPER_JOINT_NAMES,
    ArmRobot,
    ArmState,
)

POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
IMAGE = "sensor_msgs/msg/Image"
JOINT_STATE = "sensor_msgs/msg/JointState"
BOOL = "std_msgs/msg/Bool"
FLOAT64 = "std_msgs/msg/Float64"

TASK_NAMES = ("pusht", "lift", "can")
ARM_IMAGE_SIZE = (84, 84)  # Robomimic's camera size
ARM_MAX_STEPS = 400  # Robomimic's horizon for Lift and Can, 20 s at 20 Hz


class TaskExpert(Protocol):
    """A task's scripted expert for one episode, seeing the task's messages as its node does."""

    def act(self, messages: Mapping[str, Any]) -> np.ndarray:
        """The set points for this step: the task's command joints side by side, in the order
        of ``SimTask.commands`` (held until the next call)."""


class SimTask(Protocol):
    """One simulated episode at a time, seen and commanded as its ROS node exposes it."""

    name: str
    control_period: float  # s per step
    published: Mapping[str, str]  # relative topic -> message type
    commands: Mapping[str, tuple[str, ...]]  # relative command topic -> its joints, in order
    score_name: str  # what ``score`` measures, for reports ("coverage", "score")

    def reset(self, seed: int) -> None: ...

    def messages(self) -> dict[str, Any]:
        """The messages of the current state by relative topic (no stamps)."""

    def held_setpoints(self) -> dict[str, np.ndarray]:
        """What each controller holds after a reset, before any command: the measured state."""

    def step(self, setpoints: Mapping[str, np.ndarray]) -> None:
        """One control period towards the set points (per command topic, in its joint order)."""

    def outside_limits(self, setpoints: Mapping[str, np.ndarray]) -> bool:
        """Whether any set point is beyond the joints' limits (the controller clamps it)."""

    @property
    def score(self) -> float:
        """The task's score of the current state, in [0, 1] (1: solved)."""

    @property
    def success(self) -> bool: ...

    @property
    def steps(self) -> int: ...

    @property
    def done(self) -> bool: ...

    def frame(self) -> np.ndarray | None:
        """A camera image (H, W, 3) of the current state for montages, if the task has one."""

    def episode_details(self) -> dict[str, Any]:
        """Task-specific facts of the episode so far (its end, after the last step), for the
        evaluation's per-episode report: plain floats and lists of them."""

    def make_expert(self) -> TaskExpert:
        """A fresh scripted expert for one episode of this task."""

    def close(self) -> None: ...


def pose_message(position: np.ndarray, quaternion: np.ndarray) -> SimpleNamespace:
    x, y, z = (float(v) for v in position)
    qx, qy, qz, qw = (float(v) for v in quaternion)
    """A geometry_msgs/PoseStamped in ``world``, as the sim nodes fill it (no stamp)."""
    return SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id="world"),
        pose=SimpleNamespace(
            position=SimpleNamespace(x=x, y=y, z=z),
            orientation=SimpleNamespace(x=qx, y=qy, z=qz, w=qw),
        ),
    )


def image_message(pixels: np.ndarray) -> SimpleNamespace:
    """A raw rgb8 sensor_msgs/Image of ``pixels`` (H, W, 3), as the sim nodes fill it."""
    height, width, _ = pixels.shape
    return SimpleNamespace(
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * width,
        data=np.ascontiguousarray(pixels, dtype=np.uint8).tobytes(),
    )


def arm_messages(task: str, state: ArmState) -> dict[str, Any]:
    """What ``dp_sim.arm_sim_node`` publishes for ``state`` (see its ``_publish_state``)."""
    messages: dict[str, Any] = {
        "joint_states": SimpleNamespace(
            name=[*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES],
            position=[*state.arm_position.tolist(), *state.finger_position.tolist()],
            velocity=[*state.arm_velocity.tolist(), *state.finger_velocity.tolist()],
            effort=[],
        ),
        f"{task}/object_pose": pose_message(state.object_position, state.object_quaternion),
        f"{task}/eef_pose": pose_message(state.eef_position, state.eef_quaternion),
        f"{task}/success": SimpleNamespace(data=bool(state.success)),
    }
    if state.goal_position is not None:
        messages[f"{task}/goal_pose"] = pose_message(
            state.goal_position, np.array([0.0, 0.0, 0.0, 1.0])
        )
    for camera, pixels in state.images.items():
        messages[f"{CAMERA_TOPICS[camera]}/image_raw"] = image_message(pixels)
    return messages


def _position(message: Any) -> np.ndarray:
    position = message.pose.position
    return np.array([position.x, position.y, position.z])


class ArmTaskExpert:
    """dp_sim's scripted arm expert (``ArmExpert``), reading the sim's messages as
    ``arm_expert_node`` does: the arm's joints, the object's pose and, for Can, the goal."""

    def __init__(self, expert: Any, task: str) -> None:
        self._expert = expert
        self._task = task

    def act(self, messages: Mapping[str, Any]) -> np.ndarray:
        joints = messages["joint_states"]
        names = list(joints.name)
        arm = np.array([joints.position[names.index(name)] for name in ARM_JOINT_NAMES])
        pose = messages[f"{self._task}/object_pose"]
        q = pose.pose.orientation
        goal = messages.get(f"{self._task}/goal_pose")
        setpoint, fingers = self._expert.act(
            arm,
            _position(pose),
            np.array([q.x, q.y, q.z, q.w]),
            None if goal is None else _position(goal),
        )
        # The task's command order: the arm's seven joints, then the gripper's finger.
        return np.concatenate([setpoint, [fingers]])


class StateTaskMixin:
    """``success``, ``steps`` and ``done`` of a task whose ``state`` carries them (PushT's
    ``TaskState``, the arm's ``ArmState``)."""

    state: Any

    @property
    def success(self) -> bool:
        return self.state.success

    @property
    def steps(self) -> int:
        return self.state.steps

    @property
    def done(self) -> bool:
        return self.state.done


class ArmTask(StateTaskMixin):
    """The simulated Panda on Lift or Can (``ArmRobot``) as a ``SimTask``: score = success."""

    control_period = CONTROL_PERIOD_S
    score_name = "score"

    def __init__(
        self,
        task: str,
        cameras: tuple[str, ...] = (),
        image_size: tuple[int, int] = ARM_IMAGE_SIZE,
        max_steps: int = ARM_MAX_STEPS,
    ) -> None:
        width, height = image_size
        self.robot = ArmRobot(task, cameras, width, height, max_steps)
        self.name = task
        self._kinematics: Any = None  # built for the first expert, shared by all
        self.published = {
            "joint_states": JOINT_STATE,
            f"{task}/object_pose": POSE_STAMPED,
            f"{task}/eef_pose": POSE_STAMPED,
            f"{task}/success": BOOL,
            **({f"{task}/goal_pose": POSE_STAMPED} if task == "can" else {}),
            **{f"{CAMERA_TOPICS[camera]}/image_raw": IMAGE for camera in cameras},
        }
        self.commands = {
            ARM_COMMAND_TOPIC: ARM_JOINT_NAMES,
            GRIPPER_COMMAND_TOPIC: GRIPPER_JOINT_NAMES,
        }

    @property
    def state(self) -> ArmState:
        if self.robot.state is None:
            raise RuntimeError("reset() must be called first")
        return self.robot.state

    def reset(self, seed: int) -> None:
        self.robot.reset(seed)

    def messages(self) -> dict[str, Any]:
        return arm_messages(self.name, self.state)

    def held_setpoints(self) -> dict[str, np.ndarray]:
        state = self.state
        return {
            ARM_COMMAND_TOPIC: state.arm_position.copy(),
            GRIPPER_COMMAND_TOPIC: state.finger_position[:1].copy(),
        }

    def step(self, setpoints: Mapping[str, np.ndarray]) -> None:
        fingers = np.asarray(setpoints[GRIPPER_COMMAND_TOPIC], dtype=np.float64)
        self.robot.step(setpoints[ARM_COMMAND_TOPIC], float(fingers[0]))

    def outside_limits(self, setpoints: Mapping[str, np.ndarray]) -> bool:
        arm = np.asarray(setpoints[ARM_COMMAND_TOPIC])
        fingers = np.asarray(setpoints[GRIPPER_COMMAND_TOPIC])
        low, high = FINGER_RANGE_M
        return bool(
            np.any(arm < ARM_LOWER_LIMITS)
            or np.any(arm > ARM_UPPER_LIMITS)
            or np.any(fingers < low)
            or np.any(fingers > high)
        )

    @property
    def score(self) -> float:
        return float(self.state.success)

    def frame(self) -> np.ndarray | None:
        images = self.state.images
        return next(iter(images.values())) if images else None

    def episode_details(self) -> dict[str, Any]:
        return {}

    def make_expert(self) -> ArmTaskExpert:
        # Imported here: the kinematics need MuJoCo's Python bindings, the expert them.
        from dp_sim.arm_expert import ArmExpert
        from dp_sim.arm_kinematics import ArmKinematics

        if self._kinematics is None:
            # On the model of this task's simulation: it must stay open while experts run.
            self._kinematics = ArmKinematics(self.robot)
        return ArmTaskExpert(ArmExpert(self._kinematics, self.name, self.control_period), self.name)

    def close(self) -> None:
        self.robot.close()


def task_cameras(name: str) -> dict[str, str]:
    """The cameras task ``name`` can render: camera name -> its relative image topic.

    ``make_task`` renders the arm's cameras that it is given; PushT renders its one camera
    always (the cameras argument does not apply to it).
    """
    if name == "pusht":
        from dp_sim.pusht_task import CAMERA_NAME, IMAGE_TOPIC

        return {CAMERA_NAME: IMAGE_TOPIC}
    if name in ("lift", "can"):
        return {camera: f"{topic}/image_raw" for camera, topic in CAMERA_TOPICS.items()}
    raise ValueError(f"unknown task {name!r}; tasks: {list(TASK_NAMES)}")


def make_task(
    name: str,
    cameras: tuple[str, ...] = (),
    image_size: tuple[int, int] | None = None,
    max_steps: int | None = None,
) -> SimTask:
    """The task called ``name``; ``image_size`` (width, height) of its cameras (None: the
    task's default, 96x96 for PushT, 84x84 for the arm), ``max_steps`` per episode (None: the
    task's own limit, 300 for PushT, 400 for the arm)."""
    if name == "pusht":
        from dp_sim.pusht_task import PushTTask  # imports gym-pusht: only when asked for

        return PushTTask(image_size, max_steps)
    if name in ("lift", "can"):
        return ArmTask(name, cameras, image_size or ARM_IMAGE_SIZE, max_steps or ARM_MAX_STEPS)
    raise ValueError(f"unknown task {name!r}; tasks: {list(TASK_NAMES)}")
