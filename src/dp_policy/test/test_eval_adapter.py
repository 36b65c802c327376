"""The PushT adapter: data spec streams read from what the ROS sim publishes, in its units."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest

from dp_policy.data_spec import DataSpec
from dp_policy.evaluation import PushTAdapter, UnmappableSpecError, sim_messages
from dp_policy.evaluation.pusht_adapter import DEFAULT_IMAGE_SIZE
from dp_sim.mapping import (
    joints_to_pixels,
    pixel_velocity_to_joints,
    pixels_to_joints,
    quaternion_to_yaw,
    task_pose_to_world,
    world_pose_to_task,
)
from dp_sim.pusht_robot import PushTRobot

CONFIG = Path(__file__).resolve().parents[1] / "config"
IMAGE_SPEC = DataSpec.from_yaml(CONFIG / "pusht_data_spec.yaml")
LOWDIM_SPEC = DataSpec.from_yaml(CONFIG / "pusht_lowdim_data_spec.yaml")


def _spec(change=None) -> DataSpec:
    data = copy.deepcopy(IMAGE_SPEC.to_dict())
    if change is not None:
        change(data)
    return DataSpec.from_dict(data)


def _moved_state(width: int = 96, height: int = 96):
    """A state after a few steps: the pusher moving, so velocities are not zero."""
    robot = PushTRobot(width, height)
    try:
        robot.reset(100000)
        for target in ([300.0, 200.0], [320.0, 180.0], [340.0, 170.0]):
            state = robot.step(np.array(target))
        return state
    finally:
        robot.close()


def test_image_spec_gives_the_camera_image_and_joint_positions_in_metres() -> None:
    adapter = PushTAdapter(IMAGE_SPEC)
    assert adapter.image_size == (96, 96)
    state = _moved_state()
    observation = adapter.observe(state)
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
    adapter = PushTAdapter(LOWDIM_SPEC)
    assert adapter.image_size == DEFAULT_IMAGE_SIZE
    state = _moved_state()
    observation = adapter.observe(state)
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

    adapter = PushTAdapter(_spec(change))
    assert adapter.image_size == (64, 48)
    state = _moved_state(64, 48)
    observation = adapter.observe(state)
    assert observation["image"].shape == (1, 48, 64)
    luma = state.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_array_equal(observation["image"][0], np.rint(luma).astype(np.uint8))
    velocity = pixel_velocity_to_joints(state.agent_velocity)
    assert np.any(np.abs(velocity) > 1e-3)
    np.testing.assert_allclose(observation["agent_pos"], velocity[::-1])
    # Actions come in the spec's joint order (y, x); the task wants (x, y) pixels.
    setpoints = adapter.setpoints_xy(np.array([[0.1, -0.05], [0.0, 0.2]]))
    np.testing.assert_allclose(setpoints, [[-0.05, 0.1], [0.2, 0.0]])
    np.testing.assert_allclose(joints_to_pixels(setpoints[0]), [206.0, 156.0])


def test_sim_messages_are_what_the_sim_node_publishes() -> None:
    state = _moved_state()
    messages = sim_messages(state)
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
            re.escape("'image' (topic /camera/image_raw, kind image): the sim publishes raw"),
        ),
        (
            _stream(1, joint_field="effort"),
            re.escape("'agent_pos' (/joint_states): JointState has 2 names but 0 effort"),
        ),
        (
            _stream(1, joints=["pusher_x_joint", "elbow"]),
            "'agent_pos'.*no joint\\(s\\) \\['elbow'\\]",
        ),
        (
            _stream(1, topic="/camera/image_raw"),
            "'agent_pos'.*joint states come from /joint_states",
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
            "action stream 'action'.*positions of both joints",
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
        PushTAdapter(_spec(change))
