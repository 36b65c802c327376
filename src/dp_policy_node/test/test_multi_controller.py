"""An action that spans two controllers, served by the node as a real process over DDS.

The checkpoint's action has two streams, ``arm`` (two joints, on ``trajectory_topic``) and
``gripper`` (one finger joint, on the topic its spec names): every chunk, and the stop on
deactivate, goes out as one JointTrajectory per controller with only that controller's joints,
the same (zero) stamp and the same point times.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from dp_policy_node_test_support import (
    GRIPPER_JOINT,
    GRIPPER_TOPIC,
    JOINTS,
    TA,
    TO,
    TP,
    TRAJECTORY_TOPIC,
    ObservationFeed,
    StatusWatcher,
    TimedCollector,
    change_state,
    lifecycle_state,
    set_parameters,
)
from lifecycle_msgs.msg import Transition
from trajectory_msgs.msg import JointTrajectory

from dp_msgs.msg import ActionChunk, PolicyStatus

pytestmark = pytest.mark.ros

NODE = "policy_node"
NS = 1_000_000_000
MOVED_GRIPPER_TOPIC = "/policy_test/hand_controller/joint_trajectory"
ALL_JOINTS = (*JOINTS, GRIPPER_JOINT)
MEASURED = (0.05, -0.05, 0.02)


def nanoseconds(stamp) -> int:
    return stamp.sec * NS + stamp.nanosec


def times(trajectory: JointTrajectory) -> list[int]:
    return [nanoseconds(point.time_from_start) for point in trajectory.points]


def settled(collectors: list[TimedCollector], after: float) -> list[list]:
    """Each collector's messages since ``after``, once none has received any for 0.5 s: the
    node sends the streams back to back, but they arrive on subscriptions of their own."""
    deadline = time.monotonic() + 10.0
    counts: list[int] = []
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = [len(collector.since(after)) for collector in collectors]
        if now == counts:
            break
        counts = now
    return [collector.since(after) for collector in collectors]


def check_pair(arm: JointTrajectory, gripper: JointTrajectory, chunk: ActionChunk) -> None:
    assert list(arm.joint_names) == list(JOINTS)
    assert list(gripper.joint_names) == [GRIPPER_JOINT]
    assert nanoseconds(arm.header.stamp) == nanoseconds(gripper.header.stamp) == 0
    assert times(arm) == times(gripper), "the controllers must move in step"
    assert all(b > a for a, b in itertools.pairwise(times(arm))) and times(arm)[0] > 0
    # The chunk is the whole action vector; each controller gets its own columns of it.
    assert list(chunk.action_names) == list(ALL_JOINTS) and chunk.action_dim == 3
    rows = np.asarray(chunk.actions).reshape(TP, 3)
    count = len(arm.points)
    executed = rows[TO - 1 + TA - count : TO - 1 + TA]
    np.testing.assert_array_equal([point.positions for point in arm.points], executed[:, :2])
    np.testing.assert_array_equal([point.positions for point in gripper.points], executed[:, 2:])
    for trajectory in (arm, gripper):
        np.testing.assert_array_equal(trajectory.points[-1].velocities, 0.0)


def check_hold(arm: JointTrajectory, gripper: JointTrajectory) -> None:
    assert len(arm.points) == len(gripper.points) == 1, "the last commands are the stop"
    assert list(arm.points[0].positions) == pytest.approx(MEASURED[:2])
    assert list(gripper.points[0].positions) == pytest.approx(MEASURED[2:])
    assert times(arm) == times(gripper) and times(arm)[0] > 0
    assert list(arm.points[0].velocities) == [0.0, 0.0]
    assert list(gripper.points[0].velocities) == [0.0]


def serve(probe, statuses: StatusWatcher, chunks: TimedCollector, count: int = 3) -> float:
    """Configure, activate, wait for ``count`` chunks, deactivate; returns when it began."""
    began = time.time()
    assert change_state(probe, NODE, Transition.TRANSITION_CONFIGURE)
    assert change_state(probe, NODE, Transition.TRANSITION_ACTIVATE)
    chunks.wait_for(count, timeout=30.0, after=began)
    statuses.wait_for_state(PolicyStatus.STATE_RUNNING, after=began)
    assert change_state(probe, NODE, Transition.TRANSITION_DEACTIVATE)
    return began


def test_an_action_of_two_streams_goes_to_two_controllers(
    ros_processes, graph_probe, two_stream_checkpoint
):
    node = ros_processes.start_python_module(
        NODE,
        "dp_policy_node",
        parameters={
            "checkpoint": str(two_stream_checkpoint),
            "cpu_threads": 1,
            "max_observation_age": 0.5,
            "latency_margin": 0.1,
            "max_step": [10.0],  # an untrained model jumps around its range
        },
    )
    assert node.wait_for_output("policy node ready", timeout=60.0), node.output()
    statuses = StatusWatcher(graph_probe)
    arm = TimedCollector(graph_probe, TRAJECTORY_TOPIC, JointTrajectory)
    gripper = TimedCollector(graph_probe, GRIPPER_TOPIC, JointTrajectory)
    moved = TimedCollector(graph_probe, MOVED_GRIPPER_TOPIC, JointTrajectory)
    chunks = TimedCollector(graph_probe, "/dp/action_chunk", ActionChunk)
    feed = ObservationFeed(graph_probe)
    # The finger joint is in the same JointState as the arm's, as on a real arm.
    feed.update(joint_names=ALL_JOINTS, joint_positions=MEASURED)

    began = serve(graph_probe, statuses, chunks)
    arms, grippers, received = settled([arm, gripper, chunks], began)
    # One trajectory per controller for every chunk, and one stop each.
    assert len(arms) == len(grippers) == len(received) + 1 >= 4
    for arm_trajectory, gripper_trajectory, chunk in zip(arms, grippers, received, strict=False):
        check_pair(arm_trajectory, gripper_trajectory, chunk)
    check_hold(arms[-1], grippers[-1])
    output = node.output()
    assert (
        f"active: publishing on {JOINTS} to {TRAJECTORY_TOPIC} and ('{GRIPPER_JOINT}',) to "
        f"{GRIPPER_TOPIC}" in output
    ), output
    running = [s for _, s in statuses.snapshot() if s.state == PolicyStatus.STATE_RUNNING]
    assert running[-1].message.startswith(
        f"publishing chunks on {TRAJECTORY_TOPIC}, {GRIPPER_TOPIC}"
    ), running[-1].message
    assert change_state(graph_probe, NODE, Transition.TRANSITION_CLEANUP)

    # A key that is no further action stream fails configure, naming the valid ones.
    cases = [
        (
            ["hand=/x"],
            "command_topics names key(s) ['hand'], but the checkpoint's action streams are "
            "['arm', 'gripper']; use 'key=/topic' with one of ['gripper']",
        ),
        (["arm=/x"], "the first action stream, which is published on trajectory_topic"),
    ]
    for entries, text in cases:
        set_parameters(graph_probe, NODE, command_topics=entries)
        before = time.time()
        assert not change_state(graph_probe, NODE, Transition.TRANSITION_CONFIGURE), text
        assert lifecycle_state(graph_probe, NODE) == "unconfigured"
        _, status = statuses.wait_for_state(PolicyStatus.STATE_ERROR, contains=text, after=before)
        assert status.message.startswith("configure failed:") and text in node.output()
    # command_topics moves the gripper's stream; the arm's stays on trajectory_topic.
    set_parameters(graph_probe, NODE, command_topics=[f"gripper={MOVED_GRIPPER_TOPIC}"])
    began = serve(graph_probe, statuses, chunks)
    arms, grippers, received = settled([arm, moved, chunks], began)
    assert len(arms) == len(grippers) == len(received) + 1 >= 4
    assert gripper.since(began) == [], "the gripper's stream was moved"
    for arm_trajectory, gripper_trajectory, chunk in zip(arms, grippers, received, strict=False):
        check_pair(arm_trajectory, gripper_trajectory, chunk)
    check_hold(arms[-1], grippers[-1])
    assert node.stop() == 0
