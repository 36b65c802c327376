"""Offline evaluation on a ``dp_sim.tasks`` task (Lift, Can): run, summarise, write outputs.

The paper's Robomimic protocol: 50 episodes from seed 100000, at most 400 steps at 20 Hz,
success rate. One process, episodes in lockstep groups so that the policy samples their chunks
together; CPU or CUDA for the policy, the simulation on the CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dp_policy.checkpoint import load_checkpoint, read_checkpoint_manifest
from dp_policy.data_spec import DataSpec, data_spec_from_checkpoint
from dp_policy.evaluation.config import EvalConfig
from dp_policy.evaluation.controllers import DiffusionController
from dp_policy.evaluation.report import machine_info
from dp_policy.evaluation.rollout import RolloutSettings
from dp_policy.evaluation.task_binding import TaskBinding
from dp_policy.evaluation.task_rollout import (
    ArmExpertController,
    TaskEpisodeResult,
    TaskRolloutRunner,
)

ARM_MAX_STEPS = 400  # Robomimic's horizon for Lift and Can, 20 s at 20 Hz
TASK_TOPIC_PREFIXES = {"lift": "/lift/", "can": "/can/"}


def task_of_spec(spec: DataSpec) -> str:
    """The simulated task a spec's topics belong to: its ``extra.task``, else by topic names."""
    named = spec.extra.get("task")
    if isinstance(named, str) and named:
        return named
    for task, prefix in TASK_TOPIC_PREFIXES.items():
        if any(prefix in stream.topic for stream in spec.streams):
            return task
    return "pusht"


def _cameras(spec: DataSpec) -> tuple[tuple[str, ...], tuple[int, int]]:
    """The robosuite cameras and the (width, height) the spec's image streams need."""
    from dp_sim.arm_robot import CAMERA_TOPICS

    by_topic = {f"/{topic}/image_raw": camera for camera, topic in CAMERA_TOPICS.items()}
    cameras, sizes = [], set()
    for stream in spec.observations:
        if stream.kind != "image":
            continue
        camera = next(
            (name for topic, name in by_topic.items() if stream.topic.endswith(topic)), None
        )
        if camera is None:
            raise ValueError(f"image stream {stream.key!r}: no arm camera publishes {stream.topic}")
        cameras.append(camera)
        sizes.add((stream.shape[2], stream.shape[1]))
    if len(sizes) > 1:
        raise ValueError(f"the image streams ask for different sizes {sorted(sizes)}")
    return tuple(cameras), next(iter(sizes), (84, 84))


@dataclass
class TaskEvaluationResult:
    task: str
    config: EvalConfig
    episodes: list[TaskEpisodeResult]
    wall_time_s: float
    controller_s: float
    env_s: float
    device: str
    checkpoint: dict[str, Any] | None

    @property
    def successes(self) -> int:
        return sum(episode.success for episode in self.episodes)

    @property
    def success_rate(self) -> float:
        return self.successes / len(self.episodes)


def run_task_evaluation(
    config: EvalConfig, task_name: str, group_size: int = 25
) -> TaskEvaluationResult:
    """Evaluate ``config``'s checkpoint (or the expert) on ``task_name``."""
    from dp_sim.tasks import make_task

    started = time.perf_counter()
    device = "cpu"
    checkpoint_summary = None
    if config.policy == "expert":
        spec_cameras: tuple[str, ...] = ()
        image_size = (84, 84)
        spec = None
    else:
        spec = data_spec_from_checkpoint(config.checkpoint)
        spec_cameras, image_size = _cameras(spec)

    def build() -> Any:
        return make_task(task_name, spec_cameras, image_size, config.max_steps)

    template = build()
    try:
        if spec is None:
            binding = TaskBinding(_expert_spec(template), template)
            controller = ArmExpertController(template)
            uses_observations = False
        else:
            binding = TaskBinding(spec, template)
            template.reset(config.start_seed)
            binding.check_messages()
            device = _device(config.device)
            if config.threads:
                torch.set_num_threads(config.threads)
            policy = load_checkpoint(config.checkpoint, device=device)
            controller = DiffusionController(
                policy,
                binding,
                num_inference_steps=config.num_inference_steps,
                scheduler=config.scheduler,
                noise_seed=config.noise_seed,
                action_horizon=config.action_horizon,
            )
            uses_observations = True
            manifest = read_checkpoint_manifest(config.checkpoint)
            checkpoint_summary = {
                "path": str(config.checkpoint),
                "step": manifest.get("step"),
                "num_inference_steps": controller.num_inference_steps,
                "scheduler": controller.scheduler,
                "action_horizon": controller.action_horizon,
            }
    finally:
        template.close()

    settings = RolloutSettings(max_steps=config.max_steps, latency_steps=config.latency_steps)
    runner = TaskRolloutRunner(build, controller, binding, settings, uses_observations)
    seeds = list(range(config.start_seed, config.start_seed + config.episodes))
    results: list[TaskEpisodeResult] = []
    try:
        for first in range(0, len(seeds), group_size):
            results += runner.run(seeds[first : first + group_size])
            if config.progress:
                done = sum(r.success for r in results)
                print(
                    f"  [eval {task_name}] {len(results)}/{len(seeds)}: {done} solved", flush=True
                )
    finally:
        runner.close()
    return TaskEvaluationResult(
        task=task_name,
        config=config,
        episodes=results,
        wall_time_s=time.perf_counter() - started,
        controller_s=runner.timing.controller_s,
        env_s=runner.timing.env_s,
        device=device,
        checkpoint=checkpoint_summary,
    )


def _device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _expert_spec(task: Any) -> DataSpec:
    """A spec commanding every controller of ``task`` with its joints: the expert's."""
    from dp_policy.data_spec import StreamSpec

    streams = [
        StreamSpec(
            key=f"command_{index}",
            topic=f"/{topic}",
            kind="joint_trajectory",
            joints=tuple(joints),
        )
        for index, (topic, joints) in enumerate(task.commands.items())
    ]
    observation = StreamSpec(
        key="joints",
        topic="/joint_states",
        kind="joint_state",
        joints=tuple(task.commands[next(iter(task.commands))]),
    )
    return DataSpec(dt=task.control_period, observations=(observation,), actions=tuple(streams))


def write_task_outputs(result: TaskEvaluationResult, directory: Path) -> dict[str, Any]:
    """``eval.json`` and ``outcomes.png`` (each episode's success step, or its failure)."""
    directory.mkdir(parents=True, exist_ok=True)
    episodes = result.episodes
    solved_steps = [e.success_step for e in episodes if e.success_step is not None]
    report = {
        "task": result.task,
        "protocol": {
            "episodes": result.config.episodes,
            "start_seed": result.config.start_seed,
            "max_steps": result.config.max_steps,
            "control_period_s": 0.05,
            "latency_steps": result.config.latency_steps,
            "action_horizon": (result.checkpoint or {}).get("action_horizon"),
            "success": "the task's own check (robosuite's _check_success); the episode ends there",
        },
        "policy": {"kind": result.config.policy, "checkpoint": result.checkpoint},
        "results": {
            "episodes": len(episodes),
            "successes": result.successes,
            "success_rate": round(result.success_rate, 4),
            "mean_max_score": round(float(np.mean([e.max_score for e in episodes])), 4),
            "mean_success_step": round(float(np.mean(solved_steps)), 1) if solved_steps else None,
        },
        "wall_time_s": round(result.wall_time_s, 1),
        "timing": {"controller_s": round(result.controller_s, 1), "env_s": round(result.env_s, 1)},
        "device": result.device,
        "machine": machine_info(result.device),
        "episodes": [episode.to_json() for episode in episodes],
    }
    (directory / "eval.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _outcome_plot(result, directory / "outcomes.png")
    report["outcome_plot"] = "outcomes.png"
    return report


def _outcome_plot(result: TaskEvaluationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = result.episodes
    figure, ax = plt.subplots(figsize=(8, 3), dpi=100)
    seeds = [e.seed for e in episodes]
    steps = [e.success_step if e.success else e.steps for e in episodes]
    colours = ["tab:green" if e.success else "tab:red" for e in episodes]
    ax.bar(range(len(seeds)), steps, color=colours)
    ax.set_xlabel(f"episode (seeds {seeds[0]}..{seeds[-1]})")
    ax.set_ylabel("steps (green: solved at, red: failed)")
    ax.set_title(
        f"{result.task} {result.config.policy}: {result.successes}/{len(episodes)} solved",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
