"""Subscription QoS from the publishers' QoS, as rosbag2's adaptive QoS chooses it."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rosbags.interfaces import QosDurability, QosReliability

from dp_recorder.qos_matching import is_compatible, subscription_qos, to_bag_qos

RELIABLE = QoSProfile(depth=10)
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def test_reliable_publishers_get_a_reliable_volatile_subscription() -> None:
    qos = subscription_qos([RELIABLE, RELIABLE], depth=50)
    assert qos.reliability == ReliabilityPolicy.RELIABLE
    assert qos.durability == DurabilityPolicy.VOLATILE
    assert qos.depth == 50


def test_one_best_effort_publisher_makes_the_subscription_best_effort() -> None:
    qos = subscription_qos([RELIABLE, qos_profile_sensor_data], depth=10)
    assert qos.reliability == ReliabilityPolicy.BEST_EFFORT
    assert all(is_compatible(qos, p) for p in (RELIABLE, qos_profile_sensor_data))


def test_latched_topics_are_subscribed_transient_local_only_when_all_publishers_are() -> None:
    assert subscription_qos([LATCHED, LATCHED], 10).durability == DurabilityPolicy.TRANSIENT_LOCAL
    mixed = subscription_qos([LATCHED, RELIABLE], 10)
    assert mixed.durability == DurabilityPolicy.VOLATILE
    assert is_compatible(mixed, LATCHED) and is_compatible(mixed, RELIABLE)


def test_incompatibilities_are_detected() -> None:
    latched = subscription_qos([LATCHED], 10)
    assert not is_compatible(latched, RELIABLE)
    reliable = subscription_qos([RELIABLE], 10)
    assert not is_compatible(reliable, qos_profile_sensor_data)


def test_offered_qos_is_stored_with_rmw_numbers() -> None:
    stored = to_bag_qos(qos_profile_sensor_data)
    assert stored.reliability == QosReliability.BEST_EFFORT
    assert stored.durability == QosDurability.VOLATILE
    assert stored.depth == qos_profile_sensor_data.depth
