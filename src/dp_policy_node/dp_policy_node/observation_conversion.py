"""Observation messages to arrays, with every refusal named by its cause.

ROS-free: messages are duck-typed (rclpy objects in the node, plain objects in tests). The
conversion itself is dp_policy's ``message_conversion`` -- the functions the dataset builder
uses -- so serving sees exactly what training saw; this module only classifies what goes
wrong, because the node reports and logs once per *cause* (an unsupported encoding and a wrong
image size on the same topic are two different problems for the person fixing them).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from dp_policy.message_conversion import (
    SUPPORTED_ENCODINGS,
    ConversionError,
    image_to_chw,
    pick_joints,
    read_fields,
)
from dp_policy_node.serving_plan import FLOAT32_MAX, ObservationStream, PlausibleRange

# Causes of refused input, used as keys for once-per-cause logging and in PolicyStatus.
ENCODING = "encoding"
IMAGE = "image"  # size or undecodable data
MISSING_JOINT = "missing_joint"
DUPLICATE_JOINT = "duplicate_joint"
NOT_FINITE = "not_finite"
IMPLAUSIBLE = "implausible"
BEYOND_FLOAT32 = "beyond_float32"
BAD_STAMP = "bad_stamp"
UNDECODABLE = "undecodable"  # bytes that do not deserialise as the topic's type
MALFORMED = "malformed"
UNSTAMPED = "unstamped"
OUT_OF_ORDER = "out_of_order"
FUTURE_STAMP = "future_stamp"


class ObservationRejectedError(ValueError):
    """A message that cannot become an observation: ``cause`` is one of the constants above."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


def stamp_nanoseconds(message: Any, topic: str) -> int:
    """``header.stamp`` in nanoseconds; an unset (zero) stamp, or one whose nanosec is not
    below 1e9 (builtin_interfaces/Time's rule), is refused."""
    stamp = message.header.stamp
    if not 0 <= int(stamp.nanosec) < 1_000_000_000:
        # Not normalised: a publisher bug, and carrying it into seconds would shift the stamp.
        raise ObservationRejectedError(
            BAD_STAMP,
            f"messages on {topic} have header.stamp.nanosec {int(stamp.nanosec)}, which must be "
            f"below 1000000000 (builtin_interfaces/Time): the publisher does not normalise "
            f"its stamps",
        )
    nanoseconds = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    if nanoseconds == 0:
        raise ObservationRejectedError(
            UNSTAMPED,
            f"messages on {topic} have header.stamp 0: the policy aligns observations by their "
            f"stamps, so the publisher must stamp them",
        )
    return nanoseconds


def convert(stream: ObservationStream, message: Any) -> np.ndarray:
    """The observation array of ``message`` for ``stream``, or ObservationRejectedError."""
    if stream.kind == "image":
        return _image(stream, message)
    if stream.kind == "joint_state":
        values = _joints(stream, message)
        what = f"JointState on {stream.topic}: {stream.joint_field} of"
    else:
        try:
            values = read_fields(message, stream.fields)
        except ConversionError as error:
            cause = NOT_FINITE if "not finite" in str(error) else MALFORMED
            raise ObservationRejectedError(cause, f"{stream.topic}: {error}") from error
        what = f"{stream.message_type.rsplit('/', 1)[-1]} on {stream.topic}:"
    if stream.plausible is not None:
        _check_plausible(stream.plausible, values, what)
    return values


def _check_plausible(plausible: PlausibleRange, values: np.ndarray, what: str) -> None:
    beyond = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
    if beyond.size:
        # Checked whatever observation_range_factor says: it would reach the model as inf.
        index = int(beyond[0])
        raise ObservationRejectedError(
            BEYOND_FLOAT32,
            f"{what} {plausible.names[index]} is {values[index]:.4g}, beyond the float32 range "
            f"(+-{FLOAT32_MAX:.4g}) the model computes in, where it would be infinite",
        )
    index = plausible.violation(values)
    if index is None:
        return
    raise ObservationRejectedError(
        IMPLAUSIBLE,
        f"{what} {plausible.names[index]} is {values[index]:.4g}, outside its plausible range "
        f"[{plausible.low[index]:.4g}, {plausible.high[index]:.4g}] "
        f"({plausible.reasons[index]}): a broken sensor or publisher, not a state to act on",
    )


def _image(stream: ObservationStream, message: Any) -> np.ndarray:
    if not stream.compressed:
        encoding = str(message.encoding)
        if encoding.lower() not in SUPPORTED_ENCODINGS:
            raise ObservationRejectedError(
                ENCODING,
                f"image on {stream.topic} has encoding {encoding!r}, which is not supported: "
                f"publish one of {', '.join(SUPPORTED_ENCODINGS)} (or a CompressedImage topic)",
            )
    else:
        _check_compressed_size(stream, bytes(message.data))
    try:
        return image_to_chw(message, stream.shape, compressed=stream.compressed)
    except ConversionError as error:
        raise ObservationRejectedError(IMAGE, f"image on {stream.topic}: {error}") from error


def _check_compressed_size(stream: ObservationStream, data: bytes) -> None:
    """Refuse a compressed image by its header, before decoding: a 1 MB PNG that declares
    20000x20000 pixels decodes to 1.2 GB and held the executor for 8 s."""
    size = compressed_image_size(data)
    if size is None:
        raise ObservationRejectedError(
            IMAGE,
            f"compressed image on {stream.topic} ({len(data)} bytes) is neither a JPEG nor a "
            f"PNG with a readable header",
        )
    width, height = size
    if (height, width) != tuple(stream.shape[1:]):
        raise ObservationRejectedError(
            IMAGE,
            f"image on {stream.topic}: image is {width}x{height}, the policy expects "
            f"{stream.shape[2]}x{stream.shape[1]} (not decoded)",
        )


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic), which carry the size.
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def compressed_image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame header; None for
    anything else (image_transport's compressed images are JPEG or PNG)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        length = int.from_bytes(data[index + 2 : index + 4], "big")
        if marker in _JPEG_FRAMES:
            if index + 9 > len(data):
                return None
            height = int.from_bytes(data[index + 5 : index + 7], "big")
            width = int.from_bytes(data[index + 7 : index + 9], "big")
            return width, height
        if marker == 0xDA or length < 2:  # image data before any frame header: malformed
            return None
        index += 2 + length
    return None


def _joints(stream: ObservationStream, message: Any) -> np.ndarray:
    names = list(message.name)
    if len(set(names)) != len(names):
        # Which of two values is meant cannot be known; the whole message is refused rather
        # than picking one (the dataset builder would take the last, a reader the first).
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        raise ObservationRejectedError(
            DUPLICATE_JOINT,
            f"JointState on {stream.topic} names joint(s) {_listed(repeated)} more than once "
            f"({_listed(names)}): refused, since which value is meant is ambiguous",
        )
    missing = [joint for joint in stream.joints if joint not in names]
    if missing:
        raise ObservationRejectedError(
            MISSING_JOINT,
            f"JointState on {stream.topic} lacks joint(s) {missing} that the policy observes "
            f"(it names {_listed(names)})",
        )
    values = getattr(message, stream.joint_field)
    try:
        return pick_joints(names, values, stream.joints, stream.joint_field)
    except ConversionError as error:
        picked = _picked_values(names, values, stream.joints)
        if picked is not None and not np.all(np.isfinite(picked)):
            bad = [j for j, v in zip(stream.joints, picked, strict=True) if not np.isfinite(v)]
            raise ObservationRejectedError(
                NOT_FINITE,
                f"JointState on {stream.topic}: {stream.joint_field} of {bad} is NaN or infinite",
            ) from error
        raise ObservationRejectedError(
            MALFORMED, f"JointState on {stream.topic}: {error}"
        ) from error


def _listed(names: list[str], most: int = 10) -> str:
    """A name list for a message; a hostile publisher's thousands of names would flood the
    status and the log."""
    if len(names) <= most:
        return str(names)
    return f"{names[:most]} and {len(names) - most} more"


def _picked_values(names: list[str], values: Any, joints: tuple[str, ...]) -> np.ndarray | None:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (len(names),):
        return None
    return array[[names.index(joint) for joint in joints]]
