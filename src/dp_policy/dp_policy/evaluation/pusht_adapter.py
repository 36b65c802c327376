"""From the simulated PushT robot's state to the policy's observations, and back to the task.

The evaluation must feed the policy what the ROS simulation (``dp_sim.sim_node``) would have
published, or offline scores would not predict online behaviour. So each state is first turned
into the *messages* the sim node publishes for it (duck-typed: the same field names as the ROS
messages, built with ``dp_sim.mapping`` exactly as the node builds them), and each observation
stream of the checkpoint's data spec is then read from its topic's message with dp_policy's
``message_conversion`` -- the functions that the dataset builder used on the recorded bags and
that the inference node uses on live topics. A stream the simulation does not publish, or not
in the form the spec asks for, is refused at construction with an error naming the stream.

Actions go the other way as the sim's trajectory controller takes them: joint positions in
metres, matched to the joints by name, converted to the task's pixel target by
``dp_sim.mapping.joints_to_pixels``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from dp_policy.data_spec import DataSpec, StreamSpec
from dp_policy.message_conversion import ConversionError, image_to_chw, pick_joints, read_fields

try:  # dp_sim is needed only for evaluation; the rest of dp_policy does not depend on it.
    from dp_sim.mapping import (
        JOINT_NAMES,
        pixel_velocity_to_joints,
        pixels_to_joints,
        task_pose_to_world,
        yaw_to_quaternion,
    )
    from dp_sim.pusht_robot import CONTROL_PERIOD_S, TaskState
except ImportError as _error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "dp_policy.evaluation needs the dp_sim package (the PushT simulation): build the "
        "workspace or put src/dp_sim on PYTHONPATH"
    ) from _error

# The sim's topics, relative to its namespace, with the message type each carries.
IMAGE_TOPIC = "camera/image_raw"
JOINT_STATE_TOPIC = "joint_states"
COMMAND_TOPIC = "joint_trajectory_controller/joint_trajectory"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
FIELD_TOPICS = {
    "pusht/block_pose": POSE_STAMPED,
    "pusht/goal_pose": POSE_STAMPED,
    "pusht/coverage": "std_msgs/msg/Float64",
    "pusht/reward": "std_msgs/msg/Float64",
    "pusht/success": "std_msgs/msg/Bool",
}
# Default camera size when no stream needs the image (low-dim policies): the sim's default.
DEFAULT_IMAGE_SIZE = (96, 96)


class UnmappableSpecError(ValueError):
    """A data spec the PushT simulation cannot serve; the message names the stream and why."""


def _matches(topic: str, relative: str) -> bool:
    """Whether ``topic`` is the sim's ``relative`` topic, in the root or any namespace."""
    return topic == f"/{relative}" or topic.endswith(f"/{relative}")


def _sim_topic(topic: str) -> str | None:
    for relative in (IMAGE_TOPIC, JOINT_STATE_TOPIC, COMMAND_TOPIC, *FIELD_TOPICS):
        if _matches(topic, relative):
            return relative
    return None


def _pose_message(pose_px: np.ndarray) -> SimpleNamespace:
    """A geometry_msgs/PoseStamped as the sim node fills it (``sim_node._pose``)."""
    x, y, yaw = task_pose_to_world(pose_px)
    qx, qy, qz, qw = yaw_to_quaternion(yaw)
    return SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id="world"),
        pose=SimpleNamespace(
            position=SimpleNamespace(x=x, y=y, z=0.0),
            orientation=SimpleNamespace(x=qx, y=qy, z=qz, w=qw),
        ),
    )


def sim_messages(state: TaskState) -> dict[str, Any]:
    """The messages the sim node publishes for ``state``, by relative topic (no stamps).

    Mirrors ``dp_sim.sim_node.PushTSimNode._publish_state``: rgb8 image, joint positions (m)
    and velocities (m/s) without efforts, poses in ``world`` with the yaw as a quaternion.
    """
    height, width, _ = state.image.shape
    image = SimpleNamespace(
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * width,
        data=np.ascontiguousarray(state.image, dtype=np.uint8).tobytes(),
    )
    joints = SimpleNamespace(
        name=list(JOINT_NAMES),
        position=pixels_to_joints(state.agent_position).tolist(),
        velocity=pixel_velocity_to_joints(state.agent_velocity).tolist(),
        effort=[],
    )
    return {
        IMAGE_TOPIC: image,
        JOINT_STATE_TOPIC: joints,
        "pusht/block_pose": _pose_message(state.block_pose),
        "pusht/goal_pose": _pose_message(state.goal_pose),
        "pusht/coverage": SimpleNamespace(data=float(state.coverage)),
        "pusht/reward": SimpleNamespace(data=float(state.reward)),
        "pusht/success": SimpleNamespace(data=bool(state.success)),
    }


Reader = Callable[[Mapping[str, Any]], np.ndarray]


@dataclass(frozen=True)
class StreamBinding:
    """How one observation key is read: from which sim topic, with which conversion."""

    key: str
    topic: str  # as the spec names it
    read: Reader


def _probe_state(image_size: tuple[int, int]) -> TaskState:
    """A plausible state to try every conversion on before the first episode."""
    width, height = image_size
    return TaskState(
        image=np.zeros((height, width, 3), dtype=np.uint8),
        agent_position=np.array([256.0, 256.0]),
        agent_velocity=np.zeros(2),
        block_pose=np.array([256.0, 300.0, 0.5]),
        goal_pose=np.array([256.0, 256.0, math.pi / 4]),
        coverage=0.0,
        reward=0.0,
        success=False,
        steps=0,
        done=False,
    )


class PushTAdapter:
    """The data spec of a checkpoint, bound to the simulated PushT robot.

    ``observe(state)`` gives ``{key: array}`` for one time step, as the inference node would
    assemble it from the sim's topics (images (C, H, W) uint8, low-dim vectors float64 in SI
    units); ``setpoints_xy(actions)`` reorders predicted joint positions to (x, y) metres.
    """

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        if not math.isclose(spec.dt, CONTROL_PERIOD_S, rel_tol=1e-9):
            raise UnmappableSpecError(
                f"data spec dt is {spec.dt} s, but the PushT simulation steps every "
                f"{CONTROL_PERIOD_S} s: the policy's grid must be the sim's control period"
            )
        self.image_size = self._camera_size(spec)
        self._bindings = tuple(self._bind(stream) for stream in spec.observations)
        self._action_order = self._bind_action(spec.action)
        # Converting a probe state catches what only shows with a message in hand (a field path
        # the message lacks, a non-numeric field, efforts the sim does not publish).
        probe = sim_messages(_probe_state(self.image_size))
        for binding in self._bindings:
            try:
                binding.read(probe)
            except ConversionError as error:
                raise UnmappableSpecError(
                    f"observation stream {binding.key!r} ({binding.topic}): {error}"
                ) from error

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(binding.key for binding in self._bindings)

    @property
    def bindings(self) -> tuple[StreamBinding, ...]:
        return self._bindings

    def observe(self, state: TaskState) -> dict[str, np.ndarray]:
        """The observation of one time step, ``{key: array}``, from the sim's messages."""
        messages = sim_messages(state)
        return {binding.key: binding.read(messages) for binding in self._bindings}

    def setpoints_xy(self, actions: np.ndarray) -> np.ndarray:
        """Actions ``(..., Da)`` in the spec's joint order -> ``(..., 2)`` (x, y) in metres."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape[-1] != len(self._action_order):
            raise ValueError(
                f"actions have {actions.shape[-1]} values per step, the spec's action stream "
                f"{self.spec.action.key!r} has {len(self._action_order)} joints"
            )
        return actions[..., self._action_order]

    def command_vector(self, actions: np.ndarray) -> np.ndarray:
        """The sim's set-point vectors for ``actions``: (x, y) in metres (``setpoints_xy``)."""
        return self.setpoints_xy(actions)

    # -- binding ------------------------------------------------------------------------------

    @staticmethod
    def _camera_size(spec: DataSpec) -> tuple[int, int]:
        """(width, height) of the one camera the sim has, as the image streams need it."""
        sizes = {
            (stream.shape[2], stream.shape[1]): stream.key
            for stream in spec.observations
            if stream.kind == "image"
        }
        if len(sizes) > 1:
            keys = sorted(sizes.values())
            raise UnmappableSpecError(
                f"image streams {keys} ask for different image sizes, but the PushT simulation "
                f"has one camera of one size"
            )
        return next(iter(sizes), DEFAULT_IMAGE_SIZE)

    def _bind(self, stream: StreamSpec) -> StreamBinding:
        where = f"observation stream {stream.key!r} (topic {stream.topic}, kind {stream.kind})"
        relative = _sim_topic(stream.topic)
        if relative is None or relative == COMMAND_TOPIC:
            published = [IMAGE_TOPIC, JOINT_STATE_TOPIC, *FIELD_TOPICS]
            raise UnmappableSpecError(
                f"{where}: the PushT simulation publishes no such topic (it publishes "
                f"{', '.join('/' + topic for topic in published)})"
            )
        if stream.kind == "image":
            return self._bind_image(stream, relative, where)
        if stream.kind == "joint_state":
            return self._bind_joints(stream, relative, where)
        return self._bind_fields(stream, relative, where)

    @staticmethod
    def _bind_image(stream: StreamSpec, relative: str, where: str) -> StreamBinding:
        if relative != IMAGE_TOPIC:
            raise UnmappableSpecError(f"{where}: images come from /{IMAGE_TOPIC} in the sim")
        if stream.message_type != "sensor_msgs/msg/Image":
            raise UnmappableSpecError(
                f"{where}: the sim publishes raw sensor_msgs/msg/Image, not {stream.message_type}"
                f" (a policy trained on compressed frames saw compression artefacts that a "
                f"raw-image evaluation would not reproduce)"
            )
        shape = stream.shape
        return StreamBinding(
            stream.key, stream.topic, lambda messages: image_to_chw(messages[relative], shape)
        )

    @staticmethod
    def _bind_joints(stream: StreamSpec, relative: str, where: str) -> StreamBinding:
        if relative != JOINT_STATE_TOPIC:
            raise UnmappableSpecError(f"{where}: joint states come from /{JOINT_STATE_TOPIC}")
        unknown = [joint for joint in stream.joints if joint not in JOINT_NAMES]
        if unknown:
            raise UnmappableSpecError(
                f"{where}: the sim has no joint(s) {unknown} (it has {list(JOINT_NAMES)})"
            )
        joints, field_name = stream.joints, stream.joint_field

        def read(messages: Mapping[str, Any]) -> np.ndarray:
            message = messages[relative]
            return pick_joints(message.name, getattr(message, field_name), joints, field_name)

        return StreamBinding(stream.key, stream.topic, read)

    @staticmethod
    def _bind_fields(stream: StreamSpec, relative: str, where: str) -> StreamBinding:
        published = FIELD_TOPICS.get(relative)
        if published is None:
            carried = "image" if relative == IMAGE_TOPIC else "joint_state"
            raise UnmappableSpecError(
                f"{where}: /{relative} is read with kind {carried!r}, not as message fields"
            )
        if stream.message_type != published:
            raise UnmappableSpecError(
                f"{where}: the sim publishes {published} on /{relative}, not {stream.message_type}"
            )
        paths = stream.fields
        return StreamBinding(
            stream.key, stream.topic, lambda messages: read_fields(messages[relative], paths)
        )

    @staticmethod
    def _bind_action(stream: StreamSpec) -> list[int]:
        where = f"action stream {stream.key!r} (topic {stream.topic}, kind {stream.kind})"
        if stream.kind != "joint_trajectory" or not _matches(stream.topic, COMMAND_TOPIC):
            raise UnmappableSpecError(
                f"{where}: the PushT simulation is commanded with trajectory_msgs/JointTrajectory "
                f"on /{COMMAND_TOPIC}; the action must be that stream"
            )
        if sorted(stream.joints) != sorted(JOINT_NAMES) or stream.joint_field != "position":
            raise UnmappableSpecError(
                f"{where}: the action must command the positions of both joints "
                f"{list(JOINT_NAMES)} (in any order), got {stream.joint_field} of "
                f"{list(stream.joints)}"
            )
        return [stream.joints.index(name) for name in JOINT_NAMES]
