"""Messages whose every field depends on an index, so that a lost, reordered or altered message
shows. The index is also in ``header.stamp.sec``, so a received message says which one it is."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

JOINT_NAMES = [f"joint_{number}" for number in range(1, 7)]


@lru_cache(maxsize=4)
def _image_base(size: int) -> np.ndarray:
    # Noise: as hard to compress as it gets, so that compression costs are not flattered.
    return np.random.default_rng(seed=size).integers(0, 256, size, dtype=np.uint8)


def pattern_image(index: int, width: int = 640, height: int = 480) -> Image:
    """An rgb8 image whose pixels depend on ``index`` (cheap enough for 100+ Hz at VGA)."""
    message = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    message.header.stamp.sec = index
    message.header.stamp.nanosec = (index * 1000) % 1_000_000_000
    message.header.frame_id = "camera"
    pixels = _image_base(width * height * 3) + np.uint8(index % 256)
    # Bytes, not the array: rosidl copies bytes in a fraction of a millisecond.
    message.data = pixels.tobytes()
    return message


def pattern_joint_state(index: int) -> JointState:
    """Joint states whose positions, velocities and efforts depend on ``index``."""
    message = JointState(name=list(JOINT_NAMES))
    message.header.stamp.sec = index
    message.header.stamp.nanosec = (index * 1000) % 1_000_000_000
    message.header.frame_id = "base_link"
    message.position = [index * 0.001 + joint for joint in range(len(JOINT_NAMES))]
    message.velocity = [index * -0.002 + joint for joint in range(len(JOINT_NAMES))]
    message.effort = [float(index % 97) + joint * 0.5 for joint in range(len(JOINT_NAMES))]
    return message


def pattern_text(index: int, text: str = "robot description") -> String:
    """A string message, as /robot_description carries (std_msgs/String)."""
    return String(data=f"{text} #{index}")


def pattern_index(message: Image | JointState) -> int:
    """The index a pattern message was made from."""
    return message.header.stamp.sec
