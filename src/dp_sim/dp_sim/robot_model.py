"""The simulated robot's model: URDF text and the camera's nominal calibration. ROS-free.

The pusher is a Cartesian gantry: ``pusher_x_joint`` moves along the world x axis,
``pusher_y_joint`` along world y (see ``dp_sim.mapping``). The camera looks straight down on
the table from a nominal 1 m; the task renders an orthographic top view, which the pinhole
model below reproduces exactly in the table plane (z = 0), where everything happens.
"""

from __future__ import annotations

from dp_sim.mapping import (
    JOINT_LOWER_LIMIT,
    JOINT_NAMES,
    JOINT_UPPER_LIMIT,
    METRES_PER_PIXEL,
    WORKSPACE_PX,
)

CAMERA_HEIGHT_M = 1.0
TABLE_SIZE_M = WORKSPACE_PX * METRES_PER_PIXEL
PUSHER_RADIUS_M = 15.0 * METRES_PER_PIXEL


def urdf(world_frame: str = "world", camera_frame: str = "pusht_camera_optical_frame") -> str:
    """The robot description: table, two prismatic joints, pusher disc, camera frame."""
    x_joint, y_joint = JOINT_NAMES
    limit = (
        f'<limit lower="{JOINT_LOWER_LIMIT}" upper="{JOINT_UPPER_LIMIT}" '
        'effort="100.0" velocity="1.0"/>'
    )
    size = TABLE_SIZE_M
    return f"""<?xml version="1.0"?>
<robot name="pusht">
  <link name="{world_frame}"/>
  <link name="pusht_table">
    <visual>
      <origin xyz="0 0 -0.005"/>
      <geometry><box size="{size} {size} 0.01"/></geometry>
    </visual>
  </link>
  <joint name="pusht_table_joint" type="fixed">
    <parent link="{world_frame}"/>
    <child link="pusht_table"/>
  </joint>
  <link name="pusher_x_link"/>
  <joint name="{x_joint}" type="prismatic">
    <parent link="{world_frame}"/>
    <child link="pusher_x_link"/>
    <axis xyz="1 0 0"/>
    {limit}
  </joint>
  <link name="pusher_link">
    <visual>
      <origin xyz="0 0 0.01"/>
      <geometry><cylinder radius="{PUSHER_RADIUS_M}" length="0.02"/></geometry>
    </visual>
  </link>
  <joint name="{y_joint}" type="prismatic">
    <parent link="pusher_x_link"/>
    <child link="pusher_link"/>
    <axis xyz="0 1 0"/>
    {limit}
  </joint>
  <link name="{camera_frame}"/>
  <!-- Optical frame: z down onto the table, x along world x, y along world -y. -->
  <joint name="pusht_camera_joint" type="fixed">
    <parent link="{world_frame}"/>
    <child link="{camera_frame}"/>
    <origin xyz="0 0 {CAMERA_HEIGHT_M}" rpy="3.141592653589793 0 0"/>
  </joint>
</robot>
"""


def camera_matrix(width: int, height: int) -> list[float]:
    """Row-major 3x3 intrinsics K of the nominal pinhole camera for an image size."""
    fx = width / TABLE_SIZE_M * CAMERA_HEIGHT_M
    fy = height / TABLE_SIZE_M * CAMERA_HEIGHT_M
    return [fx, 0.0, width / 2.0, 0.0, fy, height / 2.0, 0.0, 0.0, 1.0]
