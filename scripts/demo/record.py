"""Recording session: the sim runs faster than real time, the scripted expert drives it and the
recorder writes one bag per sim episode, bridged from the sim's episode events."""

from __future__ import annotations

import json
import queue
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from std_msgs.msg import String

from dp_msgs.msg import EpisodeEvent
from dp_msgs.srv import ResetSimulation, StartEpisode, StopEpisode

from .processes import ProcessManager, StageError, wait_until
from .ros import RosSession

STAGE = "record"
COMMAND_TOPIC = "/joint_trajectory_controller/joint_trajectory"
GRIPPER_COMMAND_TOPIC = "/gripper_trajectory_controller/joint_trajectory"
LOWDIM_TOPICS = ["/joint_states", "/pusht/block_pose", COMMAND_TOPIC, "/pusht/coverage"]
IMAGE_TOPICS = ["/camera/image_raw", *LOWDIM_TOPICS]


@dataclass(frozen=True)
class RecordingTask:
    """What a recording session of one simulated task starts and records."""

    task: str  # the task name in the bags and episode events
    sim_node: tuple[str, str]  # (node name, module)
    expert_node: tuple[str, str]
    sim_parameters: dict[str, object]
    expert_parameters: dict[str, object]
    episode_topic: str
    reset_service: str
    topics: tuple[str, ...]
    command_topics: tuple[str, ...]
    max_episode_s: float  # simulated seconds of the longest episode


def pusht_recording(with_camera: bool) -> RecordingTask:
    return RecordingTask(
        task="push_t",
        sim_node=("pusht_sim", "dp_sim.sim_node"),
        expert_node=("pusht_expert", "dp_sim.expert_node"),
        sim_parameters={},
        expert_parameters={},
        episode_topic="/pusht/episode",
        reset_service="/pusht/reset",
        topics=tuple(IMAGE_TOPICS if with_camera else LOWDIM_TOPICS),
        command_topics=(COMMAND_TOPIC,),
        max_episode_s=30.0,
    )


def arm_recording(task: str, with_camera: bool) -> RecordingTask:
    """The simulated Panda on Lift or Can: both controllers' commands, both cameras if asked."""
    cameras = ["/front_camera/image_raw", "/wrist_camera/image_raw"] if with_camera else []
    return RecordingTask(
        task=task,
        sim_node=("arm_sim", "dp_sim.arm_sim_node"),
        expert_node=("arm_expert", "dp_sim.arm_expert_node"),
        sim_parameters={"task": task, "front_camera": with_camera, "wrist_camera": with_camera},
        expert_parameters={"task": task},
        episode_topic=f"/{task}/episode",
        reset_service=f"/{task}/reset",
        topics=(
            *cameras,
            "/joint_states",
            f"/{task}/object_pose",
            f"/{task}/eef_pose",
            f"/{task}/success",
            COMMAND_TOPIC,
            GRIPPER_COMMAND_TOPIC,
        ),
        command_topics=(COMMAND_TOPIC, GRIPPER_COMMAND_TOPIC),
        max_episode_s=20.0,
    )


def recording_task(task: str, with_camera: bool) -> RecordingTask:
    if task in ("pusht", "push_t"):
        return pusht_recording(with_camera)
    if task in ("lift", "can"):
        return arm_recording(task, with_camera)
    raise ValueError(f"unknown task {task!r}: pusht, lift or can")


@dataclass
class RecordedEpisode:
    bag: str
    sim_episode: str
    success: bool
    sim_steps: int
    joint_state_frames: int
    commands: int
    notes: str


def _notes_value(notes: str, key: str) -> str:
    # The sim's notes read "seed=.. steps=.. coverage=..".
    for part in notes.split():
        name, _, value = part.partition("=")
        if name == key:
            return value
    return ""


def _topic_counts(bag: Path) -> dict[str, int]:
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return {
        entry["topic_metadata"]["name"]: int(entry["message_count"])
        for entry in metadata["topics_with_message_count"]
    }


def record(
    pm: ProcessManager,
    bag_dir: Path,
    episodes: int,
    real_time_factor: float,
    seed: int,
    with_camera: bool,
    task: RecordingTask | None = None,
) -> list[RecordedEpisode]:
    """Records ``episodes`` expert episodes (seeds from ``seed``) into ``bag_dir``."""
    task = task or pusht_recording(with_camera)
    sim_name, sim_module = task.sim_node
    pm.start_node(
        sim_name,
        sim_module,
        {
            **task.sim_parameters,
            "real_time_factor": real_time_factor,
            "auto_reset": True,
            "seed": seed,
        },
    )
    expert_name, expert_module = task.expert_node
    pm.start_node(expert_name, expert_module, {**task.expert_parameters, "use_sim_time": True})
    pm.start_node(
        "recorder",
        "dp_recorder",
        {
            "topics": list(task.topics),
            "output_dir": str(bag_dir),
            "default_task": task.task,
            "use_sim_time": True,
            "robot_name": sim_name,
        },
    )
    events: queue.Queue[tuple[float, EpisodeEvent]] = queue.Queue()
    recorder_state: dict[str, object] = {}
    results: list[RecordedEpisode] = []
    with RosSession("demo_record_bridge", use_sim_time=True) as ros:
        ros.subscribe(EpisodeEvent, task.episode_topic, lambda m: events.put((time.monotonic(), m)))
        ros.subscribe(
            String, "/recorder/status", lambda m: recorder_state.update(json.loads(m.data))
        )
        # The recorder subscribes to a topic once it sees its publisher; an episode started
        # before that would miss its first frames.
        if not wait_until(
            lambda: bool(recorder_state) and not recorder_state.get("waiting_for_publishers"),
            timeout=60.0,
        ):
            pm.check_alive(STAGE)
            raise StageError(
                f"{STAGE}: the recorder did not subscribe to every topic within 60 s "
                f"(status {recorder_state}); see {pm.log_dir / 'recorder.log'}"
            )
        pm.check_alive(STAGE)
        # Episodes the sim ran before everything was up are not recorded: only events after
        # this reset count.
        armed_at = time.monotonic()
        reset = ResetSimulation.Request(seed=seed)
        if not ros.call(STAGE, ResetSimulation, task.reset_service, reset, timeout=30.0).success:
            raise StageError(f"{STAGE}: {task.reset_service} refused seed {seed}")
        recording = False
        # The longest episode lasts max_episode_s simulated seconds; a loaded machine is slower.
        episode_timeout = 3.0 * task.max_episode_s / real_time_factor + 30.0
        last_event = time.monotonic()
        while len(results) < episodes:
            try:
                received, event = events.get(timeout=1.0)
            except queue.Empty:
                pm.check_alive(STAGE)
                if time.monotonic() - last_event > episode_timeout:
                    raise StageError(
                        f"{STAGE}: no episode event for {episode_timeout:.0f} s; see "
                        f"{pm.log_dir / (sim_name + '.log')}"
                    ) from None
                continue
            last_event = time.monotonic()
            if received < armed_at:
                continue
            if event.event == EpisodeEvent.EVENT_START:
                request = StartEpisode.Request(task=task.task, notes=event.episode_name)
                response = ros.call(STAGE, StartEpisode, "/recorder/start_episode", request, 30.0)
                if not response.success:
                    raise StageError(f"{STAGE}: start_episode refused: {response.message}")
                recording = True
            elif recording and event.event in (EpisodeEvent.EVENT_STOP, EpisodeEvent.EVENT_DISCARD):
                discard = event.event == EpisodeEvent.EVENT_DISCARD
                request = StopEpisode.Request(
                    discard=discard, task_success=event.success, notes=event.notes
                )
                response = ros.call(STAGE, StopEpisode, "/recorder/stop_episode", request, 30.0)
                recording = False
                if not response.success:
                    raise StageError(f"{STAGE}: stop_episode failed: {response.message}")
                if discard:
                    continue
                bag = Path(response.bag_path)
                counts = _topic_counts(bag)
                results.append(
                    RecordedEpisode(
                        bag=str(bag),
                        sim_episode=event.episode_name,
                        success=event.success,
                        sim_steps=int(_notes_value(event.notes, "steps") or 0),
                        joint_state_frames=counts.get("/joint_states", 0),
                        commands=counts.get(task.command_topics[0], 0),
                        notes=event.notes,
                    )
                )
                print(
                    f"  [record] episode {len(results)}/{episodes}: {event.episode_name} "
                    f"success={event.success} steps={results[-1].sim_steps} "
                    f"frames={results[-1].joint_state_frames} commands={results[-1].commands}",
                    flush=True,
                )
    return results


def summarize(results: list[RecordedEpisode]) -> dict[str, object]:
    # A step publishes one joint state; steps+1 states (the final one included) is loss-free.
    lost = [max(0, r.sim_steps + 1 - r.joint_state_frames) for r in results]
    return {
        "episodes": len(results),
        "successes": sum(r.success for r in results),
        "sim_steps_total": sum(r.sim_steps for r in results),
        "frames_missing_total": sum(lost),
        "episodes_list": [asdict(r) for r in results],
    }
