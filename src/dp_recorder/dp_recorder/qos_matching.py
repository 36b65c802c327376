"""The QoS a recorder subscribes with, chosen from the publishers it sees (adaptive, as rosbag2).

- Reliable, unless a publisher is best effort: a reliable subscription receives nothing from a
  best-effort publisher (camera drivers usually publish with the sensor-data profile).
- Transient local, when every publisher offers it: that is how latched topics such as
  ``/robot_description`` and ``/tf_static`` hand their last message to a late subscriber. With a
  volatile publisher among them, a transient-local subscription would not match it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rclpy.duration import Duration
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)


def subscription_qos(publishers: Sequence[QoSProfile], depth: int) -> QoSProfile:
    """The subscription QoS that receives from every publisher in ``publishers``."""
    best_effort = any(p.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
    latched = bool(publishers) and all(
        p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers
    )
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def is_compatible(subscription: QoSProfile, publisher: QoSProfile) -> bool:
    """Whether ``subscription`` receives from ``publisher`` (reliability and durability)."""
    if (
        subscription.reliability == ReliabilityPolicy.RELIABLE
        and publisher.reliability == ReliabilityPolicy.BEST_EFFORT
    ):
        return False
    return not (
        subscription.durability == DurabilityPolicy.TRANSIENT_LOCAL
        and publisher.durability == DurabilityPolicy.VOLATILE
    )


def describe(profile: QoSProfile) -> str:
    """A short description of a profile for logs: "reliable, transient_local, depth 10"."""
    return (
        f"{profile.reliability.name.lower()}, {profile.durability.name.lower()}, "
        f"depth {profile.depth}"
    )


def to_bag_qos(profile: QoSProfile) -> Qos:
    """A publisher's QoS as rosbags stores it in the bag's offered_qos_profiles."""
    return Qos(
        history=_enum(QosHistory, profile.history),
        depth=profile.depth,
        reliability=_enum(QosReliability, profile.reliability),
        durability=_enum(QosDurability, profile.durability),
        deadline=_time(profile.deadline),
        lifespan=_time(profile.lifespan),
        liveliness=_enum(QosLiveliness, profile.liveliness),
        liveliness_lease_duration=_time(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=profile.avoid_ros_namespace_conventions,
    )


def _enum(enum_type, policy) -> object:
    # rclpy and rosbags both number the policies as rmw does.
    try:
        return enum_type(int(policy))
    except ValueError:
        return enum_type.UNKNOWN


def _time(duration: Duration) -> QosTime:
    nanoseconds = duration.nanoseconds
    return QosTime(sec=nanoseconds // 1_000_000_000, nsec=nanoseconds % 1_000_000_000)
