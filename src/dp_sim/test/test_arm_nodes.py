"""The arm simulation and its expert as real processes over DDS, seen from a probe node."""

from __future__ import annotations

import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import MarkerArray

from dp_msgs.msg import EpisodeEvent
from dp_msgs.srv import ResetSimulation
from dp_sim.arm_robot import ARM_JOINT_NAMES, FINGER_JOINT_NAMES, GRIPPER_JOINT_NAMES
from dp_sim.arm_sim_node import ARM_COMMAND_TOPIC, GRIPPER_COMMAND_TOPIC

pytestmark = pytest.mark.ros

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def start_arm(ros_processes, **parameters):
    sim = ros_processes.start_python_module("arm_sim", "dp_sim.arm_sim_node", parameters=parameters)
    assert sim.wait_for_output("arm simulation ready", timeout=60.0), sim.output()
    return sim


def seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def named(message: JointState, names) -> np.ndarray:
    return np.array([message.position[list(message.name).index(name)] for name in names])


def one_point(names, positions, after_s: float) -> JointTrajectory:
    message = JointTrajectory(joint_names=list(names))
    whole = int(after_s)
    message.points = [
        JointTrajectoryPoint(
            positions=[float(v) for v in positions],
            time_from_start=Duration(sec=whole, nanosec=round((after_s - whole) * 1e9)),
        )
    ]
    return message


def wait_for_event(events, kind: int, name: str, timeout: float) -> EpisodeEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in list(events.messages):
            if event.event == kind and event.episode_name == name:
                return event
        time.sleep(0.02)
    raise TimeoutError(f"no episode event {kind} for {name}: got {events.messages}")


def starts_of(events, name: str) -> list[EpisodeEvent]:
    """The START events of episodes named ``name`` received so far, in order."""
    return [
        event
        for event in list(events.messages)
        if event.event == EpisodeEvent.EVENT_START and event.episode_name == name
    ]


def first_pose_of_episode(objects, start: EpisodeEvent) -> PoseStamped | None:
    """The first object pose stamped at or after ``start``: poses of the episode before it may
    still be in flight when a reset returns, so order of arrival does not tell them apart."""
    begins = (start.header.stamp.sec, start.header.stamp.nanosec)
    for message in list(objects.messages):
        if (message.header.stamp.sec, message.header.stamp.nanosec) >= begins:
            return message
    return None


def test_sensors_cameras_and_goal_of_the_can_task(ros_processes, graph_probe) -> None:
    joints = graph_probe.collect_sensor_data("/joint_states", JointState)
    front = graph_probe.collect_sensor_data("/front_camera/image_raw", Image)
    wrist = graph_probe.collect_sensor_data("/wrist_camera/image_raw", Image)
    objects = graph_probe.collect_sensor_data("/can/object_pose", PoseStamped)
    goals = graph_probe.collect("/can/goal_pose", PoseStamped, LATCHED)
    start_arm(ros_processes, task="can", image_width=40, image_height=30, real_time_factor=2.0)

    states = joints.wait_for(count=6, timeout=30.0)
    assert list(states[-1].name) == [*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES]
    assert len(states[-1].position) == len(states[-1].velocity) == 9
    stamps = np.array([seconds(m.header.stamp) for m in states[-5:]])
    assert np.diff(stamps) == pytest.approx(0.05, abs=1e-6)  # 20 Hz in simulated time
    for images, frame in (
        (front, "front_camera_optical_frame"),
        (wrist, "wrist_camera_optical_frame"),
    ):
        image = images.wait_for(count=1, timeout=30.0)[-1]
        assert (image.width, image.height, image.encoding) == (40, 30, "rgb8")
        assert image.header.frame_id == frame and len(image.data) == 40 * 30 * 3
    can = objects.wait_for(count=1, timeout=30.0)[-1]
    goal = goals.wait_for(count=1, timeout=30.0)[-1]
    assert can.header.frame_id == goal.header.frame_id == "world"
    # The can starts in the left bin (y < 0), the goal is in the right one (y > 0).
    assert can.pose.position.y < 0 < goal.pose.position.y


def test_arm_and_gripper_follow_their_controllers_and_bad_commands_are_refused(
    ros_processes, graph_probe
) -> None:
    joints = graph_probe.collect_sensor_data("/joint_states", JointState)
    markers = graph_probe.collect("/arm_sim/markers", MarkerArray, RELIABLE)
    sim = start_arm(ros_processes, front_camera=False, wrist_camera=False, seed=4)
    arm = graph_probe.node.create_publisher(JointTrajectory, ARM_COMMAND_TOPIC, RELIABLE)
    gripper = graph_probe.node.create_publisher(JointTrajectory, GRIPPER_COMMAND_TOPIC, RELIABLE)
    graph_probe.wait_for_subscribers(ARM_COMMAND_TOPIC, timeout=20.0)
    graph_probe.wait_for_subscribers(GRIPPER_COMMAND_TOPIC, timeout=20.0)
    start = named(joints.wait_for(count=1, timeout=30.0)[-1], ARM_JOINT_NAMES)

    target = start + np.array([0.25, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0])
    # Joint names in another order than the sim's: values are matched by name.
    order = list(reversed(ARM_JOINT_NAMES))
    arm.publish(one_point(order, [target[ARM_JOINT_NAMES.index(n)] for n in order], 0.5))
    gripper.publish(one_point(GRIPPER_JOINT_NAMES, [0.01], 0.3))
    graph_probe.wait_until(
        lambda: (
            joints.messages
            and np.allclose(named(joints.messages[-1], ARM_JOINT_NAMES), target, atol=5e-3)
            and named(joints.messages[-1], FINGER_JOINT_NAMES[:1])[0]
            == pytest.approx(0.01, abs=2e-3)
        ),
        timeout=20.0,
        what="arm and fingers at their commanded positions",
    )
    # The commanded trajectory is shown in Cartesian space.
    graph_probe.wait_until(
        lambda: any(
            marker.ns == "commanded_hand_path" and len(marker.points) >= 2
            for message in list(markers.messages)
            for marker in message.markers
        ),
        timeout=10.0,
        what="a marker of the commanded hand path",
    )

    # A trajectory naming a joint the arm does not have, and one with NaN: refused, logged.
    arm.publish(one_point([*ARM_JOINT_NAMES[:6], "elbow"], target, 0.5))
    gripper.publish(one_point(GRIPPER_JOINT_NAMES, [float("nan")], 0.3))
    assert sim.wait_for_output("Rejected trajectory: arm:", timeout=10.0), sim.output()
    assert sim.wait_for_output("Rejected trajectory: gripper:", timeout=10.0), sim.output()
    time.sleep(0.5)
    np.testing.assert_allclose(named(joints.messages[-1], ARM_JOINT_NAMES), target, atol=5e-3)


def test_the_expert_lifts_the_cube_over_ros_and_a_reset_repeats_an_episode(
    ros_processes, graph_probe
) -> None:
    events = graph_probe.collect("/lift/episode", EpisodeEvent, RELIABLE)
    objects = graph_probe.collect_sensor_data("/lift/object_pose", PoseStamped)
    expert = ros_processes.start_python_module(
        "arm_expert", "dp_sim.arm_expert_node", parameters={"use_sim_time": True}
    )
    assert expert.wait_for_output("arm expert ready", timeout=60.0), expert.output()
    start_arm(ros_processes, front_camera=False, wrist_camera=False, real_time_factor=2.0, seed=7)
    graph_probe.wait_for_publishers("/lift/episode", timeout=20.0)
    response = graph_probe.call_service(
        ResetSimulation, "/lift/reset", ResetSimulation.Request(seed=100003)
    )
    assert response.success, response.message
    name = "lift_seed_100003"
    graph_probe.wait_until(lambda: starts_of(events, name), 20.0, "the episode's start")
    start = starts_of(events, name)[0]
    graph_probe.wait_until(
        lambda: first_pose_of_episode(objects, start), 20.0, "a pose of the episode"
    )
    first = first_pose_of_episode(objects, start).pose.position
    # About 40 steps (2 simulated seconds) when the expert answers within a step.
    stop = wait_for_event(events, EpisodeEvent.EVENT_STOP, name, timeout=90.0)
    assert stop.success, stop.notes
    response = graph_probe.call_service(
        ResetSimulation, "/lift/reset", ResetSimulation.Request(seed=100003)
    )
    assert response.success
    graph_probe.wait_until(lambda: len(starts_of(events, name)) >= 2, 20.0, "the restart")
    restart = starts_of(events, name)[1]
    assert restart.episode_index > start.episode_index
    graph_probe.wait_until(
        lambda: first_pose_of_episode(objects, restart), 20.0, "a pose after the reset"
    )
    again = first_pose_of_episode(objects, restart).pose.position
    assert (again.x, again.y) == pytest.approx((first.x, first.y), abs=1e-3)
    assert expert.stop() == 0


def test_an_unknown_task_stops_the_node_with_a_message(ros_processes) -> None:
    sim = ros_processes.start_python_module(
        "arm_sim", "dp_sim.arm_sim_node", parameters={"task": "stack"}
    )
    assert sim.wait(timeout=60.0) == 2
    assert "cannot start" in sim.output() and "stack" in sim.output()
