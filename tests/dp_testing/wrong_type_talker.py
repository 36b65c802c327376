"""Publishes messages of another type on topics that others publish (a test node).

A recorder must not be confused when a second publisher appears on a recorded topic with a type
of its own: ``topics`` lists ``name=pkg/msg/Type`` entries, and each gets a best-effort
publisher of that type (best effort, so that a recorder which let it choose the QoS would
downgrade its reliable subscription) sending default messages whose ``header.frame_id`` (for
types with a header) is ``intruder:<n>``.
"""

from __future__ import annotations

import importlib
import sys

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy


def message_class(msgtype: str) -> type:
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class WrongTypeTalker(Node):
    """Publishes default messages of the given types on the given topics."""

    def __init__(self) -> None:
        super().__init__("wrong_type_talker")
        self.declare_parameter(
            "topics", ["chatter=std_msgs/msg/String"], ParameterDescriptor(description=__doc__)
        )
        self.declare_parameter("rate_hz", 50.0, ParameterDescriptor(description="Rate in Hz."))
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._streams = []
        for entry in self.get_parameter("topics").value:
            topic, _, msgtype = entry.partition("=")
            cls = message_class(msgtype)
            self._streams.append((self.create_publisher(cls, topic, qos), cls))
        self._count = 0
        self.create_timer(1.0 / self.get_parameter("rate_hz").value, self._publish)
        self.get_logger().info("wrong-type talker publishing")

    def _publish(self) -> None:
        for publisher, cls in self._streams:
            message = cls()
            if hasattr(message, "header"):
                message.header.frame_id = f"intruder:{self._count}"
            publisher.publish(message)
        self._count += 1


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = WrongTypeTalker()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main(sys.argv)
