"""The ``main()`` of every dp_sim node: init, build, spin, shut down cleanly."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
import rclpy.exceptions
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """Spin the node built by ``make_node`` until SIGINT; 2 when its parameters are invalid."""
    rclpy.init(args=args)
    try:
        node = make_node()
    except (ValueError, rclpy.exceptions.ParameterException) as error:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except rclpy_implementation.RCLError:
        # rclpy's signal handler shuts the context down asynchronously: an executor between
        # its checks then fails to build its wait set, or a callback to publish. That is the
        # signal's shutdown, not a fault (exit 0); with the context still valid it is a fault.
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
