"""The demo's own node: subscriptions and service calls, spun in a background thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from .processes import StageError


class RosSession:
    """A node with its own context; callbacks run on the spin thread, service calls block the
    caller (never call them from a callback: the executor that would answer is busy)."""

    def __init__(self, name: str, use_sim_time: bool) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(
            name,
            context=self.context,
            parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)],
        )
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._clients: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._spin, name=f"{name}_spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass
        except rclpy_implementation.RCLError:
            # close() shuts the context down while the executor may be between its checks.
            if self.context.ok():
                raise

    def subscribe(self, msg_type: type, topic: str, callback: Callable[[Any], None]) -> None:
        self.node.create_subscription(msg_type, topic, callback, QoSProfile(depth=100))

    def call(self, stage: str, srv_type: type, name: str, request: Any, timeout: float) -> Any:
        # Clients are kept: a new one must be discovered by the server first, which would delay
        # the start of a recording by several simulation steps.
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise StageError(f"{stage}: service {name} not available within {timeout:.0f} s")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise StageError(f"{stage}: no answer from {name} within {timeout:.0f} s")
            time.sleep(0.001)
        return future.result()

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=self.context)
        self._thread.join(timeout=2.0)

    def __enter__(self) -> RosSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
