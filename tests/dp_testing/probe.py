"""The test's own view of the ROS graph: a node in the test process that waits and collects.

The probe has a context of its own and spins in a background thread, so a test can publish,
subscribe and call services while it waits on conditions with timeouts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data


class MessageCollector:
    """Keeps every message received on one topic, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._condition = threading.Condition()

    def __call__(self, message: Any) -> None:
        with self._condition:
            self.messages.append(message)
            self._condition.notify_all()

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[Any]:
        """Wait until ``count`` messages arrived; raise TimeoutError naming how many did."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(
                    f"received {len(self.messages)} of {count} messages within {timeout} s"
                )
            return list(self.messages)


class GraphProbe:
    """A node in the test process, spinning in a background thread until ``close``."""

    def __init__(self, name: str = "test_probe") -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"{name}_spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(ExternalShutdownException):
            self.executor.spin()

    def collect(
        self, topic: str, message_type: type, qos: QoSProfile | int = 10
    ) -> MessageCollector:
        """Subscribe to ``topic`` and keep what arrives."""
        collector = MessageCollector()
        self.node.create_subscription(message_type, topic, collector, qos)
        return collector

    def collect_sensor_data(self, topic: str, message_type: type) -> MessageCollector:
        """Subscribe with the sensor-data profile (best effort), as the nodes under test do."""
        return self.collect(topic, message_type, qos_profile_sensor_data)

    def wait_for_message(
        self, topic: str, message_type: type, timeout: float = 10.0, qos: QoSProfile | int = 10
    ) -> Any:
        """The first message on ``topic``; raise TimeoutError if none arrives in time."""
        return self.collect(topic, message_type, qos).wait_for(1, timeout)[0]

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` until it holds; raise TimeoutError saying ``what`` did not happen."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s")
            time.sleep(0.02)

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``topic`` has at least ``count`` publishers in the graph."""
        self.wait_until(
            lambda: self.node.count_publishers(topic) >= count,
            timeout,
            f"{count} publisher(s) on {topic}",
        )

    def wait_for_subscribers(self, topic: str, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``topic`` has at least ``count`` subscribers in the graph."""
        self.wait_until(
            lambda: self.node.count_subscribers(topic) >= count,
            timeout,
            f"{count} subscriber(s) on {topic}",
        )

    def call_service(self, service_type: type, name: str, request: Any, timeout: float = 10.0):
        """Call a service and wait for the response; raise TimeoutError if there is none."""
        client = self.node.create_client(service_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available within {timeout} s")
            future = client.call_async(request)
            self.wait_until(future.done, timeout, f"response of {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5.0)
