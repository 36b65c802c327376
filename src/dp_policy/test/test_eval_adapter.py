"""The spec bound to the PushT task: data spec streams read from what the ROS sim publishes,
in its units (``TaskBinding`` over ``dp_sim.pusht_task.PushTTask``)."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest

from dp_policy.data_spec import DataSpec
from dp_policy.evaluation import TaskBinding, UnmappableSpecError, task_factory
from dp_policy.evaluation.task_binding import spec_cameras
from dp_sim.mapping import (
    joints_to_pixels,
    pixel_velocity_to_joints,
    pixels_to_joints,
    quaternion_to_yaw,
    task_pose_to_world,
    world_pose_to_task,
)
from dp_sim.pusht_task import COMMAND_TOPIC, DEFAULT_IMAGE_SIZE, PushTTask, pusht_messages

CONFIG = Path(__file__).resolve().parents[1] / "config"
IMAGE_SPEC = DataSpec.from_yaml(CONFIG / "pusht_data_spec.yaml")
LOWDIM_SPEC = DataSpec.from_yaml(CONFIG / "pusht_lowdim_data_spec.yaml")


def _spec(change=None) -> DataSpec:
    data = copy.deepcopy(IMAGE_SPEC.to_dict())
    if change is not None:
        change(data)
    return DataSpec.from_dict(data)


def _bound(spec: DataSpec) -> tuple[PushTTask, TaskBinding]:
    """The spec bound to a PushT task made as the evaluation makes it, reset and checked."""
    task = task_factory(spec, "pusht", 300)()
    try:
        binding = TaskBinding(spec, task)
        task.reset(100000)
        binding.check_messages()
    except BaseException:
        task.close()
        raise
    return task, binding


def _refused(spec: DataSpec) -> None:
    """Binds ``spec`` as ``_bound`` does, for the refusals (closing the task)."""
    task, _ = _bound(spec)
    task.close()


def _moved_state(task: PushTTask):
    """A state after a few steps: the pusher moving, so velocities are not zero."""
    task.reset(100000)
    for target in ([300.0, 200.0], [320.0, 180.0], [340.0, 170.0]):
        task.step({COMMAND_TOPIC: pixels_to_joints(np.array(target))})
    return task.state


def test_image_spec_gives_the_camera_image_and_joint_positions_in_metres() -> None:
    assert spec_cameras(IMAGE_SPEC, "pusht") == (("camera",), (96, 96))
    task, binding = _bound(IMAGE_SPEC)
    try:
        state = _moved_state(task)
        observation = binding.observe()
    finally:
        task.close()
    assert set(observation) == {"image", "agent_pos"}
    image = observation["image"]
    assert image.dtype == np.uint8 and image.shape == (3, 96, 96)
    np.testing.assert_array_equal(image, state.image.transpose(2, 0, 1))
    agent = observation["agent_pos"]
    np.testing.assert_allclose(agent, pixels_to_joints(state.agent_position))
    # 1 px = 1 mm, origin at the centre, y up.
    x_px, y_px = state.agent_position
    np.testing.assert_allclose(agent, [(x_px - 256) * 1e-3, -(y_px - 256) * 1e-3])
    np.testing.assert_allclose(joints_to_pixels(agent), state.agent_position)


def test_lowdim_spec_gives_the_block_pose_as_the_sim_publishes_it() -> None:
    assert spec_cameras(LOWDIM_SPEC, "pusht") == ((), None)
    task, binding = _bound(LOWDIM_SPEC)
    try:
        # No stream needs the image: the camera renders at the sim node's default size.
        assert (task.state.image.shape[1], task.state.image.shape[0]) == DEFAULT_IMAGE_SIZE
        state = _moved_state(task)
        observation = binding.observe()
    finally:
        task.close()
    assert set(observation) == {"agent_pos", "block_pose"}
    x, y, yaw = task_pose_to_world(state.block_pose)
    # The default spec gives the yaw as (sin, cos): continuous where the quaternion's (z, w)
    # would jump.
    np.testing.assert_allclose(
        observation["block_pose"], [x, y, math.sin(yaw), math.cos(yaw)], atol=1e-12
    )
    # The expert node's way back recovers the task's pose (angle modulo a turn).
    sin_yaw, cos_yaw = observation["block_pose"][2:]
    pose = world_pose_to_task(x, y, math.atan2(sin_yaw, cos_yaw))
    np.testing.assert_allclose(pose[:2], state.block_pose[:2])
    turn = (pose[2] - state.block_pose[2]) / (2 * math.pi)
    assert abs(turn - round(turn)) < 1e-9
    np.testing.assert_allclose(observation["agent_pos"], pixels_to_joints(state.agent_position))


def test_joint_order_velocities_mono_images_sizes_and_namespaces() -> None:
    def change(data: dict) -> None:
        image, joints = data["observations"]
        image.update(topic="/robot1/camera/image_raw", shape=[1, 48, 64])
        joints.update(joints=["pusher_y_joint", "pusher_x_joint"], joint_field="velocity")
        data["action"]["joints"] = ["pusher_y_joint", "pusher_x_joint"]

    spec = _spec(change)
    assert spec_cameras(spec, "pusht") == (("camera",), (64, 48))
    task, binding = _bound(spec)
    try:
        state = _moved_state(task)
        observation = binding.observe()
    finally:
        task.close()
    assert observation["image"].shape == (1, 48, 64)
    luma = state.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_array_equal(observation["image"][0], np.rint(luma).astype(np.uint8))
    velocity = pixel_velocity_to_joints(state.agent_velocity)
    assert np.any(np.abs(velocity) > 1e-3)
    np.testing.assert_allclose(observation["agent_pos"], velocity[::-1])
    # Actions come in the spec's joint order (y, x); the task wants (x, y) pixels.
    setpoints = binding.command_vector(np.array([[0.1, -0.05], [0.0, 0.2]]))
    np.testing.assert_allclose(setpoints, [[-0.05, 0.1], [0.2, 0.0]])
    np.testing.assert_allclose(joints_to_pixels(setpoints[0]), [206.0, 156.0])


def test_pusht_messages_are_what_the_sim_node_publishes() -> None:
    task = PushTTask()
    try:
        state = _moved_state(task)
        assert task.messages().keys() == task.published.keys()
    finally:
        task.close()
    messages = pusht_messages(state)
    image = messages["camera/image_raw"]
    assert (image.encoding, image.height, image.width, image.step) == ("rgb8", 96, 96, 288)
    joints = messages["joint_states"]
    assert joints.name == ["pusher_x_joint", "pusher_y_joint"] and joints.effort == []
    goal = messages["pusht/goal_pose"].pose
    # The goal (256, 256, pi/4) px is the world origin with yaw -pi/4.
    assert goal.position.x == pytest.approx(0) and goal.position.y == pytest.approx(0)
    assert quaternion_to_yaw(0, 0, goal.orientation.z, goal.orientation.w) == pytest.approx(
        -math.pi / 4
    )
    assert messages["pusht/coverage"].data == pytest.approx(state.coverage)


def _stream(index: int, **fields):
    return lambda data: data["observations"][index].update(**fields)


def _add_stream(**stream):
    return lambda data: data["observations"].append(stream)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_stream(0, topic="/camera/depth"), "'image' \\(topic /camera/depth.*no such topic"),
        (
            _stream(0, message_type="sensor_msgs/msg/CompressedImage"),
            re.escape(
                "'image' (topic /camera/image_raw, kind image): the sim publishes "
                "sensor_msgs/msg/Image on /camera/image_raw; image streams are evaluated on raw"
            )
            + ".*compression artefacts",
        ),
        (
            _stream(1, joint_field="effort"),
            re.escape("'agent_pos' (/joint_states): JointState has 2 names but 0 effort"),
        ),
        (
            _stream(1, joints=["pusher_x_joint", "elbow"]),
            "'agent_pos'.*lacks joint\\(s\\) \\['elbow'\\]",
        ),
        (
            _stream(1, topic="/camera/image_raw"),
            "'agent_pos'.*/camera/image_raw carries sensor_msgs/msg/Image",
        ),
        (
            _add_stream(
                key="block",
                topic="/pusht/block_pose",
                kind="fields",
                message_type="geometry_msgs/msg/PoseStamped",
                fields=["pose.position.q"],
            ),
            "'block' \\(/pusht/block_pose\\): message has no field 'pose.position.q'",
        ),
        (
            _add_stream(
                key="block",
                topic="/pusht/block_pose",
                kind="fields",
                message_type="geometry_msgs/msg/Pose",
                fields=["position.x"],
            ),
            "'block'.*publishes geometry_msgs/msg/PoseStamped",
        ),
        (
            _add_stream(
                key="done",
                topic="/pusht/success",
                kind="fields",
                message_type="std_msgs/msg/Bool",
                fields=["data"],
            ),
            "'done' \\(/pusht/success\\): field 'data' is not a number",
        ),
        (
            _add_stream(key="wrist", topic="/wrist/image_raw", kind="image", shape=[3, 64, 64]),
            "image streams \\['image', 'wrist'\\] ask for different image sizes",
        ),
        (
            lambda d: d["action"].update(joints=["pusher_x_joint"]),
            "action stream 'action'.*takes the positions of "
            "\\['pusher_x_joint', 'pusher_y_joint'\\] \\(in any order\\)",
        ),
        (
            lambda d: d.update(
                action={
                    "key": "action",
                    "topic": "/cmd",
                    "kind": "fields",
                    "message_type": "geometry_msgs/msg/Point",
                    "fields": ["x", "y"],
                }
            ),
            "action stream 'action' \\(topic /cmd, kind fields\\).*JointTrajectory",
        ),
        (lambda d: d.update(dt=0.05, max_age=0.2), "dt is 0.05 s.*every 0.1 s"),
    ],
)
def test_specs_the_sim_cannot_serve_are_refused_naming_the_stream(change, expected) -> None:
    with pytest.raises(UnmappableSpecError, match=expected):
        _refused(_spec(change))
