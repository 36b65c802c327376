"""RecordedTopic without a ROS graph: a sample taken through two subscriptions counts once."""

from __future__ import annotations

from rclpy.qos import QoSProfile

from dp_recorder.episode_writer import TopicInfo
from dp_recorder.message_definitions import MessageDefinitions
from dp_recorder.topic_subscriptions import RecordedTopic

DEFINITIONS = MessageDefinitions()


def topic(limit: int = 4) -> RecordedTopic:
    info = TopicInfo("/joint_states", DEFINITIONS.get("sensor_msgs/msg/JointState"))
    return RecordedTopic(info, QoSProfile(depth=10), None, recent_limit=limit)  # type: ignore[arg-type]


def info(gid: bytes, sequence: int | None) -> dict:
    return {"publisher_gid": {"data": gid}, "publication_sequence_number": sequence}


def test_a_sample_is_delivered_once_per_publisher_and_sequence_number() -> None:
    recorded = topic()
    assert recorded.first_delivery(info(b"a", 1))
    assert recorded.first_delivery(info(b"b", 1))  # another publisher's sample 1
    assert not recorded.first_delivery(info(b"a", 1))  # the same sample, other subscription
    assert recorded.first_delivery(info(b"a", 2))


def test_without_gid_or_sequence_number_nothing_is_taken_for_a_duplicate() -> None:
    recorded = topic()
    assert recorded.first_delivery({}) and recorded.first_delivery({})
    assert recorded.first_delivery(info(b"a", None)) and recorded.first_delivery(info(b"a", None))


def test_the_memory_of_samples_is_bounded() -> None:
    recorded = topic(limit=3)
    for sequence in range(1, 11):
        assert recorded.first_delivery(info(b"a", sequence))
    assert len(recorded.recent) == 3
    assert not recorded.first_delivery(info(b"a", 10))
