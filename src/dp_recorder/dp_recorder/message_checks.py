"""What a received message is: a message of its topic's type at all, and what is odd about it.

The recorder is a recorder: a message that decodes is written exactly as it came, however wrong
its contents (an image whose data does not fit its geometry, NaN joint positions, a stamp from
1970): the bag is the evidence of what the robot's sensors sent, and the dataset builder decides
what to train on. Such messages are *noted*: counted per cause, named once in the log, and listed
in the bag's custom data (``anomalies``).

Bytes that do not decode as the topic's type (random bytes published raw, a cut message, a
foreign encapsulation, a tail after the message) are *refused*: written to the bag, they would
make it unreadable for every ``rosbags`` reader, and the dataset builder would reject the whole
episode as corrupt. They are counted per cause and named in the log and in the bag's custom data
(``refused_messages``). The check decodes with the very typestore whose definition the bag
stores, so "written" means "decodable by whoever reads the bag".

No ROS here; this runs in the episode's writer thread, never in the executor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from rosbags.typesys.store import Typestore

# Causes of refusal (stable texts: they are keys of counters and of the log-once bookkeeping).
REFUSED_ENCAPSULATION = "not CDR (an encapsulation rosbags does not read)"
REFUSED_UNDECODABLE = "cannot be decoded as its type"
REFUSED_TAIL = "bytes after the end of the message"

# Causes of notes, for messages written as they came.
NOTE_NANOSEC = "header.stamp.nanosec >= 1e9"
NOTE_ZERO_STAMP = "header.stamp is zero"
NOTE_NEGATIVE_STAMP = "header.stamp is negative"
NOTE_BACKWARDS = "header.stamp earlier than the previous message's"
NOTE_FUTURE = "header.stamp more than 1 s after its receive time"
NOTE_EMPTY_IMAGE = "empty image (width or height 0)"
NOTE_ENCODING = "unknown image encoding"
NOTE_STEP = "image step smaller than width * bytes per pixel"
NOTE_DATA_SIZE = "image data size differs from step * height"
NOTE_EMPTY_COMPRESSED = "empty compressed image"
NOTE_JOINT_LENGTHS = "joint arrays longer or shorter than name"
NOTE_NON_FINITE = "non-finite joint values (NaN or inf)"
NOTE_DUPLICATE_NAMES = "duplicate joint names"

# Beyond clock offsets between synchronised computers (chrony/PTP: well below this).
_FUTURE_TOLERANCE_NS = 1_000_000_000
# Types whose zero stamp is a convention, not a fault: joint_trajectory_controller starts a
# trajectory stamped zero at once.
_ZERO_STAMP_MEANS_NOW = frozenset(
    {"trajectory_msgs/msg/JointTrajectory", "trajectory_msgs/msg/MultiDOFJointTrajectory"}
)
_CDR_ENCAPSULATIONS = (b"\x00\x00", b"\x00\x01")  # CDR big and little endian: what rosbags reads

_PIXEL_BYTES = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "mono16": 2,
    "rgb16": 6,
    "bgr16": 6,
    "rgba16": 8,
    "bgra16": 8,
    "yuv422": 2,
    "yuv422_yuy2": 2,
    "uyvy": 2,
    "yuyv": 2,
}
_CV_ENCODING = re.compile(r"(8|16|32|64)([USF])C([1-4])")
_BAYER = re.compile(r"bayer_(rggb|bggr|gbrg|grbg)(8|16)")


def pixel_bytes(encoding: str) -> int | None:
    """Bytes per pixel of a sensor_msgs/Image encoding; None for one this check does not know."""
    if encoding in _PIXEL_BYTES:
        return _PIXEL_BYTES[encoding]
    if match := _CV_ENCODING.fullmatch(encoding):
        return int(match[1]) // 8 * int(match[3])
    if match := _BAYER.fullmatch(encoding):
        return int(match[2]) // 8
    return None


@dataclass(frozen=True)
class Verdict:
    """What to do with one message: refuse it (a cause), or write it (with notes, maybe)."""

    refused: str = ""  # the cause of the refusal; "" when the message is written
    detail: str = ""  # the decoder's words, for the log
    notes: tuple[str, ...] = ()


class MessageCheck:
    """Checks the messages of one topic; keeps the previous stamp (for backwards stamps)."""

    def __init__(self, msgtype: str, typestore: Typestore) -> None:
        self.msgtype = msgtype
        self._typestore = typestore
        fields = dict(typestore.get_msgdef(msgtype).fields)
        header = fields.get("header")
        self._has_header = header is not None and header[1] == "std_msgs/msg/Header"
        self._previous_stamp: tuple[int, int] | None = None

    def check(self, data: bytes | memoryview, received_ns: int | None = None) -> Verdict:
        """The verdict on one serialised message received at ``received_ns`` (if known)."""
        if len(data) < 4 or bytes(data[:2]) not in _CDR_ENCAPSULATIONS:
            return Verdict(REFUSED_ENCAPSULATION, f"first bytes {bytes(data[:4]).hex() or 'none'}")
        try:
            message = self._typestore.deserialize_cdr(data, self.msgtype)
        except Exception as error:  # rosbags raises SerdeError, or worse on absurd lengths
            cause = REFUSED_TAIL if "size mismatch" in str(error) else REFUSED_UNDECODABLE
            return Verdict(cause, f"{type(error).__name__}: {error}")
        notes: list[str] = []
        if self._has_header:
            self._check_stamp(message.header.stamp, received_ns, notes)
        if self.msgtype == "sensor_msgs/msg/Image":
            _check_image(message, notes)
        elif self.msgtype == "sensor_msgs/msg/CompressedImage":
            if len(message.data) == 0:
                notes.append(NOTE_EMPTY_COMPRESSED)
        elif self.msgtype == "sensor_msgs/msg/JointState":
            _check_joint_state(message, notes)
        return Verdict(notes=tuple(notes))

    def _check_stamp(self, stamp: Any, received_ns: int | None, notes: list[str]) -> None:
        sec, nanosec = int(stamp.sec), int(stamp.nanosec)
        if received_ns is not None and sec * 1_000_000_000 + nanosec > (
            received_ns + _FUTURE_TOLERANCE_NS
        ):
            notes.append(NOTE_FUTURE)
        if nanosec >= 1_000_000_000:
            notes.append(NOTE_NANOSEC)
        if sec == 0 and nanosec == 0:
            if self.msgtype not in _ZERO_STAMP_MEANS_NOW:
                notes.append(NOTE_ZERO_STAMP)
            return  # "now": no time to compare with the previous or the receive time
        if sec < 0:
            notes.append(NOTE_NEGATIVE_STAMP)
        # Tuples, not nanoseconds: with nanosec >= 1e9 the sum would hide the wrong field.
        if self._previous_stamp is not None and (sec, nanosec) < self._previous_stamp:
            notes.append(NOTE_BACKWARDS)
        self._previous_stamp = (sec, nanosec)


def _check_image(message: Any, notes: list[str]) -> None:
    if message.width == 0 or message.height == 0:
        notes.append(NOTE_EMPTY_IMAGE)
    per_pixel = pixel_bytes(message.encoding)
    if per_pixel is None:
        notes.append(NOTE_ENCODING)
    elif message.step < message.width * per_pixel:
        notes.append(NOTE_STEP)
    if len(message.data) != message.step * message.height:
        notes.append(NOTE_DATA_SIZE)


def _check_joint_state(message: Any, notes: list[str]) -> None:
    names = list(message.name)
    arrays = (message.position, message.velocity, message.effort)
    if any(len(values) not in (0, len(names)) for values in arrays):
        notes.append(NOTE_JOINT_LENGTHS)
    if any(not math.isfinite(value) for values in arrays for value in values):
        notes.append(NOTE_NON_FINITE)
    if len(set(names)) != len(names):
        notes.append(NOTE_DUPLICATE_NAMES)
