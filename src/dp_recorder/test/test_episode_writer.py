"""EpisodeWriter and recovery, without a ROS graph: bags written, cut short, repaired, read back."""

from __future__ import annotations

import errno
import shutil
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from dp_recorder import episode as ep
from dp_recorder import mcap_repair
from dp_recorder.episode_recording import EpisodeRecording
from dp_recorder.episode_writer import BagOptions, EpisodeWriter, EpisodeWriterError, TopicInfo
from dp_recorder.message_definitions import MessageDefinitions
from dp_recorder.recover import RecoveryError, recover_bag
from dp_recorder.testing.bags import custom_data, joint_state_cdr, read_bag

DEFINITIONS = MessageDefinitions()
JOINTS = TopicInfo("/joint_states", DEFINITIONS.get("sensor_msgs/msg/JointState"))
EVENTS = TopicInfo(ep.EVENT_TOPIC, DEFINITIONS.get(ep.EVENT_TYPE))
INFO = ep.EpisodeInfo(
    index=3,
    name="push_t_test",
    task="push_t",
    notes="",
    robot="test_robot",
    software_version="1.2.3",
    recorder_version="0.1.0",
    start_time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
)
T0 = 1_700_000_000_000_000_000


def open_writer(path: Path, **options) -> EpisodeWriter:
    writer = EpisodeWriter(path, BagOptions(**options), INFO.custom_data())
    writer.open()
    writer.add_topic(EVENTS)
    writer.add_topic(JOINTS)
    return writer


def write_joint_states(writer: EpisodeWriter, indices: range) -> None:
    for index in indices:
        writer.write(JOINTS.name, T0 + index * 10_000_000, joint_state_cdr(index))


def joint_indices(bag: Path) -> list[int]:
    return [decoded.header.stamp.sec for _, decoded, _ in read_bag(bag).get(JOINTS.name, [])]


@pytest.mark.parametrize(
    ("storage_id", "compression"),
    [("mcap", "none"), ("mcap", "zstd"), ("sqlite3", "none"), ("sqlite3", "zstd")],
)
def test_a_closed_bag_reads_back_exactly_with_types_from_the_bag(
    tmp_path: Path, storage_id: str, compression: str
) -> None:
    bag = tmp_path / "episode"
    writer = open_writer(bag, storage_id=storage_id, compression=compression)
    start = ep.episode_event_cdr(DEFINITIONS.typestore(ep.EVENT_TYPE), T0, ep.EVENT_START, INFO)
    writer.write(EVENTS.name, T0, start)
    write_joint_states(writer, range(250))
    result = writer.close({"outcome": "success"})

    assert result.message_count == 251
    messages = read_bag(bag)
    assert [raw for _, _, raw in messages[JOINTS.name]] == [joint_state_cdr(i) for i in range(250)]
    assert [t for t, _, _ in messages[JOINTS.name]] == [T0 + i * 10_000_000 for i in range(250)]
    (event,) = [decoded for _, decoded, _ in messages[EVENTS.name]]
    assert (event.event, event.task, event.episode_index) == (ep.EVENT_START, "push_t", 3)
    assert event.EVENT_DISCARD == ep.EVENT_DISCARD  # constants come with the stored definition

    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["version"] == 9
    assert metadata["storage_identifier"] == storage_id
    assert metadata["custom_data"]["task"] == "push_t"
    assert metadata["custom_data"]["outcome"] == "success"
    assert metadata["custom_data"]["robot"] == "test_robot"
    assert metadata["custom_data"]["software_version"] == "1.2.3"
    hashes = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["type_description_hash"]
        for t in metadata["topics_with_message_count"]
    }
    assert hashes[JOINTS.name] == JOINTS.definition.rihs01
    if storage_id == "mcap":
        # MCAP compresses chunks inside the file: rosbag2 then reads it as uncompressed.
        assert metadata["compression_mode"] == ""
        chunks = mcap_repair.scan(bag / "episode.mcap").chunks
        assert {chunk.compression for chunk in chunks} == {"zstd" if compression == "zstd" else ""}
    else:
        assert metadata["compression_mode"] == ("message" if compression == "zstd" else "")


def test_metadata_version_8_keeps_qos_as_a_string(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "v8", metadata_version=8)
    write_joint_states(writer, range(3))
    writer.close()
    metadata = yaml.safe_load((tmp_path / "v8" / "metadata.yaml").read_text())
    assert metadata["rosbag2_bagfile_information"]["version"] == 8
    assert joint_indices(tmp_path / "v8") == [0, 1, 2]


def test_the_bag_says_it_is_being_recorded_until_closed(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "bag")
    metadata = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())
    information = metadata["rosbag2_bagfile_information"]
    assert information["custom_data"]["outcome"] == "recording"
    assert information["custom_data"]["task"] == "push_t"
    assert [t["topic_metadata"]["name"] for t in information["topics_with_message_count"]] == [
        EVENTS.name,
        JOINTS.name,
    ]
    writer.close({"outcome": "failure"})


@pytest.mark.parametrize("storage_id", ["mcap", "sqlite3"])
def test_what_was_flushed_survives_a_writer_that_dies(tmp_path: Path, storage_id: str) -> None:
    """The files as a SIGKILL leaves them: flushed messages recover, exactly and in order."""
    bag = tmp_path / "bag"
    writer = open_writer(bag, storage_id=storage_id, compression="zstd")
    write_joint_states(writer, range(40))
    writer.flush()
    # What is on disk now is what a SIGKILL leaves behind (the kernel keeps written pages).
    snapshot = tmp_path / "killed"
    shutil.copytree(bag, snapshot)
    write_joint_states(writer, range(40, 60))
    writer.close()

    if storage_id == "mcap":  # no summary, no footer: unreadable until recovered
        with pytest.raises(Exception, match=r"footer|magic|MCAP"):
            read_bag(snapshot)
    report = recover_bag(snapshot)
    assert report.topics[JOINTS.name] == 40
    assert joint_indices(snapshot) == list(range(40))
    assert [raw for _, _, raw in read_bag(snapshot)[JOINTS.name]] == [
        joint_state_cdr(i) for i in range(40)
    ]
    custom = custom_data(snapshot)
    assert custom["outcome"] == "interrupted"
    assert custom["recovered"] == "true"
    assert custom["task"] == "push_t"


def test_recovery_works_at_every_cut_and_keeps_every_complete_chunk(tmp_path: Path) -> None:
    """Cut the file anywhere: the repaired bag holds exactly the chunks wholly before the cut."""
    bag = tmp_path / "full"
    writer = open_writer(bag, compression="zstd")
    boundaries = []  # (file size, messages durable at that size)
    for block in range(8):
        write_joint_states(writer, range(block * 10, block * 10 + 10))
        writer.flush()
        boundaries.append(((bag / "full.mcap").stat().st_size, block * 10 + 10))
    writer.close()
    data = (bag / "full.mcap").read_bytes()
    provisional = (bag / "metadata.yaml").read_text().replace("success", "recording")
    header_end = 8 + 9 + struct.unpack_from("<Q", data, 9)[0]  # magic, then the header record
    cuts = set(range(header_end, len(data) + 1, 397)) | {len(data)}
    cuts |= {size + delta for size, _ in boundaries for delta in (-1, 0, 1)}
    for cut in sorted(cuts):
        copy = tmp_path / f"cut_{cut}"
        copy.mkdir()
        (copy / "full.mcap").write_bytes(data[:cut])
        (copy / "metadata.yaml").write_text(provisional)
        recover_bag(copy)
        expected = max([count for size, count in boundaries if size <= cut], default=0)
        expected = 80 if cut == len(data) else expected
        assert joint_indices(copy) == list(range(expected)), f"cut at byte {cut}"
    (tmp_path / "cut_header").mkdir()
    (tmp_path / "cut_header" / "full.mcap").write_bytes(data[: header_end - 1])
    with pytest.raises(mcap_repair.McapRepairError, match="header record is incomplete"):
        recover_bag(tmp_path / "cut_header")


def test_recovery_refuses_a_bag_that_is_being_written(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "live")
    with pytest.raises(RecoveryError, match="being written"):
        recover_bag(tmp_path / "live")
    writer.close()
    assert recover_bag(tmp_path / "live").already_complete


def test_the_recover_command_reports_and_fails_on_what_is_no_bag(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "bag")
    write_joint_states(writer, range(5))
    writer.flush()
    shutil.copytree(tmp_path / "bag", tmp_path / "killed")
    writer.close()
    (tmp_path / "empty").mkdir()
    command = [sys.executable, "-m", "dp_recorder.recover"]
    done = subprocess.run(
        [*command, str(tmp_path / "killed")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "recovered 5 messages" in done.stdout
    failed = subprocess.run(
        [*command, str(tmp_path / "empty")], capture_output=True, text=True, check=False
    )
    assert failed.returncode == 1
    assert "expected exactly one .mcap or .db3 file" in failed.stderr


def test_a_bag_under_a_regular_file_fails_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    writer = EpisodeWriter(tmp_path / "file" / "bag", BagOptions(), {})
    with pytest.raises(EpisodeWriterError, match="file, not a directory"):
        writer.open()


def test_a_message_larger_than_the_queue_is_dropped_and_counted(tmp_path: Path) -> None:
    recording = EpisodeRecording(
        EpisodeWriter(tmp_path / "bag", BagOptions(), {}), flush_period_s=0.1, max_queue_bytes=1000
    )
    recording.start()
    recording.add_topic(JOINTS)
    small = joint_state_cdr(0)
    assert recording.write(JOINTS.name, T0, small)
    assert not recording.write(JOINTS.name, T0 + 1, small * 10)
    result = recording.finish({"outcome": "success"})
    assert result.dropped == 1
    assert result.bag.message_counts[JOINTS.name] == 1
    assert joint_indices(tmp_path / "bag") == [0]


class _DiskFullAfter(EpisodeWriter):
    """An EpisodeWriter whose disk fills up after ``limit`` messages (for the writer thread)."""

    limit = 30

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        if sum(self.message_counts.values()) >= self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(topic, timestamp_ns, data)


def test_a_write_error_stops_the_episode_and_keeps_what_was_flushed(tmp_path: Path) -> None:
    errors: list[str] = []
    writer = _DiskFullAfter(tmp_path / "bag", BagOptions(), INFO.custom_data())
    recording = EpisodeRecording(writer, flush_period_s=0.05, on_error=errors.append)
    recording.start()
    recording.add_topic(JOINTS)
    for index in range(20):
        recording.write(JOINTS.name, T0 + index, joint_state_cdr(index))
    deadline = time.monotonic() + 5.0
    while recording.queued_bytes and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # several flush periods: the 20 messages are on disk
    for index in range(20, 60):
        recording.write(JOINTS.name, T0 + index, joint_state_cdr(index))
    result = recording.finish({"outcome": "success"})

    assert "No space left on device" in result.error
    assert "(the disk is full)" in result.error
    assert errors == [recording.error]
    indices = joint_indices(tmp_path / "bag")
    assert indices == list(range(len(indices)))
    assert 20 <= len(indices) <= 30
    custom = custom_data(tmp_path / "bag")
    assert custom["outcome"] == "error"
    assert "No space left" in custom["error"]
