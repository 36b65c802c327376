"""pytest plugin: an isolated DDS domain per session, real node processes, a probe node.

Loaded for every test of the workspace by the root ``conftest.py``. Fixtures:

- ``ros_environment``: the environment that child processes get (domain, discovery range, rmw).
- ``ros_processes``: a :class:`ProcessGraph`; every process it starts is stopped after the test,
  whether the test passed or failed, and its output is printed for a failing test.
- ``graph_probe``: a :class:`GraphProbe` node in the test process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dp_testing.domain import DomainReservation, isolated_ros_environment, reserve_domain
from dp_testing.processes import NodeProcess, ProcessGraph

_TESTS_DIR = Path(__file__).resolve().parent.parent
_reservation: DomainReservation | None = None
_started: list[NodeProcess] = []


def pytest_configure(config: pytest.Config) -> None:
    global _reservation
    if _reservation is None:
        # Set before any rclpy.init in this process and inherited by every child process.
        _reservation = reserve_domain()
        os.environ.update(isolated_ros_environment(_reservation.domain_id))


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')} "
        f"ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE')} "
        f"RMW_IMPLEMENTATION={os.environ.get('RMW_IMPLEMENTATION')}"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Last line of defence: a process still alive here escaped its test's clean-up.
    orphans = [process for process in _started if process.is_running()]
    for process in orphans:
        process.stop(grace_s=1.0)
    if orphans:
        names = ", ".join(f"{process.name} (pid {process.pid})" for process in orphans)
        sys.stderr.write(f"\nERROR: node processes outlived their tests: {names}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _reservation is not None:
        _reservation.release()


@pytest.fixture(scope="session")
def ros_environment() -> dict[str, str]:
    """Environment for node processes: this session's domain, and dp_testing importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_TESTS_DIR), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def ros_processes(ros_environment: dict[str, str], tmp_path: Path) -> Iterator[ProcessGraph]:
    """Start node processes for one test; all are stopped afterwards, pass or fail."""
    graph = _TrackedProcessGraph(tmp_path / "node_logs", ros_environment)
    try:
        yield graph
    finally:
        graph.stop_all()
        # pytest shows a test's captured output only when it fails: the nodes' logs then.
        print(graph.report())


@pytest.fixture
def graph_probe() -> Iterator:
    """A node in the test process (``dp_testing.probe.GraphProbe``), spinning in a thread."""
    # Imported here so that tests which never touch ROS do not need rclpy importable.
    from dp_testing.probe import GraphProbe

    probe = GraphProbe()
    try:
        yield probe
    finally:
        probe.close()


class _TrackedProcessGraph(ProcessGraph):
    def start(self, *args, **kwargs) -> NodeProcess:
        process = super().start(*args, **kwargs)
        _started.append(process)
        return process
