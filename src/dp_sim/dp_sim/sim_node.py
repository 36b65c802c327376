"""ROS 2 node ``pusht_sim``: the PushT task behaving like a robot.

A camera, joint states of a two-axis gantry, a ``joint_trajectory_controller``-style command
topic, the T's pose as a perception system would report it, task status, episode events and
a reset service. The task steps at its 10 Hz on a wall-clock timer (or faster with
``real_time_factor``, then with a simulated clock on ``/clock``). See README.md for the
topic list and the frame conventions.
"""

from __future__ import annotations

import sys

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, String
from trajectory_msgs.msg import JointTrajectory

from dp_sim.mapping import (
    JOINT_LOWER_LIMIT,
    JOINT_NAMES,
    JOINT_UPPER_LIMIT,
    joints_to_pixels,
    pixel_velocity_to_joints,
    pixels_to_joints,
    task_pose_to_world,
    yaw_to_quaternion,
)
from dp_sim.node_runner import run_node
from dp_sim.parameters import Parameter
from dp_sim.pusht_robot import CONTROL_PERIOD_S, MAX_EPISODE_STEPS, PushTRobot
from dp_sim.robot_model import camera_matrix, urdf
from dp_sim.sim_robot_node import (
    LATCHED,
    RELIABLE,
    SimRobotNode,
    episode_parameters,
    stamp_seconds,
)
from dp_sim.trajectory import (
    TrajectoryFollower,
    TrajectoryRejectedError,
    points_of,
)

_LOOP = episode_parameters(CONTROL_PERIOD_S, MAX_EPISODE_STEPS, "the T reached the goal")
PARAMETERS = (
    _LOOP[0],  # seed
    Parameter("image_width", 96, "Camera image width in pixels.", (8, 2048)),
    Parameter("image_height", 96, "Camera image height in pixels.", (8, 2048)),
    *_LOOP[1:],
    Parameter(
        "world_frame",
        "world",
        "Frame of the block and goal poses (REP-103, origin at the centre of the workspace).",
    ),
    Parameter(
        "camera_frame",
        "pusht_camera_optical_frame",
        "Frame id of the camera images (an optical frame looking down on the table).",
    ),
    Parameter("task_name", "push_t", "Task name in the episode events."),
)


class PushTSimNode(SimRobotNode):
    """Steps gym-pusht at 10 Hz and exposes it as a robot."""

    def __init__(self) -> None:
        super().__init__("pusht_sim", PARAMETERS, CONTROL_PERIOD_S)
        parameters = self.parameters
        self._world_frame = parameters["world_frame"]
        self._camera_frame = parameters["camera_frame"]
        self._task_name = parameters["task_name"]
        self._robot = PushTRobot(
            parameters["image_width"], parameters["image_height"], parameters["max_episode_steps"]
        )
        self._follower = TrajectoryFollower(JOINT_NAMES)

        # Sensor topics are published reliably: best-effort subscribers (the sensor-data
        # profile) and reliable ones (recorders) both match.
        self._image_pub = self.create_publisher(Image, "camera/image_raw", RELIABLE)
        self._info_pub = self.create_publisher(CameraInfo, "camera/camera_info", RELIABLE)
        self._joint_pub = self.create_publisher(JointState, "joint_states", RELIABLE)
        self._block_pub = self.create_publisher(PoseStamped, "pusht/block_pose", RELIABLE)
        self._goal_pub = self.create_publisher(PoseStamped, "pusht/goal_pose", LATCHED)
        self._coverage_pub = self.create_publisher(Float64, "pusht/coverage", RELIABLE)
        self._reward_pub = self.create_publisher(Float64, "pusht/reward", RELIABLE)
        self._success_pub = self.create_publisher(Bool, "pusht/success", RELIABLE)
        self._trajectory_sub = self.command_subscription(
            JointTrajectory, "joint_trajectory_controller/joint_trajectory", self._on_trajectory
        )
        # Like robot_state_publisher: the model, latched, for recorders and RViz.
        self._description_pub = self.create_publisher(String, "robot_description", LATCHED)
        self._description_pub.publish(String(data=urdf(self._world_frame, self._camera_frame)))
        self._camera_info = self._nominal_camera_info(
            parameters["image_width"], parameters["image_height"]
        )
        self._start("pusht/episode", "pusht/reset")
        self.get_logger().info(
            f"PushT simulation ready: {parameters['image_width']}x"
            f"{parameters['image_height']} camera, {1.0 / CONTROL_PERIOD_S:.0f} Hz task steps, "
            f"real-time factor {self.real_time_factor}"
        )

    # -- the loop's hooks ---------------------------------------------------------------------

    def _sample(self, now_s: float) -> np.ndarray:
        return self._follower.sample(now_s)[0]

    def _step(self, setpoints: np.ndarray) -> bool:
        return self._robot.step(joints_to_pixels(setpoints)).done

    def _reset_task(self, seed: int, stamp: TimeMsg) -> None:
        state = self._robot.reset(seed)
        self._follower.hold(pixels_to_joints(state.agent_position))
        self._goal_pub.publish(self._pose(state.goal_pose, stamp))

    def _episode_summary(self) -> tuple[bool, str, str]:
        state = self._robot.state
        outcome = "success" if state.success else "step limit reached"
        return (
            state.success,
            f"seed={self._robot.seed} steps={state.steps} coverage={state.coverage:.4f}",
            f"{state.steps} steps: {outcome} (coverage {state.coverage:.3f})",
        )

    def episode_name(self) -> str:
        return f"{self._task_name}_seed_{self._robot.seed}"

    def task_name(self) -> str:
        return self._task_name

    # -- publishing ---------------------------------------------------------------------------

    def _publish_state(self, stamp: TimeMsg) -> None:
        state = self._robot.state
        height, width, _ = state.image.shape
        image = Image(height=height, width=width, encoding="rgb8", is_bigendian=0)
        image.header.stamp = stamp
        image.header.frame_id = self._camera_frame
        image.step = 3 * width
        image.data = state.image.tobytes()
        self._image_pub.publish(image)
        self._camera_info.header = image.header
        self._info_pub.publish(self._camera_info)

        joints = JointState(name=list(JOINT_NAMES))
        joints.header.stamp = stamp
        joints.position = pixels_to_joints(state.agent_position).tolist()
        joints.velocity = pixel_velocity_to_joints(state.agent_velocity).tolist()
        self._joint_pub.publish(joints)

        self._block_pub.publish(self._pose(state.block_pose, stamp))
        self._coverage_pub.publish(Float64(data=state.coverage))
        self._reward_pub.publish(Float64(data=state.reward))
        self._success_pub.publish(Bool(data=state.success))

    def _nominal_camera_info(self, width: int, height: int) -> CameraInfo:
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        info.k = camera_matrix(width, height)
        info.d = [0.0] * 5
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        k = info.k
        info.p = [k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def _pose(self, pose_px: np.ndarray, stamp: TimeMsg) -> PoseStamped:
        x, y, yaw = task_pose_to_world(pose_px)
        message = PoseStamped()
        message.header.stamp = stamp
        message.header.frame_id = self._world_frame
        message.pose.position.x = x
        message.pose.position.y = y
        qx, qy, qz, qw = yaw_to_quaternion(yaw)
        orientation = message.pose.orientation
        orientation.x, orientation.y, orientation.z, orientation.w = qx, qy, qz, qw
        return message

    # -- commands -----------------------------------------------------------------------------

    def _on_trajectory(self, message: JointTrajectory) -> None:
        state = self._robot.state
        points = points_of(message)
        try:
            self._follower.set_trajectory(
                list(message.joint_names),
                points,
                stamp_seconds(message.header.stamp),
                self.now().nanoseconds * 1e-9,
                pixels_to_joints(state.agent_position),
                pixel_velocity_to_joints(state.agent_velocity),
            )
        except TrajectoryRejectedError as error:
            self._log_rejection(str(error))
            return
        positions = np.array([point.positions for point in points], dtype=float)
        if np.any(positions < JOINT_LOWER_LIMIT) or np.any(positions > JOINT_UPPER_LIMIT):
            self._log_rejection(
                f"trajectory leaves the workspace [{JOINT_LOWER_LIMIT}, {JOINT_UPPER_LIMIT}] m;"
                " its setpoints are clamped",
                prefix="Clamped trajectory",
            )

    def _log_rejection(self, reason: str, prefix: str = "Rejected trajectory") -> None:
        """One line per rejection; identical ones at most every few seconds, with a count."""
        self.rejections.log(reason, prefix)

    def destroy_node(self) -> None:
        # Also called by rclpy.shutdown for a node whose constructor failed half-way.
        robot = getattr(self, "_robot", None)
        if robot is not None:
            robot.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(PushTSimNode, "pusht_sim", args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
