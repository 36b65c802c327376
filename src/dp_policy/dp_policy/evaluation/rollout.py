"""Episodes of the PushT task under a controller, in lockstep, with the served timing.

Receding horizon as the paper evaluates it and the inference node serves it: at step k the
controller sees the To newest observations (``ObservationHistory`` on the dt grid, the start
of an episode padded with its first observation, as in training), returns a plan of set points
due at steps k, k+1, ..., and the robot executes one set point per 10 Hz step; a new plan is
asked for when the current one would run out. ``latency_steps`` L models the ROS loop: a plan
made from the observation of step k arrives at step k+L, so its first L set points are already
in the past and dropped, the previous plan's set points (or, at the start, the position held
at reset) fill the gap, and the next plan is asked for L steps before the current one ends.
L = 0 is the paper's protocol. After its last point a plan's final set point is held, as the
trajectory controller does.

Episodes of one group advance together so that the policy samples all their chunks in one
batched call; an episode leaves the group when it succeeds or reaches the step limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dp_policy.evaluation.controllers import Controller
from dp_policy.evaluation.pusht_adapter import DEFAULT_IMAGE_SIZE, PushTAdapter
from dp_policy.runtime import ObservationHistory
from dp_sim.mapping import (
    JOINT_LOWER_LIMIT,
    JOINT_UPPER_LIMIT,
    joints_to_pixels,
    pixels_to_joints,
    task_pose_to_world,
)
from dp_sim.pusht_robot import CONTROL_PERIOD_S, PushTRobot, TaskState


@dataclass(frozen=True)
class RolloutSettings:
    """How episodes are run; validated at construction."""

    max_steps: int = 300
    latency_steps: int = 0
    montage_frames: int = 6  # frames kept per montage episode, evenly spaced in time

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.latency_steps < 0:
            raise ValueError(f"latency_steps must be >= 0, got {self.latency_steps}")
        if self.montage_frames < 1:
            raise ValueError(f"montage_frames must be >= 1, got {self.montage_frames}")


@dataclass
class EpisodeResult:
    """One episode's outcome. Rewards are the task's, min(coverage / 0.95, 1)."""

    seed: int
    max_reward: float
    max_coverage: float
    final_coverage: float
    success: bool
    steps: int
    success_step: int | None
    plans: int
    clamped_setpoints: int  # set points outside the joint limits (the sim clamps them)
    final_agent_position: list[float]  # joints (x, y), m
    final_block_pose: list[float]  # world (x m, y m, yaw rad)
    # Coverage after each step (t = 0.1 s, 0.2 s, ...): how the episode got to its outcome.
    coverage_trace: list[float] = field(default_factory=list, repr=False)
    # Montage episodes only: (step, camera image, coverage) at evenly spaced steps.
    frames: list[tuple[int, np.ndarray, float]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        """The episode for eval.json (frames go to the montage, not the JSON)."""
        return {
            "seed": self.seed,
            "max_reward": round(self.max_reward, 6),
            "max_coverage": round(self.max_coverage, 6),
            "final_coverage": round(self.final_coverage, 6),
            "success": self.success,
            "steps": self.steps,
            "success_step": self.success_step,
            "plans": self.plans,
            "clamped_setpoints": self.clamped_setpoints,
            "final_agent_position": [round(v, 6) for v in self.final_agent_position],
            "final_block_pose": [round(v, 6) for v in self.final_block_pose],
            # 4 decimals: a plot's resolution, and 300 of them per episode stay readable.
            "coverage_trace": [round(v, 4) for v in self.coverage_trace],
        }


class PlanSchedule:
    """Which plan's set point is in force at each step, and when to ask for the next plan.

    A plan answering the observation of step k holds set points due at k, k+1, ...; it comes
    into force at step k + L (latency), replacing the previous one, and its last set point is
    held after its end. Before the first plan arrives the robot holds ``hold``.
    """

    def __init__(self, latency_steps: int, hold: np.ndarray) -> None:
        self.latency = latency_steps
        self.hold = np.asarray(hold, dtype=np.float64)
        # (issued step, set points (n, 2)), oldest first: the one in force and those in flight.
        self._plans: list[tuple[int, np.ndarray]] = []
        self.count = 0

    def needs_plan(self, step: int) -> bool:
        if not self._plans:
            return True
        issued, setpoints = self._plans[-1]
        # Ask now if the answer, arriving L steps from now, would find the current plan ended.
        return step + self.latency >= issued + len(setpoints)

    def add(self, step: int, setpoints: np.ndarray) -> None:
        setpoints = np.asarray(setpoints, dtype=np.float64)
        if setpoints.ndim != 2 or setpoints.shape[0] < 1:
            raise ValueError(f"a plan needs set points (n, 2), got shape {setpoints.shape}")
        self._plans.append((step, setpoints))
        self.count += 1

    def setpoint(self, step: int) -> np.ndarray:
        """The set point in force at ``step`` (steps must not decrease between calls)."""
        for index in range(len(self._plans) - 1, -1, -1):
            issued, setpoints = self._plans[index]
            if issued + self.latency <= step:
                del self._plans[:index]  # superseded for good
                return setpoints[min(step - issued, len(setpoints) - 1)]
        return self.hold


@dataclass
class _Episode:
    seed: int
    robot: PushTRobot
    state: TaskState
    history: ObservationHistory | None
    schedule: PlanSchedule
    keep_frames: bool
    max_reward: float = 0.0
    max_coverage: float = 0.0
    success_step: int | None = None
    clamped: int = 0
    coverage: list[float] = field(default_factory=list)  # after each step
    # Montage episodes: (camera image, coverage) of the state after each step, the reset first.
    frames: list[tuple[np.ndarray, float]] = field(default_factory=list)


@dataclass
class RolloutTiming:
    """Where a group's time went, seconds."""

    controller_s: float = 0.0
    env_s: float = 0.0


def _frame_times(steps: int, count: int) -> list[int]:
    return sorted({round(float(t)) for t in np.linspace(0, steps, count)})


class RolloutRunner:
    """Runs groups of episodes in lockstep; owns one robot per slot, reused across groups."""

    def __init__(
        self,
        controller: Controller,
        adapter: PushTAdapter | None,
        settings: RolloutSettings,
    ) -> None:
        self.controller = controller
        self.adapter = adapter
        self.settings = settings
        self.timing = RolloutTiming()
        self._robots: list[PushTRobot] = []
        self._image_size = adapter.image_size if adapter is not None else DEFAULT_IMAGE_SIZE

    def close(self) -> None:
        for robot in self._robots:
            robot.close()
        self._robots.clear()

    def _robot(self, slot: int) -> PushTRobot:
        while len(self._robots) <= slot:
            width, height = self._image_size
            self._robots.append(PushTRobot(width, height, self.settings.max_steps))
        return self._robots[slot]

    def _observe(self, episode: _Episode, step: int) -> None:
        if episode.history is not None and self.adapter is not None:
            episode.history.add(step * CONTROL_PERIOD_S, self.adapter.observe(episode.state))
        if episode.keep_frames:
            episode.frames.append((episode.state.image, episode.state.coverage))

    def run(
        self,
        seeds: Sequence[int],
        montage_seeds: frozenset[int] = frozenset(),
        on_steps: Callable[[int], None] | None = None,
        on_episode: Callable[[EpisodeResult], None] | None = None,
    ) -> list[EpisodeResult]:
        """Run one episode per seed, all in lockstep; results in the order of ``seeds``.

        ``on_steps(n)`` reports n more environment steps done, ``on_episode`` each finished
        episode (for progress bars).
        """
        latency = self.settings.latency_steps
        To = self.controller.observation_horizon
        episodes: list[_Episode] = []
        for slot, seed in enumerate(seeds):
            robot = self._robot(slot)
            state = robot.reset(int(seed))
            history = (
                ObservationHistory(To, CONTROL_PERIOD_S, self.adapter.keys)
                if self.adapter is not None
                else None
            )
            episode = _Episode(
                seed=int(seed),
                robot=robot,
                state=state,
                history=history,
                # As the sim's follower after a reset: hold the position until a command.
                schedule=PlanSchedule(latency, pixels_to_joints(state.agent_position)),
                keep_frames=int(seed) in montage_seeds,
            )
            self.controller.reset(slot, int(seed))
            self._observe(episode, 0)
            episodes.append(episode)

        results: dict[int, EpisodeResult] = {}
        active = list(range(len(episodes)))
        step = 0
        while active:
            due = [slot for slot in active if episodes[slot].schedule.needs_plan(step)]
            if due:
                started = time.perf_counter()
                observations = self._batch_observations([episodes[slot] for slot in due], step)
                plans = self.controller.plan(due, observations, [episodes[s].state for s in due])
                self.timing.controller_s += time.perf_counter() - started
                for slot, setpoints in zip(due, plans, strict=True):
                    episodes[slot].schedule.add(step, setpoints)

            started = time.perf_counter()
            still_active = []
            for slot in active:
                episode = episodes[slot]
                setpoint = episode.schedule.setpoint(step)
                if np.any((setpoint < JOINT_LOWER_LIMIT) | (setpoint > JOINT_UPPER_LIMIT)):
                    episode.clamped += 1
                episode.state = episode.robot.step(joints_to_pixels(setpoint))
                state = episode.state
                episode.max_reward = max(episode.max_reward, state.reward)
                episode.max_coverage = max(episode.max_coverage, state.coverage)
                episode.coverage.append(float(state.coverage))
                if state.success and episode.success_step is None:
                    episode.success_step = state.steps
                if state.done:
                    if episode.keep_frames:
                        episode.frames.append((state.image, state.coverage))
                    result = self._result(episode)
                    results[slot] = result
                    if on_episode is not None:
                        on_episode(result)
                else:
                    self._observe(episode, step + 1)
                    still_active.append(slot)
            self.timing.env_s += time.perf_counter() - started
            if on_steps is not None:
                on_steps(len(active))
            active = still_active
            step += 1
        return [results[slot] for slot in range(len(episodes))]

    def _batch_observations(self, episodes: list[_Episode], step: int) -> dict[str, np.ndarray]:
        if self.adapter is None:
            return {}
        t = step * CONTROL_PERIOD_S
        per_episode = [episode.history.at(t) for episode in episodes if episode.history]
        return {key: np.stack([obs[key] for obs in per_episode]) for key in self.adapter.keys}

    def _result(self, episode: _Episode) -> EpisodeResult:
        state = episode.state
        frames: list[tuple[int, np.ndarray, float]] = []
        if episode.keep_frames:
            times = _frame_times(state.steps, self.settings.montage_frames)
            frames = [(t, *episode.frames[t]) for t in times]
            episode.frames.clear()
        return EpisodeResult(
            seed=episode.seed,
            max_reward=float(episode.max_reward),
            max_coverage=float(episode.max_coverage),
            final_coverage=float(state.coverage),
            success=bool(episode.success_step is not None),
            steps=int(state.steps),
            success_step=episode.success_step,
            plans=episode.schedule.count,
            clamped_setpoints=episode.clamped,
            final_agent_position=[float(v) for v in pixels_to_joints(state.agent_position)],
            final_block_pose=list(task_pose_to_world(state.block_pose)),
            coverage_trace=list(episode.coverage),
            frames=frames,
        )
