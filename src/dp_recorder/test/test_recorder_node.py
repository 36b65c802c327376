"""The recorder node as a real process, recording real publisher processes over DDS.

Each test uses topic and node names of its own, so that no test sees what an earlier one left in
the graph (a killed process's endpoints linger in DDS discovery for a while).
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from dp_msgs.msg import EpisodeEvent
from dp_msgs.srv import StartEpisode, StopEpisode
from dp_recorder.testing.bags import custom_data, read_bag
from dp_recorder.testing.patterns import pattern_image, pattern_joint_state, pattern_text
from dp_testing.processes import NodeProcess, ProcessGraph

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 160, 120
_names = itertools.count()


class Setup:
    """Names for one test: a recorder node and topics nobody else uses."""

    def __init__(self, tmp_path: Path) -> None:
        self.uid = f"rec{next(_names)}_{int(time.time() * 1000) % 100000}"
        self.node = f"recorder_{self.uid}"
        self.camera = f"/{self.uid}/camera"
        self.joints = f"/{self.uid}/joint_states"
        self.description = f"/{self.uid}/robot_description"
        self.output_dir = tmp_path / "demos"

    def parameters(self, topics: list[str], **overrides: Any) -> dict[str, Any]:
        return {
            "topics": topics,
            "output_dir": str(self.output_dir),
            "graph_poll_period": 0.1,
            "status_period": 0.2,
            **overrides,
        }

    def start_recorder(
        self, processes: ProcessGraph, topics: list[str], name: str = "", **overrides: Any
    ) -> NodeProcess:
        recorder = processes.start_python_module(
            name or self.node, "dp_recorder", parameters=self.parameters(topics, **overrides)
        )
        assert recorder.wait_for_output("recorder ready", 30.0), recorder.output()
        return recorder

    def start_publisher(self, processes: ProcessGraph, name: str, **parameters: Any) -> NodeProcess:
        defaults = {"image_width": WIDTH, "image_height": HEIGHT}
        return processes.start_python_module(
            f"{name}_{self.uid}",
            "dp_recorder.testing.pattern_publisher",
            parameters={**defaults, **parameters},
        )

    def start_episode(self, probe, task: str = "push_t", **fields: Any) -> StartEpisode.Response:
        request = StartEpisode.Request(task=task, **fields)
        return probe.call_service(StartEpisode, f"/{self.node}/start_episode", request, 30.0)

    def stop_episode(self, probe, **fields: Any) -> StopEpisode.Response:
        request = StopEpisode.Request(**fields)
        return probe.call_service(StopEpisode, f"/{self.node}/stop_episode", request, 60.0)

    def collect_status(self, probe):
        return probe.collect(f"/{self.node}/status", String)


def wait_published(publisher: NodeProcess, topic: str, count: int, timeout: float = 30.0) -> None:
    text = f"{topic}: published {count} messages"
    assert publisher.wait_for_output(text, timeout), publisher.output()


def wait_recorded(status, topic_counts: dict[str, int], timeout: float = 20.0) -> dict:
    """Wait until the recorder's status shows at least these message counts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status.messages:
            last = json.loads(status.messages[-1].data)
            topics = last.get("topics", {})
            if all(topics.get(t, {}).get("messages", 0) >= n for t, n in topic_counts.items()):
                return last
        time.sleep(0.05)
    last = json.loads(status.messages[-1].data) if status.messages else {}
    raise TimeoutError(f"recorder status did not reach {topic_counts}: {last}")


def decoded(messages: list, message_type: type) -> list:
    """The rclpy messages of a bag topic (decoded from the recorded bytes)."""
    return [deserialize_message(raw, message_type) for _, _, raw in messages]


def assert_exact_patterns(messages: list, message_type: type, indices: list[int]) -> None:
    received = decoded(messages, message_type)
    assert [m.header.stamp.sec for m in received] == indices
    for message in received:
        index = message.header.stamp.sec
        if message_type is Image:
            expected = pattern_image(index, WIDTH, HEIGHT)
        else:
            expected = pattern_joint_state(index)
        assert message == expected, f"message {index} differs from what was published"


def events_of(messages: list) -> list[tuple[int, str]]:
    return [(m.event, m.notes) for _, m, _ in messages]


@pytest.mark.parametrize(("storage_id", "compression"), [("mcap", "zstd"), ("sqlite3", "none")])
def test_every_message_published_during_an_episode_is_in_its_bag(
    ros_processes, graph_probe, tmp_path, storage_id, compression
) -> None:
    s = Setup(tmp_path)
    # Latched before the recorder exists: it must still reach every episode's bag.
    latched = s.start_publisher(
        ros_processes, "latched", latched_topic=s.description, wait_for_subscribers=0
    )
    events = graph_probe.collect("/dp/episode", EpisodeEvent)
    status = s.collect_status(graph_probe)
    recorder = s.start_recorder(
        ros_processes,
        [s.camera, f"{s.joints}=sensor_msgs/msg/JointState", s.description],
        storage_id=storage_id,
        compression=compression,
        robot_name="test_robot",
        software_version="v1.2.3",
    )
    assert recorder.wait_for_output(f"recording {s.description}", 20.0), recorder.output()
    started = s.start_episode(graph_probe, notes="operator A")
    assert started.success, started.message
    publisher = s.start_publisher(
        ros_processes,
        "streams",
        image_topic=s.camera,
        image_rates=[20.0],
        image_counts=[30],
        joint_topic=s.joints,
        joint_rates=[100.0],
        joint_counts=[150],
    )
    wait_published(publisher, s.camera, 30)
    wait_published(publisher, s.joints, 150)
    during = wait_recorded(status, {s.camera: 30, s.joints: 150})
    stopped = s.stop_episode(graph_probe, task_success=True, notes="clean run")
    assert stopped.success, stopped.message

    bag = Path(started.bag_path)
    assert stopped.bag_path == str(bag) and bag.parent == s.output_dir
    messages = read_bag(bag)
    assert_exact_patterns(messages[s.camera], Image, list(range(30)))
    assert_exact_patterns(messages[s.joints], JointState, list(range(150)))
    (description,) = messages[s.description]
    assert description[1].data == pattern_text(0).data
    episode_events = messages["/dp/episode"]
    assert events_of(episode_events) == [
        (EpisodeEvent.EVENT_START, "operator A"),
        (EpisodeEvent.EVENT_STOP, "clean run"),
    ]
    times = [t for topic in messages.values() for t, _, _ in topic]
    assert episode_events[0][0] == min(times) and episode_events[-1][0] == max(times)
    assert stopped.message_count == 30 + 150 + 1 + 2

    custom = custom_data(bag)
    assert custom["task"] == "push_t" and custom["outcome"] == "success"
    assert custom["robot"] == "test_robot" and custom["software_version"] == "v1.2.3"
    assert custom["recorder"].startswith("dp_recorder ")
    metadata = (bag / "metadata.yaml").read_text()
    assert "version: 9" in metadata and f"storage_identifier: {storage_id}" in metadata

    # Status while recording: per topic messages and bytes, and the duration.
    image_bytes = sum(len(raw) for _, _, raw in messages[s.camera])
    assert during["state"] == "recording" and during["episode_name"] == started.episode_name
    assert during["topics"][s.camera]["bytes"] == image_bytes
    assert during["duration"] > 0.5
    assert recorder.wait_for_output(f"recording {started.episode_name} ", 5.0)

    # A second episode, discarded: its bag also starts with the latched message, and is kept
    # aside, not deleted.
    second = s.start_episode(graph_probe, task="push_t")
    assert second.success and second.episode_index == started.episode_index + 1
    discarded = s.stop_episode(graph_probe, discard=True, notes="dropped the block")
    assert discarded.success, discarded.message
    aside = s.output_dir / "discarded" / second.episode_name
    assert discarded.bag_path == str(aside) and not Path(second.bag_path).exists()
    messages = read_bag(aside)
    assert [m.data for _, m, _ in messages[s.description]] == [pattern_text(0).data]
    assert events_of(messages["/dp/episode"])[-1] == (
        EpisodeEvent.EVENT_DISCARD,
        "dropped the block",
    )
    assert custom_data(aside)["outcome"] == "discarded"

    published = [(e.event, e.episode_name) for e in events.wait_for(4, 10.0)]
    assert published == [
        (EpisodeEvent.EVENT_START, started.episode_name),
        (EpisodeEvent.EVENT_STOP, started.episode_name),
        (EpisodeEvent.EVENT_START, second.episode_name),
        (EpisodeEvent.EVENT_DISCARD, second.episode_name),
    ]
    assert latched.is_running()


def test_best_effort_sensor_data_is_recorded(ros_processes, graph_probe, tmp_path) -> None:
    s = Setup(tmp_path)
    status = s.collect_status(graph_probe)
    recorder = s.start_recorder(ros_processes, [s.camera])
    assert s.start_episode(graph_probe).success
    publisher = s.start_publisher(
        ros_processes,
        "sensor",
        image_topic=s.camera,
        image_rates=[20.0],
        image_counts=[20],
        reliability="best_effort",
    )
    wait_published(publisher, s.camera, 20)
    wait_recorded(status, {s.camera: 15})
    stopped = s.stop_episode(graph_probe, task_success=False)
    assert stopped.success
    assert recorder.wait_for_output("best_effort, volatile", 1.0), recorder.output()
    received = decoded(read_bag(Path(stopped.bag_path))[s.camera], Image)
    indices = [m.header.stamp.sec for m in received]
    assert len(indices) >= 15 and indices == sorted(indices)
    assert all(m == pattern_image(m.header.stamp.sec, WIDTH, HEIGHT) for m in received)
    assert custom_data(Path(stopped.bag_path))["outcome"] == "failure"


def test_the_maximum_duration_ends_an_episode(ros_processes, graph_probe, tmp_path) -> None:
    s = Setup(tmp_path)
    events = graph_probe.collect("/dp/episode", EpisodeEvent)
    s.start_recorder(ros_processes, [s.joints], max_episode_duration=1.0, keep_discarded=False)
    started = s.start_episode(graph_probe)
    assert started.success
    start, stop = events.wait_for(2, 10.0)[-2:]
    assert (start.event, stop.event) == (EpisodeEvent.EVENT_START, EpisodeEvent.EVENT_STOP)
    assert "maximum episode duration of 1 s" in stop.notes
    elapsed = (stop.header.stamp.sec - start.header.stamp.sec) + (
        stop.header.stamp.nanosec - start.header.stamp.nanosec
    ) / 1e9
    assert 0.9 < elapsed < 2.0
    late = s.stop_episode(graph_probe, task_success=True)
    assert not late.success and "maximum episode duration" in late.message
    assert custom_data(Path(started.bag_path))["outcome"] == "timeout"

    # With keep_discarded false, a discarded episode is deleted, and the response says so.
    second = s.start_episode(graph_probe)
    discarded = s.stop_episode(graph_probe, discard=True)
    assert discarded.success and "deleted (keep_discarded is false)" in discarded.message
    assert not Path(second.bag_path).exists()
    assert not (s.output_dir / "discarded" / second.episode_name).exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_episode_closes_the_bag_properly(
    ros_processes, graph_probe, tmp_path, sig
) -> None:
    s = Setup(tmp_path)
    status = s.collect_status(graph_probe)
    recorder = s.start_recorder(ros_processes, [s.joints])
    started = s.start_episode(graph_probe)
    s.start_publisher(ros_processes, "joints", joint_topic=s.joints, joint_counts=[0])
    wait_recorded(status, {s.joints: 50})
    recorder.send_signal(sig)
    assert recorder.wait(timeout=20.0) == 0, recorder.output()

    bag = Path(started.bag_path)
    messages = read_bag(bag)  # directly: no recovery needed
    indices = [m.header.stamp.sec for m in decoded(messages[s.joints], JointState)]
    assert len(indices) >= 50 and indices == list(range(indices[0], indices[0] + len(indices)))
    assert_exact_patterns(messages[s.joints], JointState, indices)
    # No end event, as after a SIGKILL: nobody said how the episode ended.
    assert events_of(messages["/dp/episode"]) == [(EpisodeEvent.EVENT_START, "")]
    assert custom_data(bag)["outcome"] == "interrupted"
    assert (bag / f"{bag.name}.mcap").read_bytes().endswith(b"\x89MCAP0\r\n")


def test_after_sigkill_everything_but_the_last_flush_period_is_recovered(
    ros_processes, graph_probe, tmp_path
) -> None:
    s = Setup(tmp_path)
    flush_period = 1.0
    received_at: dict[int, float] = {}
    status = s.collect_status(graph_probe)

    def note_arrival(message: JointState) -> None:
        received_at.setdefault(message.header.stamp.sec, time.time())

    graph_probe.node.create_subscription(JointState, s.joints, note_arrival, 100)
    recorder = s.start_recorder(ros_processes, [s.joints], flush_period=flush_period)
    started = s.start_episode(graph_probe)
    s.start_publisher(
        ros_processes, "joints", joint_topic=s.joints, joint_counts=[0], wait_for_subscribers=2
    )
    wait_recorded(status, {s.joints: 300})
    killed_at = time.time()
    recorder.send_signal(signal.SIGKILL)
    recorder.wait(timeout=10.0)

    # A recorder started on the same directory repairs what the killed one left, by itself.
    restarted = s.start_recorder(ros_processes, [s.joints], name=f"{s.node}_restarted")
    assert restarted.wait_for_output("unfinished bag from an earlier run", 5.0)
    bag = Path(started.bag_path)
    messages = read_bag(bag)
    indices = [m.header.stamp.sec for m in decoded(messages[s.joints], JointState)]
    assert indices == list(range(len(indices)))  # from the first message on, none missing
    assert_exact_patterns(messages[s.joints], JointState, indices)
    # The bound stated in README.md: what arrived more than flush_period before the kill is in
    # the bag (the margin covers the probe and the recorder receiving at slightly other times).
    old_enough = [i for i, t in received_at.items() if t < killed_at - flush_period - 0.3]
    assert max(old_enough) <= indices[-1], (
        f"message {max(old_enough)} arrived over {flush_period} s before the kill, "
        f"but the bag ends at {indices[-1]}"
    )
    assert events_of(messages["/dp/episode"]) == [(EpisodeEvent.EVENT_START, "")]
    custom = custom_data(bag)
    assert custom["outcome"] == "interrupted" and custom["recovered"] == "true"
    assert custom["task"] == "push_t"
    # The recovery command finds nothing more to do.
    again = subprocess.run(
        [sys.executable, "-m", "dp_recorder.recover", str(bag)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0 and "complete already" in again.stdout, again.stderr


_LIMIT_FILE_SIZE = (
    "import os, resource, sys; limit = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


def test_a_full_disk_stops_the_episode_with_a_clear_error_and_keeps_the_bag(
    ros_processes, graph_probe, tmp_path
) -> None:
    """The recorder runs with a file size limit (RLIMIT_FSIZE): its writes fail with EFBIG,
    exactly where they would fail with ENOSPC on a full disk."""
    s = Setup(tmp_path)
    events = graph_probe.collect("/dp/episode", EpisodeEvent)
    arguments = ["--ros-args", "-r", f"__node:={s.node}"]
    for key, value in s.parameters([s.camera], flush_period=0.2).items():
        text = "[" + ", ".join(value) + "]" if isinstance(value, list) else str(value)
        arguments += ["-p", f"{key}:={text}"]
    limit = 3 * 2**20
    recorder = ros_processes.start(
        s.node,
        [sys.executable, "-c", _LIMIT_FILE_SIZE, str(limit), "-m", "dp_recorder", *arguments],
    )
    assert recorder.wait_for_output("recorder ready", 30.0), recorder.output()
    started = s.start_episode(graph_probe)
    assert started.success
    s.start_publisher(
        ros_processes, "camera", image_topic=s.camera, image_rates=[20.0], image_counts=[0]
    )
    stop = next(e for e in events.wait_for(2, 30.0) if e.event == EpisodeEvent.EVENT_STOP)
    assert stop.episode_name == started.episode_name and not stop.success
    assert "File too large" in stop.notes and "file size limit" in stop.notes
    assert recorder.wait_for_output("[ERROR]", 5.0)
    log = recorder.output()
    assert f"writing the bag {started.bag_path} failed" in log

    bag = Path(started.bag_path)
    messages = read_bag(bag)  # repaired by the recorder itself: readable as it is
    indices = [m.header.stamp.sec for m in decoded(messages[s.camera], Image)]
    assert len(indices) >= 5 and indices == list(range(indices[0], indices[0] + len(indices)))
    assert_exact_patterns(messages[s.camera], Image, indices)
    assert (bag / f"{bag.name}.mcap").stat().st_size <= limit
    custom = custom_data(bag)
    assert custom["outcome"] == "error" and "File too large" in custom["error"]

    # The node is still there, says what happened, and records again (in a new file).
    late = s.stop_episode(graph_probe)
    assert not late.success and "File too large" in late.message
    again = s.start_episode(graph_probe)
    assert again.success, again.message
    assert s.stop_episode(graph_probe, task_success=True).success
    assert recorder.is_running()


def test_an_unwritable_output_dir_refuses_episodes_with_the_reason(
    ros_processes, graph_probe, tmp_path
) -> None:
    s = Setup(tmp_path)
    (tmp_path / "a_file").write_text("root can write anywhere, but not below a regular file")
    s.output_dir = tmp_path / "a_file" / "demos"
    recorder = s.start_recorder(ros_processes, [s.joints])
    assert "is not usable" in recorder.output()
    refused = s.start_episode(graph_probe)
    assert not refused.success
    assert f"{tmp_path / 'a_file'} is a file, not a directory" in refused.message
    assert not s.stop_episode(graph_probe).success
    assert recorder.is_running()


def test_a_topic_that_disappears_or_changes_rate_does_not_stop_recording(
    ros_processes, graph_probe, tmp_path
) -> None:
    s = Setup(tmp_path)
    status = s.collect_status(graph_probe)
    s.start_recorder(ros_processes, [s.camera, s.joints])
    assert s.start_episode(graph_probe).success
    camera = s.start_publisher(ros_processes, "camera", image_topic=s.camera, image_rates=[10.0])
    first = s.start_publisher(
        ros_processes,
        "joints_a",
        joint_topic=s.joints,
        joint_rates=[100.0, 10.0],
        joint_counts=[100, 10],
    )
    wait_published(first, s.joints, 110)
    wait_recorded(status, {s.joints: 110})
    first.send_signal(signal.SIGKILL)  # gone without a goodbye
    first.wait(timeout=10.0)
    time.sleep(1.0)
    second = s.start_publisher(
        ros_processes,
        "joints_b",
        joint_topic=s.joints,
        joint_rates=[50.0],
        joint_counts=[50],
        start_index=1000,
    )
    wait_published(second, s.joints, 50)
    wait_recorded(status, {s.joints: 160})
    stopped = s.stop_episode(graph_probe, task_success=True)
    assert stopped.success, stopped.message

    messages = read_bag(Path(stopped.bag_path))
    assert_exact_patterns(
        messages[s.joints], JointState, list(range(110)) + list(range(1000, 1050))
    )
    images = [m.header.stamp.sec for m in decoded(messages[s.camera], Image)]
    assert len(images) >= 20 and images == list(range(images[0], images[0] + len(images)))
    assert camera.is_running()


def test_latched_qos_is_used_only_for_latched_topics(ros_processes, graph_probe, tmp_path) -> None:
    """A late-joining latched publisher is caught even after the recorder started."""
    s = Setup(tmp_path)
    s.start_recorder(ros_processes, [s.description])
    started = s.start_episode(graph_probe)
    s.start_publisher(ros_processes, "latched", latched_topic=s.description, start_index=7)
    graph_probe.collect(
        s.description, String, QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    ).wait_for(1, 20.0)
    status = s.collect_status(graph_probe)
    wait_recorded(status, {s.description: 1})
    stopped = s.stop_episode(graph_probe)
    messages = read_bag(Path(started.bag_path))
    assert [m.data for _, m, _ in messages[s.description]] == [pattern_text(7).data]
    assert stopped.success


def test_a_best_effort_publisher_joining_mid_episode_loses_and_duplicates_nothing(
    ros_processes, graph_probe, tmp_path
) -> None:
    """The subscription is recreated best effort; the reliable stream must not notice: the old
    subscription stays until the new one is matched, and samples both receive count once."""
    s = Setup(tmp_path)
    count = 1600  # 8 s: the change (discovery takes up to 3 s here) comes mid-stream
    status = s.collect_status(graph_probe)
    recorder = s.start_recorder(ros_processes, [s.joints])
    reliable = s.start_publisher(
        ros_processes, "reliable", joint_topic=s.joints, joint_rates=[200.0], joint_counts=[count]
    )
    assert recorder.wait_for_output(f"recording {s.joints}", 20.0), recorder.output()
    assert s.start_episode(graph_probe).success
    wait_recorded(status, {s.joints: 1})
    s.start_publisher(
        ros_processes,
        "best_effort",
        joint_topic=s.joints,
        joint_rates=[20.0],
        joint_counts=[0],
        start_index=100_000,
        reliability="best_effort",
        wait_for_subscribers=0,
    )
    assert recorder.wait_for_output("publishers changed", 20.0), recorder.output()
    assert f"published {count} messages" not in reliable.output(), "the change came too late"
    wait_published(reliable, s.joints, count)
    time.sleep(0.5)
    stopped = s.stop_episode(graph_probe, task_success=True)
    assert stopped.success, stopped.message

    indices = [
        m.header.stamp.sec for m in decoded(read_bag(Path(stopped.bag_path))[s.joints], JointState)
    ]
    reliable_part = [i for i in indices if i < 100_000]
    assert len(indices) - len(reliable_part) >= 10  # the best-effort stream is recorded too
    first = reliable_part[0]
    assert sorted(reliable_part) == list(range(first, count)), (
        f"reliable stream from {first}: missing "
        f"{sorted(set(range(first, count)) - set(reliable_part))[:20]}, "
        f"{len(reliable_part) - len(set(reliable_part))} duplicates"
    )
