"""Publishes pattern messages (``patterns``) at given rates, for tests and benchmarks.

Streams: a camera (sensor_msgs/Image, rgb8), joint states (sensor_msgs/JointState) and a latched
string (std_msgs/String, transient local, like /robot_description). Each stream publishes in
phases, ``<stream>_counts[i]`` messages at ``<stream>_rates[i]`` Hz (a count of 0 in the last
phase: until stopped), from a thread of its own that keeps to absolute deadlines, so that the
rate holds whatever the executor does. When a stream is done it logs
"<topic>: published <n> messages at <rate> Hz" (the rate measured).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from dp_recorder.testing.patterns import pattern_image, pattern_joint_state, pattern_text

_PARAMETERS = {
    "image_topic": ("", "Image topic; empty: no images."),
    "image_width": (640, "Image width in pixels."),
    "image_height": (480, "Image height in pixels."),
    "image_rates": ([30.0], "Image rate of each phase in Hz."),
    "image_counts": ([0], "Images of each phase; 0 in the last phase: until stopped."),
    "joint_topic": ("", "JointState topic; empty: no joint states."),
    "joint_rates": ([100.0], "JointState rate of each phase in Hz."),
    "joint_counts": ([0], "JointStates of each phase; 0 in the last phase: until stopped."),
    "latched_topic": ("", "Topic of one latched std_msgs/String; empty: none."),
    "latched_text": ("robot description", "Text of the latched message."),
    "reliability": ("reliable", "QoS reliability of the image and joint streams."),
    "depth": (100, "QoS history depth of the image stream (and of the joint stream)."),
    "joint_depth": (0, "QoS history depth of the joint stream; 0: as depth."),
    "wait_for_subscribers": (1, "Streams start when each has this many subscribers."),
    "start_delay": (
        0.5,
        "Seconds between seeing the subscribers and the first message: the publisher sees a "
        "subscriber before that subscriber has finished discovering the publisher, and a "
        "volatile subscriber misses what comes before.",
    ),
    "start_index": (0, "Index of the first message of each stream."),
}


class PatternPublisher(Node):
    """Publishes pattern streams; see the module doc."""

    def __init__(self) -> None:
        super().__init__("pattern_publisher")
        for name, (default, description) in _PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        reliability = (
            ReliabilityPolicy.BEST_EFFORT
            if self._param("reliability") == "best_effort"
            else ReliabilityPolicy.RELIABLE
        )
        qos = QoSProfile(depth=self._param("depth"), reliability=reliability)
        joint_qos = QoSProfile(
            depth=self._param("joint_depth") or self._param("depth"), reliability=reliability
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        if self._param("latched_topic"):
            latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            publisher = self.create_publisher(String, self._param("latched_topic"), latched)
            publisher.publish(pattern_text(self._param("start_index"), self._param("latched_text")))
        width, height = self._param("image_width"), self._param("image_height")
        streams: list[tuple[Publisher, str, Callable[[int], object]]] = []
        if self._param("image_topic"):
            publisher = self.create_publisher(Image, self._param("image_topic"), qos)
            streams.append((publisher, "image", lambda i: pattern_image(i, width, height)))
        if self._param("joint_topic"):
            publisher = self.create_publisher(JointState, self._param("joint_topic"), joint_qos)
            streams.append((publisher, "joint", pattern_joint_state))
        for publisher, prefix, make in streams:
            rates, counts = self._param(f"{prefix}_rates"), self._param(f"{prefix}_counts")
            if len(rates) != len(counts):
                raise ValueError(f"{prefix}_rates and {prefix}_counts differ in length")
            phases = list(zip(rates, counts, strict=True))
            thread = threading.Thread(
                target=self._publish_stream, args=(publisher, phases, make), daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _publish_stream(
        self,
        publisher: Publisher,
        phases: list[tuple[float, int]],
        make: Callable[[int], object],
    ) -> None:
        needed = self._param("wait_for_subscribers")
        while publisher.get_subscription_count() < needed:
            if self._stop.wait(0.02):
                return
        if self._stop.wait(self._param("start_delay")):
            return
        self.get_logger().info(f"{publisher.topic_name}: {needed} subscriber(s), publishing")
        index = self._param("start_index")
        published = 0
        started = time.monotonic()
        for rate, count in phases:
            period = 1.0 / rate
            deadline = time.monotonic()
            phase_published = 0
            while count == 0 or phase_published < count:
                message = make(index)
                delay = deadline - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                if self._stop.is_set():
                    break
                publisher.publish(message)
                index += 1
                published += 1
                phase_published += 1
                deadline += period
        elapsed = time.monotonic() - started
        measured = (published - 1) / elapsed if published > 1 and elapsed > 0 else 0.0
        self.get_logger().info(
            f"{publisher.topic_name}: published {published} messages at {measured:.1f} Hz"
        )

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = PatternPublisher()
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
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main(sys.argv)
