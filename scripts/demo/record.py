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
LOWDIM_TOPICS = ["/joint_states", "/pusht/block_pose", COMMAND_TOPIC, "/pusht/coverage"]
IMAGE_TOPICS = ["/camera/image_raw", *LOWDIM_TOPICS]


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
) -> list[RecordedEpisode]:
    """Records ``episodes`` expert episodes (seeds from ``seed``) into ``bag_dir``."""
    topics = IMAGE_TOPICS if with_camera else LOWDIM_TOPICS
    pm.start_node(
        "pusht_sim",
        "dp_sim.sim_node",
        {"real_time_factor": real_time_factor, "auto_reset": True, "seed": seed},
    )
    pm.start_node("pusht_expert", "dp_sim.expert_node", {"use_sim_time": True})
    pm.start_node(
        "recorder",
        "dp_recorder",
        {
            "topics": topics,
            "output_dir": str(bag_dir),
            "default_task": "push_t",
            "use_sim_time": True,
            "robot_name": "pusht_sim",
        },
    )
    events: queue.Queue[tuple[float, EpisodeEvent]] = queue.Queue()
    recorder_state: dict[str, object] = {}
    results: list[RecordedEpisode] = []
    with RosSession("demo_record_bridge", use_sim_time=True) as ros:
        ros.subscribe(EpisodeEvent, "/pusht/episode", lambda m: events.put((time.monotonic(), m)))
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
        if not ros.call(STAGE, ResetSimulation, "/pusht/reset", reset, timeout=30.0).success:
            raise StageError(f"{STAGE}: /pusht/reset refused seed {seed}")
        recording = False
        # The longest episode is 300 simulated steps of 0.1 s; a loaded machine runs slower.
        episode_timeout = 3.0 * 30.0 / real_time_factor + 30.0
        last_event = time.monotonic()
        while len(results) < episodes:
            try:
                received, event = events.get(timeout=1.0)
            except queue.Empty:
                pm.check_alive(STAGE)
                if time.monotonic() - last_event > episode_timeout:
                    raise StageError(
                        f"{STAGE}: no episode event for {episode_timeout:.0f} s; see "
                        f"{pm.log_dir / 'pusht_sim.log'}"
                    ) from None
                continue
            last_event = time.monotonic()
            if received < armed_at:
                continue
            if event.event == EpisodeEvent.EVENT_START:
                request = StartEpisode.Request(task="push_t", notes=event.episode_name)
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
                        commands=counts.get(COMMAND_TOPIC, 0),
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
