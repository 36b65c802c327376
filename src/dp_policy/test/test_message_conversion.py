"""Message contents to arrays: every supported image encoding, compressed images, joints, fields."""

from __future__ import annotations

from array import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from dp_policy.message_conversion import (
    ConversionError,
    compressed_image_to_rgb,
    image_to_chw,
    image_to_rgb,
    pick_joints,
    read_fields,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)


def raw_image(encoding: str, pixels: np.ndarray, padding: int = 0, as_array: bool = True):
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    step = width * channels + padding
    rows = np.zeros((height, step), dtype=np.uint8)
    rows[:, : width * channels] = pixels.reshape(height, -1)
    data = array("B", rows.tobytes()) if as_array else rows.reshape(-1)
    return SimpleNamespace(encoding=encoding, height=height, width=width, step=step, data=data)


@pytest.mark.parametrize("as_array", [True, False])  # rclpy's array('B') and rosbags' ndarray
def test_every_encoding_gives_the_same_rgb(as_array: bool) -> None:
    bgr = RGB[:, :, ::-1]
    alpha = np.full((4, 5, 1), 7, dtype=np.uint8)
    cases = {
        "rgb8": RGB,
        "bgr8": bgr,
        "rgba8": np.concatenate([RGB, alpha], axis=2),
        "bgra8": np.concatenate([bgr, alpha], axis=2),
    }
    for encoding, pixels in cases.items():
        converted = image_to_rgb(raw_image(encoding, pixels, padding=3, as_array=as_array))
        np.testing.assert_array_equal(converted, RGB, err_msg=encoding)


def test_mono_is_repeated_and_rgb_to_mono_uses_luma() -> None:
    mono = RGB[:, :, 0]
    np.testing.assert_array_equal(image_to_rgb(raw_image("mono8", mono)), np.stack([mono] * 3, 2))
    gray = image_to_chw(raw_image("rgb8", RGB), (1, 4, 5))
    expected = cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY)
    assert np.abs(gray[0].astype(int) - expected.astype(int)).max() <= 1


def test_chw_layout_and_size_check() -> None:
    chw = image_to_chw(raw_image("rgb8", RGB), (3, 4, 5))
    np.testing.assert_array_equal(chw, RGB.transpose(2, 0, 1))
    with pytest.raises(ConversionError, match="expects 6x4"):
        image_to_chw(raw_image("rgb8", RGB), (3, 4, 6))


def test_bad_images_are_refused() -> None:
    with pytest.raises(ConversionError, match="not supported"):
        image_to_rgb(raw_image("16UC1", RGB[:, :, 0]))
    short = raw_image("rgb8", RGB)
    short.data = short.data[:-1]
    with pytest.raises(ConversionError, match="data bytes"):
        image_to_rgb(short)
    bad_step = raw_image("rgb8", RGB)
    bad_step.step = 2
    with pytest.raises(ConversionError, match="step"):
        image_to_rgb(bad_step)


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_images_decode_to_rgb(extension: str) -> None:
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (16, 1, 3))
    smooth[:, :, 2] = 40
    ok, encoded = cv2.imencode(extension, smooth[:, :, ::-1])
    assert ok
    message = SimpleNamespace(format=extension[1:], data=array("B", encoded.tobytes()))
    decoded = compressed_image_to_rgb(message)
    tolerance = 0 if extension == ".png" else 12
    assert np.abs(decoded.astype(int) - smooth.astype(int)).max() <= tolerance
    with pytest.raises(ConversionError, match="could not be decoded"):
        compressed_image_to_rgb(SimpleNamespace(format="jpeg", data=b"not an image"))


def test_pick_joints_by_name_in_the_requested_order() -> None:
    values = pick_joints(["b", "a", "c"], [2.0, 1.0, 3.0], ["a", "c"])
    np.testing.assert_array_equal(values, [1.0, 3.0])
    with pytest.raises(ConversionError, match=r"lacks joint\(s\) \['d'\]"):
        pick_joints(["a"], [1.0], ["a", "d"])
    with pytest.raises(ConversionError, match="not finite"):
        pick_joints(["a"], [float("nan")], ["a"])
    with pytest.raises(ConversionError, match="2 names but 1"):
        pick_joints(["a", "b"], [1.0], ["a"])


def test_read_fields_follows_dotted_paths() -> None:
    pose = SimpleNamespace(pose=SimpleNamespace(position=SimpleNamespace(x=1.5, y=-2)))
    np.testing.assert_array_equal(
        read_fields(pose, ["pose.position.x", "pose.position.y"]), [1.5, -2]
    )
    with pytest.raises(ConversionError, match=r"no field 'pose\.position\.z'"):
        read_fields(pose, ["pose.position.z"])
    with pytest.raises(ConversionError, match="not a number"):
        read_fields(pose, ["pose.position"])
