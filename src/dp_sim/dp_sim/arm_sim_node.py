"""ROS 2 node ``arm_sim``: a simulated Panda on a Robomimic task, as a ros2_control robot.

Joint states of the seven arm joints and both fingers, the front and wrist cameras, the arm's
and the gripper's ``joint_trajectory_controller``-style command topics, the object's pose as a
perception system would report it, task success, episode events, a reset service, and RViz
markers of the hand's path and of where the commanded trajectory takes the hand. The task steps
at its 20 Hz on a wall-clock timer (or faster with ``real_time_factor``, then with a simulated
clock on ``/clock``). See README.md for the topics and the frame conventions.
"""

from __future__ import annotations

import sys
from collections import deque

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import Point, PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import Marker, MarkerArray

from dp_sim.arm_kinematics import ArmKinematics
from dp_sim.arm_robot import (
    ARM_COMMAND_TOPIC,
    ARM_JOINT_NAMES,
    ARM_LOWER_LIMITS,
    ARM_UPPER_LIMITS,
    CAMERA_TOPICS,
    CONTROL_PERIOD_S,
    FINGER_JOINT_NAMES,
    FINGER_RANGE_M,
    GRIPPER_COMMAND_TOPIC,
    GRIPPER_JOINT_NAMES,
    TASKS,
    ArmRobot,
)
from dp_sim.node_runner import run_node
from dp_sim.parameters import Parameter
from dp_sim.sim_robot_node import (
    LATCHED,
    RELIABLE,
    SimRobotNode,
    episode_parameters,
    stamp_seconds,
)
from dp_sim.trajectory import (
    TrajectoryFollower,
    TrajectoryPoint,
    TrajectoryRejectedError,
    points_of,
)

_PATH_LENGTH = 200  # hand positions kept for the path marker (10 s)

PARAMETERS = (
    Parameter("task", "lift", f"The Robomimic task: one of {sorted(TASKS)}."),
    Parameter("front_camera", True, "Publish the front camera (robosuite's agentview)."),
    Parameter("wrist_camera", True, "Publish the wrist camera (robosuite's robot0_eye_in_hand)."),
    Parameter("image_width", 84, "Camera image width in pixels.", (8, 1024)),
    Parameter("image_height", 84, "Camera image height in pixels.", (8, 1024)),
    *episode_parameters(CONTROL_PERIOD_S, 400, "the task succeeded"),
    Parameter("world_frame", "world", "Frame of the poses and markers (robosuite's world, z up)."),
)


def _pose(position: np.ndarray, quaternion: np.ndarray, frame: str, stamp: TimeMsg) -> PoseStamped:
    message = PoseStamped()
    message.header.stamp = stamp
    message.header.frame_id = frame
    message.pose.position.x, message.pose.position.y, message.pose.position.z = (
        float(v) for v in position
    )
    orientation = message.pose.orientation
    orientation.x, orientation.y, orientation.z, orientation.w = (float(v) for v in quaternion)
    return message


class ArmSimNode(SimRobotNode):
    """Steps a robosuite task at 20 Hz and exposes it as a ros2_control robot."""

    def __init__(self) -> None:
        super().__init__("arm_sim", PARAMETERS, CONTROL_PERIOD_S)
        parameters = self.parameters
        self._task = parameters["task"]
        if self._task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self._task!r}")
        self._world_frame = parameters["world_frame"]
        cameras = tuple(
            camera
            for camera, wanted in (
                ("agentview", parameters["front_camera"]),
                ("robot0_eye_in_hand", parameters["wrist_camera"]),
            )
            if wanted
        )
        self._robot = ArmRobot(
            self._task,
            cameras,
            parameters["image_width"],
            parameters["image_height"],
            parameters["max_episode_steps"],
        )
        self._kinematics = ArmKinematics(self._robot)
        self._arm = TrajectoryFollower(ARM_JOINT_NAMES)
        self._gripper = TrajectoryFollower(GRIPPER_JOINT_NAMES)
        self._path: deque[np.ndarray] = deque(maxlen=_PATH_LENGTH)
        self._planned_path: np.ndarray | None = None

        prefix = self._task
        self._camera_pubs = {
            camera: (
                self.create_publisher(Image, f"{CAMERA_TOPICS[camera]}/image_raw", RELIABLE),
                self.create_publisher(CameraInfo, f"{CAMERA_TOPICS[camera]}/camera_info", RELIABLE),
            )
            for camera in cameras
        }
        self._joint_pub = self.create_publisher(JointState, "joint_states", RELIABLE)
        self._object_pub = self.create_publisher(PoseStamped, f"{prefix}/object_pose", RELIABLE)
        self._eef_pub = self.create_publisher(PoseStamped, f"{prefix}/eef_pose", RELIABLE)
        self._goal_pub = self.create_publisher(PoseStamped, f"{prefix}/goal_pose", LATCHED)
        self._success_pub = self.create_publisher(Bool, f"{prefix}/success", RELIABLE)
        self._marker_pub = self.create_publisher(MarkerArray, "arm_sim/markers", RELIABLE)
        self.command_subscription(JointTrajectory, ARM_COMMAND_TOPIC, self._on_arm_trajectory)
        self.command_subscription(
            JointTrajectory, GRIPPER_COMMAND_TOPIC, self._on_gripper_trajectory
        )
        self._start(f"{prefix}/episode", f"{prefix}/reset")
        self.get_logger().info(
            f"arm simulation ready: Panda on {self._task}, cameras {list(cameras) or 'none'} "
            f"({parameters['image_width']}x{parameters['image_height']}), "
            f"{1.0 / CONTROL_PERIOD_S:.0f} Hz steps, real-time factor {self.real_time_factor}"
        )

    # -- the loop's hooks ---------------------------------------------------------------------

    def _sample(self, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        return self._arm.sample(now_s)[0], self._gripper.sample(now_s)[0]

    def _step(self, setpoints: tuple[np.ndarray, np.ndarray]) -> bool:
        arm, gripper = setpoints
        return self._robot.step(arm, float(gripper[0])).done

    def _reset_task(self, seed: int, stamp: TimeMsg) -> None:
        state = self._robot.reset(seed)
        self._arm.hold(state.arm_position)
        self._gripper.hold(state.finger_position[:1])
        self._path.clear()
        self._planned_path = None
        if state.goal_position is not None:
            identity = np.array([0.0, 0.0, 0.0, 1.0])
            self._goal_pub.publish(_pose(state.goal_position, identity, self._world_frame, stamp))

    def _episode_summary(self) -> tuple[bool, str, str]:
        state = self._robot.state
        outcome = "success" if state.success else "step limit reached"
        notes = f"seed={self._robot.seed} steps={state.steps} success={state.success}"
        return state.success, notes, f"{state.steps} steps: {outcome}"

    def episode_name(self) -> str:
        return f"{self._task}_seed_{self._robot.seed}"

    def task_name(self) -> str:
        return self._task

    # -- publishing ---------------------------------------------------------------------------

    def _publish_state(self, stamp: TimeMsg) -> None:
        state = self._robot.state
        for camera, (image_pub, info_pub) in self._camera_pubs.items():
            pixels = state.images[camera]
            height, width, _ = pixels.shape
            image = Image(height=height, width=width, encoding="rgb8", is_bigendian=0)
            image.header.stamp = stamp
            image.header.frame_id = f"{CAMERA_TOPICS[camera]}_optical_frame"
            image.step = 3 * width
            image.data = pixels.tobytes()
            image_pub.publish(image)
            info = CameraInfo(width=width, height=height)
            info.header = image.header
            info_pub.publish(info)

        joints = JointState(name=[*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES])
        joints.header.stamp = stamp
        joints.position = [*state.arm_position.tolist(), *state.finger_position.tolist()]
        joints.velocity = [*state.arm_velocity.tolist(), *state.finger_velocity.tolist()]
        self._joint_pub.publish(joints)

        frame = self._world_frame
        self._object_pub.publish(
            _pose(state.object_position, state.object_quaternion, frame, stamp)
        )
        self._eef_pub.publish(_pose(state.eef_position, state.eef_quaternion, frame, stamp))
        self._success_pub.publish(Bool(data=state.success))
        self._path.append(state.eef_position)
        self._publish_markers(stamp)

    def _publish_markers(self, stamp: TimeMsg) -> None:
        markers = MarkerArray()
        for identifier, (namespace, points, colour) in enumerate(
            (
                ("hand_path", list(self._path), (0.2, 0.6, 1.0)),
                ("commanded_hand_path", self._planned_path, (1.0, 0.5, 0.1)),
            )
        ):
            marker = Marker(ns=namespace, id=identifier, type=Marker.LINE_STRIP)
            marker.header.stamp = stamp
            marker.header.frame_id = self._world_frame
            marker.pose.orientation.w = 1.0
            marker.scale.x = 0.005
            marker.color.r, marker.color.g, marker.color.b = colour
            marker.color.a = 1.0
            if points is None or len(points) < 2:
                marker.action = Marker.DELETE
            else:
                marker.action = Marker.ADD
                marker.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in points]
            markers.markers.append(marker)
        self._marker_pub.publish(markers)

    # -- commands -----------------------------------------------------------------------------

    def _on_arm_trajectory(self, message: JointTrajectory) -> None:
        state = self._robot.state
        points = self._follow(
            self._arm,
            message,
            state.arm_position,
            state.arm_velocity,
            "arm",
            ARM_LOWER_LIMITS,
            ARM_UPPER_LIMITS,
        )
        if points is not None:
            order = [list(message.joint_names).index(name) for name in ARM_JOINT_NAMES]
            joints = np.array([point.positions for point in points], dtype=float)[:, order]
            joints = np.clip(joints, ARM_LOWER_LIMITS, ARM_UPPER_LIMITS)
            # From where the hand is to where each point of the trajectory puts it.
            planned = self._kinematics.forward_positions(joints)
            self._planned_path = np.vstack([state.eef_position, planned])

    def _on_gripper_trajectory(self, message: JointTrajectory) -> None:
        state = self._robot.state
        low, high = FINGER_RANGE_M
        self._follow(
            self._gripper,
            message,
            state.finger_position[:1],
            state.finger_velocity[:1],
            "gripper",
            np.array([low]),
            np.array([high]),
        )

    def _follow(
        self,
        follower: TrajectoryFollower,
        message: JointTrajectory,
        position: np.ndarray,
        velocity: np.ndarray,
        controller: str,
        lower: np.ndarray,
        upper: np.ndarray,
    ) -> list[TrajectoryPoint] | None:
        points = points_of(message)
        try:
            follower.set_trajectory(
                list(message.joint_names),
                points,
                stamp_seconds(message.header.stamp),
                self.now().nanoseconds * 1e-9,
                position,
                velocity,
            )
        except TrajectoryRejectedError as error:
            self.rejections.log(f"{controller}: {error}")
            return None
        order = [list(message.joint_names).index(name) for name in follower.joint_names]
        positions = np.array([point.positions for point in points], dtype=float)[:, order]
        if np.any(positions < lower) or np.any(positions > upper):
            self.rejections.log(
                f"{controller}: trajectory leaves the joint limits; its set points are clamped",
                prefix="Clamped trajectory",
            )
        return points

    def destroy_node(self) -> None:
        robot = getattr(self, "_robot", None)
        if robot is not None:
            robot.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(ArmSimNode, "arm_sim", args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
