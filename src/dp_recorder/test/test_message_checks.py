"""Message checks without a ROS graph: what is refused, what is noted, what reaches the bag."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image
from trajectory_msgs.msg import JointTrajectory

from dp_recorder import message_checks as mc
from dp_recorder.episode_recording import EpisodeRecording
from dp_recorder.episode_writer import BagOptions, EpisodeWriter, TopicInfo
from dp_recorder.message_definitions import MessageDefinitions
from dp_recorder.testing.bags import custom_data, joint_state_cdr, read_bag
from dp_recorder.testing.patterns import pattern_image

DEFINITIONS = MessageDefinitions()
JOINT_STATE = "sensor_msgs/msg/JointState"
IMAGE = "sensor_msgs/msg/Image"


def check_of(msgtype: str) -> mc.MessageCheck:
    return mc.MessageCheck(msgtype, DEFINITIONS.typestore(msgtype))


def image(**fields: Any) -> bytes:
    message = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(18))
    message.header.stamp.sec = 100
    for name, value in fields.items():
        if name in ("sec", "nanosec"):
            setattr(message.header.stamp, name, value)
        else:
            setattr(message, name, value)
    return serialize_message(message)


def joints(
    name: tuple[str, ...] = ("a", "b"),
    position: tuple[float, ...] = (0.0, 1.0),
    velocity: tuple[float, ...] = (),
    effort: tuple[float, ...] = (),
) -> bytes:
    """A JointState as a publisher sends it (rclpy's serialize_message appends bytes from its
    size estimate, which no publisher puts on the wire and rosbags takes for a tail)."""
    typestore = DEFINITIONS.typestore(JOINT_STATE)
    types = typestore.types
    message = types[JOINT_STATE](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=100, nanosec=0), frame_id=""
        ),
        name=list(name),
        position=np.array(position, dtype=np.float64),
        velocity=np.array(velocity, dtype=np.float64),
        effort=np.array(effort, dtype=np.float64),
    )
    return bytes(typestore.serialize_cdr(message, JOINT_STATE))


def test_valid_messages_pass_without_notes() -> None:
    assert check_of(IMAGE).check(serialize_message(pattern_image(1))) == (mc.Verdict())
    assert check_of(JOINT_STATE).check(joint_state_cdr(7)) == mc.Verdict()
    compressed = CompressedImage(format="jpeg", data=b"\xff\xd8")
    compressed.header.stamp.sec = 1
    assert check_of("sensor_msgs/msg/CompressedImage").check(serialize_message(compressed)) == (
        mc.Verdict()
    )


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b"", mc.REFUSED_ENCAPSULATION),
        (b"\x00\x01\x00", mc.REFUSED_ENCAPSULATION),
        (b"\x00\x07\x00\x00" + joint_state_cdr(1)[4:], mc.REFUSED_ENCAPSULATION),
        (joint_state_cdr(1)[:40], mc.REFUSED_UNDECODABLE),
        (b"\x00\x01\x00\x00", mc.REFUSED_UNDECODABLE),
        (joint_state_cdr(1) + bytes(8), mc.REFUSED_TAIL),
    ],
    ids=["empty", "short", "encapsulation", "cut", "header only", "tail"],
)
def test_bytes_that_are_no_message_of_the_type_are_refused(data: bytes, cause: str) -> None:
    verdict = check_of(JOINT_STATE).check(data)
    assert verdict.refused == cause and verdict.detail


def test_random_bytes_are_refused_unless_they_decode() -> None:
    rng = random.Random(16)
    typestore = DEFINITIONS.typestore(JOINT_STATE)
    for _ in range(300):
        data = b"\x00\x01\x00\x00" + rng.randbytes(rng.randint(0, 80))
        try:
            typestore.deserialize_cdr(data, JOINT_STATE)
            decodes = True
        except Exception:
            decodes = False
        assert (check_of(JOINT_STATE).check(data).refused == "") == decodes


@pytest.mark.parametrize(
    ("msgtype", "data", "note"),
    [
        (IMAGE, image(width=0, height=0, step=0, data=b""), mc.NOTE_EMPTY_IMAGE),
        (IMAGE, image(encoding="yuv_of_mars"), mc.NOTE_ENCODING),
        (IMAGE, image(step=4, data=bytes(8)), mc.NOTE_STEP),
        (IMAGE, image(data=bytes(17)), mc.NOTE_DATA_SIZE),
        (IMAGE, image(nanosec=1_000_000_000), mc.NOTE_NANOSEC),
        (IMAGE, image(sec=0), mc.NOTE_ZERO_STAMP),
        (IMAGE, image(sec=-1), mc.NOTE_NEGATIVE_STAMP),
        (JOINT_STATE, joints(velocity=(1.0,)), mc.NOTE_JOINT_LENGTHS),
        (JOINT_STATE, joints(position=(float("nan"), 0.0)), mc.NOTE_NON_FINITE),
        (JOINT_STATE, joints(effort=(0.0, float("-inf"))), mc.NOTE_NON_FINITE),
        (JOINT_STATE, joints(name=("a", "a")), mc.NOTE_DUPLICATE_NAMES),
    ],
)
def test_odd_but_decodable_messages_are_written_with_a_note(
    msgtype: str, data: bytes, note: str
) -> None:
    verdict = check_of(msgtype).check(data)
    assert verdict.refused == "" and note in verdict.notes


def test_a_trajectory_stamped_zero_starts_now_and_is_not_noted() -> None:
    trajectory = JointTrajectory(joint_names=["a"])  # stamp zero: joint_trajectory_controller
    assert check_of("trajectory_msgs/msg/JointTrajectory").check(
        serialize_message(trajectory), received_ns=10**18
    ) == (mc.Verdict())


def test_a_stamp_from_the_future_is_noted() -> None:
    check = check_of(JOINT_STATE)
    sent = 100 * 10**9  # joints() stamps its messages at 100 s
    assert check.check(joints(), received_ns=sent - 900_000_000) == mc.Verdict()
    assert mc.NOTE_FUTURE in check.check(joints(), received_ns=sent - 1_100_000_000).notes
    assert check.check(joints()) == mc.Verdict()  # receive time unknown


def test_a_stamp_earlier_than_the_previous_one_is_noted() -> None:
    check = check_of(JOINT_STATE)
    assert check.check(joint_state_cdr(5)) == mc.Verdict()
    assert mc.NOTE_BACKWARDS in check.check(joint_state_cdr(4)).notes
    assert check.check(joint_state_cdr(6)) == mc.Verdict()


def test_pixel_bytes_of_the_encodings() -> None:
    assert [mc.pixel_bytes(e) for e in ("rgb8", "mono16", "32FC3", "bayer_rggb16", "nv21")] == [
        3,
        2,
        12,
        2,
        None,
    ]


def test_a_recording_refuses_undecodable_bytes_and_keeps_the_bag_readable(
    tmp_path: Path,
) -> None:
    topic = TopicInfo("/joint_states", DEFINITIONS.get(JOINT_STATE))
    recording = EpisodeRecording(EpisodeWriter(tmp_path / "bag", BagOptions(), {}), 0.1)
    recording.start()
    recording.add_topic(topic, check_of(JOINT_STATE))
    t0 = 1_700_000_000_000_000_000
    odd = joints(position=(float("nan"), 0.0))
    for index, data in enumerate(
        [joint_state_cdr(90), b"garbage", odd, joint_state_cdr(1)[:30], joint_state_cdr(110)]
    ):
        assert recording.write(topic.name, t0 + index, data)
    result = recording.finish({"outcome": "success"})

    assert result.bag.message_counts[topic.name] == 3
    counters = result.counters[topic.name]
    assert (counters.messages, counters.refused) == (3, 2)
    assert counters.refusals == {mc.REFUSED_ENCAPSULATION: 1, mc.REFUSED_UNDECODABLE: 1}
    assert counters.notes == {mc.NOTE_NON_FINITE: 1}
    raws = [raw for _, _, raw in read_bag(tmp_path / "bag")[topic.name]]
    assert raws == [joint_state_cdr(90), odd, joint_state_cdr(110)]  # as received, byte for byte
    custom = custom_data(tmp_path / "bag")
    assert custom["refused_messages"] == "2"
    assert custom["refusals"] == (
        f"/joint_states: 1 x {mc.REFUSED_UNDECODABLE}; "
        f"/joint_states: 1 x {mc.REFUSED_ENCAPSULATION}"
    )
    assert custom["anomalies"] == f"/joint_states: 1 x {mc.NOTE_NON_FINITE}"


def test_a_failing_check_writes_the_message_and_notes_it(tmp_path: Path) -> None:
    class Broken(mc.MessageCheck):
        def check(self, data: bytes | memoryview, received_ns: int | None = None) -> mc.Verdict:
            raise RuntimeError("a bug in the check")

    topic = TopicInfo("/joint_states", DEFINITIONS.get(JOINT_STATE))
    recording = EpisodeRecording(EpisodeWriter(tmp_path / "bag", BagOptions(), {}), 0.1)
    recording.start()
    recording.add_topic(topic, Broken(JOINT_STATE, DEFINITIONS.typestore(JOINT_STATE)))
    assert recording.write(topic.name, 1, joint_state_cdr(0))
    result = recording.finish({"outcome": "success"})
    assert not result.error and result.bag.message_counts[topic.name] == 1
    assert result.counters[topic.name].notes == {"check failed: RuntimeError": 1}
