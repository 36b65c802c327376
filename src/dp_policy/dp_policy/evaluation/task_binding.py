"""A checkpoint's data spec bound to a simulated task (``dp_sim.tasks.SimTask``).

Observations: each stream of the spec is matched by topic to what the task's node publishes
and read from the task's duck-typed messages with dp_policy's ``message_conversion``, the
functions the dataset builder used on the recorded bags and the inference node uses on live
topics. Actions: each action stream of the spec is matched by topic to one of the task's
command topics, and its joints by name to that controller's joints; every controller of the
task must be commanded. A spec the task cannot serve is refused at construction, naming the
stream and the reason; what only shows with a message in hand (a field path the message
lacks, a joint it does not carry) is refused by ``check_messages`` on a reset task.

Which cameras the task renders, and at which size, follows from the spec's image streams
(``spec_cameras``, ``task_factory``): a task renders all its cameras at one size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dp_policy.data_spec import DataSpec, StreamSpec
from dp_policy.message_conversion import ConversionError, image_to_chw, pick_joints, read_fields

try:  # dp_sim is needed only for evaluation; the rest of dp_policy does not depend on it.
    from dp_sim.tasks import SimTask, make_task, task_cameras
except ImportError as _error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "dp_policy.evaluation needs the dp_sim package (the simulated tasks): build the "
        "workspace or put src/dp_sim on PYTHONPATH"
    ) from _error

IMAGE_TYPE = "sensor_msgs/msg/Image"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"


class UnmappableSpecError(ValueError):
    """A data spec the simulated task cannot serve; the message names the stream and why."""


Reader = Callable[[Mapping[str, Any]], np.ndarray]


@dataclass(frozen=True)
class StreamBinding:
    """How one observation key is read: from which sim topic, with which conversion."""

    key: str
    topic: str  # as the spec names it
    read: Reader


def _relative(topic: str, published: Mapping[str, Any]) -> str | None:
    """The task's relative topic that ``topic`` names, in the root or any namespace."""
    for relative in published:
        if topic == f"/{relative}" or topic.endswith(f"/{relative}"):
            return relative
    return None


def spec_cameras(
    spec: DataSpec | None, task_name: str
) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """The cameras of ``task_name`` that the spec's image streams read, and the (width,
    height) they need (None where no stream reads an image: the task's default size).

    An image stream on a topic that no camera of the task publishes is left to the binding,
    which refuses it naming the topics the task has.
    """
    images = [] if spec is None else [s for s in spec.observations if s.kind == "image"]
    sizes = {(stream.shape[2], stream.shape[1]) for stream in images}
    if len(sizes) > 1:
        keys = sorted(stream.key for stream in images)
        raise UnmappableSpecError(
            f"image streams {keys} ask for different image sizes {sorted(sizes)}, but the "
            f"{task_name} simulation renders its cameras at one size"
        )
    topics = task_cameras(task_name)
    cameras: list[str] = []
    for stream in images:
        relative = _relative(stream.topic, {topic: None for topic in topics.values()})
        camera = next((name for name, topic in topics.items() if topic == relative), None)
        if camera is not None and camera not in cameras:
            cameras.append(camera)
    return tuple(cameras), next(iter(sizes), None)


def task_factory(spec: DataSpec | None, task_name: str, max_steps: int) -> Callable[[], SimTask]:
    """Makes task ``task_name`` as ``spec`` needs it: its cameras at the spec's image size,
    episodes of at most ``max_steps`` (``spec`` None: the expert's, no cameras)."""
    cameras, image_size = spec_cameras(spec, task_name)
    return lambda: make_task(task_name, cameras, image_size, max_steps)


def split_setpoints(
    commands: Mapping[str, tuple[str, ...]], vector: np.ndarray
) -> dict[str, np.ndarray]:
    """A task-order set-point vector ``(D,)`` -> ``{command topic: (joints,)}``."""
    sizes = [len(joints) for joints in commands.values()]
    parts = np.split(np.asarray(vector, dtype=np.float64), np.cumsum(sizes)[:-1])
    return dict(zip(commands, parts, strict=True))


def join_setpoints(
    commands: Mapping[str, tuple[str, ...]], setpoints: Mapping[str, np.ndarray]
) -> np.ndarray:
    """``{command topic: (joints,)}`` -> the task-order vector ``(D,)``."""
    return np.concatenate([np.asarray(setpoints[topic]) for topic in commands])


class TaskBinding:
    """``observe()`` gives ``{key: array}`` as the inference node would assemble it;
    ``command_vector(actions)`` turns spec-order actions into the task's set-point vector
    (its command topics' joints, in the task's order, side by side); ``split(vector)`` gives
    the set points per command topic."""

    def __init__(self, spec: DataSpec, task: Any) -> None:
        self.spec = spec
        self.task = task
        if not np.isclose(spec.dt, task.control_period, rtol=1e-9, atol=0.0):
            raise UnmappableSpecError(
                f"data spec dt is {spec.dt} s, but the {task.name} simulation steps every "
                f"{task.control_period} s: the policy's grid must be the sim's control period"
            )
        self._bindings = tuple(self._bind(stream) for stream in spec.observations)
        self._order = self._bind_actions()
        self._sizes = [len(joints) for joints in task.commands.values()]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(binding.key for binding in self._bindings)

    @property
    def command_size(self) -> int:
        return sum(self._sizes)

    def check_messages(self) -> None:
        """Convert the task's current messages once: what only shows with a message in hand
        (a field path the message lacks, a joint it does not carry) fails here, named."""
        messages = self.task.messages()
        for binding in self._bindings:
            try:
                binding.read(messages)
            except (ConversionError, KeyError) as error:
                raise UnmappableSpecError(
                    f"observation stream {binding.key!r} ({binding.topic}): {error}"
                ) from error

    def observe(self, messages: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        messages = self.task.messages() if messages is None else messages
        return {binding.key: binding.read(messages) for binding in self._bindings}

    def command_vector(self, actions: np.ndarray) -> np.ndarray:
        """Actions ``(..., Da)`` in the spec's order -> ``(..., D)`` in the task's order."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape[-1] != len(self._order):
            raise ValueError(
                f"actions have {actions.shape[-1]} values per step, the spec's action streams "
                f"have {len(self._order)}"
            )
        return actions[..., self._order]

    def split(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """A task-order set-point vector ``(D,)`` -> ``{command topic: (joints,)}``."""
        return split_setpoints(self.task.commands, vector)

    def join(self, setpoints: Mapping[str, np.ndarray]) -> np.ndarray:
        """``{command topic: (joints,)}`` -> the task-order vector ``(D,)``."""
        return join_setpoints(self.task.commands, setpoints)

    # -- binding ------------------------------------------------------------------------------

    def _bind(self, stream: StreamSpec) -> StreamBinding:
        where = f"observation stream {stream.key!r} (topic {stream.topic}, kind {stream.kind})"
        published = self.task.published
        relative = _relative(stream.topic, published)
        if relative is None:
            names = ", ".join(f"/{topic}" for topic in published)
            raise UnmappableSpecError(
                f"{where}: the {self.task.name} simulation publishes no such topic (it "
                f"publishes {names})"
            )
        message_type = published[relative]
        if stream.kind == "image":
            if message_type != IMAGE_TYPE or stream.message_type != IMAGE_TYPE:
                compressed = (
                    " (a policy trained on compressed frames saw compression artefacts that a "
                    "raw-image evaluation would not reproduce)"
                    if message_type == IMAGE_TYPE
                    else ""
                )
                raise UnmappableSpecError(
                    f"{where}: the sim publishes {message_type} on /{relative}; image streams "
                    f"are evaluated on raw {IMAGE_TYPE}{compressed}"
                )
            shape = stream.shape
            return StreamBinding(
                stream.key, stream.topic, lambda m: image_to_chw(m[relative], shape)
            )
        if stream.kind == "joint_state":
            if message_type != JOINT_STATE_TYPE:
                raise UnmappableSpecError(f"{where}: /{relative} carries {message_type}")
            joints, field_name = stream.joints, stream.joint_field

            def read(messages: Mapping[str, Any]) -> np.ndarray:
                message = messages[relative]
                return pick_joints(message.name, getattr(message, field_name), joints, field_name)

            return StreamBinding(stream.key, stream.topic, read)
        if stream.message_type != message_type:
            raise UnmappableSpecError(
                f"{where}: the sim publishes {message_type} on /{relative}, not "
                f"{stream.message_type}"
            )
        paths = stream.fields
        return StreamBinding(stream.key, stream.topic, lambda m: read_fields(m[relative], paths))

    def _bind_actions(self) -> list[int]:
        """Index into the spec-order action vector for each value of the task-order vector."""
        commands = self.task.commands
        offsets = self.spec.action_slices()
        chosen: dict[str, StreamSpec] = {}
        for stream in self.spec.actions:
            where = f"action stream {stream.key!r} (topic {stream.topic}, kind {stream.kind})"
            relative = _relative(stream.topic, commands)
            if stream.kind != "joint_trajectory" or relative is None:
                names = ", ".join(f"/{topic}" for topic in commands)
                raise UnmappableSpecError(
                    f"{where}: the {self.task.name} simulation is commanded with "
                    f"trajectory_msgs/JointTrajectory on {names}"
                )
            if relative in chosen:
                raise UnmappableSpecError(
                    f"{where}: /{relative} is already commanded by {chosen[relative].key!r}"
                )
            if sorted(stream.joints) != sorted(commands[relative]) or (
                stream.joint_field != "position"
            ):
                raise UnmappableSpecError(
                    f"{where}: /{relative} takes the positions of {list(commands[relative])} "
                    f"(in any order), got {stream.joint_field} of {list(stream.joints)}"
                )
            chosen[relative] = stream
        missing = [topic for topic in commands if topic not in chosen]
        if missing:
            raise UnmappableSpecError(
                f"the data spec commands no joints on {['/' + t for t in missing]}: every "
                f"controller of the {self.task.name} simulation needs set points"
            )
        order: list[int] = []
        for relative, joints in commands.items():
            stream = chosen[relative]
            start = offsets[stream.key].start
            order += [start + stream.joints.index(joint) for joint in joints]
        return order
