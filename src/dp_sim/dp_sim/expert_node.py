"""ROS 2 node ``pusht_expert``: a scripted teleoperator for the simulated PushT robot.

It watches the robot the way its operator would (joint states, the T's pose from perception,
the goal) and after every observation moves the pusher's setpoint like a joystick does: a
one-point ``trajectory_msgs/JointTrajectory`` (start now, no ramp) to the
``joint_trajectory_controller``. The decisions come from :class:`dp_sim.expert.PushTExpert`.
"""

from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dp_msgs.msg import EpisodeEvent
from dp_sim.expert import DEFAULT_GOAL, ExpertConfig, PushTExpert
from dp_sim.mapping import (
    JOINT_NAMES,
    METRES_PER_PIXEL,
    joints_to_pixels,
    pixels_to_joints,
    quaternion_to_yaw,
    world_pose_to_task,
)
from dp_sim.node_runner import run_node
from dp_sim.parameters import Parameter, declare

PARAMETERS = (
    Parameter("travel_speed", 0.25, "Pusher speed when walking around the T, m/s.", (0.01, 2.0)),
    Parameter("push_speed", 0.10, "Largest pusher speed while pushing the T, m/s.", (0.01, 2.0)),
)


def _pose_to_task(message: PoseStamped) -> np.ndarray:
    q = message.pose.orientation
    yaw = quaternion_to_yaw(q.x, q.y, q.z, q.w)
    return world_pose_to_task(message.pose.position.x, message.pose.position.y, yaw)


class PushTExpertNode(Node):
    """Commands one pusher setpoint per observation of the simulated robot."""

    def __init__(self) -> None:
        super().__init__("pusht_expert")
        parameters = declare(self, PARAMETERS)
        config = ExpertConfig(
            travel_speed=parameters["travel_speed"] / METRES_PER_PIXEL,
            push_speed=parameters["push_speed"] / METRES_PER_PIXEL,
        )
        self._expert = PushTExpert(config)
        self._goal = DEFAULT_GOAL.copy()
        self._joints: JointState | None = None
        self._block: PoseStamped | None = None
        self._last_stamp: tuple[int, int] | None = None
        # Until told otherwise, an episode is assumed to be running (the expert may start
        # after the simulation's episode started).
        self._active = True

        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._command_pub = self.create_publisher(
            JointTrajectory,
            "joint_trajectory_controller/joint_trajectory",
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
        )
        # Created first: rclpy's executor takes ready subscriptions in creation order, so an
        # episode's START is handled before its first observation when both are waiting (at 8x
        # the first observation follows the START by one 12.5 ms tick).
        self.create_subscription(EpisodeEvent, "pusht/episode", self._on_episode, 10)
        self.create_subscription(PoseStamped, "pusht/goal_pose", self._on_goal, latched)
        self.create_subscription(
            JointState, "joint_states", self._on_joints, qos_profile_sensor_data
        )
        self.create_subscription(
            PoseStamped, "pusht/block_pose", self._on_block, qos_profile_sensor_data
        )
        self.get_logger().info("PushT expert ready")

    def _on_goal(self, message: PoseStamped) -> None:
        self._goal = _pose_to_task(message)

    def _on_episode(self, message: EpisodeEvent) -> None:
        if message.event == EpisodeEvent.EVENT_START:
            self._expert.reset()
            self._active = True
            self.get_logger().info(f"episode {message.episode_index}: pushing the T to the goal")
        elif message.event in (EpisodeEvent.EVENT_STOP, EpisodeEvent.EVENT_DISCARD):
            self._active = False

    def _on_joints(self, message: JointState) -> None:
        self._joints = message
        self._act()

    def _on_block(self, message: PoseStamped) -> None:
        self._block = message
        self._act()

    def _act(self) -> None:
        """Once per simulation step: when joint state and block pose of one instant are in."""
        if not self._active or self._joints is None or self._block is None:
            return
        stamp = self._joints.header.stamp
        key = (stamp.sec, stamp.nanosec)
        block_stamp = self._block.header.stamp
        if key != (block_stamp.sec, block_stamp.nanosec) or key == self._last_stamp:
            return
        self._last_stamp = key
        try:
            indices = [list(self._joints.name).index(name) for name in JOINT_NAMES]
        except ValueError:
            self.get_logger().error(
                f"joint states lack {list(JOINT_NAMES)}: got {list(self._joints.name)}",
                throttle_duration_sec=5.0,
            )
            return
        agent = joints_to_pixels(np.array([self._joints.position[i] for i in indices]))
        target = self._expert.act(agent, _pose_to_task(self._block), self._goal)
        self._command_pub.publish(self._command(pixels_to_joints(target)))

    @staticmethod
    def _command(position: np.ndarray) -> JointTrajectory:
        # Stamp zero and a single point at time_from_start zero: "this is the setpoint from
        # now on", what a joystick teleoperation sends.
        message = JointTrajectory(joint_names=list(JOINT_NAMES))
        message.points = [JointTrajectoryPoint(positions=position.tolist())]
        return message


def main(args: list[str] | None = None) -> int:
    return run_node(PushTExpertNode, "pusht_expert", args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
