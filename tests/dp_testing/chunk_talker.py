"""Publishes example ``dp_msgs/msg/ActionChunk`` messages at a fixed rate (a test node)."""

from __future__ import annotations

import sys

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from dp_msgs.msg import ActionChunk
from dp_testing.example_messages import example_action_chunk


class ChunkTalker(Node):
    """Publishes ``example_action_chunk(i)`` on ``chunks`` for i = 0, 1, 2, ..."""

    def __init__(self) -> None:
        super().__init__("chunk_talker")
        self.declare_parameter(
            "rate_hz", 20.0, ParameterDescriptor(description="Publishing rate in Hz.")
        )
        self._publisher = self.create_publisher(ActionChunk, "chunks", 10)
        self._index = 0
        period = 1.0 / self.get_parameter("rate_hz").value
        self._timer = self.create_timer(period, self._publish_next)

    def _publish_next(self) -> None:
        chunk = example_action_chunk(self._index)
        chunk.header.stamp = self.get_clock().now().to_msg()
        self._publisher.publish(chunk)
        self._index += 1


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = ChunkTalker()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main(sys.argv)
