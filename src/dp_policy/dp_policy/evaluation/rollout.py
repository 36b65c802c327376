"""Episodes of any ``dp_sim.tasks.SimTask`` under a controller, in lockstep, as served.

Receding horizon as the paper evaluates it and the inference node serves it: at step k the
controller sees the To newest observations (``ObservationHistory`` on the dt grid, the start
of an episode padded with its first observation, as in training), returns a plan of set points
due at steps k, k+1, ..., and the robot executes one set point per control period; a new plan
is asked for when the current one would run out. ``latency_steps`` L models the ROS loop: a
plan made from the observation of step k arrives at step k+L, so its first L set points are
already in the past and dropped, the previous plan's set points (or, at the start, what the
controllers hold after a reset) fill the gap, and the next plan is asked for L steps before
the current one ends. L = 0 is the paper's protocol. After its last point a plan's final set
point is held, as a trajectory controller does.

Set points are vectors in the task's order (its command topics' joints side by side); each
step splits them per controller. The task knows nothing of the policy and the loop nothing of
the task: it resets, reads messages, steps, and reads success, the score and, at the end, the
task's own facts of the episode. Episodes of one group advance together so that the policy
samples all their chunks in one batched call; an episode leaves the group when it succeeds or
reaches the step limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dp_policy.evaluation.controllers import Controller
from dp_policy.evaluation.task_binding import TaskBinding, join_setpoints, split_setpoints
from dp_policy.runtime import ObservationHistory
from dp_sim.tasks import SimTask


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
    """One episode's outcome; ``score`` is the task's (PushT: coverage; the arm: 1 when solved).

    ``details`` holds the task's own facts of the episode (``SimTask.episode_details``: PushT's
    highest reward, final pusher position and T pose).
    """

    seed: int
    success: bool
    success_step: int | None
    steps: int
    max_score: float
    final_score: float
    plans: int
    clamped_setpoints: int  # set points outside the joint limits (the controller clamps them)
    # The score after each step (t = dt, 2 dt, ...): how the episode got to its outcome.
    score_trace: list[float] = field(default_factory=list, repr=False)
    details: dict[str, Any] = field(default_factory=dict)
    # Montage episodes only: (step, camera image, score) at evenly spaced steps.
    frames: list[tuple[int, np.ndarray, float]] = field(default_factory=list, repr=False)

    @property
    def score(self) -> float:
        """The episode's score for the protocol: its highest reward where the task has one
        (PushT), else its highest task score."""
        return float(self.details.get("max_reward", self.max_score))

    def to_json(self, score_name: str = "score") -> dict[str, Any]:
        """The episode for eval.json, its score keys named by the task's ``score_name``
        (frames go to the montage, not the JSON)."""
        return {
            "seed": self.seed,
            "success": self.success,
            "success_step": self.success_step,
            "steps": self.steps,
            f"max_{score_name}": round(self.max_score, 6),
            f"final_{score_name}": round(self.final_score, 6),
            "plans": self.plans,
            "clamped_setpoints": self.clamped_setpoints,
            **{key: _rounded(value) for key, value in self.details.items()},
            # 4 decimals: a plot's resolution, and 300 of them per episode stay readable.
            f"{score_name}_trace": [round(v, 4) for v in self.score_trace],
        }


def _rounded(value: Any) -> Any:
    """Floats to 6 decimals, inside lists too; anything else as it is."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


class PlanSchedule:
    """Which plan's set point is in force at each step, and when to ask for the next plan.

    A plan answering the observation of step k holds set points due at k, k+1, ...; it comes
    into force at step k + L (latency), replacing the previous one, and its last set point is
    held after its end. Before the first plan arrives the robot holds ``hold``.
    """

    def __init__(self, latency_steps: int, hold: np.ndarray) -> None:
        self.latency = latency_steps
        self.hold = np.asarray(hold, dtype=np.float64)
        # (issued step, set points (n, D)), oldest first: the one in force and those in flight.
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
            raise ValueError(f"a plan needs set points (n, D), got shape {setpoints.shape}")
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
    task: SimTask
    history: ObservationHistory | None
    schedule: PlanSchedule
    keep_frames: bool
    messages: dict[str, Any] = field(default_factory=dict)  # of the latest state
    max_score: float = 0.0
    success_step: int | None = None
    clamped: int = 0
    scores: list[float] = field(default_factory=list)  # after each step
    # Montage episodes: (camera image, score) of the state after each step, the reset first.
    frames: list[tuple[np.ndarray, float]] = field(default_factory=list)


@dataclass
class RolloutTiming:
    """Where a group's time went, seconds."""

    controller_s: float = 0.0
    env_s: float = 0.0


def _frame_times(steps: int, count: int) -> list[int]:
    return sorted({round(float(t)) for t in np.linspace(0, steps, count)})


class RolloutRunner:
    """Runs groups of episodes in lockstep; one task per slot (``make_task()``), reused across
    groups. ``binding`` None: the controller sees no observations, only the task's messages
    (the scripted expert)."""

    def __init__(
        self,
        make_task: Callable[[], SimTask],
        controller: Controller,
        binding: TaskBinding | None,
        settings: RolloutSettings,
    ) -> None:
        self.make_task = make_task
        self.controller = controller
        self.binding = binding
        self.settings = settings
        self.timing = RolloutTiming()
        self._tasks: list[SimTask] = []

    def close(self) -> None:
        for task in self._tasks:
            task.close()
        self._tasks.clear()

    def _task(self, slot: int) -> SimTask:
        while len(self._tasks) <= slot:
            self._tasks.append(self.make_task())
        return self._tasks[slot]

    def _observe(self, episode: _Episode, step: int) -> None:
        episode.messages = episode.task.messages()
        if episode.history is not None and self.binding is not None:
            observation = self.binding.observe(episode.messages)
            episode.history.add(step * self.binding.spec.dt, observation)
        self._keep_frame(episode)

    @staticmethod
    def _keep_frame(episode: _Episode) -> None:
        if episode.keep_frames:
            image = episode.task.frame()
            if image is not None:
                episode.frames.append((image, float(episode.task.score)))

    def run(
        self,
        seeds: Sequence[int],
        montage_seeds: frozenset[int] = frozenset(),
        on_steps: Callable[[int], None] | None = None,
        on_episode: Callable[[EpisodeResult], None] | None = None,
    ) -> list[EpisodeResult]:
        """Run one episode per seed, all in lockstep; results in the order of ``seeds``.

        Episodes of ``montage_seeds`` keep frames for a montage. ``on_steps(n)`` reports n
        more environment steps done, ``on_episode`` each finished episode (progress bars).
        """
        latency = self.settings.latency_steps
        To = self.controller.observation_horizon
        episodes: list[_Episode] = []
        for slot, seed in enumerate(seeds):
            task = self._task(slot)
            task.reset(int(seed))
            history = (
                ObservationHistory(To, self.binding.spec.dt, self.binding.keys)
                if self.binding is not None
                else None
            )
            # As the controllers after a reset: hold the measured state until a command.
            hold = join_setpoints(task.commands, task.held_setpoints())
            episode = _Episode(
                seed=int(seed),
                task=task,
                history=history,
                schedule=PlanSchedule(latency, hold),
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
                messages = [episodes[slot].messages for slot in due]
                plans = self.controller.plan(due, observations, messages)
                self.timing.controller_s += time.perf_counter() - started
                for slot, setpoints in zip(due, plans, strict=True):
                    episodes[slot].schedule.add(step, setpoints)

            started = time.perf_counter()
            still_active = []
            for slot in active:
                episode = episodes[slot]
                task = episode.task
                setpoints = split_setpoints(task.commands, episode.schedule.setpoint(step))
                if task.outside_limits(setpoints):
                    episode.clamped += 1
                task.step(setpoints)
                score = float(task.score)
                episode.scores.append(score)
                episode.max_score = max(episode.max_score, score)
                if task.success and episode.success_step is None:
                    episode.success_step = task.steps
                if task.done or task.steps >= self.settings.max_steps:
                    self._keep_frame(episode)
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
        if self.binding is None:
            return {}
        t = step * self.binding.spec.dt
        per_episode = [episode.history.at(t) for episode in episodes if episode.history]
        return {key: np.stack([obs[key] for obs in per_episode]) for key in self.binding.keys}

    def _result(self, episode: _Episode) -> EpisodeResult:
        task = episode.task
        frames: list[tuple[int, np.ndarray, float]] = []
        if episode.frames:
            times = _frame_times(task.steps, self.settings.montage_frames)
            frames = [(t, *episode.frames[t]) for t in times]
            episode.frames.clear()
        return EpisodeResult(
            seed=episode.seed,
            success=episode.success_step is not None,
            success_step=episode.success_step,
            steps=int(task.steps),
            max_score=float(episode.max_score),
            final_score=float(episode.scores[-1]) if episode.scores else 0.0,
            plans=episode.schedule.count,
            clamped_setpoints=episode.clamped,
            score_trace=list(episode.scores),
            details=task.episode_details(),
            frames=frames,
        )
