"""Open-loop replay of a built dataset of the simulated Panda arm (Lift).

Two expert episodes of Lift are recorded over ROS (``dp_sim.arm_sim_node`` in simulated time,
``dp_sim.arm_expert_node`` and dp_recorder as real processes on real DDS), built into a dataset
with the project's builder and the Lift low-dim data spec (two action streams: the arm's seven
joints and the gripper's finger), and replayed: a fresh ``ArmTask('lift')``, reset with the
recorded seed and stepped with the dataset's action of frame k at step k (split per controller
as offline evaluation splits it), must reproduce every observation of the dataset frame by
frame (joints, hand position, the cube's pose: the cube is lifted) and succeed at the recorded
last frame. The same replay with the actions shifted by one frame must not.

As in tests/test_dataset_replay.py (PushT), the recorder starts before the sim's reset and the
bag keeps the sim's own episode events (``/lift/episode``), which the builder cuts episodes by,
so that every dataset episode starts at its seed's initial state (less the frames before the
expert's first command, which the sim spent holding the reset's position).

About 25 s (45 s at most seen) on a 2-core machine with a CPU training run beside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
from dp_sim.tasks import ArmTask
from dp_testing.probe import GraphProbe
from dp_testing.processes import ProcessGraph

ROOT = Path(__file__).resolve().parents[1]
SPEC = DataSpec.from_dict(
    yaml.safe_load((ROOT / "src/dp_policy/config/lift_lowdim_data_spec.yaml").read_text())
)
TASK = "lift"
ARM_COMMAND_TOPIC = "/joint_trajectory_controller/joint_trajectory"
GRIPPER_COMMAND_TOPIC = "/gripper_trajectory_controller/joint_trajectory"
EPISODE_TOPIC = "/lift/episode"
TOPICS = [
    "/joint_states",
    "/lift/object_pose",
    "/lift/eef_pose",
    ARM_COMMAND_TOPIC,
    GRIPPER_COMMAND_TOPIC,
    EPISODE_TOPIC,
]
# Seeds of the recorded episodes (about 40 steps each), and two that are not recorded.
SEEDS = (100003, 100004)
INITIAL_SEED, WARM_UP_SEED = 98, 99
# Far above the ~40 steps the expert needs: an episode that fails is a failure of the test.
MAX_EPISODE_STEPS = 200
# Simulated time without commands before each recorded episode, longer than the action
# streams' max_age (0.3 s): the previous episode's last command is stale at the first frame.
QUIET_NS = 600_000_000
# Twice real time, on the sim's simulated clock: a step is 25 ms of wall time.
REAL_TIME_FACTOR = 2.0
# float64 all the way (bag, dataset cache, replay) and MuJoCo is deterministic: the replay is
# exact, not merely close.
TOLERANCE = 1e-9
# Measured on seeds 100003 and 100004 (a recording on a loaded 2-core machine): the replay's
# largest error over every observation value is 0.0 in both episodes. With the actions shifted
# by one frame (either way) the largest arm joint error is 0.0466 to 0.0471 rad and the cube's
# 0.0120 m (by two frames: 0.092 rad, 0.020 m); with a single frame's action replaced by the
# previous one (what a sim that missed one command applies) at most 0.022 rad and 0.0079 m.
# The thresholds lie below the one-frame shift's errors by more than a factor of two.
OFFSET_JOINT_ERROR_RAD = 0.02
OFFSET_OBJECT_ERROR_M = 0.005
# The cube rises 0.0251 m from the first frame to the last in both episodes (its centre rests
# at z 0.8185 m and Lift succeeds once it is above 0.84 m, 0.04 m over the table's 0.8 m).
LIFTED_M = 0.02


@dataclass
class BuiltDataset:
    """The dataset of the recorded bags, float64 as the builder wrote it."""

    report: dict[str, Any]
    episodes: list[dict[str, Any]]  # name, bag, fragment per dataset episode
    bounds: list[tuple[int, int]]
    frame_ns: np.ndarray
    arrays: dict[str, np.ndarray]

    def actions(self, index: int) -> np.ndarray:
        """Episode ``index``'s action vectors ``(F, 8)`` in the spec's order (arm, gripper)."""
        start, stop = self.bounds[index]
        slices = SPEC.action_slices()
        actions = np.full((stop - start, sum(s.size for s in SPEC.actions)), np.nan)
        for stream in SPEC.actions:
            actions[:, slices[stream.key]] = self.arrays[stream.key][start:stop]
        return actions


@dataclass
class BagEpisode:
    """What the test reads from a bag directly: the sim's START and STOP of the episode."""

    seed: int
    start_ns: int
    stop_steps: int  # the sim's step count at the STOP
    stop_success: bool
    state_ns: np.ndarray  # stamps of the joint states from the START on (one per sim step)


@dataclass
class ReplayedEpisode:
    """One dataset episode and what its open-loop replay gave, per frame."""

    name: str
    seed: int
    first_step: int  # the sim step of the episode's first frame
    frames: int  # frames of the dataset episode
    replayed: int  # frames compared (fewer when the replay's episode ended first)
    errors: dict[str, np.ndarray]  # observation key -> (replayed,) max over its values
    joint_error: np.ndarray  # (replayed,) max over the seven arm joints, rad
    object_error: np.ndarray  # (replayed,) max over the cube's x, y, z, m
    success: np.ndarray  # (replayed,) the replay's task success at each frame
    final_steps: int

    def worst(self) -> dict[str, float]:
        return {key: float(np.max(error)) for key, error in self.errors.items()}

    def first_mismatch(self) -> int | None:
        bad = np.zeros(self.replayed, dtype=bool)
        for error in self.errors.values():
            bad |= error > TOLERANCE
        indices = np.flatnonzero(bad)
        return int(indices[0]) if indices.size else None


# -- recording ------------------------------------------------------------------------------


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _record(root: Path, ros_environment: dict[str, str]) -> Path:
    """Records one bag per seed of SEEDS into ``root/bags`` and returns that directory."""
    bag_dir = root / "bags"
    graph = ProcessGraph(root / "node_logs", ros_environment)
    probe = GraphProbe("arm_replay_test_probe")
    try:
        events = probe.collect(
            EPISODE_TOPIC,
            EpisodeEvent,
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
        )
        joint_states = probe.collect_sensor_data("/joint_states", JointState)
        status = probe.collect("/recorder/status", String)
        graph.start_python_module(
            "arm_sim",
            "dp_sim.arm_sim_node",
            parameters={
                "task": TASK,
                "seed": INITIAL_SEED,
                "front_camera": False,
                "wrist_camera": False,
                "real_time_factor": REAL_TIME_FACTOR,
                "publish_clock": True,
                "max_episode_steps": MAX_EPISODE_STEPS,
            },
        )
        graph.start_python_module(
            "arm_expert",
            "dp_sim.arm_expert_node",
            parameters={"task": TASK, "use_sim_time": True},
        )
        graph.start_python_module(
            "recorder",
            "dp_recorder",
            parameters={
                "topics": TOPICS,
                "output_dir": str(bag_dir),
                "default_task": TASK,
                "use_sim_time": True,
            },
        )

        def recorder_ready() -> bool:
            return bool(status.messages) and not json.loads(status.messages[-1].data).get(
                "waiting_for_publishers"
            )

        # Every recorded topic has its publisher: the sim's and the expert's (both commands).
        probe.wait_until(recorder_ready, 90.0, "the recorder subscribed to every topic")
        # The expert (besides recorder and probe) must hear the events: it idles after a STOP.
        probe.wait_for_subscribers(EPISODE_TOPIC, 3, timeout=30.0)

        def run_episode(seed: int) -> EpisodeEvent:
            """Reset the sim to ``seed`` and wait for the episode's end event."""
            name = f"{TASK}_seed_{seed}"
            seen = len(events.messages)
            response = probe.call_service(
                ResetSimulation, "/lift/reset", ResetSimulation.Request(seed=seed), 30.0
            )
            assert response.success, response.message

            def ends() -> list[EpisodeEvent]:
                return [
                    e
                    for e in events.messages[seen:]
                    if e.episode_name == name and e.event != EpisodeEvent.EVENT_START
                ]

            probe.wait_until(lambda: bool(ends()), 60.0, f"the end of episode {name}")
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
                StartEpisode.Request(task=TASK, episode_name=f"arm_replay_seed_{seed}"),
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
        # Successful episodes only (the default): both recorded episodes must be.
        EpisodeSelection(),
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


def _notes(event: Any) -> dict[str, str]:
    return dict(part.partition("=")[::2] for part in event.notes.split())


def _read_bag(bag: Path) -> BagEpisode:
    starts: list[Any] = []
    stops: list[Any] = []
    stamps: list[int] = []
    with AnyReader([bag]) as reader:
        for connection, _, raw in reader.messages():
            if connection.topic not in (EPISODE_TOPIC, "/joint_states"):
                continue
            message = reader.deserialize(raw, connection.msgtype)
            if connection.topic == "/joint_states":
                stamps.append(_stamp_ns(message.header.stamp))
            elif message.event == EpisodeEvent.EVENT_START:
                starts.append(message)
            else:
                stops.append(message)
    assert len(starts) == 1, f"{bag}: {len(starts)} START events of the sim"
    assert len(stops) == 1 and stops[0].event == EpisodeEvent.EVENT_STOP, f"{bag}: {stops}"
    start_ns = _stamp_ns(starts[0].header.stamp)
    state_ns = np.array(sorted(stamp for stamp in stamps if stamp >= start_ns))
    stop_notes = _notes(stops[0])
    return BagEpisode(
        int(_notes(starts[0])["seed"]),
        start_ns,
        int(stop_notes["steps"]),
        bool(stops[0].success),
        state_ns,
    )


# -- replay ---------------------------------------------------------------------------------


class Replayer:
    """One ArmTask and its binding to the spec, as offline evaluation drives the sim."""

    def __init__(self) -> None:
        self.task = ArmTask(TASK, max_steps=MAX_EPISODE_STEPS)
        self.binding = TaskBinding(SPEC, self.task)

    def close(self) -> None:
        self.task.close()

    def replay(
        self, dataset: BuiltDataset, index: int, bag_episode: BagEpisode, shift: int = 0
    ) -> ReplayedEpisode:
        """Replays dataset episode ``index`` open loop, with the action of frame k + ``shift``
        at frame k (clamped to the episode), and compares every frame with the dataset."""
        start, stop = dataset.bounds[index]
        frames = stop - start
        frame_ns = dataset.frame_ns[start:stop]
        steps = np.searchsorted(bag_episode.state_ns, frame_ns)
        assert np.array_equal(bag_episode.state_ns[steps], frame_ns), "frames are not sim states"
        assert np.array_equal(steps, steps[0] + np.arange(frames)), f"steps skipped: {steps}"
        actions = dataset.actions(index)
        task, binding = self.task, self.binding
        task.reset(bag_episode.seed)
        # Until the first command the sim's controllers hold the reset's positions; the builder
        # leaves those frames out (no command in force).
        hold = task.held_setpoints()
        for _ in range(int(steps[0])):
            task.step(hold)
        errors = {key: np.zeros(frames) for key in binding.keys}
        joint_error, object_error = np.zeros(frames), np.zeros(frames)
        success = np.zeros(frames, dtype=bool)
        replayed = 0
        arm_joints = slice(0, 7)
        for k in range(frames):
            observed = binding.observe()
            for key in binding.keys:
                errors[key][k] = np.abs(observed[key] - dataset.arrays[key][start + k]).max()
            joint_error[k] = np.abs(
                observed["joints"][arm_joints] - dataset.arrays["joints"][start + k, arm_joints]
            ).max()
            object_error[k] = np.abs(
                observed["object_pose"][:3] - dataset.arrays["object_pose"][start + k, :3]
            ).max()
            success[k] = task.success
            replayed = k + 1
            if k + 1 == frames or task.done:
                break
            action = actions[int(np.clip(k + shift, 0, frames - 1))]
            task.step(binding.split(binding.command_vector(action)))
        return ReplayedEpisode(
            dataset.episodes[index]["name"],
            bag_episode.seed,
            int(steps[0]),
            frames,
            replayed,
            {key: error[:replayed] for key, error in errors.items()},
            joint_error[:replayed],
            object_error[:replayed],
            success[:replayed],
            task.steps,
        )


# -- fixtures -------------------------------------------------------------------------------


@dataclass
class Recorded:
    bag_dir: Path
    dataset: BuiltDataset
    bag_episodes: dict[str, BagEpisode]  # bag name -> what the test read from it


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, ros_environment: dict[str, str]) -> Recorded:
    root = tmp_path_factory.mktemp("arm_replay")
    bag_dir = _record(root, ros_environment)
    dataset = _build(bag_dir, root / "cache")
    bag_episodes = {bag.name: _read_bag(bag) for bag in sorted(bag_dir.iterdir())}
    return Recorded(bag_dir, dataset, bag_episodes)


@pytest.fixture(scope="module")
def replayer() -> Iterator[Replayer]:
    replayer = Replayer()
    yield replayer
    replayer.close()


def _replays(recorded: Recorded, replayer: Replayer, shift: int) -> list[ReplayedEpisode]:
    return [
        replayer.replay(recorded.dataset, index, recorded.bag_episodes[episode["bag"]], shift)
        for index, episode in enumerate(recorded.dataset.episodes)
    ]


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.ros
def test_every_recorded_episode_is_one_whole_successful_dataset_episode(
    recorded: Recorded,
) -> None:
    assert {stream.topic for stream in SPEC.streams} <= set(TOPICS)
    assert [stream.key for stream in SPEC.actions] == ["arm", "gripper"]
    report = recorded.dataset.report
    used = [e for e in report["episodes"] if not e.get("skipped")]
    assert sorted(e["name"] for e in used) == sorted(f"{TASK}_seed_{s}" for s in SEEDS), report
    bag_episodes = {e.seed: e for e in recorded.bag_episodes.values()}
    assert sorted(bag_episodes) == sorted(SEEDS)
    for episode in used:
        alignment = episode["alignment"]
        bag_episode = recorded.bag_episodes[episode["bag"]]
        assert bag_episode.stop_success and episode["outcome"] == "success", episode
        # No gap; the frames before the expert's first command dropped (the reset's hold: the
        # first frame, the second too when the expert heard the first state before the START
        # or answered it late; measured: one frame in 12 of 12 episodes); the last frame is the
        # state at the STOP, the first one where the cube is up.
        assert episode["fragments"] == 1 and not alignment["gaps"], episode
        assert 1 <= alignment["trimmed_start"] <= 3 and alignment["trimmed_end"] == 0, episode
        assert episode["frames"] == bag_episode.stop_steps + 1 - alignment["trimmed_start"], (
            episode,
            bag_episode.stop_steps,
        )
    for index, (start, stop) in enumerate(recorded.dataset.bounds):
        z = recorded.dataset.arrays["object_pose"][start:stop, 2]
        assert z[-1] - z[0] > LIFTED_M, (recorded.dataset.episodes[index]["name"], z[0], z[-1])
        # Both controllers were commanded: the gripper closed on the cube.
        gripper = recorded.dataset.arrays["gripper"][start:stop, 0]
        assert gripper.max() - gripper.min() > 0.01, gripper


@pytest.mark.ros
def test_open_loop_replay_reproduces_the_recording(recorded: Recorded, replayer: Replayer) -> None:
    replays = _replays(recorded, replayer, 0)
    assert sorted(replayed.seed for replayed in replays) == sorted(SEEDS)
    for replayed in replays:
        bag_episode = next(e for e in recorded.bag_episodes.values() if e.seed == replayed.seed)
        first = replayed.first_mismatch()
        detail = ""
        if first is not None:
            window = slice(max(0, first - 1), first + 3)
            detail = (
                f": first mismatch at frame {first} (sim step {replayed.first_step + first}), "
                f"joint errors there {replayed.joint_error[window].tolist()} rad, "
                f"cube errors {replayed.object_error[window].tolist()} m"
            )
        assert first is None and replayed.replayed == replayed.frames, (
            f"{replayed.name} (seed {replayed.seed}, {replayed.frames} frames, "
            f"{replayed.replayed} replayed) does not replay: worst errors {replayed.worst()}"
            f"{detail}"
        )
        # Success exactly at the recorded last frame, after the recorded number of steps.
        assert replayed.success[-1] and not replayed.success[:-1].any(), replayed.success
        assert replayed.final_steps == bag_episode.stop_steps


@pytest.mark.ros
@pytest.mark.parametrize("shift", [-1, 1])
def test_actions_shifted_by_one_frame_do_not_replay(
    recorded: Recorded, replayer: Replayer, shift: int
) -> None:
    for replayed in _replays(recorded, replayer, shift):
        what = (replayed.name, shift, replayed.worst())
        # The arm goes elsewhere at once, and so does the cube once it is grasped.
        assert replayed.joint_error.max() > OFFSET_JOINT_ERROR_RAD, what
        assert replayed.object_error.max() > OFFSET_OBJECT_ERROR_M, what
        # Nor does the cube come up at the recorded step: measured, actions a frame early
        # succeed a frame early, a frame late they have not succeeded at the last frame.
        at_the_recorded_step = (
            replayed.replayed == replayed.frames
            and replayed.success[-1]
            and not replayed.success[:-1].any()
        )
        assert not at_the_recorded_step, what
