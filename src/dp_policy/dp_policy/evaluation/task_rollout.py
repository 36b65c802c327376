"""Episodes of any ``dp_sim.tasks.SimTask`` under a controller, in lockstep, as served.

The same receding-horizon timing as the PushT rollout (``rollout.PlanSchedule``): at step k
the controller sees the To newest observations on the dt grid (the start of an episode padded
with its first observation, as in training) and returns set points due at steps k, k+1, ...;
a new plan is asked for when the current one would run out, ``latency_steps`` before its end.
Set points are vectors in the task's order (its command topics' joints side by side); each
step splits them per controller. The task knows nothing of the policy and the loop nothing of
the task: it only resets, reads messages, steps, and reads success and score.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dp_policy.evaluation.controllers import Controller
from dp_policy.evaluation.rollout import PlanSchedule, RolloutSettings, RolloutTiming
from dp_policy.evaluation.task_binding import TaskBinding
from dp_policy.runtime import ObservationHistory


@dataclass
class TaskEpisodeResult:
    """One episode's outcome; ``score`` is the task's (1 when solved)."""

    seed: int
    success: bool
    success_step: int | None
    steps: int
    max_score: float
    final_score: float
    plans: int
    clamped_setpoints: int
    score_trace: list[float] = field(default_factory=list, repr=False)  # after each step
    frames: list[tuple[int, np.ndarray, float]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "success": self.success,
            "success_step": self.success_step,
            "steps": self.steps,
            "max_score": round(self.max_score, 6),
            "final_score": round(self.final_score, 6),
            "plans": self.plans,
            "clamped_setpoints": self.clamped_setpoints,
            "score_trace": [round(v, 4) for v in self.score_trace],
        }


@dataclass
class _Episode:
    seed: int
    task: Any
    history: ObservationHistory | None
    schedule: PlanSchedule
    messages: dict[str, Any]
    max_score: float = 0.0
    success_step: int | None = None
    clamped: int = 0
    scores: list[float] = field(default_factory=list)


class TaskRolloutRunner:
    """Runs groups of episodes in lockstep; one task instance per slot, reused across groups."""

    def __init__(
        self,
        make_task: Callable[[], Any],
        controller: Controller,
        binding: TaskBinding,
        settings: RolloutSettings,
        uses_observations: bool = True,
    ) -> None:
        self.make_task = make_task
        self.controller = controller
        self.binding = binding
        self.settings = settings
        self.uses_observations = uses_observations
        self.timing = RolloutTiming()
        self._tasks: list[Any] = []

    def close(self) -> None:
        for task in self._tasks:
            task.close()
        self._tasks.clear()

    def _task(self, slot: int) -> Any:
        while len(self._tasks) <= slot:
            self._tasks.append(self.make_task())
        return self._tasks[slot]

    def _observe(self, episode: _Episode, step: int) -> None:
        episode.messages = episode.task.messages()
        if episode.history is not None:
            episode.history.add(step * self.binding.spec.dt, self.binding.observe(episode.messages))

    def run(
        self,
        seeds: Sequence[int],
        on_episode: Callable[[TaskEpisodeResult], None] | None = None,
    ) -> list[TaskEpisodeResult]:
        """One episode per seed, all in lockstep; results in the order of ``seeds``."""
        To = self.controller.observation_horizon
        episodes: list[_Episode] = []
        for slot, seed in enumerate(seeds):
            task = self._task(slot)
            task.reset(int(seed))
            history = (
                ObservationHistory(To, self.binding.spec.dt, self.binding.keys)
                if self.uses_observations
                else None
            )
            hold = self.binding.join(task.held_setpoints())
            episode = _Episode(
                int(seed), task, history, PlanSchedule(self.settings.latency_steps, hold), {}
            )
            self.controller.reset(slot, int(seed))
            self._observe(episode, 0)
            episodes.append(episode)

        results: dict[int, TaskEpisodeResult] = {}
        active = list(range(len(episodes)))
        step = 0
        while active:
            due = [slot for slot in active if episodes[slot].schedule.needs_plan(step)]
            if due:
                started = time.perf_counter()
                observations = self._batch([episodes[slot] for slot in due], step)
                plans = self.controller.plan(due, observations, [episodes[s].messages for s in due])
                self.timing.controller_s += time.perf_counter() - started
                for slot, setpoints in zip(due, plans, strict=True):
                    episodes[slot].schedule.add(step, setpoints)
            started = time.perf_counter()
            still_active = []
            for slot in active:
                episode = episodes[slot]
                setpoints = self.binding.split(episode.schedule.setpoint(step))
                if episode.task.outside_limits(setpoints):
                    episode.clamped += 1
                episode.task.step(setpoints)
                score = float(episode.task.score)
                episode.scores.append(score)
                episode.max_score = max(episode.max_score, score)
                if episode.task.success and episode.success_step is None:
                    episode.success_step = episode.task.steps
                if episode.task.done or episode.task.steps >= self.settings.max_steps:
                    results[slot] = self._result(episode)
                    if on_episode is not None:
                        on_episode(results[slot])
                else:
                    self._observe(episode, step + 1)
                    still_active.append(slot)
            self.timing.env_s += time.perf_counter() - started
            active = still_active
            step += 1
        return [results[slot] for slot in range(len(episodes))]

    def _batch(self, episodes: list[_Episode], step: int) -> dict[str, np.ndarray]:
        if not self.uses_observations:
            return {}
        t = step * self.binding.spec.dt
        per_episode = [episode.history.at(t) for episode in episodes if episode.history]
        return {key: np.stack([obs[key] for obs in per_episode]) for key in self.binding.keys}

    @staticmethod
    def _result(episode: _Episode) -> TaskEpisodeResult:
        return TaskEpisodeResult(
            seed=episode.seed,
            success=episode.success_step is not None,
            success_step=episode.success_step,
            steps=int(episode.task.steps),
            max_score=float(episode.max_score),
            final_score=float(episode.scores[-1]) if episode.scores else 0.0,
            plans=episode.schedule.count,
            clamped_setpoints=episode.clamped,
            score_trace=list(episode.scores),
        )


class ArmExpertController:
    """dp_sim's scripted arm expert, seeing the sim's messages as ``arm_expert_node`` does."""

    observation_horizon = 1

    def __init__(self, task: Any) -> None:
        # Imported here: dp_policy's evaluation needs dp_sim's arm only for arm tasks.
        from dp_sim.arm_expert import ArmExpert
        from dp_sim.arm_kinematics import ArmKinematics

        self._kinematics = ArmKinematics(task.robot)
        self._make = lambda: ArmExpert(self._kinematics, task.name, task.control_period)
        self._task_name = task.name
        self._experts: dict[int, Any] = {}
        self.predictions = 0

    def reset(self, slot: int, seed: int) -> None:
        self._experts[slot] = self._make()

    def plan(
        self,
        slots: Sequence[int],
        observations: Mapping[str, np.ndarray],
        states: Sequence[Mapping[str, Any]],
    ) -> np.ndarray:
        from dp_sim.arm_robot import ARM_JOINT_NAMES

        plans = []
        for slot, messages in zip(slots, states, strict=True):
            joints = messages["joint_states"]
            names = list(joints.name)
            arm = np.array([joints.position[names.index(name)] for name in ARM_JOINT_NAMES])
            pose = messages[f"{self._task_name}/object_pose"].pose
            position = np.array([pose.position.x, pose.position.y, pose.position.z])
            q = pose.orientation
            goal_message = messages.get(f"{self._task_name}/goal_pose")
            goal = (
                None
                if goal_message is None
                else np.array(
                    [
                        goal_message.pose.position.x,
                        goal_message.pose.position.y,
                        goal_message.pose.position.z,
                    ]
                )
            )
            setpoint, fingers = self._experts[slot].act(
                arm, position, np.array([q.x, q.y, q.z, q.w]), goal
            )
            plans.append(np.concatenate([setpoint, [fingers]])[None])
        self.predictions += 1
        return np.stack(plans)
