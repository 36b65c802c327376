"""ROS 2 node ``arm_sim``: a simulated Panda on a Robomimic task, as a ros2_control robot.

Joint states of the seven arm joints and both fingers, the front and wrist cameras, the arm's
and the gripper's ``joint_trajectory_controller``-style command topics, the object's pose as a
perception system would report it, task success, episode events, a reset service, and RViz
markers of the hand's path and of where the commanded trajectory takes the hand. The task steps
at its 20 Hz on a wall-clock timer (or faster with ``real_time_factor``, then with a simulated
clock on ``/clock``). See README.md for the topics and the frame conventions.
"""

from __future__ import annotations

import random
import sys
import time
from collections import deque

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import Point, PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import Marker, MarkerArray

from dp_msgs.msg import EpisodeEvent
from dp_msgs.srv import ResetSimulation
from dp_sim.arm_kinematics import ArmKinematics
from dp_sim.arm_robot import (
    ARM_JOINT_NAMES,
    ARM_LOWER_LIMITS,
    ARM_UPPER_LIMITS,
    CONTROL_PERIOD_S,
    FINGER_JOINT_NAMES,
    FINGER_RANGE_M,
    GRIPPER_JOINT_NAMES,
    TASKS,
    ArmRobot,
    ArmState,
)
from dp_sim.node_runner import run_node
from dp_sim.parameters import Parameter, declare
from dp_sim.rejection_log import RejectionLog
from dp_sim.trajectory import TrajectoryFollower, TrajectoryPoint, TrajectoryRejectedError

_PERIOD_NS = round(CONTROL_PERIOD_S * 1e9)
_MAX_SEED = 2**63 - 1
# Topic prefix and camera frame names per robosuite camera.
CAMERA_TOPICS = {"agentview": "front_camera", "robot0_eye_in_hand": "wrist_camera"}
ARM_COMMAND_TOPIC = "joint_trajectory_controller/joint_trajectory"
GRIPPER_COMMAND_TOPIC = "gripper_trajectory_controller/joint_trajectory"
_PATH_LENGTH = 200  # hand positions kept for the path marker (10 s)

PARAMETERS = (
    Parameter("task", "lift", f"The Robomimic task: one of {sorted(TASKS)}."),
    Parameter(
        "seed",
        0,
        "Seed of the first episode (auto_reset goes on with seed + 1, seed + 2, ...).",
        (0, _MAX_SEED),
    ),
    Parameter("front_camera", True, "Publish the front camera (robosuite's agentview)."),
    Parameter("wrist_camera", True, "Publish the wrist camera (robosuite's robot0_eye_in_hand)."),
    Parameter("image_width", 84, "Camera image width in pixels.", (8, 1024)),
    Parameter("image_height", 84, "Camera image height in pixels.", (8, 1024)),
    Parameter(
        "max_episode_steps",
        400,
        "An episode ends after this many 20 Hz steps unless the task succeeded first.",
        (1, 1_000_000),
    ),
    Parameter(
        "real_time_factor",
        1.0,
        "Simulated seconds per wall-clock second. Other than 1 implies publish_clock: run the "
        "other nodes with use_sim_time:=true.",
        (0.01, 100.0),
    ),
    Parameter(
        "publish_clock",
        False,
        "Keep a simulated clock that advances 0.05 s per step, stamp everything with it and "
        "publish it on /clock.",
    ),
    Parameter("auto_reset", False, "Start the next episode (next seed) when one ends."),
    Parameter(
        "auto_reset_delay",
        1.0,
        "Simulated seconds between the end of an episode and the automatic reset.",
        (0.0, 3600.0),
    ),
    Parameter("world_frame", "world", "Frame of the poses and markers (robosuite's world, z up)."),
)


def _stamp_seconds(stamp: TimeMsg) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


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


class ArmSimNode(Node):
    """Steps a robosuite task at 20 Hz and exposes it as a ros2_control robot."""

    def __init__(self) -> None:
        super().__init__("arm_sim")
        parameters = declare(self, PARAMETERS)
        self._task = parameters["task"]
        if self._task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self._task!r}")
        self._world_frame = parameters["world_frame"]
        self._auto_reset = parameters["auto_reset"]
        self._auto_reset_ticks = round(parameters["auto_reset_delay"] / CONTROL_PERIOD_S)
        real_time_factor = parameters["real_time_factor"]
        self._publish_clock = parameters["publish_clock"] or real_time_factor != 1.0
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
        self._sim_time_ns = time.time_ns()
        self._step_time_ns = self._sim_time_ns
        self._episode_index = -1
        self._episode_over = False
        self._end_announced = False
        self._ticks_to_reset: int | None = None
        self._rejections = RejectionLog(self.get_logger())
        self._path: deque[np.ndarray] = deque(maxlen=_PATH_LENGTH)
        self._planned_path: np.ndarray | None = None

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        prefix = self._task
        self._camera_pubs = {
            camera: (
                self.create_publisher(Image, f"{CAMERA_TOPICS[camera]}/image_raw", reliable),
                self.create_publisher(CameraInfo, f"{CAMERA_TOPICS[camera]}/camera_info", reliable),
            )
            for camera in cameras
        }
        self._joint_pub = self.create_publisher(JointState, "joint_states", reliable)
        self._object_pub = self.create_publisher(PoseStamped, f"{prefix}/object_pose", reliable)
        self._eef_pub = self.create_publisher(PoseStamped, f"{prefix}/eef_pose", reliable)
        self._goal_pub = self.create_publisher(PoseStamped, f"{prefix}/goal_pose", latched)
        self._success_pub = self.create_publisher(Bool, f"{prefix}/success", reliable)
        self._episode_pub = self.create_publisher(EpisodeEvent, f"{prefix}/episode", reliable)
        self._marker_pub = self.create_publisher(MarkerArray, "arm_sim/markers", reliable)
        self._clock_pub = (
            self.create_publisher(ClockMsg, "/clock", QoSProfile(depth=1))
            if self._publish_clock
            else None
        )
        self._command_subs = (
            self.create_subscription(
                JointTrajectory, ARM_COMMAND_TOPIC, self._on_arm_trajectory, reliable
            ),
            self.create_subscription(
                JointTrajectory, GRIPPER_COMMAND_TOPIC, self._on_gripper_trajectory, reliable
            ),
        )
        self.create_service(ResetSimulation, f"{prefix}/reset", self._on_reset)

        self._reset(parameters["seed"])
        self._timer = self.create_timer(
            CONTROL_PERIOD_S / real_time_factor,
            self._tick,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )
        self.get_logger().info(
            f"arm simulation ready: Panda on {self._task}, cameras {list(cameras) or 'none'} "
            f"({parameters['image_width']}x{parameters['image_height']}), "
            f"{1.0 / CONTROL_PERIOD_S:.0f} Hz steps, real-time factor {real_time_factor}"
        )

    # -- time ---------------------------------------------------------------------------------

    def _now(self) -> Time:
        if self._publish_clock:
            return Time(nanoseconds=self._sim_time_ns, clock_type=ClockType.ROS_TIME)
        return self.get_clock().now()

    # -- the 20 Hz step -----------------------------------------------------------------------

    def _tick(self) -> None:
        """One control period: take the commands, sample both set points, publish, step.

        The same order as the PushT robot (``sim_node``): every command received before the
        step counts, observations stamped t go out before the step from t, and with a simulated
        clock the clock reads just after t until the next step.
        """
        self._take_pending_commands()
        if self._publish_clock:
            self._sim_time_ns = self._step_time_ns
        now = self._now()
        state = self._robot.state
        setpoints = None
        if not self._episode_over:
            seconds = now.nanoseconds * 1e-9
            setpoints = (self._arm.sample(seconds)[0], self._gripper.sample(seconds)[0])
        if self._publish_clock:
            self._sim_time_ns = self._step_time_ns + 1
            self._clock_pub.publish(ClockMsg(clock=self._now().to_msg()))
            self._step_time_ns += _PERIOD_NS
        self._publish_state(state, now.to_msg())
        if setpoints is None:
            self._after_episode(state)
        else:
            arm, gripper = setpoints
            state = self._robot.step(arm, float(gripper[0]))
            self._episode_over = state.done

    def _take_pending_commands(self) -> None:
        for subscription in self._command_subs:
            with subscription.handle:
                while True:
                    taken = subscription.handle.take_message(
                        subscription.msg_type, subscription.raw
                    )
                    if taken is None:
                        break
                    subscription.callback(taken[0])

    def _after_episode(self, state: ArmState) -> None:
        if not self._end_announced:
            self._end_announced = True
            self._publish_event(EpisodeEvent.EVENT_STOP, self._now().to_msg(), state.success)
            outcome = "success" if state.success else "step limit reached"
            self.get_logger().info(
                f"episode {self._episode_index} ended after {state.steps} steps: {outcome}"
            )
            if self._auto_reset:
                self._ticks_to_reset = self._auto_reset_ticks
        if self._ticks_to_reset is not None:
            if self._ticks_to_reset <= 0:
                self._ticks_to_reset = None
                self._reset(self._robot.seed + 1)
            else:
                self._ticks_to_reset -= 1

    # -- publishing ---------------------------------------------------------------------------

    def _publish_state(self, state: ArmState, stamp: TimeMsg) -> None:
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

    def _publish_event(self, event: int, stamp: TimeMsg, success: bool, notes: str = "") -> None:
        state = self._robot.state
        message = EpisodeEvent(
            event=event,
            episode_index=self._episode_index,
            episode_name=f"{self._task}_seed_{self._robot.seed}",
            task=self._task,
            success=success,
            notes=notes or f"seed={self._robot.seed} steps={state.steps} success={state.success}",
        )
        message.header.stamp = stamp
        self._episode_pub.publish(message)

    # -- episodes -----------------------------------------------------------------------------

    def _reset(self, seed: int) -> None:
        now = self._now().to_msg()
        if self._episode_index >= 0 and not self._end_announced:
            self._publish_event(
                EpisodeEvent.EVENT_DISCARD, now, False, "interrupted by a reset before its end"
            )
        state = self._robot.reset(seed)
        self._arm.hold(state.arm_position)
        self._gripper.hold(state.finger_position[:1])
        self._episode_index += 1
        self._episode_over = False
        self._end_announced = False
        self._ticks_to_reset = None
        self._path.clear()
        self._planned_path = None
        if state.goal_position is not None:
            self._goal_pub.publish(
                _pose(state.goal_position, np.array([0.0, 0.0, 0.0, 1.0]), self._world_frame, now)
            )
        self._publish_event(EpisodeEvent.EVENT_START, now, False)
        self.get_logger().info(f"episode {self._episode_index} started with seed {seed}")

    def _on_reset(
        self, request: ResetSimulation.Request, response: ResetSimulation.Response
    ) -> ResetSimulation.Response:
        seed = random.SystemRandom().randrange(2**31) if request.random_seed else request.seed
        response.seed = seed
        if seed < 0:
            response.success = False
            response.message = f"seed must be >= 0, got {seed}"
            return response
        self._reset(seed)
        response.success = True
        response.message = f"episode {self._episode_index} started with seed {seed}"
        return response

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
        points = [
            TrajectoryPoint(
                time_from_start=point.time_from_start.sec + point.time_from_start.nanosec * 1e-9,
                positions=list(point.positions),
                velocities=list(point.velocities),
                accelerations=list(point.accelerations),
                effort=list(point.effort),
            )
            for point in message.points
        ]
        try:
            follower.set_trajectory(
                list(message.joint_names),
                points,
                _stamp_seconds(message.header.stamp),
                self._now().nanoseconds * 1e-9,
                position,
                velocity,
            )
        except TrajectoryRejectedError as error:
            self._rejections.log(f"{controller}: {error}")
            return None
        order = [list(message.joint_names).index(name) for name in follower.joint_names]
        positions = np.array([point.positions for point in points], dtype=float)[:, order]
        if np.any(positions < lower) or np.any(positions > upper):
            self._rejections.log(
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
