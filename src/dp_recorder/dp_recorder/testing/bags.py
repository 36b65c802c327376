"""Bags in tests and benchmarks: exact CDR bytes of pattern messages, reading bags back."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from dp_recorder.bag_metadata import custom_data_of, read_metadata
from dp_recorder.message_definitions import MessageDefinitions
from dp_recorder.testing.patterns import pattern_joint_state

_DEFINITIONS = MessageDefinitions()


def joint_state_cdr(index: int) -> bytes:
    """CDR of ``pattern_joint_state(index)``, exactly as it travels over DDS.

    (rclpy's serialize_message pads its output with bytes from its size estimate, which strict
    CDR readers such as rosbags reject; a publisher's bytes on the wire carry no such padding.)
    """
    typestore = _DEFINITIONS.typestore("sensor_msgs/msg/JointState")
    types = typestore.types
    pattern = pattern_joint_state(index)
    message = types["sensor_msgs/msg/JointState"](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](
                sec=pattern.header.stamp.sec, nanosec=pattern.header.stamp.nanosec
            ),
            frame_id=pattern.header.frame_id,
        ),
        name=list(pattern.name),
        position=np.array(pattern.position, dtype=np.float64),
        velocity=np.array(pattern.velocity, dtype=np.float64),
        effort=np.array(pattern.effort, dtype=np.float64),
    )
    return bytes(typestore.serialize_cdr(message, "sensor_msgs/msg/JointState"))


def read_bag(bag: Path) -> dict[str, list[tuple[int, Any, bytes]]]:
    """Every message of ``bag`` by topic: (log time, decoded message, raw bytes).

    Decoded with the types the bag itself defines (an empty typestore, as the dataset builder
    reads), which also checks the type hashes that metadata.yaml states.
    """
    messages: dict[str, list[tuple[int, Any, bytes]]] = defaultdict(list)
    with AnyReader([Path(bag)], default_typestore=get_typestore(Stores.EMPTY)) as reader:
        for connection, timestamp, raw in reader.messages():
            decoded = reader.deserialize(raw, connection.msgtype)
            messages[connection.topic].append((timestamp, decoded, bytes(raw)))
    return dict(messages)


def custom_data(bag: Path) -> dict[str, str]:
    """The custom data of a bag's metadata.yaml."""
    return custom_data_of(read_metadata(Path(bag)))
