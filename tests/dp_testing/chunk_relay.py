"""Republishes every ``dp_msgs/msg/ActionChunk`` from ``chunks_in`` on ``chunks_out``."""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from dp_msgs.msg import ActionChunk


class ChunkRelay(Node):
    """Passes chunks through unchanged, so a test sees them cross two process boundaries."""

    def __init__(self) -> None:
        super().__init__("chunk_relay")
        self._publisher = self.create_publisher(ActionChunk, "chunks_out", 10)
        self.create_subscription(ActionChunk, "chunks_in", self._publisher.publish, 10)
        self.get_logger().info("relay ready")


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = ChunkRelay()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main(sys.argv)
