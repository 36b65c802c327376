"""Online check: the inference node serves the trained checkpoint to the simulated robot for a
few episodes; each episode's highest score (PushT: coverage; the arm: success) and outcome come
from the sim's own topics."""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64
from trajectory_msgs.msg import JointTrajectory

from dp_msgs.msg import EpisodeEvent, PolicyStatus
from dp_msgs.srv import ResetSimulation

from .processes import ProcessManager, StageError, wait_until
from .record import COMMAND_TOPIC
from .ros import RosSession

STAGE = "serve"
_ACTIVE = (
    PolicyStatus.STATE_RUNNING,
    PolicyStatus.STATE_PREDICTION_REJECTED,
    PolicyStatus.STATE_STALE_OBSERVATIONS,
)
_SETTLED = (*_ACTIVE, PolicyStatus.STATE_ERROR)


@dataclass(frozen=True)
class ServingTask:
    """Which simulated robot the node is served to, and where its episodes and score are."""

    sim_node: tuple[str, str]  # (node name, module)
    sim_parameters: dict[str, object]
    episode_topic: str
    reset_service: str
    score_topic: str  # Float64 (PushT's coverage) or Bool (the arm's success)
    score_type: type
    control_period_s: float
    # Joints commanded open/closed in one step (a gripper): their step limit is their whole
    # training range, the others' max_step_fraction of theirs.
    binary_joints: tuple[str, ...] = ()


PUSHT_SERVING = ServingTask(
    sim_node=("pusht_sim", "dp_sim.sim_node"),
    sim_parameters={},
    episode_topic="/pusht/episode",
    reset_service="/pusht/reset",
    score_topic="/pusht/coverage",
    score_type=Float64,
    control_period_s=0.1,
)


def arm_serving(task: str, with_camera: bool) -> ServingTask:
    return ServingTask(
        sim_node=("arm_sim", "dp_sim.arm_sim_node"),
        sim_parameters={"task": task, "front_camera": with_camera, "wrist_camera": with_camera},
        episode_topic=f"/{task}/episode",
        reset_service=f"/{task}/reset",
        score_topic=f"/{task}/success",
        score_type=Bool,
        control_period_s=0.05,
        binary_joints=("panda_finger_joint1",),
    )


def arm_max_step(checkpoint: Path, fraction: float, task: ServingTask) -> list[float]:
    """Per action joint of ``checkpoint``: ``fraction`` of its training range, or (a gripper
    that the expert opens and closes in one step) a little more than the whole range."""
    manifest = json.loads((checkpoint / "config.json").read_text())
    names = manifest["policy_config"]["action"]["names"]
    ranges = manifest["normalizer"]["action"]
    steps = []
    for name, low, high in zip(names, ranges["min"], ranges["max"], strict=True):
        width = max(float(high) - float(low), 1e-6)
        steps.append(1.05 * width if name in task.binary_joints else fraction * width)
    return steps


@dataclass
class ServedEpisode:
    seed: int
    success: bool
    max_coverage: float
    steps: int
    chunks_received: int
    pusher_travel_m: float
    # From the node's PolicyStatus counters over the episode: predictions it refused (NaN,
    # limits, max step) and observations it dropped (implausible, stale stamps). Its logs say
    # such events at most once a minute per cause, so a stall shows here, not there.
    predictions_rejected: int
    observations_dropped: int


class _Monitor:
    """What the sim and the node said during the current episode (callbacks run on the spin
    thread, the main thread reads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: queue.Queue[EpisodeEvent] = queue.Queue()
        self.status: PolicyStatus | None = None
        self.statuses_received = 0
        self.reset_counters()

    def reset_counters(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.max_coverage = 0.0
            self.chunks = 0
            self.travel = 0.0
            self.last_position: tuple[float, float] | None = None
            self.counters_at_start = _status_counters(self.status)

    def on_score(self, msg: Float64 | Bool) -> None:
        with self.lock:
            self.max_coverage = max(self.max_coverage, float(msg.data))

    def on_command(self, msg: JointTrajectory) -> None:
        with self.lock:
            self.chunks += 1

    def on_joints(self, msg: JointState) -> None:
        position = (msg.position[0], msg.position[1])
        with self.lock:
            if self.last_position is not None:
                self.travel += math.dist(position, self.last_position)
            self.last_position = position

    def on_status(self, msg: PolicyStatus) -> None:
        with self.lock:
            self.status = msg
            self.statuses_received += 1

    def counters_since_reset(self) -> tuple[int, int]:
        """(predictions rejected, observations dropped) since ``reset_counters``."""
        now = _status_counters(self.status)
        return now[0] - self.counters_at_start[0], now[1] - self.counters_at_start[1]

    def wait_for_next_status(self, timeout: float) -> None:
        """Counters are published at 1 Hz (and on a change of state): wait for one status
        newer than this moment, so that the episode's last second is counted."""
        with self.lock:
            seen = self.statuses_received
        wait_until(lambda: self.statuses_received > seen, timeout=timeout)


def _status_counters(status: PolicyStatus | None) -> tuple[int, int]:
    if status is None:
        return 0, 0
    return int(status.predictions_rejected), int(status.observations_dropped)


def serve(
    pm: ProcessManager,
    checkpoint: Path,
    episodes: int,
    start_seed: int,
    max_episode_steps: int,
    real_time_factor: float,
    device: str,
    cpu_threads: int,
    max_step_fraction: float,
    task: ServingTask = PUSHT_SERVING,
) -> list[ServedEpisode]:
    node_limits: dict[str, object] = {"max_step_fraction": max_step_fraction}
    if task.binary_joints:
        node_limits = {"max_step": arm_max_step(checkpoint, max_step_fraction, task)}
    sim_time = real_time_factor != 1.0
    sim_name, sim_module = task.sim_node
    pm.start_node(
        sim_name,
        sim_module,
        {
            **task.sim_parameters,
            "real_time_factor": real_time_factor,
            "max_episode_steps": max_episode_steps,
            "seed": start_seed,
        },
    )
    pm.start_node(
        "policy_node",
        "dp_policy_node",
        {
            "checkpoint": str(checkpoint),
            "autostart": True,
            "device": device,
            "cpu_threads": cpu_threads,
            **node_limits,
            "use_sim_time": sim_time,
        },
    )
    monitor = _Monitor()
    results: list[ServedEpisode] = []
    with RosSession("demo_serve_monitor", use_sim_time=sim_time) as ros:
        ros.subscribe(EpisodeEvent, task.episode_topic, monitor.events.put)
        ros.subscribe(task.score_type, task.score_topic, monitor.on_score)
        ros.subscribe(JointTrajectory, COMMAND_TOPIC, monitor.on_command)
        ros.subscribe(JointState, "/joint_states", monitor.on_joints)
        ros.subscribe(PolicyStatus, "/dp/policy_status", monitor.on_status)
        # Configure loads the weights and warms up; then the node is active and predicting
        # (a rejected prediction is a verdict on the policy, which the episodes measure).
        running = wait_until(
            lambda: (
                not pm.processes[-1].running()
                or (monitor.status is not None and monitor.status.state in _SETTLED)
            ),
            timeout=180.0,
        )
        pm.check_alive(STAGE)
        if not running or monitor.status is None or monitor.status.state not in _ACTIVE:
            status = monitor.status
            detail = f"state {status.state}: {status.message}" if status else "no status"
            raise StageError(
                f"{STAGE}: policy_node is not running after 180 s ({detail}); "
                f"see {pm.log_dir / 'policy_node.log'}"
            )
        episode_timeout = 3.0 * max_episode_steps * task.control_period_s / real_time_factor + 30.0
        for index in range(episodes):
            seed = start_seed + index
            # Events of episodes before this reset (the sim's own first one) are stale.
            while not monitor.events.empty():
                monitor.events.get_nowait()
            response = ros.call(
                STAGE, ResetSimulation, task.reset_service, ResetSimulation.Request(seed=seed), 30.0
            )
            if not response.success:
                raise StageError(f"{STAGE}: {task.reset_service} refused seed {seed}")
            monitor.reset_counters()
            stop = _wait_for_stop(pm, monitor, episode_timeout)
            monitor.wait_for_next_status(timeout=1.5 / real_time_factor)
            with monitor.lock:
                rejected, dropped = monitor.counters_since_reset()
                results.append(
                    ServedEpisode(
                        seed=seed,
                        success=stop.success,
                        max_coverage=monitor.max_coverage,
                        steps=_steps(stop.notes),
                        chunks_received=monitor.chunks,
                        pusher_travel_m=monitor.travel,
                        predictions_rejected=rejected,
                        observations_dropped=dropped,
                    )
                )
            last = results[-1]
            print(
                f"  [serve] episode {index + 1}/{episodes} seed {seed}: success={last.success} "
                f"max score {last.max_coverage:.3f}, {last.steps} steps, "
                f"{last.chunks_received} chunks, first two joints moved "
                f"{last.pusher_travel_m:.3f}; the node refused {last.predictions_rejected} "
                f"predictions and dropped {last.observations_dropped} observations",
                flush=True,
            )
        if monitor.status is not None:
            status = monitor.status
            print(
                f"  [serve] inference latency p50 {status.inference_latency_p50 * 1e3:.0f} ms, "
                f"p99 {status.inference_latency_p99 * 1e3:.0f} ms on {status.device}",
                flush=True,
            )
    return results


def _wait_for_stop(pm: ProcessManager, monitor: _Monitor, timeout: float) -> EpisodeEvent:
    """The end of the episode the latest reset started (its START comes first)."""
    deadline = time.monotonic() + timeout
    started: int | None = None
    while time.monotonic() < deadline:
        try:
            event = monitor.events.get(timeout=1.0)
        except queue.Empty:
            pm.check_alive(STAGE)
            continue
        if event.event == EpisodeEvent.EVENT_START:
            started = event.episode_index
        elif event.event == EpisodeEvent.EVENT_STOP and event.episode_index == started:
            return event
    raise StageError(f"{STAGE}: the episode did not end within {timeout:.0f} s")


def _steps(notes: str) -> int:
    for part in notes.split():
        if part.startswith("steps="):
            return int(part.removeprefix("steps="))
    return 0


def summarize(results: list[ServedEpisode]) -> dict[str, object]:
    return {
        "episodes": len(results),
        "successes": sum(r.success for r in results),
        "mean_max_coverage": (
            sum(r.max_coverage for r in results) / len(results) if results else 0.0
        ),
        "predictions_rejected": sum(r.predictions_rejected for r in results),
        "observations_dropped": sum(r.observations_dropped for r in results),
        "episodes_list": [asdict(r) for r in results],
    }
