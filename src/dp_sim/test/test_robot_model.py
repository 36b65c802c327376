"""The robot description and the nominal camera agree with the pixel <-> SI mapping."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from dp_sim.mapping import JOINT_NAMES, JOINT_UPPER_LIMIT, pixels_to_joints
from dp_sim.robot_model import CAMERA_HEIGHT_M, camera_matrix, urdf


def test_the_urdf_has_the_two_prismatic_joints_along_world_x_and_y() -> None:
    robot = ElementTree.fromstring(urdf("map", "cam").split("?>", 1)[1])
    joints = {joint.get("name"): joint for joint in robot.iter("joint")}
    for name, axis in zip(JOINT_NAMES, ("1 0 0", "0 1 0"), strict=True):
        joint = joints[name]
        assert joint.get("type") == "prismatic"
        assert joint.find("axis").get("xyz") == axis
        assert float(joint.find("limit").get("upper")) == pytest.approx(JOINT_UPPER_LIMIT)
    links = {link.get("name") for link in robot.iter("link")}
    assert {"map", "cam", "pusher_link"} <= links
    parents = {joint.find("parent").get("link") for joint in joints.values()}
    assert "map" in parents


@pytest.mark.parametrize(("width", "height"), [(96, 96), (128, 64)])
def test_the_pinhole_camera_sees_the_table_as_the_task_renders_it(width, height) -> None:
    k = np.array(camera_matrix(width, height)).reshape(3, 3)
    for pixel in ([0.0, 0.0], [512.0, 512.0], [100.0, 400.0], [256.0, 256.0]):
        x, y = pixels_to_joints(np.array(pixel))
        # World point on the table, in the optical frame (rotated by pi about x, 1 m up).
        camera_point = np.array([x, -y, CAMERA_HEIGHT_M])
        u, v, w = k @ camera_point
        assert [u / w, v / w] == pytest.approx([pixel[0] * width / 512, pixel[1] * height / 512])
