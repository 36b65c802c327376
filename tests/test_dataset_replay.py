"""Open-loop replay of the built dataset in the simulation.

A few expert episodes of the simulated PushT robot are recorded over ROS (sim, scripted expert
and recorder as real processes on real DDS), built into a dataset with the project's builder
and the low-dim data spec, and replayed: a fresh PushTRobot, reset with the recorded seed and
stepped with the dataset's action of frame k at step k, must reproduce the recorded pusher
position, T pose and coverage frame by frame. An offset between observation and action times
shows up here at once, and the same replay with the actions shifted by one frame must fail.

The recording differs from the demo's (scripts/demo/record.py) in two respects. The recorder is
started before the sim's reset and the bag keeps the sim's own episode events
(``/pusht/episode``), which the builder cuts episodes by, so that every episode in the dataset
starts at the seed's initial state. It is done twice: in real time on the wall clock, and 4x
faster than real time with the sim's simulated clock (the demo records at 8x).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from dp_msgs.msg import EpisodeEvent
from dp_msgs.srv import ResetSimulation, StartEpisode, StopEpisode
from dp_policy.data_spec import DataSpec
from dp_policy.datasets.cache import DatasetCache
from dp_policy.datasets.episodes import EpisodeSelection
from dp_policy.datasets.replay_store import FRAME_TIME_ARRAY
from dp_policy.evaluation.task_binding import TaskBinding
from dp_sim.mapping import (
    JOINT_NAMES,
    joints_to_pixels,
)
from dp_sim.pusht_robot import PushTRobot, TaskState
from dp_sim.pusht_task import PushTTask, pusht_messages
from dp_testing.probe import GraphProbe
from dp_testing.processes import ProcessGraph

ROOT = Path(__file__).resolve().parents[1]
SPEC = DataSpec.from_dict(
    yaml.safe_load((ROOT / "src/dp_policy/config/pusht_lowdim_data_spec.yaml").read_text())
)
COMMAND_TOPIC = "/joint_trajectory_controller/joint_trajectory"
EPISODE_TOPIC = "/pusht/episode"
COVERAGE_TOPIC = "/pusht/coverage"
TOPICS = ["/joint_states", "/pusht/block_pose", COMMAND_TOPIC, COVERAGE_TOPIC, EPISODE_TOPIC]
DT_NS = round(SPEC.dt * 1e9)
# Seeds where the expert reaches the T within a few seconds and pushes it a long way (coverage
# from 0 to about 0.3 in 60 steps): the replay must depend on the actions, the T's motion too.
SEEDS = (2, 3)
MAX_EPISODE_STEPS = 60
INITIAL_SEED, WARM_UP_SEED = 98, 99
# Simulated time without commands before each recorded episode, longer than the spec's max_age:
# the previous episode's last command must be stale at the new episode's first frame.
QUIET_NS = 500_000_000
# float64 all the way (bag, dataset cache, replay): the replay is exact, not merely close.
TOLERANCE = 1e-9
# One frame of offset moves the pusher by up to a step's travel (25 px at the expert's speed).
OFFSET_ERROR_PX = 1.0
# Faster than real time, with a simulated clock, as scripts/demo records (at 8x). At 8x a step
# is 12.5 ms of wall time, and on a loaded 2-core CI machine the scripted expert now and then
# answers a whole episode's first dozen steps too late (seen in a clean-clone CI run: 37 of 64
# commands), which cuts the first fragment this test replays; 4x leaves the expert 25 ms and
# still runs every step on the simulated clock that the recorder has to read right.
SIM_CLOCK_REAL_TIME_FACTOR = 4.0


@dataclass
class ReplayedEpisode:
    """One dataset episode and what its open-loop replay gave, per frame."""

    name: str
    seed: int
    first_step: int  # the sim step of the episode's first frame
    frames: int
    agent_error_px: np.ndarray  # (F,) max over x, y
    block_error: np.ndarray  # (F,) max over the spec's block_pose values
    coverage_error: np.ndarray  # (F,)

    def worst(self) -> dict[str, float]:
        return {
            "agent_px": float(self.agent_error_px.max()),
            "block": float(self.block_error.max()),
            "coverage": float(self.coverage_error.max()),
        }

    def first_mismatch(self) -> int | None:
        bad = np.flatnonzero(
            (self.agent_error_px > TOLERANCE)
            | (self.block_error > TOLERANCE)
            | (self.coverage_error > TOLERANCE)
        )
        return int(bad[0]) if bad.size else None


@dataclass
class BuiltDataset:
    """The dataset of the recorded bags, float64 as the builder wrote it."""

    report: dict[str, Any]
    episodes: list[dict[str, Any]]  # name, bag, fragment per dataset episode
    bounds: list[tuple[int, int]]
    frame_ns: np.ndarray
    arrays: dict[str, np.ndarray]


# -- recording ------------------------------------------------------------------------------


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _record(root: Path, ros_environment: dict[str, str], real_time_factor: float) -> Path:
    """Records one bag per seed of SEEDS into ``root/bags`` and returns that directory."""
    bag_dir = root / "bags"
    sim_time = real_time_factor != 1.0
    graph = ProcessGraph(root / "node_logs", ros_environment)
    probe = GraphProbe("replay_test_probe")
    try:
        events = probe.collect(
            EPISODE_TOPIC,
            EpisodeEvent,
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
        )
        joint_states = probe.collect_sensor_data("/joint_states", JointState)
        status = probe.collect("/recorder/status", String)
        graph.start_python_module(
            "pusht_sim",
            "dp_sim.sim_node",
            parameters={
                "seed": INITIAL_SEED,
                "real_time_factor": real_time_factor,
                "max_episode_steps": MAX_EPISODE_STEPS,
            },
        )
        graph.start_python_module(
            "pusht_expert", "dp_sim.expert_node", parameters={"use_sim_time": sim_time}
        )
        graph.start_python_module(
            "recorder",
            "dp_recorder",
            parameters={
                "topics": TOPICS,
                "output_dir": str(bag_dir),
                "default_task": "push_t",
                "use_sim_time": sim_time,
            },
        )

        def recorder_ready() -> bool:
            return bool(status.messages) and not json.loads(status.messages[-1].data).get(
                "waiting_for_publishers"
            )

        probe.wait_until(recorder_ready, 60.0, "the recorder subscribed to every topic")
        # The expert (besides recorder and probe) must hear the events: it idles after a STOP.
        probe.wait_for_subscribers(EPISODE_TOPIC, 3, timeout=30.0)

        def run_episode(seed: int) -> EpisodeEvent:
            """Reset the sim to ``seed`` and wait for the episode's end event."""
            name = f"push_t_seed_{seed}"
            seen = len(events.messages)
            response = probe.call_service(
                ResetSimulation, "/pusht/reset", ResetSimulation.Request(seed=seed), 30.0
            )
            assert response.success, response.message

            def ends() -> list[EpisodeEvent]:
                return [
                    e
                    for e in events.messages[seen:]
                    if e.episode_name == name and e.event != EpisodeEvent.EVENT_START
                ]

            probe.wait_until(lambda: bool(ends()), 120.0, f"the end of episode {name}")
            return ends()[0]

        # An unrecorded episode to its end: whatever the expert missed while it started, it is
        # idle afterwards, so no command from before a reset reaches the next episode.
        last_end = run_episode(WARM_UP_SEED)
        for seed in SEEDS:
            quiet_until = _stamp_ns(last_end.header.stamp) + QUIET_NS
            probe.wait_until(
                lambda until=quiet_until: (
                    bool(joint_states.messages)
                    and _stamp_ns(joint_states.messages[-1].header.stamp) > until
                ),
                30.0,
                "quiet time before the episode",
            )
            # Recording starts before the reset: the bag holds the episode from its START on.
            started = probe.call_service(
                StartEpisode,
                "/recorder/start_episode",
                StartEpisode.Request(task="push_t", episode_name=f"replay_seed_{seed}"),
                30.0,
            )
            assert started.success, started.message
            last_end = run_episode(seed)
            assert last_end.event == EpisodeEvent.EVENT_STOP, last_end
            stopped = probe.call_service(
                StopEpisode,
                "/recorder/stop_episode",
                StopEpisode.Request(task_success=last_end.success, notes=last_end.notes),
                30.0,
            )
            assert stopped.success, stopped.message
    finally:
        probe.close()
        graph.stop_all()
        # pytest shows a fixture's output when it fails: the nodes' logs then say why.
        print(graph.report())
    return bag_dir


# -- reading back ---------------------------------------------------------------------------


def _build(bag_dir: Path, cache_dir: Path) -> BuiltDataset:
    """The project's builder on the bags, episodes cut by the sim's own events."""
    built = DatasetCache(cache_dir).get_or_build(
        [bag_dir],
        SPEC,
        # Episodes end at the step limit: failures, which the builder leaves out by default.
        EpisodeSelection(include_failed=True),
        episode_topic=EPISODE_TOPIC,
        show_progress=False,
    )
    group = zarr.open_group(str(built.path), mode="r")
    ends = [int(end) for end in group["meta/episode_ends"][:]]
    return BuiltDataset(
        report=built.report,
        episodes=list(group.attrs["episodes"]),
        bounds=list(zip([0, *ends[:-1]], ends, strict=True)),
        frame_ns=np.asarray(group[f"meta/{FRAME_TIME_ARRAY}"][:]),
        # The cache keeps float64; open_replay's float32 rows would make the replay merely close.
        arrays={s.key: np.asarray(group[f"data/{s.key}"][:], np.float64) for s in SPEC.streams},
    )


@dataclass
class BagEpisode:
    """What the test reads from a bag directly: the seed and the coverage side channel."""

    seed: int
    start_ns: int
    state_ns: np.ndarray  # stamps of the joint states from the START on (one per sim step)
    coverage: dict[int, float]  # joint-state stamp -> coverage published in the same tick


def _read_bag(bag: Path) -> BagEpisode:
    starts: list[Any] = []
    states: list[tuple[int, int]] = []  # (log time, stamp)
    coverage: list[tuple[int, float]] = []  # (log time, value)
    with AnyReader([bag]) as reader:
        for connection, log_ns, raw in reader.messages():
            if connection.topic not in (EPISODE_TOPIC, "/joint_states", COVERAGE_TOPIC):
                continue
            message = reader.deserialize(raw, connection.msgtype)
            if connection.topic == EPISODE_TOPIC and message.event == 1:
                starts.append(message)
            elif connection.topic == "/joint_states":
                states.append((log_ns, _stamp_ns(message.header.stamp)))
            elif connection.topic == COVERAGE_TOPIC:
                coverage.append((log_ns, float(message.data)))
    assert len(starts) == 1, f"{bag}: {len(starts)} START events of the sim"
    notes = dict(part.partition("=")[::2] for part in starts[-1].notes.split())
    start_ns = _stamp_ns(starts[-1].header.stamp)
    states.sort(key=lambda state: state[1])
    # std_msgs/Float64 has no stamp: pair the coverage messages with the joint states in
    # order, at the index offset where their receive times agree (the sim publishes both
    # in the same tick, one of each per tick).
    state_log = np.array([log for log, _ in states])
    cover_log = np.array([log for log, _ in coverage])

    def disagreement(offset: int) -> float:
        i = np.arange(max(0, -offset), min(len(coverage), len(states) - offset))
        return float(np.median(np.abs(cover_log[i] - state_log[i + offset])))

    offsets = sorted(range(-3, 4), key=disagreement)
    assert disagreement(offsets[0]) < DT_NS / 4 <= disagreement(offsets[1]), (
        f"{bag}: coverage cannot be paired with the joint states"
    )
    offset = offsets[0]
    paired = {
        states[i + offset][1]: value
        for i, (_, value) in enumerate(coverage)
        if 0 <= i + offset < len(states)
    }
    state_ns = np.array([stamp for _, stamp in states if stamp >= start_ns])
    return BagEpisode(int(notes["seed"]), start_ns, state_ns, paired)


# -- replay ---------------------------------------------------------------------------------


@functools.cache
def _binding() -> TaskBinding:
    """Offline evaluation's view of the sim (the same conversions as the node's and the
    builder's): the spec bound to the PushT task."""
    return TaskBinding(SPEC, PushTTask())


def _observed(state: TaskState) -> dict[str, np.ndarray]:
    """The spec's observation values of a sim state as offline evaluation feeds them to the
    policy (``TaskBinding`` over the sim node's messages): equal to the dataset's rows, so
    training and evaluation see the same numbers for the same state."""
    return _binding().observe(pusht_messages(state))


def _replay(
    dataset: BuiltDataset, index: int, bag_episode: BagEpisode, shift: int = 0
) -> ReplayedEpisode:
    """Replays dataset episode ``index`` open loop, with the action of frame k + ``shift`` at
    frame k (clamped to the episode), and compares every frame with the recording."""
    start, stop = dataset.bounds[index]
    frame_ns = dataset.frame_ns[start:stop]
    actions = dataset.arrays["action"][start:stop]
    steps = np.searchsorted(bag_episode.state_ns, frame_ns)
    assert np.array_equal(bag_episode.state_ns[steps], frame_ns), "frames are not sim states"
    assert np.array_equal(steps, steps[0] + np.arange(len(steps))), f"steps skipped: {steps}"
    robot = PushTRobot(max_episode_steps=MAX_EPISODE_STEPS)
    try:
        state = robot.reset(bag_episode.seed)
        # A reset makes the sim's controller hold the pusher where it is until the first
        # command; the builder leaves such frames out (no command in force): the first, and
        # in simulated time the second too when the expert hears the first observation before
        # the START.
        assert steps[0] <= 2, f"the episode starts at step {steps[0]}"
        for _ in range(steps[0]):
            state = robot.step(state.agent_position)
        frames = len(frame_ns)
        agent_error, block_error, coverage_error = (np.zeros(frames) for _ in range(3))
        for k in range(frames):
            observed = _observed(state)
            agent_error[k] = np.abs(
                joints_to_pixels(observed["agent_pos"])
                - joints_to_pixels(dataset.arrays["agent_pos"][start + k])
            ).max()
            block_error[k] = np.abs(
                observed["block_pose"] - dataset.arrays["block_pose"][start + k]
            ).max()
            coverage_error[k] = abs(state.coverage - bag_episode.coverage[int(frame_ns[k])])
            if k + 1 < frames:
                action = actions[int(np.clip(k + shift, 0, frames - 1))]
                state = robot.step(joints_to_pixels(action))
    finally:
        robot.close()
    return ReplayedEpisode(
        dataset.episodes[index]["name"],
        bag_episode.seed,
        int(steps[0]),
        frames,
        agent_error,
        block_error,
        coverage_error,
    )


# -- tests ----------------------------------------------------------------------------------


@dataclass
class Recorded:
    bag_dir: Path
    dataset: BuiltDataset
    bag_episodes: dict[str, BagEpisode]  # bag name -> what the test read from it


def _recorded(
    tmp_path_factory: pytest.TempPathFactory,
    ros_environment: dict[str, str],
    real_time_factor: float,
) -> Recorded:
    root = tmp_path_factory.mktemp(f"replay_rtf{real_time_factor:g}")
    bag_dir = _record(root, ros_environment, real_time_factor)
    dataset = _build(bag_dir, root / "cache")
    bag_episodes = {bag.name: _read_bag(bag) for bag in sorted(bag_dir.iterdir())}
    return Recorded(bag_dir, dataset, bag_episodes)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, ros_environment: dict[str, str]) -> Recorded:
    """Episodes recorded in real time: the sim, the expert and the recorder on the wall clock."""
    return _recorded(tmp_path_factory, ros_environment, 1.0)


def _replays(
    recorded: Recorded, shift: int, first_fragments_only: bool = False
) -> list[ReplayedEpisode]:
    """Replays every dataset episode (or only those that start at their seed's reset)."""
    replays = []
    for index, episode in enumerate(recorded.dataset.episodes):
        bag_episode = recorded.bag_episodes[episode["bag"]]
        if first_fragments_only:
            start = int(recorded.dataset.frame_ns[recorded.dataset.bounds[index][0]])
            if int(np.searchsorted(bag_episode.state_ns, start)) > 2:
                continue  # a fragment after a gap: no known state to replay it from
        replays.append(_replay(recorded.dataset, index, bag_episode, shift))
    return replays


def _check_whole_episodes(recorded: Recorded) -> None:
    report = recorded.dataset.report
    used = [e for e in report["episodes"] if not e.get("skipped")]
    assert sorted(e["name"] for e in used) == sorted(f"push_t_seed_{s}" for s in SEEDS), report
    for episode in used:
        alignment = episode["alignment"]
        # No gap; at most the first two frames dropped (the reset's hold, no command yet).
        assert episode["fragments"] == 1 and not alignment["gaps"], episode
        assert alignment["trimmed_start"] <= 2 and alignment["trimmed_end"] == 0, episode
        assert episode["frames"] >= MAX_EPISODE_STEPS, episode
    assert sorted(e.seed for e in recorded.bag_episodes.values()) == sorted(SEEDS)


def _check_replays(recorded: Recorded, first_fragments_only: bool = False) -> None:
    replays = _replays(recorded, 0, first_fragments_only)
    assert sorted(replayed.seed for replayed in replays) == sorted(SEEDS)
    for replayed in replays:
        assert replayed.frames >= MAX_EPISODE_STEPS // 3, replayed.name
        first = replayed.first_mismatch()
        detail = ""
        if first is not None:
            window = slice(max(0, first - 1), first + 3)
            detail = (
                f": first mismatch at frame {first} (sim step {replayed.first_step + first}), "
                f"pusher errors there {np.round(replayed.agent_error_px[window], 3).tolist()} px"
            )
        assert first is None, (
            f"{replayed.name} (seed {replayed.seed}, {replayed.frames} frames) does not replay: "
            f"worst errors {replayed.worst()}{detail}"
        )


@pytest.mark.ros
def test_every_recorded_episode_is_one_whole_dataset_episode(recorded: Recorded) -> None:
    assert tuple(SPEC.stream("agent_pos").joints) == JOINT_NAMES
    _check_whole_episodes(recorded)


@pytest.mark.ros
def test_open_loop_replay_reproduces_the_recording(recorded: Recorded) -> None:
    _check_replays(recorded)


@pytest.mark.ros
@pytest.mark.parametrize("shift", [-1, 1])
def test_actions_shifted_by_one_frame_do_not_replay(recorded: Recorded, shift: int) -> None:
    for replayed in _replays(recorded, shift):
        # The pusher goes elsewhere at once; so does the T once it is pushed.
        assert replayed.agent_error_px.max() > OFFSET_ERROR_PX, (replayed.name, replayed.worst())
        assert replayed.block_error.max() > 100 * TOLERANCE, (replayed.name, replayed.worst())


# The demo records at 8x with a simulated clock. Before dp_sim's sim node took pending commands
# at the start of each step and moved its clock past the step before publishing the
# observations, this failed: of 120 steps, the builder's action was the set point that the sim
# applied at 29 (the recorder stamped a command that arrived while the sim stepped from t with
# t, and a sim behind schedule ran its timer before taking pending commands).
@pytest.mark.ros
def test_a_recording_in_simulated_time_replays_too(
    tmp_path_factory: pytest.TempPathFactory, ros_environment: dict[str, str]
) -> None:
    recorded = _recorded(tmp_path_factory, ros_environment, SIM_CLOCK_REAL_TIME_FACTOR)
    # Faster than real time on two busy cores timing is not exact: the expert now and then
    # answers too late or hears the first observation before the START (a frame without a
    # fresh command is a gap, and a fragment after it has no known state to replay from). So
    # this measures: replayed from each seed's reset, the frames that match exactly up to the
    # first mismatch. Before the sim's fix the first mismatch came at frame 1 to 3 (at most 6
    # frames in all); after it, at 8x, 120 of 120 on a quiet machine and 22 with a second 8x
    # recording running beside the test. The recorder now stamps by reception (dp_recorder's
    # clock_trace), so a recorder that takes /clock late no longer shifts a frame.
    replays = _replays(recorded, 0, first_fragments_only=True)
    exact = sum(
        replayed.frames if replayed.first_mismatch() is None else replayed.first_mismatch()
        for replayed in replays
    )
    details = [(r.name, r.first_step, r.frames, r.first_mismatch()) for r in replays]
    assert exact >= 20, details
