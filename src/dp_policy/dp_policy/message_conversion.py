"""Message contents to arrays, the same way for bags (rosbags) and live topics (rclpy).

The dataset builder reads messages with rosbags, the inference node receives them with rclpy;
both hand the message objects (duck-typed: the same field names) to these functions, so
training and serving convert images, joints and fields identically. No ROS import here.

Images follow cv_bridge's semantics for the encodings it shares with us (row stride ``step``
honoured, ``is_bigendian`` irrelevant for 8-bit data), but return RGB rather than BGR because
the policy sees RGB. cv_bridge itself is not available in every environment we run in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dp_policy.field_encodings import FieldEncodingError, encode, split_field

# encoding -> (channels, index of each of R, G, B in the pixel; None for mono)
_RAW_ENCODINGS: dict[str, tuple[int, tuple[int, int, int] | None]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
}
SUPPORTED_ENCODINGS = tuple(_RAW_ENCODINGS)


class ConversionError(ValueError):
    """A message that cannot become the array the spec asks for; the message says why."""


class NonFiniteValueError(ConversionError):
    """A well-formed message whose values are NaN or infinite: that one message is unusable.

    Told apart from other conversion errors (a missing joint or field, an unknown encoding),
    which are mismatches between the spec and the robot that every message will repeat.
    """


def image_to_rgb(message: Any) -> np.ndarray:
    """A ``sensor_msgs/msg/Image`` as an (H, W, 3) uint8 RGB array (mono is repeated).

    Raises ConversionError for an unsupported encoding or a buffer that does not match the
    stated height, width and step.
    """
    encoding = str(message.encoding).lower()
    if encoding not in _RAW_ENCODINGS:
        raise ConversionError(
            f"image encoding {message.encoding!r} is not supported (use one of "
            f"{', '.join(SUPPORTED_ENCODINGS)} or sensor_msgs/CompressedImage)"
        )
    channels, rgb_order = _RAW_ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    row_bytes = width * channels
    if height <= 0 or width <= 0 or step < row_bytes:
        raise ConversionError(
            f"image {width}x{height} {encoding} has an impossible step {step} (need >= {row_bytes})"
        )
    buffer = np.frombuffer(_as_bytes(message.data), dtype=np.uint8)
    if buffer.size < step * height:
        raise ConversionError(
            f"image {width}x{height} {encoding}: {buffer.size} data bytes, expected {step * height}"
        )
    rows = buffer[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = rows.reshape(height, width, channels)
    if rgb_order is None:
        return np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, list(rgb_order)])


def compressed_image_to_rgb(message: Any) -> np.ndarray:
    """A ``sensor_msgs/msg/CompressedImage`` (JPEG or PNG) as an (H, W, 3) uint8 RGB array."""
    import cv2  # opencv decodes JPEG and PNG; imported here so low-dim users need not load it

    encoded = np.frombuffer(_as_bytes(message.data), dtype=np.uint8)
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if encoded.size else None
    if decoded is None:
        raise ConversionError(
            f"compressed image (format {message.format!r}, {encoded.size} bytes) could not be "
            f"decoded as JPEG or PNG"
        )
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def image_to_chw(message: Any, shape: Sequence[int], compressed: bool = False) -> np.ndarray:
    """An image message as a (C, H, W) uint8 array of the spec's ``shape`` (C is 3 or 1).

    The size must match exactly: silently resizing would feed the policy views it never saw.
    """
    rgb = compressed_image_to_rgb(message) if compressed else image_to_rgb(message)
    channels, height, width = (int(size) for size in shape)
    if rgb.shape[:2] != (height, width):
        raise ConversionError(
            f"image is {rgb.shape[1]}x{rgb.shape[0]}, the policy expects {width}x{height}"
        )
    if channels == 1:
        # ITU-R BT.601 luma, as cv_bridge's rgb8 -> mono8 conversion.
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[None]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def pick_joints(
    names: Sequence[str], values: Sequence[float], joints: Sequence[str], what: str = "position"
) -> np.ndarray:
    """The ``values`` of ``joints`` in the order given, from a JointState's parallel arrays."""
    names = list(names)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(names),):
        raise ConversionError(f"JointState has {len(names)} names but {values.size} {what} values")
    index = {name: i for i, name in enumerate(names)}
    missing = [joint for joint in joints if joint not in index]
    if missing:
        raise ConversionError(f"JointState lacks joint(s) {missing} (it has {names})")
    picked = values[[index[joint] for joint in joints]]
    if not np.all(np.isfinite(picked)):
        raise NonFiniteValueError(f"JointState {what} is not finite for {list(joints)}: {picked}")
    return picked


def read_fields(message: Any, paths: Sequence[str]) -> np.ndarray:
    """The numbers at the dotted ``paths`` of a message (``pose.position.x``), as float64.

    An entry ``path:encoding`` reads an orientation and gives several numbers
    (``pose.orientation:yaw_sincos``: see ``dp_policy.field_encodings``).
    """
    values: list[float] = []
    for entry in paths:
        path, encoding = split_field(entry)
        value = message
        for part in path.split("."):
            if not hasattr(value, part):
                raise ConversionError(f"message has no field {path!r} (no {part!r})")
            value = getattr(value, part)
        if encoding is not None:
            try:
                values.extend(encode(value, entry))
            except FieldEncodingError as error:
                if "not finite" in str(error):
                    raise NonFiniteValueError(str(error)) from error
                raise ConversionError(str(error)) from error
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ConversionError(f"field {path!r} is not a number: {value!r}")
        values.append(float(value))
    result = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(result)):
        raise NonFiniteValueError(f"fields {list(paths)} are not finite: {result}")
    return result


def _as_bytes(data: Any) -> bytes | np.ndarray:
    # rclpy gives array('B') or bytes, rosbags gives a uint8 ndarray: all expose the buffer.
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False)
    return memoryview(data).cast("B") if not isinstance(data, bytes) else data
