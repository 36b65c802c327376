"""Offline evaluation on the arm tasks (Lift, Can): the Robomimic protocol and its report.

The paper's Robomimic protocol: 50 episodes from seed 100000, at most 400 steps at 20 Hz,
success rate. The episodes run as every task's do (``runner.run_evaluation``: the generic
lockstep rollout over ``dp_sim.tasks``), here in one process, in lockstep groups so that the
policy samples their chunks together; CPU or CUDA for the policy, the simulation on the CPU.
This module only adds the arm's report: ``eval.json`` and ``outcomes.png``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dp_policy.checkpoint import read_checkpoint_manifest
from dp_policy.data_spec import DataSpec
from dp_policy.evaluation.config import EvalConfig, ExecutionPlan, resolve_device
from dp_policy.evaluation.report import machine_info
from dp_policy.evaluation.rollout import EpisodeResult
from dp_policy.evaluation.runner import run_evaluation

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


@dataclass
class TaskEvaluationResult:
    task: str
    config: EvalConfig
    episodes: list[EpisodeResult]
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
    """Evaluate ``config``'s checkpoint (or the expert) on ``task_name``: one process, the
    episodes in lockstep groups of ``group_size``."""
    config = dataclasses.replace(config, task=task_name, montage_episodes=0)
    device = "cpu" if config.policy == "expert" else resolve_device(config.device)
    plan = ExecutionPlan(
        device=device,
        workers=1,
        batch_size=min(group_size, config.episodes),
        threads=config.threads or torch.get_num_threads(),
    )
    result = run_evaluation(config, plan)
    timing = result.timings[0]
    checkpoint_summary = None
    if result.checkpoint is not None:
        assert config.checkpoint is not None
        manifest = read_checkpoint_manifest(config.checkpoint)
        checkpoint_summary = {
            "path": str(config.checkpoint),
            "step": manifest.get("step"),
            "num_inference_steps": result.checkpoint["num_inference_steps"],
            "scheduler": result.checkpoint["scheduler"],
            "action_horizon": result.checkpoint["action_horizon"],
        }
    return TaskEvaluationResult(
        task=task_name,
        config=config,
        episodes=result.episodes,
        wall_time_s=result.wall_time_s,
        controller_s=timing.controller_s,
        env_s=timing.env_s,
        device=device,
        checkpoint=checkpoint_summary,
    )


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
        "episodes": [episode.to_json("score") for episode in episodes],
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
