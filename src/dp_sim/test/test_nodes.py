"""The sim and expert nodes as real processes over DDS, seen from a probe node."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dp_msgs.msg import EpisodeEvent
from dp_msgs.srv import ResetSimulation
from dp_sim.mapping import JOINT_NAMES, quaternion_to_yaw, task_pose_to_world
from dp_sim.pusht_robot import PushTRobot

pytestmark = pytest.mark.ros

COMMAND_TOPIC = "/joint_trajectory_controller/joint_trajectory"
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def start_sim(ros_processes, **parameters):
    sim = ros_processes.start_python_module("pusht_sim", "dp_sim.sim_node", parameters=parameters)
    assert sim.wait_for_output("PushT simulation ready", timeout=30.0), sim.output()
    return sim


def seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def positions(message: JointState) -> np.ndarray:
    return np.array([message.position[list(message.name).index(n)] for n in JOINT_NAMES])


def yaw_of(message: PoseStamped) -> float:
    q = message.pose.orientation
    return quaternion_to_yaw(q.x, q.y, q.z, q.w)


def trajectory(points, stamp: float = 0.0, names=JOINT_NAMES) -> JointTrajectory:
    """points: (time_from_start s, [x, y]) pairs."""
    message = JointTrajectory(joint_names=list(names))
    message.header.stamp = Time(nanoseconds=round(stamp * 1e9)).to_msg()
    for time_from_start, position in points:
        whole = math.floor(time_from_start)
        message.points.append(
            JointTrajectoryPoint(
                positions=[float(value) for value in position],
                time_from_start=Duration(sec=whole, nanosec=round((time_from_start - whole) * 1e9)),
            )
        )
    return message


def command_publisher(graph_probe):
    publisher = graph_probe.node.create_publisher(JointTrajectory, COMMAND_TOPIC, RELIABLE)
    graph_probe.wait_for_subscribers(COMMAND_TOPIC, timeout=20.0)
    return publisher


def now_s(graph_probe) -> float:
    return graph_probe.node.get_clock().now().nanoseconds * 1e-9


def wait_for_stamp(collector, stamp: float, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if collector.messages and seconds(collector.messages[-1].header.stamp) >= stamp:
            return list(collector.messages)
        time.sleep(0.02)
    raise TimeoutError(f"no message stamped after {stamp}")


def at(messages: list, stamp: float):
    """The first message stamped at or after ``stamp``."""
    return next(m for m in messages if seconds(m.header.stamp) >= stamp)


def test_sensors_are_published_at_10_hz_with_the_configured_camera(
    ros_processes, graph_probe
) -> None:
    images = graph_probe.collect_sensor_data("/camera/image_raw", Image)
    joints = graph_probe.collect_sensor_data("/joint_states", JointState)
    blocks = graph_probe.collect_sensor_data("/pusht/block_pose", PoseStamped)
    coverage = graph_probe.collect("/pusht/coverage", Float64, RELIABLE)
    success = graph_probe.collect("/pusht/success", Bool, RELIABLE)
    goals = graph_probe.collect("/pusht/goal_pose", PoseStamped, LATCHED)
    infos = graph_probe.collect_sensor_data("/camera/camera_info", CameraInfo)
    descriptions = graph_probe.collect("/robot_description", String, LATCHED)
    sim = start_sim(ros_processes, seed=3, image_width=64, image_height=48)

    received = images.wait_for(count=15, timeout=20.0)
    image = received[-1]
    assert (image.encoding, image.width, image.height, image.step) == ("rgb8", 64, 48, 192)
    assert len(image.data) == 64 * 48 * 3
    assert image.header.frame_id == "pusht_camera_optical_frame"
    stamps = np.array([seconds(m.header.stamp) for m in received])
    assert np.median(np.diff(stamps)) == pytest.approx(0.1, abs=0.01)

    joint_state = joints.wait_for(count=15)[-1]
    assert list(joint_state.name) == list(JOINT_NAMES)
    assert len(joint_state.position) == len(joint_state.velocity) == 2
    assert all(abs(value) <= 0.256 for value in joint_state.position)
    # Camera, joints and block pose of one step carry one stamp.
    graph_probe.wait_until(
        lambda: any(m.header.stamp == joint_state.header.stamp for m in images.messages),
        5.0,
        "an image with the stamp of the joint state",
    )

    # The block stays where the seed put it (nothing pushes it); its pose is the task's.
    block = blocks.wait_for(count=3)[-1]
    assert block.header.frame_id == "world"
    expected = task_pose_to_world(PushTRobot(8, 8).reset(3).block_pose)
    measured = (block.pose.position.x, block.pose.position.y, yaw_of(block))
    assert measured == pytest.approx(expected, abs=1e-6)

    goal = goals.wait_for(count=1)[0]
    assert (goal.pose.position.x, goal.pose.position.y) == pytest.approx((0.0, 0.0))
    assert yaw_of(goal) == pytest.approx(-math.pi / 4)
    assert 0.0 <= coverage.wait_for(count=3)[-1].data <= 1.0
    assert success.wait_for(count=3)[-1].data is False
    info = infos.wait_for(count=2)[-1]
    assert (info.width, info.height, info.header.frame_id) == (64, 48, image.header.frame_id)
    graph_probe.wait_until(
        lambda: any(m.header.stamp == info.header.stamp for m in images.messages),
        5.0,
        "an image with the stamp of the camera info",
    )
    assert "pusher_x_joint" in descriptions.wait_for(count=1)[0].data
    assert sim.stop() == 0  # SIGINT: a clean exit


def test_reset_with_a_seed_is_reproducible(ros_processes, graph_probe) -> None:
    blocks = graph_probe.collect_sensor_data("/pusht/block_pose", PoseStamped)
    events = graph_probe.collect("/pusht/episode", EpisodeEvent, RELIABLE)
    start_sim(ros_processes)
    graph_probe.wait_for_publishers("/pusht/episode", timeout=20.0)

    def reset(seed: int, random_seed: bool = False) -> tuple[ResetSimulation.Response, tuple]:
        request = ResetSimulation.Request(seed=seed, random_seed=random_seed)
        response = graph_probe.call_service(ResetSimulation, "/pusht/reset", request)
        count = len(blocks.messages)
        block = blocks.wait_for(count=count + 2)[-1]
        return response, (block.pose.position.x, block.pose.position.y, yaw_of(block))

    first_response, first = reset(11)
    assert first_response.success and first_response.seed == 11
    _, other = reset(12)
    _, again = reset(11)
    assert again == pytest.approx(first, abs=1e-9)
    assert other != pytest.approx(first, abs=1e-3)
    random_response, _ = reset(0, random_seed=True)
    assert random_response.success and 0 <= random_response.seed < 2**31

    refused = graph_probe.call_service(
        ResetSimulation, "/pusht/reset", ResetSimulation.Request(seed=-5)
    )
    assert not refused.success and "seed" in refused.message

    # Each reset interrupts the running episode (discarded) and starts the next one.
    # (The start of episode 0 at start-up may come before the probe is discovered.)
    graph_probe.wait_until(
        lambda: any(e.episode_index == 4 for e in events.messages), 10.0, "episode 4 start"
    )
    received = list(events.messages)
    starts = [e for e in received if e.event == EpisodeEvent.EVENT_START and e.episode_index]
    discards = [e for e in received if e.event == EpisodeEvent.EVENT_DISCARD]
    assert [e.episode_index for e in starts] == [1, 2, 3, 4]
    assert [e.episode_index for e in discards] == [0, 1, 2, 3]
    assert starts[0].episode_name == "push_t_seed_11" and starts[0].task == "push_t"


def test_trajectories_move_the_pusher_where_and_when_they_say(ros_processes, graph_probe) -> None:
    joints = graph_probe.collect_sensor_data("/joint_states", JointState)
    start_sim(ros_processes, seed=3)
    publisher = command_publisher(graph_probe)
    start = positions(joints.wait_for(count=2)[-1])
    towards_centre = -np.sign(start)
    p1 = start + towards_centre * [0.05, 0.0]
    p2 = p1 + towards_centre * [0.0, 0.05]

    # Starts in 0.3 s; first point 0.5 s later, second 1 s after that.
    t0 = now_s(graph_probe) + 0.3
    publisher.publish(trajectory([(0.5, p1), (1.5, p2)], stamp=t0))
    received = wait_for_stamp(joints, t0 + 3.0)
    # The PD-controlled pusher lags its setpoint by about 0.2 s at constant speed.
    assert positions(at(received, t0 + 0.5)) == pytest.approx(p1, abs=0.02)
    halfway = positions(at(received, t0 + 1.0 + 0.2))
    assert halfway == pytest.approx((p1 + p2) / 2, abs=0.012)
    assert positions(received[-1]) == pytest.approx(p2, abs=0.002)

    # A new trajectory replaces the running one: the slow move to `far` is abandoned.
    far = p2 + towards_centre * [0.0, 0.1]
    near = p2 + towards_centre * [0.03, 0.0]
    publisher.publish(trajectory([(3.0, far)]))
    time.sleep(0.5)
    t1 = now_s(graph_probe)
    publisher.publish(trajectory([(0.5, near)]))
    received = wait_for_stamp(joints, t1 + 2.0)
    went = max(abs(positions(m)[1] - p2[1]) for m in received if seconds(m.header.stamp) > t1 - 1)
    assert 0.003 < went < 0.03  # a little way towards `far`, then back with `near`
    assert positions(received[-1]) == pytest.approx(near, abs=0.002)


BAD_TRAJECTORIES = {
    "joint 'elbow_joint' is not one of": lambda now: trajectory(
        [(1.0, [0.0, 0.0])], names=("pusher_x_joint", "elbow_joint")
    ),
    "time_from_start must increase strictly": lambda now: trajectory(
        [(1.0, [0.0, 0.0]), (0.5, [0.01, 0.0])]
    ),
    "NaN or infinite value": lambda now: trajectory([(1.0, [math.nan, 0.0])]),
    "trajectory ends in the past": lambda now: trajectory(
        [(0.5, [0.0, 0.0]), (1.0, [0.01, 0.0])], stamp=now - 10.0
    ),
    "1 positions for 2 joints": lambda now: trajectory([(1.0, [0.0])]),
}


def test_bad_trajectories_are_rejected_with_a_log_line(ros_processes, graph_probe) -> None:
    joints = graph_probe.collect_sensor_data("/joint_states", JointState)
    sim = start_sim(ros_processes, seed=3)
    publisher = command_publisher(graph_probe)
    start = positions(joints.wait_for(count=2)[-1])
    for reason, make in BAD_TRAJECTORIES.items():
        publisher.publish(make(now_s(graph_probe)))
        assert sim.wait_for_output(reason, timeout=10.0), sim.output()
        line = next(line for line in sim.output().splitlines() if reason in line)
        assert "WARN" in line and "Rejected trajectory: " in line
    count = len(joints.messages)
    still = positions(joints.wait_for(count=count + 3)[-1])
    assert still == pytest.approx(start, abs=1e-9)


def test_an_episode_ends_with_an_event_and_the_next_one_starts(ros_processes, graph_probe) -> None:
    events = graph_probe.collect("/pusht/episode", EpisodeEvent, RELIABLE)
    joints = graph_probe.collect_sensor_data("/joint_states", JointState)
    clock = graph_probe.collect("/clock", Clock, QoSProfile(depth=10))
    start_sim(
        ros_processes,
        max_episode_steps=15,
        real_time_factor=5.0,
        auto_reset=True,
        auto_reset_delay=0.5,
    )
    # Episodes are short here: restart once the probe is surely connected.
    reset(graph_probe, events, seed=20)
    stop = wait_for_event(events, EpisodeEvent.EVENT_STOP, "push_t_seed_20", timeout=20.0)
    assert (stop.task, stop.success) == ("push_t", False)
    assert "steps=15" in stop.notes
    start = wait_for_event(events, EpisodeEvent.EVENT_START, "push_t_seed_21", timeout=20.0)
    assert start.episode_index == stop.episode_index + 1
    assert seconds(start.header.stamp) - seconds(stop.header.stamp) == pytest.approx(0.5, abs=0.01)

    # Faster than real time: simulated stamps 0.1 s apart, on /clock too.
    stamps = np.array([seconds(m.header.stamp) for m in joints.wait_for(count=10)])
    assert np.diff(stamps) == pytest.approx(0.1, abs=1e-6)
    assert len(clock.wait_for(count=5)) >= 5


def reset(graph_probe, events, seed: int) -> None:
    """Reset the sim to ``seed`` once the probe receives its episode events."""
    graph_probe.wait_for_publishers("/pusht/episode", timeout=20.0)
    response = graph_probe.call_service(
        ResetSimulation, "/pusht/reset", ResetSimulation.Request(seed=seed)
    )
    assert response.success, response.message


def wait_for_event(events, kind: int, name: str, timeout: float) -> EpisodeEvent:
    """The first episode event of ``kind`` for the episode called ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in list(events.messages):
            if event.event == kind and event.episode_name == name:
                return event
        time.sleep(0.02)
    raise TimeoutError(f"no episode event {kind} for {name}: got {events.messages}")


def test_the_expert_drives_the_sim_to_success(ros_processes, graph_probe) -> None:
    events = graph_probe.collect("/pusht/episode", EpisodeEvent, RELIABLE)
    expert = ros_processes.start_python_module(
        "pusht_expert", "dp_sim.expert_node", parameters={"use_sim_time": True}
    )
    assert expert.wait_for_output("PushT expert ready", timeout=30.0), expert.output()
    start_sim(ros_processes, real_time_factor=4.0)
    # 100002 is an easy seed: solved in about 60 steps, 6 simulated seconds (1.5 s here).
    reset(graph_probe, events, seed=100002)
    stop = wait_for_event(events, EpisodeEvent.EVENT_STOP, "push_t_seed_100002", timeout=60.0)
    # (About 62 steps with the expert answering within a step; a loaded machine makes the
    # answers later and the episode longer, but it is still solved.)
    assert stop.success, stop.notes
    assert expert.stop() == 0


def test_invalid_parameters_stop_the_node_with_a_message(ros_processes) -> None:
    sim = ros_processes.start_python_module(
        "pusht_sim", "dp_sim.sim_node", parameters={"image_width": 0}
    )
    assert sim.wait(timeout=30.0) == 2
    assert "cannot start" in sim.output() and "image_width" in sim.output()
