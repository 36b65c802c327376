"""ROS 2 node ``arm_expert``: a scripted teleoperator for the simulated Panda (Lift, Can).

It watches the robot as its operator would (joint states, the object's pose from perception,
the goal) and after every observation sends the arm's and the gripper's set points as a
teleoperation interface does: one-point ``trajectory_msgs/JointTrajectory`` messages (start
now, no ramp) to the arm's and the gripper's trajectory controllers. The decisions come from
:class:`dp_sim.arm_expert.ArmExpert`, the joint set points from inverse kinematics on the
arm's model.
"""

from __future__ import annotations

import sys

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dp_msgs.msg import EpisodeEvent
from dp_sim.arm_expert import ExpertSettings, make_expert
from dp_sim.arm_robot import (
    ARM_COMMAND_TOPIC,
    ARM_JOINT_NAMES,
    CONTROL_PERIOD_S,
    GRIPPER_COMMAND_TOPIC,
    GRIPPER_JOINT_NAMES,
    TASKS,
    ArmRobot,
)
from dp_sim.node_runner import run_node
from dp_sim.parameters import Parameter, declare

PARAMETERS = (
    Parameter("task", "lift", f"The task the simulation runs: one of {sorted(TASKS)}."),
    Parameter("travel_speed", 0.30, "Hand speed in free motion, m/s.", (0.01, 2.0)),
    Parameter("approach_speed", 0.12, "Hand speed near the object and the goal, m/s.", (0.01, 2.0)),
)


def _vector(message: PoseStamped) -> tuple[np.ndarray, np.ndarray]:
    p, q = message.pose.position, message.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])


def _command(joint_names: tuple[str, ...], positions: np.ndarray) -> JointTrajectory:
    # Stamp zero and one point at time_from_start zero: "this is the set point from now on".
    message = JointTrajectory(joint_names=list(joint_names))
    message.points = [JointTrajectoryPoint(positions=[float(v) for v in positions])]
    return message


class ArmExpertNode(Node):
    """Commands one arm and one gripper set point per observation of the simulated arm."""

    def __init__(self) -> None:
        super().__init__("arm_expert")
        parameters = declare(self, PARAMETERS)
        self._task = parameters["task"]
        if self._task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self._task!r}")
        settings = ExpertSettings(
            travel_speed=parameters["travel_speed"], approach_speed=parameters["approach_speed"]
        )
        # The teleoperation interface's kinematic model: the simulated arm's own, without
        # cameras (a real set-up would load the arm's URDF).
        self._model = ArmRobot(self._task)
        self._expert = make_expert(self._model, CONTROL_PERIOD_S, settings)
        self._joints: JointState | None = None
        self._object: PoseStamped | None = None
        self._goal: np.ndarray | None = None
        self._last_stamp: tuple[int, int] | None = None
        # Observations stamped before the running episode's START belong to the previous one
        # (the sim keeps publishing its final state until the reset, and some of those may be
        # handled after the START): planning from one would reach for where the object was.
        self._episode_start: tuple[int, int] = (0, 0)
        self._active = True

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._arm_pub = self.create_publisher(JointTrajectory, ARM_COMMAND_TOPIC, reliable)
        self._gripper_pub = self.create_publisher(JointTrajectory, GRIPPER_COMMAND_TOPIC, reliable)
        # Episode events first: the executor takes ready subscriptions in creation order.
        self.create_subscription(EpisodeEvent, f"{self._task}/episode", self._on_episode, 10)
        self.create_subscription(PoseStamped, f"{self._task}/goal_pose", self._on_goal, latched)
        self.create_subscription(
            JointState, "joint_states", self._on_joints, qos_profile_sensor_data
        )
        self.create_subscription(
            PoseStamped, f"{self._task}/object_pose", self._on_object, qos_profile_sensor_data
        )
        self.get_logger().info(f"arm expert ready for {self._task}")

    def _on_goal(self, message: PoseStamped) -> None:
        self._goal = _vector(message)[0]

    def _on_episode(self, message: EpisodeEvent) -> None:
        if message.event == EpisodeEvent.EVENT_START:
            self._expert.reset()
            self._episode_start = (message.header.stamp.sec, message.header.stamp.nanosec)
            self._active = True
            self.get_logger().info(f"episode {message.episode_index}: {self._task}")
        elif message.event in (EpisodeEvent.EVENT_STOP, EpisodeEvent.EVENT_DISCARD):
            self._active = False

    def _on_joints(self, message: JointState) -> None:
        self._joints = message
        self._act()

    def _on_object(self, message: PoseStamped) -> None:
        self._object = message
        self._act()

    def _act(self) -> None:
        """Once per simulation step: when joint state and object pose of one instant are in."""
        if not self._active or self._joints is None or self._object is None:
            return
        stamp = self._joints.header.stamp
        key = (stamp.sec, stamp.nanosec)
        object_stamp = self._object.header.stamp
        if key != (object_stamp.sec, object_stamp.nanosec) or key == self._last_stamp:
            return
        if key < self._episode_start:
            return
        if self._task == "can" and self._goal is None:
            self.get_logger().warning(
                f"no goal on {self._task}/goal_pose yet", throttle_duration_sec=5.0
            )
            return
        self._last_stamp = key
        names = list(self._joints.name)
        missing = [name for name in ARM_JOINT_NAMES if name not in names]
        if missing:
            self.get_logger().error(
                f"joint states lack {missing}: got {names}", throttle_duration_sec=5.0
            )
            return
        arm = np.array([self._joints.position[names.index(name)] for name in ARM_JOINT_NAMES])
        position, quaternion = _vector(self._object)
        joints, fingers = self._expert.act(arm, position, quaternion, self._goal)
        self._arm_pub.publish(_command(ARM_JOINT_NAMES, joints))
        self._gripper_pub.publish(_command(GRIPPER_JOINT_NAMES, np.array([fingers])))

    def destroy_node(self) -> None:
        model = getattr(self, "_model", None)
        if model is not None:
            model.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(ArmExpertNode, "arm_expert", args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
