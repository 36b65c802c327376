"""ROS 2 node ``pusht_sim``: the PushT task behaving like a robot.

A camera, joint states of a two-axis gantry, a ``joint_trajectory_controller``-style command
topic, the T's pose as a perception system would report it, task status, episode events and
a reset service. The task steps at its 10 Hz on a wall-clock timer (or faster with
``real_time_factor``, then with a simulated clock on ``/clock``). See README.md for the
topic list and the frame conventions.
"""

from __future__ import annotations

import random
import sys
import time

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, String
from trajectory_msgs.msg import JointTrajectory

from dp_msgs.msg import EpisodeEvent
from dp_msgs.srv import ResetSimulation
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
from dp_sim.parameters import Parameter, declare
from dp_sim.pusht_robot import CONTROL_PERIOD_S, MAX_EPISODE_STEPS, PushTRobot, TaskState
from dp_sim.rejection_log import RejectionLog
from dp_sim.robot_model import camera_matrix, urdf
from dp_sim.trajectory import TrajectoryFollower, TrajectoryPoint, TrajectoryRejectedError

_PERIOD_NS = round(CONTROL_PERIOD_S * 1e9)
_MAX_SEED = 2**63 - 1

PARAMETERS = (
    Parameter(
        "seed",
        0,
        "Seed of the first episode (auto_reset goes on with seed + 1, seed + 2, ...).",
        (0, _MAX_SEED),
    ),
    Parameter("image_width", 96, "Camera image width in pixels.", (8, 2048)),
    Parameter("image_height", 96, "Camera image height in pixels.", (8, 2048)),
    Parameter(
        "max_episode_steps",
        MAX_EPISODE_STEPS,
        "An episode ends after this many 10 Hz steps unless the T reached the goal first.",
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
        "Keep a simulated clock that advances 0.1 s per step, stamp everything with it and "
        "publish it on /clock.",
    ),
    Parameter("auto_reset", False, "Start the next episode (next seed) when one ends."),
    Parameter(
        "auto_reset_delay",
        1.0,
        "Simulated seconds between the end of an episode and the automatic reset.",
        (0.0, 3600.0),
    ),
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


def _stamp_seconds(stamp: TimeMsg) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class PushTSimNode(Node):
    """Steps gym-pusht at 10 Hz and exposes it as a robot."""

    def __init__(self) -> None:
        super().__init__("pusht_sim")
        parameters = declare(self, PARAMETERS)
        self._world_frame = parameters["world_frame"]
        self._camera_frame = parameters["camera_frame"]
        self._task_name = parameters["task_name"]
        self._auto_reset = parameters["auto_reset"]
        self._auto_reset_ticks = round(parameters["auto_reset_delay"] / CONTROL_PERIOD_S)
        real_time_factor = parameters["real_time_factor"]
        self._publish_clock = parameters["publish_clock"] or real_time_factor != 1.0
        if self._publish_clock and not parameters["publish_clock"]:
            self.get_logger().info(
                f"real_time_factor {real_time_factor}: publishing a simulated clock on /clock"
            )

        self._robot = PushTRobot(
            parameters["image_width"], parameters["image_height"], parameters["max_episode_steps"]
        )
        self._follower = TrajectoryFollower(JOINT_NAMES)
        # Simulated time starts at the wall-clock time of start-up, so stamps are plausible
        # dates, and then advances exactly one control period per step.
        self._sim_time_ns = time.time_ns()
        # The simulated time of the next step; between steps the clock reads 1 ns after the
        # last one (see _tick).
        self._step_time_ns = self._sim_time_ns
        self._episode_index = -1
        self._episode_over = False
        self._end_announced = False
        self._ticks_to_reset: int | None = None
        self._rejections = RejectionLog(self.get_logger())

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        # Sensor topics are published reliably: best-effort subscribers (the sensor-data
        # profile) and reliable ones (recorders) both match.
        self._image_pub = self.create_publisher(Image, "camera/image_raw", reliable)
        self._info_pub = self.create_publisher(CameraInfo, "camera/camera_info", reliable)
        self._joint_pub = self.create_publisher(JointState, "joint_states", reliable)
        self._block_pub = self.create_publisher(PoseStamped, "pusht/block_pose", reliable)
        self._goal_pub = self.create_publisher(PoseStamped, "pusht/goal_pose", latched)
        self._coverage_pub = self.create_publisher(Float64, "pusht/coverage", reliable)
        self._reward_pub = self.create_publisher(Float64, "pusht/reward", reliable)
        self._success_pub = self.create_publisher(Bool, "pusht/success", reliable)
        self._episode_pub = self.create_publisher(EpisodeEvent, "pusht/episode", reliable)
        self._clock_pub = (
            self.create_publisher(ClockMsg, "/clock", QoSProfile(depth=1))
            if self._publish_clock
            else None
        )
        self._trajectory_sub = self.create_subscription(
            JointTrajectory,
            "joint_trajectory_controller/joint_trajectory",
            self._on_trajectory,
            reliable,
        )
        self.create_service(ResetSimulation, "pusht/reset", self._on_reset)
        # Like robot_state_publisher: the model, latched, for recorders and RViz.
        self._description_pub = self.create_publisher(String, "robot_description", latched)
        self._description_pub.publish(String(data=urdf(self._world_frame, self._camera_frame)))
        self._camera_info = self._nominal_camera_info(
            parameters["image_width"], parameters["image_height"]
        )

        self._reset(parameters["seed"])
        # A steady wall-clock timer: the task keeps real time (times real_time_factor) whatever
        # the ROS clock does.
        self._timer = self.create_timer(
            CONTROL_PERIOD_S / real_time_factor,
            self._tick,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )
        self.get_logger().info(
            f"PushT simulation ready: {parameters['image_width']}x"
            f"{parameters['image_height']} camera, {1.0 / CONTROL_PERIOD_S:.0f} Hz task steps, "
            f"real-time factor {real_time_factor}"
        )

    # -- time ---------------------------------------------------------------------------------

    def _now(self) -> Time:
        if self._publish_clock:
            return Time(nanoseconds=self._sim_time_ns, clock_type=ClockType.ROS_TIME)
        return self.get_clock().now()

    # -- the 10 Hz step -----------------------------------------------------------------------

    def _tick(self) -> None:
        """One control period: read the commands, sample the set point, publish, step.

        Like ros2_control's control loop, the step uses every command that reached the node
        before it: pending messages are taken here, because an executor that is behind
        schedule runs this ready timer before the ready subscription, which would apply a
        command one step later than it arrived.
        """
        self._take_pending_commands()
        if self._publish_clock:
            self._sim_time_ns = self._step_time_ns
        now = self._now()
        state = self._robot.state
        setpoint = None
        if not self._episode_over:
            setpoint, _ = self._follower.sample(now.nanoseconds * 1e-9)
        if self._publish_clock:
            # The set point of this step is fixed: from now on the clock reads just after the
            # step's time, so a command that arrives from here on is stamped (by recorders,
            # and by this node's follower) after this step and before the next, the step that
            # applies it. The clock goes out before the observations, so that every command
            # answering them is received after it.
            self._sim_time_ns = self._step_time_ns + 1
            self._clock_pub.publish(ClockMsg(clock=self._now().to_msg()))
            self._step_time_ns += _PERIOD_NS
        self._publish_state(state, now.to_msg())
        if setpoint is None:
            self._after_episode(state, now)
        else:
            state = self._robot.step(joints_to_pixels(setpoint))
            self._episode_over = state.done

    def _take_pending_commands(self) -> None:
        subscription = self._trajectory_sub
        with subscription.handle:
            while True:
                taken = subscription.handle.take_message(subscription.msg_type, subscription.raw)
                if taken is None:
                    return
                self._on_trajectory(taken[0])

    def _after_episode(self, state: TaskState, now: Time) -> None:
        """Announce the end once (after the final observation went out), then maybe reset."""
        if not self._end_announced:
            self._end_announced = True
            self._publish_event(EpisodeEvent.EVENT_STOP, now.to_msg(), state.success)
            outcome = "success" if state.success else "step limit reached"
            self.get_logger().info(
                f"episode {self._episode_index} ended after {state.steps} steps: {outcome} "
                f"(coverage {state.coverage:.3f})"
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

    def _publish_state(self, state: TaskState, stamp: TimeMsg) -> None:
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

    def _publish_event(self, event: int, stamp: TimeMsg, success: bool, notes: str = "") -> None:
        state = self._robot.state
        message = EpisodeEvent(
            event=event,
            episode_index=self._episode_index,
            episode_name=f"{self._task_name}_seed_{self._robot.seed}",
            task=self._task_name,
            success=success,
            notes=notes
            or f"seed={self._robot.seed} steps={state.steps} coverage={state.coverage:.4f}",
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
        self._follower.hold(pixels_to_joints(state.agent_position))
        self._episode_index += 1
        self._episode_over = False
        self._end_announced = False
        self._ticks_to_reset = None
        self._goal_pub.publish(self._pose(state.goal_pose, now))
        self._publish_event(EpisodeEvent.EVENT_START, now, False)
        self.get_logger().info(f"episode {self._episode_index} started with seed {seed}")

    def _on_reset(
        self, request: ResetSimulation.Request, response: ResetSimulation.Response
    ) -> ResetSimulation.Response:
        seed = random.SystemRandom().randrange(2**31) if request.random_seed else request.seed
        if seed < 0:
            response.success = False
            response.message = f"seed must be >= 0, got {seed}"
            response.seed = seed
            return response
        self._reset(seed)
        response.success = True
        response.message = f"episode {self._episode_index} started with seed {seed}"
        response.seed = seed
        return response

    # -- commands -----------------------------------------------------------------------------

    def _on_trajectory(self, message: JointTrajectory) -> None:
        state = self._robot.state
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
            self._follower.set_trajectory(
                list(message.joint_names),
                points,
                _stamp_seconds(message.header.stamp),
                self._now().nanoseconds * 1e-9,
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
        self._rejections.log(reason, prefix)

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
