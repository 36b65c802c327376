"""The data spec: which topics, fields and joints become which observation and action keys.

One declarative spec (YAML) is read by the dataset builder when it turns bags into training
data, stored in the checkpoint, and read back by the inference node, so that training and
serving cannot disagree about topics, keys, shapes, joint order or dt. Example::

    dt: 0.1                 # the grid, in seconds
    max_age: 0.15           # default: newest message at or before a grid time, at most this old
    reference: image        # the stream whose messages drive the grid
    observations:
      - {key: image, topic: /camera/image_raw, kind: image, shape: [3, 96, 96]}
      - {key: agent_pos, topic: /joint_states, kind: joint_state,
         joints: [pusher_x_joint, pusher_y_joint]}
      - {key: block_pose, topic: /pusht/block_pose, kind: fields,
         message_type: geometry_msgs/msg/PoseStamped,
         fields: [pose.position.x, pose.position.y, 'pose.orientation:yaw_sincos']}
    action: {key: action, topic: /joint_trajectory_controller/joint_trajectory,
             kind: joint_trajectory, joints: [pusher_x_joint, pusher_y_joint]}

An action may span several controllers (an arm's trajectory controller and a gripper's): then
``actions`` lists one stream per command topic, and the policy's action vector is their
values concatenated in that order (joint names distinct across streams)::

    actions:
      - {key: arm, topic: /joint_trajectory_controller/joint_trajectory,
         kind: joint_trajectory, joints: [panda_joint1, ..., panda_joint7]}
      - {key: gripper, topic: /gripper_trajectory_controller/joint_trajectory,
         kind: joint_trajectory, joints: [panda_finger_joint1]}

Stream kinds:

- ``image``: ``sensor_msgs/msg/Image`` (rgb8, bgr8, mono8, rgba8, bgra8) or
  ``sensor_msgs/msg/CompressedImage``; ``shape`` is (C, H, W) as the policy sees it (C = 3 is
  RGB, C = 1 is mono).
- ``joint_state``: ``sensor_msgs/msg/JointState``; ``joints`` picked by name in this order from
  ``joint_field`` (position, velocity or effort).
- ``joint_trajectory``: ``trajectory_msgs/msg/JointTrajectory`` commands (actions only): the
  value at a grid time is the position that the newest trajectory commands for that time.
- ``fields``: any message type (``message_type``); ``fields`` are dotted paths to numbers, or
  to an orientation with a continuous encoding after a colon (``pose.orientation:yaw_sincos``,
  ``:quaternion`` (sign-canonical), ``:rotation_6d``; ``theta:angle_sincos`` for an angle):
  see ``dp_policy.field_encodings``. A raw quaternion component (``pose.orientation.z``) is
  discontinuous as an observation: q and -q are the same rotation.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dp_policy.config import ActionSpec, ObservationSpec
from dp_policy.field_encodings import check_field, field_names

STREAM_KINDS = ("image", "joint_state", "joint_trajectory", "fields")
DEFAULT_MESSAGE_TYPES = {
    "image": "sensor_msgs/msg/Image",
    "joint_state": "sensor_msgs/msg/JointState",
    "joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
}
IMAGE_MESSAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
JOINT_FIELDS = ("position", "velocity", "effort")
# Key under which the spec is stored in a checkpoint's extra metadata.
CHECKPOINT_METADATA_KEY = "data_spec"


_TOP_LEVEL_FIELDS = {"dt", "max_age", "reference", "observations", "action", "actions", "extra"}


def _is_positive_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


class DataSpecError(ValueError):
    """A data spec that cannot be used; the message names the stream and the field."""


@dataclass(frozen=True)
class StreamSpec:
    """One topic and how it becomes one observation or action key."""

    key: str
    topic: str
    kind: str
    message_type: str = ""
    shape: tuple[int, ...] = ()
    joints: tuple[str, ...] = ()
    joint_field: str = "position"
    fields: tuple[str, ...] = ()
    max_age: float | None = None

    def __post_init__(self) -> None:
        where = f"stream {self.key!r}"
        if not isinstance(self.key, str) or not self.key.isidentifier():
            raise DataSpecError(f"{where}: key must be an identifier")
        if not isinstance(self.topic, str) or not self.topic.startswith("/"):
            raise DataSpecError(f"{where}: topic must be an absolute name, got {self.topic!r}")
        if self.kind not in STREAM_KINDS:
            raise DataSpecError(f"{where}: kind {self.kind!r} is not one of {STREAM_KINDS}")
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "joints", tuple(self.joints))
        object.__setattr__(self, "fields", tuple(self.fields))
        if not self.message_type:
            if self.kind == "fields":
                raise DataSpecError(f"{where}: kind 'fields' needs message_type")
            object.__setattr__(self, "message_type", DEFAULT_MESSAGE_TYPES[self.kind])
        if self.kind == "image":
            self._check_image(where)
        elif self.kind in ("joint_state", "joint_trajectory"):
            if not self.joints or len(set(self.joints)) != len(self.joints):
                raise DataSpecError(f"{where}: needs a list of distinct joint names")
            if self.joint_field not in JOINT_FIELDS:
                raise DataSpecError(f"{where}: joint_field must be one of {JOINT_FIELDS}")
        elif not self.fields or not all(isinstance(path, str) and path for path in self.fields):
            raise DataSpecError(f"{where}: kind 'fields' needs a list of dotted field paths")
        else:
            for entry in self.fields:
                try:
                    check_field(entry)
                except ValueError as error:
                    raise DataSpecError(f"{where}: {error}") from error
        if self.max_age is not None and not (
            isinstance(self.max_age, int | float)
            and math.isfinite(self.max_age)
            and self.max_age > 0
        ):
            raise DataSpecError(f"{where}: max_age must be a positive number of seconds")

    def _check_image(self, where: str) -> None:
        if self.message_type not in IMAGE_MESSAGE_TYPES:
            raise DataSpecError(f"{where}: image message_type must be one of {IMAGE_MESSAGE_TYPES}")
        if len(self.shape) != 3 or self.shape[0] not in (1, 3):
            raise DataSpecError(f"{where}: image shape must be (C, H, W) with C 1 or 3")
        if not all(isinstance(size, int) and size > 0 for size in self.shape):
            raise DataSpecError(f"{where}: image shape entries must be positive integers")

    @property
    def size(self) -> int:
        """Length of the vector for low-dim streams (joints or fields)."""
        return len(self.names)

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the vector's entries: joint names, or field paths (an encoded orientation
        gives one name per value: ``pose.orientation:yaw_sincos.sin_yaw``, ...)."""
        return self.joints if self.joints else field_names(self.fields)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"key": self.key, "topic": self.topic, "kind": self.kind}
        data["message_type"] = self.message_type
        if self.shape:
            data["shape"] = list(self.shape)
        if self.joints:
            data["joints"] = list(self.joints)
            data["joint_field"] = self.joint_field
        if self.fields:
            data["fields"] = list(self.fields)
        if self.max_age is not None:
            data["max_age"] = self.max_age
        return data

    @classmethod
    def from_dict(cls, data: Any) -> StreamSpec:
        if not isinstance(data, dict):
            raise DataSpecError(f"a stream must be a mapping, got {data!r}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataSpecError(f"stream {data.get('key')!r}: unknown fields {unknown}")
        missing = sorted({"key", "topic", "kind"} - set(data))
        if missing:
            raise DataSpecError(f"stream {data.get('key')!r}: missing {missing}")
        return cls(**data)


@dataclass(frozen=True)
class DataSpec:
    """Observation streams, the action stream(s), the dt grid and its reference stream."""

    dt: float
    observations: tuple[StreamSpec, ...]
    actions: tuple[StreamSpec, ...]
    reference: str = ""
    max_age: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _is_positive_number(self.dt):
            raise DataSpecError(f"dt must be a positive number of seconds, got {self.dt!r}")
        object.__setattr__(self, "dt", float(self.dt))
        object.__setattr__(self, "observations", tuple(self.observations))
        actions = (self.actions,) if isinstance(self.actions, StreamSpec) else tuple(self.actions)
        object.__setattr__(self, "actions", actions)
        if not self.observations:
            raise DataSpecError("at least one observation stream is required")
        if not actions:
            raise DataSpecError("at least one action stream is required")
        keys = [stream.key for stream in self.streams]
        if len(set(keys)) != len(keys):
            raise DataSpecError(f"stream keys must be distinct, got {keys}")
        if any(stream.kind == "image" for stream in actions):
            raise DataSpecError("an action stream cannot be an image")
        if any(stream.kind == "joint_trajectory" for stream in self.observations):
            raise DataSpecError("joint_trajectory streams are commands: only the action can be one")
        names = [name for stream in actions for name in stream.names]
        if len(set(names)) != len(names):
            raise DataSpecError(
                f"the action streams name a value twice ({names}): each joint belongs to one "
                f"controller"
            )
        reference = self.reference or self.observations[0].key
        if reference not in keys:
            raise DataSpecError(f"reference {reference!r} is not one of the stream keys {keys}")
        object.__setattr__(self, "reference", reference)
        # A message older than two grid steps no longer describes the grid time.
        max_age = self.max_age or 2.0 * self.dt
        if not (math.isfinite(max_age) and max_age > 0):
            raise DataSpecError(f"max_age must be a positive number of seconds, got {max_age!r}")
        object.__setattr__(self, "max_age", float(max_age))

    @property
    def action(self) -> StreamSpec:
        """The action stream of a single-controller spec."""
        if len(self.actions) != 1:
            raise DataSpecError(
                f"the spec has {len(self.actions)} action streams "
                f"({[stream.key for stream in self.actions]}); this needs exactly one"
            )
        return self.actions[0]

    @property
    def action_keys(self) -> tuple[str, ...]:
        return tuple(stream.key for stream in self.actions)

    def action_slices(self) -> dict[str, slice]:
        """Where each action stream's values sit in the policy's action vector."""
        slices, start = {}, 0
        for stream in self.actions:
            slices[stream.key] = slice(start, start + stream.size)
            start += stream.size
        return slices

    @property
    def streams(self) -> tuple[StreamSpec, ...]:
        return (*self.observations, *self.actions)

    def stream(self, key: str) -> StreamSpec:
        for stream in self.streams:
            if stream.key == key:
                return stream
        raise KeyError(key)

    def max_age_of(self, stream: StreamSpec) -> float:
        return stream.max_age if stream.max_age is not None else self.max_age

    def observation_spec(self) -> ObservationSpec:
        """The policy's observation spec: cameras (C, H, W) and low-dim sizes, in spec order."""
        cameras = {s.key: s.shape for s in self.observations if s.kind == "image"}
        low_dim = {s.key: s.size for s in self.observations if s.kind != "image"}
        return ObservationSpec(cameras=cameras, low_dim=low_dim)

    def action_spec(self) -> ActionSpec:
        """The policy's action spec: one dimension per joint (or field) of every action stream
        in order, every dt."""
        names = tuple(name for stream in self.actions for name in stream.names)
        return ActionSpec(dim=len(names), dt=self.dt, names=names)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "dt": self.dt,
            "max_age": self.max_age,
            "reference": self.reference,
            "observations": [stream.to_dict() for stream in self.observations],
        }
        # One stream is written as before ("action"), so such specs read the same everywhere.
        if len(self.actions) == 1:
            data["action"] = self.actions[0].to_dict()
        else:
            data["actions"] = [stream.to_dict() for stream in self.actions]
        if self.extra:
            data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> DataSpec:
        if not isinstance(data, dict):
            raise DataSpecError("a data spec must be a mapping")
        unknown = sorted(set(data) - _TOP_LEVEL_FIELDS)
        if unknown:
            raise DataSpecError(f"unknown top-level fields {unknown}")
        for required in ("dt", "observations"):
            if required not in data:
                raise DataSpecError(f"missing top-level field {required!r}")
        if ("action" in data) == ("actions" in data):
            raise DataSpecError("give the action stream as 'action', or several as 'actions'")
        actions = data.get("actions", data.get("action"))
        if isinstance(actions, dict):
            actions = [actions]
        if not isinstance(actions, list):
            raise DataSpecError("actions must be a list of streams")
        if not isinstance(data["observations"], list):
            raise DataSpecError("observations must be a list of streams")
        return cls(
            dt=data["dt"],
            observations=tuple(StreamSpec.from_dict(item) for item in data["observations"]),
            actions=tuple(StreamSpec.from_dict(item) for item in actions),
            reference=data.get("reference", ""),
            max_age=data.get("max_age", 0.0),
            extra=dict(data.get("extra") or {}),
        )

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> DataSpec:
        """Read a spec file; errors name the file."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (OSError, yaml.YAMLError, DataSpecError) as error:
            raise DataSpecError(f"{path}: {error}") from error

    def to_yaml(self, path: str | os.PathLike) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")


def data_spec_metadata(spec: DataSpec) -> dict[str, Any]:
    """The ``extra_metadata`` entry for ``save_checkpoint`` that stores ``spec``."""
    return {CHECKPOINT_METADATA_KEY: spec.to_dict()}


def data_spec_from_checkpoint(directory: str | os.PathLike) -> DataSpec:
    """The spec a checkpoint was trained with, read from its manifest (not its weights)."""
    # Imported here: checkpoint imports torch models, the spec itself needs only yaml.
    from dp_policy.checkpoint import CheckpointError, read_checkpoint_manifest

    manifest = read_checkpoint_manifest(directory)
    data = (manifest.get("extra_metadata") or {}).get(CHECKPOINT_METADATA_KEY)
    if data is None:
        raise CheckpointError(
            f"{directory}: the checkpoint has no data spec (train it with dp_policy.train, or "
            f"save it with extra_metadata=data_spec_metadata(spec))"
        )
    try:
        return DataSpec.from_dict(data)
    except DataSpecError as error:
        raise CheckpointError(f"{directory}: invalid data spec: {error}") from error
