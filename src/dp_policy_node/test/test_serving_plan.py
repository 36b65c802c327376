"""Parameters and checkpoint matched at configure: what fails, and what the message says."""

from __future__ import annotations

import math
import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from dp_policy_node_test_support import (
    ACTION_RANGE,
    GRIPPER_JOINT,
    GRIPPER_TOPIC,
    IMAGE_TOPIC,
    JOINT_TOPIC,
    JOINTS,
    TRAJECTORY_TOPIC,
)

from dp_policy import read_checkpoint_manifest
from dp_policy.data_spec import data_spec_from_checkpoint
from dp_policy_node.observation_conversion import (
    BAD_STAMP,
    BEYOND_FLOAT32,
    DUPLICATE_JOINT,
    ENCODING,
    IMAGE,
    IMPLAUSIBLE,
    MISSING_JOINT,
    NOT_FINITE,
    UNSTAMPED,
    ObservationRejectedError,
    convert,
    stamp_nanoseconds,
)
from dp_policy_node.parameters import PARAMETERS, NodeSettings, SettingsError
from dp_policy_node.serving_plan import ConfigurationError, build_serving_plan


def settings(checkpoint, **values) -> NodeSettings:
    return NodeSettings.from_values({"checkpoint": str(checkpoint), **values})


def plan_for(checkpoint, **values):
    manifest = read_checkpoint_manifest(checkpoint)
    spec = data_spec_from_checkpoint(checkpoint)
    return build_serving_plan(settings(checkpoint, **values), spec, manifest)


def test_the_parameter_table_is_complete_and_described() -> None:
    names = [parameter.name for parameter in PARAMETERS]
    assert len(names) == len(set(names))
    assert set(names) == set(NodeSettings.__dataclass_fields__)
    assert all(len(parameter.description) > 20 for parameter in PARAMETERS)


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ({"checkpoint": ""}, "parameter 'checkpoint' is empty"),
        ({"device": "gpu0"}, "parameter 'device' is 'gpu0'"),
        ({"joint_lower_limits": [0.0]}, "set both joint_lower_limits and joint_upper_limits"),
        ({"joint_lower_limits": [1.0], "joint_upper_limits": [0.0]}, "must be below"),
        ({"max_step": [0.0]}, "max_step values must be positive"),
        ({"observation_topics": ["image:/x"]}, "must be 'key=/topic'"),
        ({"marker_dims": [0, 1, 2, 3]}, "up to 3"),
        ({"status_period": 0.0}, "'status_period' is 0.0"),
        ({"sampler_backend": "tensorrt"}, "'sampler_backend' is 'tensorrt'; use one of auto,"),
        ({"sampler_precision": "int8"}, "'sampler_precision' is 'int8'; use one of auto,"),
        (
            {"sampler_backend": "cuda_graph", "device": "cpu"},
            "'cuda_graph', which needs a CUDA device, but 'device' is 'cpu'",
        ),
        (
            {"sampler_backend": "eager", "sampler_precision": "fp16"},
            "sampler_backend 'eager' runs the checkpoint's float32 weights",
        ),
        (
            {"sampler_backend": "eager", "sampler_compile": True},
            "'sampler_compile' is true, but sampler_backend 'eager' is not compiled",
        ),
    ],
)
def test_impossible_parameters_are_named(values, text) -> None:
    with pytest.raises(SettingsError, match=text.replace("(", r"\(")):
        NodeSettings.from_values({"checkpoint": "/ck", **values})


def test_the_plan_takes_topics_joints_and_ranges_from_the_checkpoint(checkpoints) -> None:
    plan = plan_for(checkpoints["camera"])
    assert [stream.topic for stream in plan.streams] == [IMAGE_TOPIC, JOINT_TOPIC]
    assert plan.reference == "image" and plan.action_joints == JOINTS
    assert (plan.observation_horizon, plan.prediction_horizon, plan.action_horizon) == (2, 16, 8)
    assert plan.streams[0].stale_age == pytest.approx(0.2)  # 2 dt, the spec's default max_age
    # Limits: the training range (about +-0.25 m) widened by 5 % of it on each side.
    assert np.all(plan.upper_limits > ACTION_RANGE * 0.9)
    width = plan.upper_limits - plan.lower_limits
    assert np.all(width < 2 * ACTION_RANGE * 1.1 + 1e-9)
    np.testing.assert_allclose(plan.max_step, 0.25 * width / 1.1)
    assert plan.marker_dims == (0, 1) and plan.num_inference_steps == 3


def test_overrides_limits_and_steps_from_parameters(checkpoints) -> None:
    plan = plan_for(
        checkpoints["camera"],
        observation_topics=["image=/wrist/image"],
        joint_names=list(reversed(JOINTS)),  # any order
        joint_lower_limits=[-1.0, -2.0],
        joint_upper_limits=[1.0, 2.0],
        max_step=[0.05],
        max_observation_age=0.4,
        num_inference_steps=7,
    )
    assert plan.streams[0].topic == "/wrist/image" and plan.streams[1].topic == JOINT_TOPIC
    assert plan.streams[0].stale_age == 0.4 and plan.streams[0].align_max_age == pytest.approx(0.2)
    np.testing.assert_array_equal(plan.lower_limits, [-1.0, -2.0])
    np.testing.assert_array_equal(plan.max_step, [0.05, 0.05])
    assert plan.num_inference_steps == 7


@pytest.mark.parametrize(
    ("checkpoint", "values", "text"),
    [
        (
            "other_joints",
            {"joint_names": list(JOINTS)},
            "trained for joints ['shoulder_joint', 'elbow_joint'], but parameter joint_names",
        ),
        ("camera", {"observation_topics": ["camera=/x"]}, "names key(s) ['camera']"),
        ("camera", {"joint_lower_limits": [0.0], "joint_upper_limits": [1.0]}, "one value each"),
        ("camera", {"max_step": [0.1, 0.1, 0.1]}, "max_step has 3 values"),
        ("camera", {"marker_dims": [0, 2]}, "names action dimension(s) [2]"),
        ("camera", {"num_inference_steps": 500}, "exceeds the 100 diffusion steps"),
    ],
)
def test_a_mismatch_between_checkpoint_and_parameters_says_what_to_fix(
    checkpoints, checkpoint, values, text
) -> None:
    with pytest.raises(ConfigurationError) as error:
        plan_for(checkpoints[checkpoint], **values)
    assert text in str(error.value)


def test_a_single_action_stream_goes_to_trajectory_topic(checkpoints) -> None:
    (command,) = plan_for(checkpoints["camera"], trajectory_topic="/arm/joint_trajectory").commands
    assert (command.key, command.topic, command.joints) == (
        "action",
        "/arm/joint_trajectory",
        JOINTS,
    )
    assert command.columns == slice(0, 2)
    with pytest.raises(ConfigurationError) as error:
        plan_for(checkpoints["camera"], command_topics=["gripper=/x"])
    assert "command_topics names key(s) ['gripper'], but the checkpoint's action streams are " in (
        str(error.value)
    )
    assert "it has only one, so command_topics must stay unset" in str(error.value)


def test_several_action_streams_each_get_a_topic_and_their_columns(two_stream_checkpoint) -> None:
    plan = plan_for(two_stream_checkpoint)
    assert plan.action_joints == (*JOINTS, GRIPPER_JOINT) and plan.action_dim == 3
    arm, gripper = plan.commands
    assert (arm.key, arm.topic, arm.joints, arm.columns) == (
        "arm",
        TRAJECTORY_TOPIC,
        JOINTS,
        slice(0, 2),
    )
    assert (gripper.key, gripper.topic, gripper.joints, gripper.columns) == (
        "gripper",
        GRIPPER_TOPIC,
        (GRIPPER_JOINT,),
        slice(2, 3),
    )
    # The safety rules cover every joint of every stream.
    assert plan.lower_limits.shape == plan.upper_limits.shape == plan.max_step.shape == (3,)
    assert plan.position_bounds.names == plan.action_joints
    moved = plan_for(
        two_stream_checkpoint,
        trajectory_topic="/arm_controller/joint_trajectory",
        command_topics=["gripper=/hand_controller/joint_trajectory"],
        joint_names=[GRIPPER_JOINT, *JOINTS],  # the controllers' joints together, any order
    )
    assert [command.topic for command in moved.commands] == [
        "/arm_controller/joint_trajectory",
        "/hand_controller/joint_trajectory",
    ]


@pytest.mark.parametrize(
    ("values", "text"),
    [
        (
            {"command_topics": ["hand=/x"]},
            "command_topics names key(s) ['hand'], but the checkpoint's action streams are "
            "['arm', 'gripper']; use 'key=/topic' with one of ['gripper'] (the first, 'arm', is "
            "published on trajectory_topic)",
        ),
        (
            {"command_topics": ["arm=/x"]},
            "command_topics names 'arm', the first action stream, which is published on "
            "trajectory_topic (/joint_trajectory_controller/joint_trajectory); set "
            "trajectory_topic instead",
        ),
        (
            {"command_topics": [f"gripper={TRAJECTORY_TOPIC}"]},
            f"action streams 'arm' and 'gripper' would both be published on {TRAJECTORY_TOPIC}",
        ),
        (
            {"trajectory_topic": GRIPPER_TOPIC},
            f"action streams 'arm' and 'gripper' would both be published on {GRIPPER_TOPIC}",
        ),
        (
            {"joint_names": list(JOINTS)},
            f"the checkpoint does not command [] and commands unknown ['{GRIPPER_JOINT}']",
        ),
        ({"max_step": [0.1, 0.1]}, "max_step has 2 values"),
    ],
)
def test_command_streams_that_cannot_work_fail_configure(two_stream_checkpoint, values, text):
    with pytest.raises(ConfigurationError) as error:
        plan_for(two_stream_checkpoint, **values)
    assert text in str(error.value)


def test_command_topics_entries_are_key_equals_topic() -> None:
    with pytest.raises(SettingsError, match="command_topics entry 'gripper' must be 'key=/topic'"):
        settings("/ck", command_topics=["gripper"])
    with pytest.raises(SettingsError, match="command_topics names key 'gripper' twice"):
        settings("/ck", command_topics=["gripper=/a", "gripper=/b"])
    assert settings("/ck", command_topics=[" gripper = /a "]).command_topics == {"gripper": "/a"}


def test_sampler_settings_are_normalised_and_default_to_auto() -> None:
    assert (settings("/ck").sampler_backend, settings("/ck").sampler_precision) == ("auto", "auto")
    chosen = settings("/ck", sampler_backend=" Fast ", sampler_precision="BF16MIX", device="cpu")
    assert (chosen.sampler_backend, chosen.sampler_precision) == ("fast", "bf16mix")
    # cuda_graph with device auto is for the worker to judge: it knows whether CUDA is there.
    assert settings("/ck", sampler_backend="cuda_graph").sampler_backend == "cuda_graph"


@pytest.mark.parametrize("backend", ["fast", "cuda_graph"])
def test_an_explicit_fast_backend_refuses_a_scheduler_it_lacks_before_loading(
    sampler_checkpoints, backend
) -> None:
    checkpoint = sampler_checkpoints["dpm_solver"]
    with pytest.raises(ConfigurationError) as error:
        plan_for(checkpoint, sampler_backend=backend)
    message = str(error.value)
    assert f"sampler_backend {backend} cannot serve {checkpoint}" in message
    assert "DPMSolverMultistepScheduler" in message and "set sampler_backend to auto" in message
    # auto and eager serve it (auto through eager, decided at warm-up).
    for allowed in ("auto", "eager"):
        assert plan_for(checkpoint, sampler_backend=allowed).num_inference_steps == 3
    assert plan_for(sampler_checkpoints["ddpm"], sampler_backend=backend).num_inference_steps == 5


def _image(encoding="rgb8", size=32, channels=3):
    return SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=5, nanosec=7)),
        encoding=encoding,
        height=size,
        width=size,
        step=size * channels,
        is_bigendian=0,
        data=bytes(range(256)) * (size * size * channels // 256 + 1),
    )


def _joints(names, positions):
    return SimpleNamespace(
        header=SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0)),
        name=list(names),
        position=list(positions),
        velocity=[],
        effort=[],
    )


def test_conversion_uses_dp_policy_and_names_each_cause(checkpoints) -> None:
    plan = plan_for(checkpoints["camera"])
    camera, joints = plan.streams
    image = convert(camera, _image())
    assert image.shape == (3, 32, 32) and image.dtype == np.uint8
    bgr = convert(camera, _image("bgr8"))
    np.testing.assert_array_equal(bgr, image[::-1])  # cv_bridge semantics: channels swapped
    assert stamp_nanoseconds(_image(), camera.topic) == 5_000_000_007
    cases = [
        (camera, _image("16UC1", channels=2), ENCODING, "encoding '16UC1'"),
        (camera, _image(size=48), IMAGE, "48x48, the policy expects 32x32"),
        (joints, _joints(["pusher_y_joint"], [0.0]), MISSING_JOINT, "['pusher_x_joint']"),
        (joints, _joints(JOINTS, [math.nan, 0.0]), NOT_FINITE, "['pusher_x_joint']"),
    ]
    for stream, message, cause, text in cases:
        with pytest.raises(ObservationRejectedError) as refused:
            convert(stream, message)
        assert refused.value.cause == cause and text in refused.value.message
        assert stream.topic in refused.value.message
    picked = convert(joints, _joints(["other", *reversed(JOINTS)], [9.0, 0.2, 0.1]))
    np.testing.assert_array_equal(picked, [0.1, 0.2])  # the checkpoint's order
    unstamped = _joints(JOINTS, [0.0, 0.0])
    unstamped.header.stamp.sec = 0
    with pytest.raises(ObservationRejectedError) as refused:
        stamp_nanoseconds(unstamped, joints.topic)
    assert refused.value.cause == UNSTAMPED


def test_compressed_images_decode_to_the_same_array_as_raw_ones() -> None:
    import cv2

    from dp_policy_node.serving_plan import ObservationStream

    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    _, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    stream = ObservationStream(
        key="image",
        topic="/camera/image_raw/compressed",
        kind="image",
        message_type="sensor_msgs/msg/CompressedImage",
        shape=(3, 32, 32),
        joints=(),
        joint_field="position",
        fields=(),
        align_max_age=0.2,
        stale_age=0.2,
    )
    message = SimpleNamespace(format="png", data=png.tobytes())
    np.testing.assert_array_equal(convert(stream, message), rgb.transpose(2, 0, 1))
    with pytest.raises(ObservationRejectedError) as refused:
        convert(stream, SimpleNamespace(format="jpeg", data=b"not an image"))
    assert refused.value.cause == IMAGE and stream.topic in refused.value.message

    # A decompression bomb: a small PNG that declares 20000x20000 pixels (1.2 GB decoded, 8 s
    # of decoding here) is refused by its header, before decoding.
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * 60001)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows)
    with pytest.raises(ObservationRejectedError) as refused:
        convert(stream, SimpleNamespace(format="png", data=bomb))
    assert "image is 20000x20000, the policy expects 32x32 (not decoded)" in str(refused.value)
    # The header is found in progressive JPEGs too.
    _, progressive = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    decoded = convert(stream, SimpleNamespace(format="jpeg", data=progressive.tobytes()))
    assert decoded.shape == (3, 32, 32)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _pose_fields_stream(topic: str, fields: tuple[str, ...], plausible=None):
    """A ``fields`` stream of a PoseStamped topic, as a plan builds one."""
    from dp_policy_node.serving_plan import ObservationStream

    return ObservationStream(
        key="pose",
        topic=topic,
        kind="fields",
        message_type="geometry_msgs/msg/PoseStamped",
        shape=(),
        joints=(),
        joint_field="position",
        fields=fields,
        align_max_age=0.2,
        stale_age=0.2,
        plausible=plausible,
    )


def test_fields_streams_read_dotted_paths_and_refuse_nan() -> None:
    stream = _pose_fields_stream("/pusht/block_pose", ("pose.position.x", "pose.orientation.w"))
    pose = SimpleNamespace(position=SimpleNamespace(x=0.5), orientation=SimpleNamespace(w=1.0))
    np.testing.assert_array_equal(convert(stream, SimpleNamespace(pose=pose)), [0.5, 1.0])
    pose.position.x = math.nan
    with pytest.raises(ObservationRejectedError) as refused:
        convert(stream, SimpleNamespace(pose=pose))
    assert refused.value.cause == NOT_FINITE and "/pusht/block_pose" in refused.value.message


def test_implausible_values_are_refused_at_the_door_with_their_bound(checkpoints) -> None:
    # Training range of the tiny checkpoints: about [-0.25, 0.25] (width 0.5) per joint.
    _, joints = plan_for(checkpoints["camera"]).streams
    low, high = joints.plausible.low, joints.plausible.high
    np.testing.assert_allclose(low, -1.25, atol=0.01)  # default factor 2: 2 widths outside
    np.testing.assert_allclose(high, 1.25, atol=0.01)
    np.testing.assert_array_equal(convert(joints, _joints(JOINTS, [1.2, -1.2])), [1.2, -1.2])
    for value in (1.3, 1e30, -3e38):
        with pytest.raises(ObservationRejectedError) as refused:
            convert(joints, _joints(JOINTS, [0.0, value]))
        assert refused.value.cause == IMPLAUSIBLE
        message = refused.value.message
        assert JOINT_TOPIC in message and "position of pusher_y_joint" in message
        bound = f"[{low[1]:.4g}, {high[1]:.4g}]"
        assert f"is {value:.4g}, outside its plausible range {bound}" in message, message
        assert "training range [-0.2" in message and "observation_range_factor 2" in message

    # Configured joint limits tighten it: beyond either widened interval is refused.
    limited = plan_for(
        checkpoints["camera"],
        joint_lower_limits=[-0.1, -0.1],
        joint_upper_limits=[0.1, 0.1],
        observation_range_factor=1.0,
    ).streams[1]
    np.testing.assert_allclose(limited.plausible.high, 0.3)  # 0.1 + 1 x 0.2
    with pytest.raises(ObservationRejectedError) as refused:
        convert(limited, _joints(JOINTS, [0.31, 0.0]))
    assert "and joint limits [-0.1, 0.1], each widened" in refused.value.message

    # Factor 0: no range check, but the float32 range stays (inf must never reach the model).
    unchecked = plan_for(checkpoints["camera"], observation_range_factor=0.0).streams[1]
    np.testing.assert_array_equal(convert(unchecked, _joints(JOINTS, [1e30, 0.0])), [1e30, 0.0])
    for plan_stream in (unchecked, joints):
        for value in (1e39, -1e300):
            with pytest.raises(ObservationRejectedError) as refused:
                convert(plan_stream, _joints(JOINTS, [value, 0.0]))
            assert refused.value.cause == BEYOND_FLOAT32
            assert f"pusher_x_joint is {value:.4g}, beyond the float32 range" in str(refused.value)

    # The measured position for the first-point check is bounded like the observations.
    bounds = plan_for(checkpoints["camera"]).position_bounds
    assert bounds.names == JOINTS and np.all(bounds.high < 2.0) and np.all(bounds.low > -2.0)


def test_duplicate_joint_names_and_unnormalised_stamps_are_refused(checkpoints) -> None:
    _, joints = plan_for(checkpoints["camera"]).streams
    # The outside fuzz run's case: a NaN in the second pusher_x_joint. Refused for the name,
    # whichever value would have been read.
    message = _joints([*JOINTS, JOINTS[0]], [0.0, 0.0, math.nan])
    with pytest.raises(ObservationRejectedError) as refused:
        convert(joints, message)
    assert refused.value.cause == DUPLICATE_JOINT
    assert "names joint(s) ['pusher_x_joint'] more than once" in refused.value.message
    many = [f"joint_{index}" for index in range(1000)]
    with pytest.raises(ObservationRejectedError) as refused:
        convert(joints, _joints([*many, *many], [0.0] * 2000))
    assert "and 990 more" in refused.value.message and len(refused.value.message) < 1000

    overflowing = _joints(JOINTS, [0.0, 0.0])
    overflowing.header.stamp.nanosec = 1_000_000_000
    with pytest.raises(ObservationRejectedError) as refused:
        stamp_nanoseconds(overflowing, joints.topic)
    assert refused.value.cause == BAD_STAMP
    assert "header.stamp.nanosec 1000000000, which must be below" in refused.value.message


def test_a_tilted_object_is_plausible_however_upright_it_stood_in_training() -> None:
    # The Can demo's case: the can stood upright in every demonstration (quaternion x, y within
    # about +-0.01), then tipped by 4 degrees while grasped; the old bound refused it as a
    # broken sensor and the robot stopped. Raw fields keep their widened training range.
    from dp_policy_node.serving_plan import _plausible_range

    fields = ("pose.position.z", "pose.orientation:quaternion")
    names = ("pose.position.z", *(f"pose.orientation:quaternion.{c}" for c in "xyzw"))
    spec = SimpleNamespace(kind="fields", key="object", names=names, joint_field="position")
    manifest = {
        "normalizer": {
            "object": {
                "min": [0.8, -0.004, -0.004, -0.01, 0.999],
                "max": [0.9, 0.007, 0.007, 0.01, 1.0],
            }
        }
    }
    plausible = _plausible_range(spec, manifest, 2.0, {})
    np.testing.assert_allclose(plausible.low[0], 0.6)  # 0.8 - 2 x 0.1
    np.testing.assert_allclose(plausible.high[1:], 1.0, atol=1e-5)
    stream = _pose_fields_stream("/can/object_pose", fields, plausible)
    tilt = math.radians(4.0)

    def pose(z: float, quaternion: tuple[float, float, float, float]) -> SimpleNamespace:
        x, y, qz, w = quaternion
        orientation = SimpleNamespace(x=x, y=y, z=qz, w=w)
        return SimpleNamespace(
            pose=SimpleNamespace(position=SimpleNamespace(z=z), orientation=orientation)
        )

    tipped = (0.0, math.sin(tilt / 2), 0.0, math.cos(tilt / 2))
    values = convert(stream, pose(0.85, tipped))
    np.testing.assert_allclose(values[2], math.sin(tilt / 2))
    # Upside down and turned: still a rotation, still served.
    convert(stream, pose(0.85, (1.0, 0.0, 0.0, 0.0)))
    # A huge raw quaternion normalises to a rotation; a position far outside is refused.
    convert(stream, pose(0.85, (0.0, 3e30, 0.0, 1e30)))
    with pytest.raises(ObservationRejectedError) as refused:
        convert(stream, pose(5.0, tipped))
    assert refused.value.cause == IMPLAUSIBLE and "pose.position.z is 5" in refused.value.message
