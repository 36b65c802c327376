"""Bad input, each case with real processes: the node keeps running, says so once, sends nothing.

One node process serves every observation case (starting it costs more than the cases); the
feed runs for the whole module, so the node never goes stale between cases. Each case starts
from a running stream, breaks one thing, checks PolicyStatus, the log and the silence on the
command topic, and then checks that the stream resumes once the input is good again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from dp_policy_node_test_support import (
    IMAGE_TOPIC,
    JOINT_TOPIC,
    FeedSettings,
    ObservationFeed,
    StatusWatcher,
    TimedCollector,
)
from trajectory_msgs.msg import JointTrajectory

from dp_msgs.msg import PolicyStatus
from dp_testing.processes import NodeProcess, ProcessGraph

pytestmark = pytest.mark.ros

NODE = "policy_node"
TRAJECTORY_TOPIC = "/joint_trajectory_controller/joint_trajectory"
PARAMETERS = {
    "autostart": True,
    "cpu_threads": 1,
    "max_observation_age": 0.5,
    "latency_margin": 0.1,
    "max_step": [10.0],
}
# A fault must silence the command topic from the status change on (small allowance for a
# message already on the wire), for this long.
SILENCE_CHECK_S = 1.5


@dataclass
class Bench:
    node: NodeProcess
    feed: ObservationFeed
    statuses: StatusWatcher
    trajectories: TimedCollector


@pytest.fixture(scope="module")
def bench(ros_environment, tmp_path_factory, checkpoints) -> Iterator[Bench]:
    from dp_testing.probe import GraphProbe

    graph = ProcessGraph(tmp_path_factory.mktemp("robustness_logs"), ros_environment)
    probe = GraphProbe("robustness_probe")
    try:
        statuses = StatusWatcher(probe)
        trajectories = TimedCollector(probe, TRAJECTORY_TOPIC, JointTrajectory)
        feed = ObservationFeed(probe)
        node = graph.start_python_module(
            NODE,
            "dp_policy_node",
            parameters={**PARAMETERS, "checkpoint": str(checkpoints["camera"])},
        )
        assert node.wait_for_output("active:", timeout=90.0), node.output()
        yield Bench(node, feed, statuses, trajectories)
    finally:
        probe.close()
        graph.stop_all()
        print(graph.report())


def _backwards_stamps() -> Any:
    start = time.time()
    # Each frame older than the one before, all older than the last good frame.
    return lambda now: start - 0.3 - (now - start)


CASES = {
    "wrong_encoding": (
        {"encoding": "bgr16"},
        PolicyStatus.STATE_INVALID_OBSERVATIONS,
        f"image on {IMAGE_TOPIC} has encoding 'bgr16', which is not supported",
    ),
    "wrong_image_size": (
        {"width": 48, "height": 48},
        PolicyStatus.STATE_INVALID_OBSERVATIONS,
        f"image on {IMAGE_TOPIC}: image is 48x48, the policy expects 32x32",
    ),
    "missing_joint": (
        {"joint_names": ("pusher_y_joint",), "joint_positions": (0.0,)},
        PolicyStatus.STATE_INVALID_OBSERVATIONS,
        f"JointState on {JOINT_TOPIC} lacks joint(s) ['pusher_x_joint']",
    ),
    "nan_in_joint_states": (
        {"joint_positions": (math.nan, 0.0)},
        PolicyStatus.STATE_INVALID_OBSERVATIONS,
        f"JointState on {JOINT_TOPIC}: position of ['pusher_x_joint'] is NaN or infinite",
    ),
    "stamps_out_of_order": (
        {"image_stamp": "backwards"},
        PolicyStatus.STATE_INVALID_OBSERVATIONS,
        "before the previous one: stamps must increase",
    ),
    "stamps_in_the_future": (
        {"image_stamp_offset": 2.0},
        PolicyStatus.STATE_INVALID_OBSERVATIONS,
        "s in the future (tolerance 0.050 s)",
    ),
    "camera_stops": (
        {"camera": False},
        PolicyStatus.STATE_STALE_OBSERVATIONS,
        f"no fresh message on {IMAGE_TOPIC}",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_observations_stop_the_stream_until_good_ones_return(bench: Bench, case: str):
    changes, state, text = CASES[case]
    if changes.get("image_stamp") == "backwards":
        changes = {**changes, "image_stamp": _backwards_stamps()}
    good = FeedSettings()
    bench.feed.update(**vars(good))
    begin = time.time()
    bench.trajectories.wait_for(1, timeout=30.0, after=begin)
    bench.statuses.wait_for_state(PolicyStatus.STATE_RUNNING, timeout=10.0)
    dropped_before = bench.statuses.latest().observations_dropped
    log_before = len(bench.node.output())

    fault_at = time.time()
    bench.feed.update(**changes)
    changed_at, _ = bench.statuses.wait_for_state(
        state, timeout=10.0, contains=text, after=fault_at
    )
    time.sleep(SILENCE_CHECK_S)
    late = bench.trajectories.since(changed_at + 0.3)
    assert late == [], f"{len(late)} chunk(s) published while the input was bad"
    assert bench.node.is_running()
    new_log = bench.node.output()[log_before:]
    assert new_log.count(text) == 1, f"not logged exactly once:\n{new_log}"
    assert bench.node.output().count(text) == 1
    latest = bench.statuses.latest()
    assert latest.state == state, latest.message
    if state == PolicyStatus.STATE_INVALID_OBSERVATIONS:
        # About 20 bad messages a second, each counted, none of them logged again.
        assert latest.observations_dropped >= dropped_before + 10

    recovered_at = time.time()
    bench.feed.update(**vars(good))
    bench.statuses.wait_for_state(PolicyStatus.STATE_RUNNING, timeout=20.0, after=recovered_at)
    bench.trajectories.wait_for(1, timeout=20.0, after=recovered_at)
