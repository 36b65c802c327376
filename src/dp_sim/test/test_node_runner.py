"""run_node's exit: a shutdown that races the executor is a clean end, any other error is not.

Each case is its own process, as each node's ``main`` is: rclpy's global executor outlives a
``run_node`` call, so two in one process would not start alike.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.ros

NODE_PROGRAM = textwrap.dedent(
    """
    import sys

    import rclpy
    from rclpy.impl.implementation_singleton import rclpy_implementation
    from rclpy.node import Node
    from std_msgs.msg import String

    from dp_sim.node_runner import run_node

    SHUT_DOWN_FIRST = sys.argv[1] == "shutdown"


    def make_node():
        node = Node("runner_under_test")
        publisher = node.create_publisher(String, "runner_under_test/out", 1)

        def tick():
            if SHUT_DOWN_FIRST:
                # What rclpy's SIGINT/SIGTERM handler does (rcl_shutdown of the context, the
                # nodes left alone), at a moment the executor cannot choose: here between the
                # callback's start and its publish, which rcl then refuses with an RCLError.
                rclpy.get_default_context().handle.shutdown()
                publisher.publish(String(data="after shutdown"))
            else:
                raise rclpy_implementation.RCLError("a genuine rcl failure")

        node.create_timer(0.01, tick)
        return node


    sys.exit(run_node(make_node, "runner_under_test", []))
    """
)


def run_program(case: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NODE_PROGRAM, case], capture_output=True, text=True, timeout=60
    )


def test_a_signal_shutdown_racing_a_callback_exits_cleanly():
    result = run_program("shutdown")
    assert result.returncode == 0, result.stderr


def test_an_rcl_error_with_the_context_valid_still_fails():
    result = run_program("genuine")
    assert result.returncode == 1
    assert "RCLError: a genuine rcl failure" in result.stderr
