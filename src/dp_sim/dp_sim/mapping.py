"""The one mapping between the PushT task's pixel frame and the simulated robot's SI frame.

The task (gym-pusht) lives in a 512 x 512 pixel workspace whose origin is the top-left corner
of the image, x to the right, y *down* (image rows), angles measured from x towards y. The
robot frame ``world`` follows REP-103: right-handed, z up, towards the camera that looks down
on the table. Its origin is the centre of the workspace, x points to the right of the image
and y to the top of the image:

    x_m =  (x_px - 256) * METRES_PER_PIXEL
    y_m = -(y_px - 256) * METRES_PER_PIXEL
    yaw = -angle_px

One pixel is one millimetre: the workspace is a 0.512 m square table, the pusher a 30 mm disc
and the T 120 mm across, table-top sizes that keep the numbers readable in both frames.

The pusher is a Cartesian gantry: ``pusher_x_joint`` and ``pusher_y_joint`` are prismatic
joints along the world x and y axes, zero at the centre of the workspace, in metres.
"""

from __future__ import annotations

import math

import numpy as np

WORKSPACE_PX = 512.0
METRES_PER_PIXEL = 0.001
JOINT_NAMES = ("pusher_x_joint", "pusher_y_joint")
# The task's action space is [0, 512] px on both axes; setpoints are clamped to it.
JOINT_LOWER_LIMIT = -WORKSPACE_PX / 2.0 * METRES_PER_PIXEL
JOINT_UPPER_LIMIT = WORKSPACE_PX / 2.0 * METRES_PER_PIXEL
_CENTRE = WORKSPACE_PX / 2.0
_FLIP = np.array([1.0, -1.0])


def pixels_to_joints(position_px: np.ndarray) -> np.ndarray:
    """Task-frame position(s) (..., 2) in pixels -> joint positions (..., 2) in metres."""
    return (np.asarray(position_px, dtype=float) - _CENTRE) * _FLIP * METRES_PER_PIXEL


def joints_to_pixels(position_m: np.ndarray) -> np.ndarray:
    """Joint positions (..., 2) in metres -> task-frame position(s) (..., 2) in pixels."""
    return np.asarray(position_m, dtype=float) / METRES_PER_PIXEL * _FLIP + _CENTRE


def pixel_velocity_to_joints(velocity_px: np.ndarray) -> np.ndarray:
    """Task-frame velocity (px/s) -> joint velocities (m/s)."""
    return np.asarray(velocity_px, dtype=float) * _FLIP * METRES_PER_PIXEL


def wrap_angle(angle: float) -> float:
    """The same angle in [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def task_pose_to_world(pose_px: np.ndarray) -> tuple[float, float, float]:
    """A task pose (x_px, y_px, angle) -> (x, y, yaw) in the world frame, metres and radians."""
    x, y = pixels_to_joints(np.asarray(pose_px[:2], dtype=float))
    return float(x), float(y), wrap_angle(-float(pose_px[2]))


def world_pose_to_task(x: float, y: float, yaw: float) -> np.ndarray:
    """(x, y, yaw) in the world frame -> a task pose (x_px, y_px, angle)."""
    return np.array([*joints_to_pixels(np.array([x, y])), wrap_angle(-yaw)])


def yaw_to_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by ``yaw`` about z."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


def quaternion_to_yaw(x: float, y: float, z: float, w: float) -> float:
    """The rotation about z of a quaternion (exact for rotations about z only)."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
