"""Message definitions stored in bags: complete, and hashed as rosidl hashes them."""

from __future__ import annotations

import json

import pytest
from rclpy.serialization import deserialize_message
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from dp_msgs.msg import EpisodeEvent
from dp_recorder import episode as ep
from dp_recorder.message_definitions import (
    MessageDefinitionError,
    MessageDefinitions,
    normalize_type_name,
    package_share_directory,
)

DEFINITIONS = MessageDefinitions()


@pytest.mark.parametrize(
    "msgtype",
    [
        "dp_msgs/msg/EpisodeEvent",
        "dp_msgs/msg/ActionChunk",
        "sensor_msgs/msg/Image",
        "sensor_msgs/msg/JointState",
        "trajectory_msgs/msg/JointTrajectory",
    ],
)
def test_hash_equals_the_one_rosidl_generated(msgtype: str) -> None:
    package, _, name = msgtype.split("/")
    share = package_share_directory(package)
    assert share is not None
    rosidl = json.loads((share / "msg" / f"{name}.json").read_text())["type_hashes"][0]
    assert rosidl["type_name"] == msgtype
    assert DEFINITIONS.get(msgtype).rihs01 == rosidl["hash_string"]


def test_a_reader_with_an_empty_typestore_decodes_from_the_stored_definition() -> None:
    definition = DEFINITIONS.get(ep.EVENT_TYPE)
    typestore = get_typestore(Stores.EMPTY)
    typestore.register(get_types_from_msg(definition.text, ep.EVENT_TYPE))
    assert typestore.hash_rihs01(ep.EVENT_TYPE) == definition.rihs01
    info = ep.EpisodeInfo(7, "name", "push_t", "", "robot", "1", "0.1.0", None)  # type: ignore[arg-type]
    cdr = ep.episode_event_cdr(
        DEFINITIONS.typestore(ep.EVENT_TYPE), 5_000_000_123, ep.EVENT_STOP, info, True, "ok"
    )
    decoded = typestore.deserialize_cdr(cdr, ep.EVENT_TYPE)
    assert (decoded.event, decoded.episode_index, decoded.task, decoded.success) == (
        ep.EVENT_STOP,
        7,
        "push_t",
        True,
    )
    # The bytes are what rclpy itself reads, too.
    native = deserialize_message(cdr, EpisodeEvent)
    assert native.header.stamp.sec == 5 and native.header.stamp.nanosec == 123
    assert native.notes == "ok" and native.event == EpisodeEvent.EVENT_STOP


def test_types_without_installed_msg_files_come_from_rosbags() -> None:
    empty = MessageDefinitions(share_directory=lambda package: None)
    definition = empty.get("sensor_msgs/msg/JointState")
    assert definition.rihs01 == DEFINITIONS.get("sensor_msgs/msg/JointState").rihs01


def test_an_unknown_type_is_a_clear_error() -> None:
    with pytest.raises(
        MessageDefinitionError, match=r"no_such_msgs/msg/Thing\.msg is not installed"
    ):
        DEFINITIONS.get("no_such_msgs/msg/Thing")


def test_type_names_are_normalised() -> None:
    assert normalize_type_name("std_msgs/String") == "std_msgs/msg/String"
    assert normalize_type_name("std_msgs/msg/String") == "std_msgs/msg/String"
    with pytest.raises(MessageDefinitionError):
        normalize_type_name("std_msgs/srv/Trigger")
