"""Observation messages to arrays, with every refusal named by its cause.

ROS-free: messages are duck-typed (rclpy objects in the node, plain objects in tests). The
conversion itself is dp_policy's ``message_conversion`` -- the functions the dataset builder
uses -- so serving sees exactly what training saw; this module only classifies what goes
wrong, because the node reports and logs once per *cause* (an unsupported encoding and a wrong
image size on the same topic are two different problems for the person fixing them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dp_policy.message_conversion import (
    SUPPORTED_ENCODINGS,
    ConversionError,
    image_to_chw,
    pick_joints,
    read_fields,
)
from dp_policy_node.serving_plan import ObservationStream

# Causes of refused input, used as keys for once-per-cause logging and in PolicyStatus.
ENCODING = "encoding"
IMAGE = "image"  # size or undecodable data
MISSING_JOINT = "missing_joint"
NOT_FINITE = "not_finite"
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
    """``header.stamp`` in nanoseconds; an unset (zero) stamp is refused."""
    stamp = message.header.stamp
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
        return _joints(stream, message)
    try:
        return read_fields(message, stream.fields)
    except ConversionError as error:
        cause = NOT_FINITE if "not finite" in str(error) else MALFORMED
        raise ObservationRejectedError(cause, f"{stream.topic}: {error}") from error


def _image(stream: ObservationStream, message: Any) -> np.ndarray:
    if not stream.compressed:
        encoding = str(message.encoding)
        if encoding.lower() not in SUPPORTED_ENCODINGS:
            raise ObservationRejectedError(
                ENCODING,
                f"image on {stream.topic} has encoding {encoding!r}, which is not supported: "
                f"publish one of {', '.join(SUPPORTED_ENCODINGS)} (or a CompressedImage topic)",
            )
    try:
        return image_to_chw(message, stream.shape, compressed=stream.compressed)
    except ConversionError as error:
        raise ObservationRejectedError(IMAGE, f"image on {stream.topic}: {error}") from error


def _joints(stream: ObservationStream, message: Any) -> np.ndarray:
    names = list(message.name)
    missing = [joint for joint in stream.joints if joint not in names]
    if missing:
        raise ObservationRejectedError(
            MISSING_JOINT,
            f"JointState on {stream.topic} lacks joint(s) {missing} that the policy observes "
            f"(it names {names})",
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


def _picked_values(names: list[str], values: Any, joints: tuple[str, ...]) -> np.ndarray | None:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (len(names),):
        return None
    return array[[names.index(joint) for joint in joints]]
