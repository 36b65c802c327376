"""The node's outgoing messages, built from the ROS-free plans (the only ROS in the maths)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from dp_msgs.msg import ActionChunk
from dp_policy_node.markers import MarkerPath

NS_PER_S = 1_000_000_000
MARKER_NAMESPACE = "dp_policy"


def time_msg(nanoseconds: int) -> Time:
    seconds, remainder = divmod(int(nanoseconds), NS_PER_S)
    return Time(sec=seconds, nanosec=remainder)


def duration_msg(nanoseconds: int) -> Duration:
    seconds, remainder = divmod(int(nanoseconds), NS_PER_S)
    return Duration(sec=seconds, nanosec=remainder)


def stamp_ns(stamp: Time) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def joint_trajectory(
    joint_names: Sequence[str],
    time_from_start_ns: Sequence[int],
    positions: np.ndarray,
    velocities: np.ndarray,
) -> JointTrajectory:
    """A trajectory that starts on receipt: header stamp zero, offsets from publishing time."""
    message = JointTrajectory()
    message.joint_names = list(joint_names)
    for offset, position, velocity in zip(time_from_start_ns, positions, velocities, strict=True):
        point = JointTrajectoryPoint()
        point.positions = [float(value) for value in position]
        point.velocities = [float(value) for value in velocity]
        point.time_from_start = duration_msg(offset)
        message.points.append(point)
    return message


def action_chunk(
    *,
    actions: np.ndarray,
    action_names: Sequence[str],
    dt: float,
    observation_horizon: int,
    action_horizon: int,
    observation_stamp_ns: int,
    inference_time_s: float,
    chunk_index: int,
    checkpoint: str,
) -> ActionChunk:
    """The whole predicted sequence; row i is due at observation_stamp + (i - To + 1) * dt."""
    message = ActionChunk()
    first_row_ns = observation_stamp_ns - (observation_horizon - 1) * round(dt * NS_PER_S)
    message.header.stamp = time_msg(first_row_ns)
    message.header.frame_id = ""
    message.action_names = list(action_names)
    message.dt = float(dt)
    message.observation_horizon = int(observation_horizon)
    message.prediction_horizon = int(actions.shape[0])
    message.action_horizon = int(action_horizon)
    message.action_dim = int(actions.shape[1])
    message.actions = [float(value) for value in np.asarray(actions, dtype=np.float64).ravel()]
    message.observation_stamp = time_msg(observation_stamp_ns)
    message.inference_time = duration_msg(round(inference_time_s * NS_PER_S))
    message.chunk_index = int(chunk_index)
    message.checkpoint = checkpoint
    return message


def marker_array(
    paths: Sequence[MarkerPath], frame_id: str, stamp: Time, line_width: float, lifetime_ns: int
) -> MarkerArray:
    """DELETEALL first (fewer samples than last time leave no stale lines), then one line each."""
    array = MarkerArray()
    clear = Marker()
    clear.header.frame_id = frame_id
    clear.header.stamp = stamp
    clear.ns = MARKER_NAMESPACE
    clear.action = Marker.DELETEALL
    array.markers.append(clear)
    for path in paths:
        marker = Marker()
        marker.header.frame_id = frame_id
        marker.header.stamp = stamp
        marker.ns = MARKER_NAMESPACE
        marker.id = path.sample
        marker.type = Marker.LINE_STRIP
        marker.action = Marker.ADD
        marker.pose.orientation.w = 1.0
        marker.scale.x = float(line_width) * (2.0 if path.sample == 0 else 1.0)
        marker.color = ColorRGBA(r=path.rgba[0], g=path.rgba[1], b=path.rgba[2], a=path.rgba[3])
        marker.lifetime = duration_msg(lifetime_ns)
        marker.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in path.points]
        array.markers.append(marker)
    return array


def clear_markers(frame_id: str, stamp: Time) -> MarkerArray:
    return marker_array([], frame_id, stamp, 0.0, 0)
