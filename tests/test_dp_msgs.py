"""dp_msgs: the generated types import, serialise, and cross process boundaries over DDS."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from dp_msgs.msg import ActionChunk, EpisodeEvent, PolicyStatus
from dp_msgs.srv import ResetSimulation, StartEpisode, StopEpisode
from dp_testing.example_messages import JOINT_NAMES, TP, example_action_chunk

MSG_DIR = Path(__file__).resolve().parents[1] / "src" / "dp_msgs" / "msg"


def test_constants_are_distinct_and_default_to_unknown() -> None:
    events = [EpisodeEvent.EVENT_START, EpisodeEvent.EVENT_STOP, EpisodeEvent.EVENT_DISCARD]
    assert len(set(events)) == 3
    assert EpisodeEvent().event == EpisodeEvent.EVENT_UNKNOWN
    states = [value for name, value in vars(PolicyStatus).items() if name.startswith("STATE_")]
    assert len(states) == len(set(states)) >= 6
    assert PolicyStatus().state == PolicyStatus.STATE_UNCONFIGURED


def test_services_have_request_and_response_fields() -> None:
    assert StartEpisode.Request(task="push_t").task == "push_t"
    assert StopEpisode.Request(discard=True).discard
    assert StopEpisode.Response(message_count=3).message_count == 3
    assert ResetSimulation.Response(seed=7).seed == 7


def test_action_chunk_round_trips_through_cdr() -> None:
    chunk = example_action_chunk(5)
    decoded = deserialize_message(serialize_message(chunk), ActionChunk)
    assert decoded == chunk
    assert len(decoded.actions) == TP * len(JOINT_NAMES)


def test_rosbags_reads_the_bytes_rclpy_writes() -> None:
    """Bags are read with rosbags: its CDR decoding of our types must agree with rosidl's."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    for msg_file in sorted(MSG_DIR.glob("*.msg")):
        typestore.register(get_types_from_msg(msg_file.read_text(), f"dp_msgs/msg/{msg_file.stem}"))
    chunk = example_action_chunk(3)
    decoded = typestore.deserialize_cdr(serialize_message(chunk), "dp_msgs/msg/ActionChunk")
    assert list(decoded.action_names) == JOINT_NAMES
    assert decoded.actions.tolist() == pytest.approx(list(chunk.actions))
    assert decoded.observation_stamp.sec == chunk.observation_stamp.sec
    assert decoded.checkpoint == chunk.checkpoint


@pytest.mark.ros
def test_action_chunk_crosses_two_process_boundaries(ros_processes, graph_probe) -> None:
    """talker process -> relay process -> this test process, all over DDS on loopback."""
    echoed = graph_probe.collect("/dp_test/chunks_echo", ActionChunk)
    relay = ros_processes.start_python_module(
        "chunk_relay",
        "dp_testing.chunk_relay",
        remappings={"chunks_in": "/dp_test/chunks", "chunks_out": "/dp_test/chunks_echo"},
    )
    assert relay.wait_for_output("relay ready", timeout=20.0), relay.output()
    ros_processes.start_python_module(
        "chunk_talker", "dp_testing.chunk_talker", remappings={"chunks": "/dp_test/chunks"}
    )
    received = echoed.wait_for(count=5, timeout=30.0)

    # Late discovery may cost the first few messages; those that arrive must be exact and ordered.
    indices = [chunk.chunk_index for chunk in received]
    assert indices == sorted(indices)
    for chunk in received:
        expected = example_action_chunk(chunk.chunk_index)
        expected.header.stamp = chunk.header.stamp
        assert chunk == expected
        assert chunk.header.stamp.sec > 0


@pytest.mark.ros
def test_node_processes_are_stopped_when_a_test_fails(
    pytester, ros_environment, monkeypatch
) -> None:
    """A failing test still takes its node processes down with it: no orphans."""
    monkeypatch.setenv("PYTHONPATH", ros_environment["PYTHONPATH"])
    pid_file = pytester.path / "pid"
    pytester.makepyfile(
        textwrap.dedent(
            f"""
            import os, sys
            from pathlib import Path

            def test_fails_with_a_running_node(ros_processes):
                node = ros_processes.start("sleeper", [sys.executable, "-c",
                    "import time; time.sleep(120)"])
                Path({str(pid_file)!r}).write_text(str(node.pid))
                assert False, "deliberate failure"

            def test_the_node_of_the_failed_test_is_gone():
                # Same session, so the parent-death signal has not fired: the fixture did it.
                pid = int(Path({str(pid_file)!r}).read_text())
                status = Path(f"/proc/{{pid}}/status")
                assert not status.exists() or "zombie" in status.read_text()
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "dp_testing.fixtures", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    pid = int(pid_file.read_text())
    assert not _process_exists(pid), f"process {pid} outlived the failing test"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited, which is what matters here.
    status_file = Path(f"/proc/{pid}/status")
    return status_file.exists() and "zombie" not in status_file.read_text()
