"""Reading the streams of the data spec from one bag, in two passes.

Pass 1 (``read_index``) reads every message of the spec's topics and the episode events: the
time of each message, the low-dim values (joints, fields), the trajectory commands, and for
images only their time and position in the topic. Pass 2 (``decode_images``) decodes just the
images that alignment picked, so a 30 Hz camera aligned at 10 Hz, or a long bag, never holds
all of its images in memory.

Time of a message: its ``header.stamp`` when it has a header (the time the data describes,
not when the recorder happened to receive it, which adds transport and queueing latency), its
receive time (the bag's log time) otherwise. A stream whose messages leave the stamp zero uses
the receive time for all of its messages, and the report says so. JointTrajectory commands are
selected by receive time and start at their stamp (see ``trajectory``).
"""

from __future__ import annotations

import contextlib
import struct
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader

from dp_policy.data_spec import DataSpec, StreamSpec
from dp_policy.datasets.bag_files import BagFile
from dp_policy.datasets.bag_types import fallback_typestore, has_header, register_missing_types
from dp_policy.datasets.episodes import EventRecord
from dp_policy.datasets.errors import (
    BagReadError,
    MessageConversionError,
    MissingJointError,
    MissingTopicError,
)
from dp_policy.datasets.trajectory import RejectedCommandError, TrajectoryCommand, parse_trajectory
from dp_policy.message_conversion import (
    ConversionError,
    NonFiniteValueError,
    image_to_chw,
    pick_joints,
    read_fields,
)

EPISODE_TOPIC = "/dp/episode"
EPISODE_EVENT_TYPE = "dp_msgs/msg/EpisodeEvent"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
_JOINT_STATE_FIELDS = {"position": "position", "velocity": "velocity", "effort": "effort"}


@dataclass
class StreamData:
    """One stream of a bag after pass 1, sorted by time.

    times_ns: ``(M,)``; values: ``(M, D)`` for joints and fields; ordinals: ``(M,)`` position of
    each image in its topic (for pass 2); commands: trajectory commands by receive time.
    """

    spec: StreamSpec
    times_ns: np.ndarray
    values: np.ndarray | None = None
    ordinals: np.ndarray | None = None
    commands: list[TrajectoryCommand] | None = None
    time_source: str = "header"


@dataclass
class BagContents:
    """What pass 1 found in a bag."""

    bag: BagFile
    streams: dict[str, StreamData]
    events: list[EventRecord]
    skipped_messages: dict[str, int] = field(default_factory=dict)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def cdr_header_stamp_ns(raw: bytes | memoryview) -> int:
    """``header.stamp`` of a CDR message whose first field is a Header, without decoding it.

    CDR: 4 bytes of encapsulation (byte 1 odd: little endian), then int32 sec, uint32 nanosec.
    """
    little = raw[1] & 1
    sec, nanosec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


class BagStreamReader:
    """Reads the spec's streams from one bag; use as a context manager."""

    def __init__(self, bag: BagFile, spec: DataSpec, episode_topic: str = EPISODE_TOPIC) -> None:
        self.bag = bag
        self.spec = spec
        self.episode_topic = episode_topic
        self._reader: AnyReader | None = None
        self._connections: dict[str, list] = {}

    def __enter__(self) -> BagStreamReader:
        try:
            self._reader = AnyReader([self.bag.path], default_typestore=fallback_typestore())
            self._reader.open()
        except Exception as error:  # rosbags raises many types for corrupt storage
            self._reader = None
            raise BagReadError(self._unreadable(error)) from error
        try:
            self._check_topics()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            # Closing a broken bag must not hide the first error.
            with contextlib.suppress(Exception):
                reader.close()

    # -- checks ----------------------------------------------------------------------------

    def _unreadable(self, error: BaseException) -> str:
        hint = (
            "it may be truncated (a recorder that was killed): repair it with "
            f"`python -m dp_recorder.recover {self.bag.path}` (or `ros2 bag reindex`), "
            "or move it out of the dataset folder"
        )
        return f"{self.bag.path}: the bag cannot be read ({type(error).__name__}: {error}); {hint}"

    def _check_topics(self) -> None:
        reader = self._require_reader()
        by_topic: dict[str, list] = defaultdict(list)
        for connection in reader.connections:
            by_topic[connection.topic].append(connection)
        counts = {topic: info.msgcount for topic, info in reader.topics.items()}
        for stream in self.spec.streams:
            connections = by_topic.get(stream.topic)
            if not connections:
                raise MissingTopicError(
                    f"{self.bag.path}: topic {stream.topic} of stream {stream.key!r} is not in the "
                    f"bag; it has {sorted(by_topic)}"
                )
            types = sorted({c.msgtype for c in connections})
            if types != [stream.message_type]:
                raise MissingTopicError(
                    f"{self.bag.path}: topic {stream.topic} has type {', '.join(types)}, the data "
                    f"spec's stream {stream.key!r} expects {stream.message_type}"
                )
            if counts.get(stream.topic, 0) == 0:
                raise MissingTopicError(
                    f"{self.bag.path}: topic {stream.topic} of stream {stream.key!r} has no "
                    "messages in the bag"
                )
            self._connections[stream.key] = connections
        events = [
            c for c in by_topic.get(self.episode_topic, []) if c.msgtype == EPISODE_EVENT_TYPE
        ]
        self._connections["__events__"] = events
        needed = {c.msgtype for group in self._connections.values() for c in group}
        missing = register_missing_types(reader.typestore, needed)
        if missing:
            raise BagReadError(
                f"{self.bag.path}: the bag stores no definition of {missing} and none is "
                "installed (build and source the workspace so that share/dp_msgs/msg is on "
                "AMENT_PREFIX_PATH)"
            )

    def _require_reader(self) -> AnyReader:
        if self._reader is None:
            raise RuntimeError("BagStreamReader is not open; use it in a with statement")
        return self._reader

    def _messages(self, connections: list) -> Iterator[tuple[Any, int, bytes]]:
        reader = self._require_reader()
        if not connections:
            return  # rosbags reads every topic when given no connection
        try:
            yield from reader.messages(connections=connections)
        except (BagReadError, MissingJointError, MessageConversionError):
            raise
        except Exception as error:
            raise BagReadError(self._unreadable(error)) from error

    def _decode(self, raw: bytes, msgtype: str, topic: str, time_ns: int) -> Any:
        try:
            return self._require_reader().deserialize(raw, msgtype)
        except Exception as error:
            raise BagReadError(
                f"{self.bag.path}: message on {topic} at {time_ns * 1e-9:.3f} s cannot be "
                f"decoded as {msgtype} ({error}); the bag is corrupt"
            ) from error

    # -- pass 1 ----------------------------------------------------------------------------

    def read_index(self) -> BagContents:
        """Times, low-dim values, commands and events of the whole bag (images not decoded)."""
        skipped: dict[str, int] = {}
        streams = {stream.key: self._read_stream(stream, skipped) for stream in self.spec.streams}
        return BagContents(self.bag, streams, self._read_events(), skipped)

    def _read_stream(self, stream: StreamSpec, skipped: dict[str, int]) -> StreamData:
        connections = self._connections[stream.key]
        typestore = self._require_reader().typestore
        headed = has_header(typestore, stream.message_type)
        stamps: list[int] = []
        received: list[int] = []
        values: list[np.ndarray] = []
        commands: list[TrajectoryCommand] = []
        for connection, log_ns, raw in self._messages(connections):
            if stream.kind == "image":
                stamps.append(cdr_header_stamp_ns(raw) if headed else log_ns)
                received.append(log_ns)
                continue
            message = self._decode(raw, connection.msgtype, stream.topic, log_ns)
            where = f"{self.bag.path}: {stream.topic} at {log_ns * 1e-9:.3f} s"
            if stream.kind == "joint_trajectory":
                try:
                    commands.append(
                        parse_trajectory(message, log_ns, stream.joints, stream.joint_field)
                    )
                except MissingJointError as error:
                    raise MissingJointError(f"{where}: {error}") from error
                except RejectedCommandError:
                    skipped[stream.key] = skipped.get(stream.key, 0) + 1
                continue
            try:
                value = self._low_dim_value(stream, message, where)
            except NonFiniteValueError:
                skipped[stream.key] = skipped.get(stream.key, 0) + 1
                continue
            stamps.append(_stamp_ns(message.header.stamp) if headed else log_ns)
            received.append(log_ns)
            values.append(value)
        if stream.kind == "joint_trajectory":
            commands.sort(key=lambda command: command.received_ns)
            times = np.array([c.received_ns for c in commands], dtype=np.int64)
            return StreamData(stream, times, commands=commands, time_source="receive")
        times = np.asarray(stamps, dtype=np.int64)
        source = "header" if headed else "receive"
        if headed and times.size and np.any(times == 0):
            times, source = np.asarray(received, dtype=np.int64), "receive"
        order = np.argsort(times, kind="stable")
        data = StreamData(stream, times[order], time_source=source)
        if stream.kind == "image":
            data.ordinals = order.astype(np.int64)
        else:
            array = np.asarray(values, dtype=np.float64).reshape(len(values), stream.size)
            data.values = array[order]
        return data

    def _low_dim_value(self, stream: StreamSpec, message: Any, where: str) -> np.ndarray:
        if stream.kind == "joint_state":
            names = list(message.name)
            missing = [joint for joint in stream.joints if joint not in names]
            if missing:
                raise MissingJointError(
                    f"{where}: JointState lacks joint(s) {missing} named by the data spec's "
                    f"stream {stream.key!r} (it has {names})"
                )
            attribute = _JOINT_STATE_FIELDS[stream.joint_field]
            try:
                return pick_joints(
                    names, getattr(message, attribute), stream.joints, stream.joint_field
                )
            except NonFiniteValueError:
                raise
            except ConversionError as error:
                raise MessageConversionError(f"{where}: {error}") from error
        try:
            return read_fields(message, stream.fields)
        except NonFiniteValueError:
            raise
        except ConversionError as error:
            raise MessageConversionError(
                f"{where}: {error} (stream {stream.key!r}, message type {stream.message_type})"
            ) from error

    def _read_events(self) -> list[EventRecord]:
        events = []
        for connection, log_ns, raw in self._messages(self._connections["__events__"]):
            message = self._decode(raw, connection.msgtype, self.episode_topic, log_ns)
            stamp = _stamp_ns(message.header.stamp)
            events.append(
                EventRecord(
                    time_ns=stamp or log_ns,
                    event=int(message.event),
                    success=bool(message.success),
                    task=str(message.task),
                    name=str(message.episode_name),
                )
            )
        return events

    # -- pass 2 ----------------------------------------------------------------------------

    def decode_images(self, stream: StreamSpec, ordinals: np.ndarray) -> dict[int, np.ndarray]:
        """The images at topic positions ``ordinals``, each ``(C, H, W)`` uint8, by ordinal."""
        wanted = set(int(o) for o in np.unique(ordinals))
        images: dict[int, np.ndarray] = {}
        if not wanted:
            return images
        last = max(wanted)
        compressed = stream.message_type == COMPRESSED_IMAGE_TYPE
        for ordinal, (connection, log_ns, raw) in enumerate(
            self._messages(self._connections[stream.key])
        ):
            if ordinal in wanted:
                message = self._decode(raw, connection.msgtype, stream.topic, log_ns)
                try:
                    images[ordinal] = image_to_chw(message, stream.shape, compressed=compressed)
                except ConversionError as error:
                    raise MessageConversionError(
                        f"{self.bag.path}: image on {stream.topic} at {log_ns * 1e-9:.3f} s: "
                        f"{error} (stream {stream.key!r}, shape {list(stream.shape)})"
                    ) from error
            if ordinal >= last:
                break
        return images
