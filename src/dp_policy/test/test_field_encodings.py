"""Orientation fields as continuous observations: yaw (sin, cos), canonical quaternion, 6-D."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from dp_policy.data_spec import DataSpecError, StreamSpec
from dp_policy.message_conversion import ConversionError, NonFiniteValueError, read_fields


def pose(yaw: float, sign: float = 1.0, x: float = 0.3) -> SimpleNamespace:
    """A PoseStamped-like message with a planar yaw, its quaternion multiplied by ``sign``."""
    q = SimpleNamespace(x=0.0, y=0.0, z=sign * math.sin(yaw / 2.0), w=sign * math.cos(yaw / 2.0))
    return SimpleNamespace(
        pose=SimpleNamespace(position=SimpleNamespace(x=x, y=-0.1), orientation=q)
    )


def test_yaw_sincos_is_continuous_where_the_raw_quaternion_jumps() -> None:
    # The yaw crosses 0 from below (as the sim reports it in [0, 2 pi): 2 pi - e, then +e).
    before, after = pose(2.0 * math.pi - 0.01), pose(0.01)
    raw = ["pose.orientation.z", "pose.orientation.w"]
    raw_jump = np.abs(read_fields(before, raw) - read_fields(after, raw)).max()
    assert raw_jump > 1.9  # (0, -1) -> (0, 1): the discontinuity this encoding removes
    encoded = ["pose.orientation:yaw_sincos"]
    np.testing.assert_allclose(
        read_fields(before, encoded), read_fields(after, encoded), atol=0.021
    )
    np.testing.assert_allclose(
        read_fields(pose(0.7), encoded), [math.sin(0.7), math.cos(0.7)], atol=1e-12
    )


@pytest.mark.parametrize("encoding", ["yaw_sincos", "quaternion", "rotation_6d"])
def test_every_encoding_is_the_same_for_q_and_minus_q(encoding: str) -> None:
    fields = [f"pose.orientation:{encoding}"]
    for yaw in np.linspace(-math.pi, math.pi, 13):
        np.testing.assert_allclose(
            read_fields(pose(yaw), fields), read_fields(pose(yaw, sign=-1.0), fields), atol=1e-12
        )


def test_canonical_quaternion_and_6d_of_a_general_rotation() -> None:
    # 120 degrees about (1, 1, 1)/sqrt(3): q = (0.5, 0.5, 0.5, 0.5), x -> y, y -> z, z -> x.
    message = SimpleNamespace(orientation=SimpleNamespace(x=-0.5, y=-0.5, z=-0.5, w=-0.5))
    np.testing.assert_allclose(read_fields(message, ["orientation:quaternion"]), [0.5] * 4)
    six = read_fields(message, ["orientation:rotation_6d"])
    np.testing.assert_allclose(six, [0, 1, 0, 0, 0, 1], atol=1e-12)
    # An unnormalised quaternion is normalised first.
    scaled = SimpleNamespace(orientation=SimpleNamespace(x=2.0, y=0.0, z=0.0, w=0.0))
    np.testing.assert_allclose(read_fields(scaled, ["orientation:quaternion"]), [1, 0, 0, 0])


def test_fields_mix_plain_numbers_and_encodings_in_order() -> None:
    values = read_fields(
        pose(math.pi / 2), ["pose.position.x", "pose.orientation:yaw_sincos", "pose.position.y"]
    )
    np.testing.assert_allclose(values, [0.3, 1.0, 0.0, -0.1], atol=1e-12)
    angle = SimpleNamespace(theta=math.pi)
    np.testing.assert_allclose(read_fields(angle, ["theta:angle_sincos"]), [0, -1], atol=1e-12)


def test_huge_quaternions_keep_their_rotation() -> None:
    # (0, 0, 3, 4) scaled beyond float64's squares: still a yaw of 2 atan2(3, 4), not identity.
    huge = SimpleNamespace(orientation=SimpleNamespace(x=0.0, y=0.0, z=3e300, w=4e300))
    yaw = 2 * math.atan2(3, 4)
    np.testing.assert_allclose(
        read_fields(huge, ["orientation:yaw_sincos"]), [math.sin(yaw), math.cos(yaw)]
    )


def test_bad_orientation_values_are_clear_errors() -> None:
    zero = SimpleNamespace(orientation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=0.0))
    with pytest.raises(ConversionError, match="zero quaternion"):
        read_fields(zero, ["orientation:yaw_sincos"])
    nan = SimpleNamespace(orientation=SimpleNamespace(x=0.0, y=0.0, z=math.nan, w=1.0))
    with pytest.raises(NonFiniteValueError):
        read_fields(nan, ["orientation:quaternion"])
    with pytest.raises(ConversionError, match="not a quaternion"):
        read_fields(SimpleNamespace(orientation=1.0), ["orientation:rotation_6d"])
    with pytest.raises(ConversionError, match="not a number"):
        read_fields(SimpleNamespace(theta="north"), ["theta:angle_sincos"])
    # Straight up: the heading of the x axis is undefined.
    up = SimpleNamespace(
        orientation=SimpleNamespace(x=0.0, y=-math.sqrt(0.5), z=0.0, w=math.sqrt(0.5))
    )
    with pytest.raises(ConversionError, match="yaw is undefined"):
        read_fields(up, ["orientation:yaw_sincos"])


def test_spec_sizes_and_names_count_the_encoded_values() -> None:
    stream = StreamSpec(
        key="block_pose",
        topic="/pusht/block_pose",
        kind="fields",
        message_type="geometry_msgs/msg/PoseStamped",
        fields=("pose.position.x", "pose.position.y", "pose.orientation:yaw_sincos"),
    )
    assert stream.size == 4
    assert stream.names[2:] == (
        "pose.orientation:yaw_sincos.sin_yaw",
        "pose.orientation:yaw_sincos.cos_yaw",
    )
    six = StreamSpec(
        key="pose",
        topic="/pose",
        kind="fields",
        message_type="geometry_msgs/msg/Pose",
        fields=("position.z", "orientation:rotation_6d"),
    )
    assert six.size == 7


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("pose.orientation:euler", "unknown encoding 'euler'"),
        ("pose..x", "not a dotted path"),
        (":yaw_sincos", "not a dotted path"),
    ],
)
def test_spec_refuses_unknown_encodings_and_bad_paths(entry: str, message: str) -> None:
    with pytest.raises(DataSpecError, match=message):
        StreamSpec(
            key="p",
            topic="/p",
            kind="fields",
            message_type="geometry_msgs/msg/Pose",
            fields=(entry,),
        )
