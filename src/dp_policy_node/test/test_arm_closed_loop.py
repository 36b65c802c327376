"""The policy node driving the simulated Panda in closed loop, both as real processes over DDS.

``dp_sim.arm_sim_node`` (Lift, no cameras, real time) publishes the joint states, the hand's
and the cube's poses and follows the arm's and the gripper's trajectory controllers; the node
serves an untrained checkpoint with the shipped Lift low-dim data spec
(``dp_policy/config/lift_lowdim_data_spec.yaml``) to both controllers. The checkpoint's
normaliser is fitted on synthetic data around the arm's reset state, so that the sim's
observations pass the node's plausibility checks and the predictions stay near the reset pose;
untrained, its chunks are noise inside that range, which is all the loop needs: the node must
accept the sim's observations, the sim must accept the node's commands, and the arm must go
where it is told.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dp_policy_node_test_support import StatusWatcher, TimedCollector
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from dp_msgs.msg import ActionChunk, PolicyStatus
from dp_policy import (
    DiffusionPolicy,
    HorizonConfig,
    NoiseScheduleConfig,
    PolicyConfig,
    UNetConfig,
    save_checkpoint,
)
from dp_policy.data_spec import DataSpec, data_spec_metadata

pytestmark = pytest.mark.ros

SPEC_PATH = Path(__file__).resolve().parents[2] / "dp_policy/config/lift_lowdim_data_spec.yaml"
ARM_TOPIC = "/joint_trajectory_controller/joint_trajectory"
GRIPPER_TOPIC = "/gripper_trajectory_controller/joint_trajectory"
ARM_JOINTS = tuple(f"panda_joint{index}" for index in range(1, 8))
FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")
SEED = 0
NS = 1_000_000_000
TO, TP, TA = 2, 16, 8
# Training ranges around the reset state: observations wide (the sim's joints, hand and cube
# must pass observation_range_factor while the arm moves), actions narrower (an untrained
# model's chunks jump anywhere in their range: +-0.15 rad keeps the hand, 0.21 m above the
# table at reset, clear of it and of the cube).
JOINT_SPAN = 0.3  # rad, observed arm joints
POSITION_SPAN = 0.2  # m, hand and cube positions
ACTION_SPAN = 0.15  # rad, commanded arm joints
FINGER_ACTIONS = (0.002, 0.038)  # m, inside the fingers' travel 0..0.04 (no clamping)
# An untrained model's chunks are nearly bang-bang inside their range (measured offline on 200
# chunks: consecutive arm points differ by up to 0.2997 rad of the 0.3 rad range), so the default
# max_step_fraction 0.25 (or 0.5) would refuse them; and the first point, anywhere in the range,
# is compared with the measured position, which trails the previous chunk's commands (the arm
# overshoots its range by up to ~0.05 rad). 1.5 x the range admits every chunk inside the range;
# the position limits (range + limit_margin) still bound them.
MAX_STEP_FRACTION = 1.5
# Thresholds (rad), against the values measured in the runs:
MOVED = 0.05  # the arm left its reset pose by more than this (measured 0.19 rad); and the last
# chunk's final point is further than this from the reset pose (measured 0.15; offline, the
# final points of 200 chunks were 0.138 to 0.150 rad from it, max over the joints)
SETTLED = 0.01  # after the node stopped, the arm holds that point within this (measured 1e-4)


def lift_checkpoint(directory: Path, seed: int = SEED) -> tuple[Path, dict[str, np.ndarray]]:
    """An untrained policy with the Lift low-dim spec, normaliser fitted around the reset state
    of ``ArmRobot('lift').reset(seed)``; returns the checkpoint and that state."""
    from dp_sim.arm_robot import ArmRobot

    robot = ArmRobot("lift")
    try:
        state = robot.reset(seed)
    finally:
        robot.close()
    reset = {
        "arm": state.arm_position.copy(),
        "fingers": state.finger_position.copy(),
        "eef": state.eef_position.copy(),
        "object": state.object_position.copy(),
    }
    spec = DataSpec.from_yaml(SPEC_PATH)
    config = PolicyConfig(
        observation=spec.observation_spec(),
        action=spec.action_spec(),
        horizon=HorizonConfig(observation_horizon=TO, prediction_horizon=TP, action_horizon=TA),
        unet=UNetConfig(down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16),
        noise=NoiseScheduleConfig(num_inference_steps=3),
    )
    torch.manual_seed(seed)
    policy = DiffusionPolicy(config)
    generator = torch.Generator().manual_seed(seed)
    count = 256

    def around(centre: np.ndarray, span: float) -> torch.Tensor:
        noise = torch.rand((count, len(centre)), generator=generator, dtype=torch.float64)
        return (torch.as_tensor(centre)[None] + (noise * 2 - 1) * span).float()

    def uniform(low: float, high: float, dim: int) -> torch.Tensor:
        noise = torch.rand((count, dim), generator=generator)
        return low + noise * (high - low)

    quaternion = uniform(-1.0, 1.0, 4)  # any orientation of the cube: each component in [-1, 1]
    low_dim = {
        "joints": torch.cat([around(reset["arm"], JOINT_SPAN), uniform(0.0, 0.04, 2)], dim=1),
        "eef_position": around(reset["eef"], POSITION_SPAN),
        "object_pose": torch.cat([around(reset["object"], POSITION_SPAN), quaternion], dim=1),
    }
    actions = torch.cat([around(reset["arm"], ACTION_SPAN), uniform(*FINGER_ACTIONS, 1)], dim=1)
    for key, values in low_dim.items():
        assert values.shape[1] == spec.stream(key).size, key
    assert actions.shape[1] == spec.action_spec().dim == 8
    policy.fit_normalizer(actions, low_dim)
    path = save_checkpoint(policy, directory, extra_metadata=data_spec_metadata(spec))
    return path, reset


def nanoseconds(value) -> int:
    return value.sec * NS + value.nanosec


def times(trajectory: JointTrajectory) -> tuple[int, ...]:
    return tuple(nanoseconds(point.time_from_start) for point in trajectory.points)


def named(message: JointState, names: tuple[str, ...]) -> np.ndarray:
    return np.array([message.position[list(message.name).index(name)] for name in names])


def test_the_node_drives_the_simulated_arm_in_closed_loop(
    ros_processes, graph_probe, tmp_path
) -> None:
    checkpoint, reset = lift_checkpoint(tmp_path / "lift_lowdim")
    statuses = StatusWatcher(graph_probe)
    arm = TimedCollector(graph_probe, ARM_TOPIC, JointTrajectory)
    gripper = TimedCollector(graph_probe, GRIPPER_TOPIC, JointTrajectory)
    chunks = TimedCollector(graph_probe, "/dp/action_chunk", ActionChunk)
    # Reliable (the sim publishes reliably): every joint state, for the stamps of the chunks.
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    joints = TimedCollector(graph_probe, "/joint_states", JointState, reliable)

    sim = ros_processes.start_python_module(
        "arm_sim",
        "dp_sim.arm_sim_node",
        parameters={
            "task": "lift",
            "front_camera": False,
            "wrist_camera": False,
            "seed": SEED,
            "real_time_factor": 1.0,
            "max_episode_steps": 100_000,  # the episode must outlast the test
        },
    )
    node = ros_processes.start_python_module(
        "policy_node",
        "dp_policy_node",
        parameters={
            "checkpoint": str(checkpoint),
            "autostart": True,
            "cpu_threads": 1,
            "seed": 0,
            # A loaded 2-core machine may delay the sim's 20 Hz messages beyond the spec's 0.15 s.
            "max_observation_age": 0.5,
            "latency_margin": 0.1,
            "max_step_fraction": MAX_STEP_FRACTION,
        },
    )
    assert sim.wait_for_output("arm simulation ready", timeout=60.0), sim.output()
    first = joints.wait_for(1, timeout=30.0)[0]
    assert list(first.name) == [*ARM_JOINTS, *FINGER_JOINTS]
    # The sim starts at the state the checkpoint was built around (same seed, same reset).
    np.testing.assert_allclose(named(first, ARM_JOINTS), reset["arm"], atol=0.01)

    assert node.wait_for_output("policy node ready", timeout=90.0), node.output()
    _, running = statuses.wait_for_state(PolicyStatus.STATE_RUNNING, timeout=90.0)
    began = time.time()
    # Closed loop for a while: at least a dozen chunks to each controller.
    arm.wait_for(12, timeout=40.0, after=began)
    gripper.wait_for(12, timeout=20.0, after=began)
    # The sim's observations were all plausible and every prediction was accepted (a stall of
    # the loaded machine may make observations stale for a moment: that is not checked).
    refused = (
        PolicyStatus.STATE_INVALID_OBSERVATIONS,
        PolicyStatus.STATE_PREDICTION_REJECTED,
        PolicyStatus.STATE_ERROR,
    )
    assert not [s.message for _, s in statuses.snapshot() if s.state in refused]
    latest = statuses.latest()
    assert latest.predictions_rejected == 0 and latest.observations_dropped == 0, latest
    assert running.message.startswith(f"publishing chunks on {ARM_TOPIC}, {GRIPPER_TOPIC}")
    served_arm, served_gripper = arm.since(0.0), gripper.since(0.0)
    received = chunks.since(0.0)

    # SIGINT while active sends no stop: the sim finishes the last chunk and holds its end.
    assert node.stop() == 0, node.output()
    stopped = time.time()

    # One trajectory per controller per chunk, the same stamp and point times; at most the
    # chunk being sent at the signal is missing its twin.
    by_times = {times(message): message for message in served_gripper}
    pairs = [(a, by_times[times(a)]) for a in served_arm if times(a) in by_times]
    # (The wait above guarantees a dozen of each; the pairs may lack the last one.)
    served = min(len(served_arm), len(served_gripper))
    assert served >= 12 and len(pairs) >= served - 1, (len(served_arm), len(served_gripper))
    for arm_trajectory, gripper_trajectory in pairs:
        assert tuple(arm_trajectory.joint_names) == ARM_JOINTS
        assert tuple(gripper_trajectory.joint_names) == FINGER_JOINTS[:1]
        assert nanoseconds(arm_trajectory.header.stamp) == 0
        assert nanoseconds(gripper_trajectory.header.stamp) == 0
        point_times = times(arm_trajectory)
        assert 1 <= len(point_times) <= TA and point_times[0] > 0
        assert all(b > a for a, b in itertools.pairwise(point_times))
        arm_positions = np.array([point.positions for point in arm_trajectory.points])
        gripper_positions = np.array([point.positions for point in gripper_trajectory.points])
        assert arm_positions.shape == (len(point_times), 7)
        assert gripper_positions.shape == (len(point_times), 1)
        # Each controller gets its columns of the executed rows of one predicted chunk.
        executed = np.hstack([arm_positions, gripper_positions])
        assert any(
            np.array_equal(executed, rows[TO - 1 + TA - len(point_times) : TO - 1 + TA])
            for rows in (np.asarray(chunk.actions).reshape(TP, 8) for chunk in received)
        ), "a trajectory pair that is no chunk's executed rows"
    # Closed loop: every chunk answers joint states the sim published (the reference stream).
    joint_stamps = {nanoseconds(message.header.stamp) for message in joints.since(0.0)}
    assert len(received) >= 12
    for chunk in received:
        assert list(chunk.action_names) == [*ARM_JOINTS, FINGER_JOINTS[0]]
        assert nanoseconds(chunk.observation_stamp) in joint_stamps, chunk.observation_stamp
    # Inside the training range (the untrained model's samples are clipped to it).
    commanded = np.vstack([[point.positions for point in message.points] for message in served_arm])
    assert np.abs(commanded - reset["arm"]).max() <= ACTION_SPAN + 1e-4
    fingers = np.concatenate(
        [[point.positions[0] for point in message.points] for message in served_gripper]
    )
    assert FINGER_ACTIONS[0] - 1e-6 <= fingers.min() <= fingers.max() <= FINGER_ACTIONS[1] + 1e-6

    # The arm moved: the joint states left the reset pose while the node served.
    during = np.array([named(message, ARM_JOINTS) for message in joints.since(began)])
    moved = np.abs(during - reset["arm"]).max()
    assert moved > MOVED, f"the arm moved at most {moved:.4f} rad from its reset pose"

    # It went where it was told: after the last trajectory it holds that trajectory's final
    # point, which the reset pose was much further from.
    time.sleep(0.5)  # the last chunk (sent just before the signal) reaches the test as well
    final = arm.since(0.0)[-1]
    target = np.array(final.points[-1].positions)
    from_reset = np.abs(target - reset["arm"]).max()
    assert from_reset > MOVED, from_reset

    def error() -> float:
        newest = joints.since(stopped)
        return np.abs(named(newest[-1], ARM_JOINTS) - target).max() if newest else np.inf

    try:
        graph_probe.wait_until(lambda: error() < SETTLED, timeout=15.0, what="settling")
    except TimeoutError:
        pytest.fail(
            f"the arm did not reach the last commanded point: error {error():.4f} rad (the "
            f"reset pose was {from_reset:.4f} rad from it)"
        )
    print(
        f"closed loop: {len(served_arm)} arm / {len(served_gripper)} gripper trajectories, "
        f"{len(pairs)} pairs; largest departure from the reset pose {moved:.4f} rad; last "
        f"target {from_reset:.4f} rad from the reset pose, held within {error():.4f} rad; "
        f"inference p50 {latest.inference_latency_p50:.4f} s"
    )

    assert sim.is_running(), sim.output()
    assert "Rejected trajectory" not in sim.output(), sim.output()
    assert "Clamped trajectory" not in sim.output(), sim.output()
    assert sim.stop() == 0, sim.output()
