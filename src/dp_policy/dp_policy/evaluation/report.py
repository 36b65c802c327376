"""The evaluation's outputs: ``eval.json``, a PNG montage of rollouts, a plot of the score
over time (``coverage.png``: PushT's score is the coverage of the goal).

Score keys are named by the task's score name: PushT's eval.json has ``mean_max_coverage``
and per episode ``max_coverage``, ``final_coverage`` and ``coverage_trace``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from dp_policy.evaluation.config import SUCCESS_THRESHOLD, ExecutionPlan
from dp_policy.evaluation.runner import EvaluationResult

REPORT_FORMAT = "dp_policy.eval"
REPORT_VERSION = 1
JSON_NAME = "eval.json"
MONTAGE_NAME = "montage.png"
COVERAGE_PLOT_NAME = "coverage.png"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers were measured on: timings mean nothing without it."""
    import torch

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gym_pusht": _version("gym-pusht"),
        "pymunk": _version("pymunk"),
        "diffusers": _version("diffusers"),
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 6) if values else None


def _parallelism(policy: str, plan: ExecutionPlan) -> str:
    where = "in this process" if plan.workers == 1 else f"in {plan.workers} spawned processes"
    owns = "a model copy" if policy == "diffusion" else "its experts"
    batched = ", one batched sample per replanning step" if policy == "diffusion" else ""
    return (
        f"{where}, each owning its envs and {owns}; episodes in lockstep groups of "
        f"{plan.batch_size}{batched}"
    )


# How the report names each task and its expert.
_TASK_TITLES = {"pusht": "PushT (gym_pusht/PushT-v0 through dp_sim.PushTRobot)"}
_EXPERT_SOURCES = {"pusht": "dp_sim.expert.PushTExpert"}


def _title(task: str) -> str:
    return "PushT" if task == "pusht" else task


def build_report(result: EvaluationResult) -> dict[str, Any]:
    config, plan, task = result.config, result.plan, result.task
    episodes = result.episodes
    successes = [e for e in episodes if e.success]
    timings = result.timings
    score = task.score_name
    if config.policy == "expert":
        source = _EXPERT_SOURCES.get(task.name, f"dp_sim.tasks: the {task.name} task's expert")
        policy: dict[str, Any] = {"kind": "expert", "source": source}
        observation_horizon, action_horizon = 1, 1
    else:
        assert result.checkpoint is not None
        policy = {"kind": "diffusion", "checkpoint": result.checkpoint}
        observation_horizon = result.checkpoint["observation_horizon"]
        action_horizon = result.checkpoint["action_horizon"]
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": _TASK_TITLES.get(task.name, f"{task.name} (dp_sim.tasks)"),
        "policy": policy,
        "protocol": {
            "episodes": config.episodes,
            "start_seed": config.start_seed,
            "seeds": config.seeds,
            "max_steps": config.max_steps,
            "control_period_s": task.control_period,
            "reward": f"min(coverage / {SUCCESS_THRESHOLD}, 1) per step (gym-pusht)",
            "score": "mean over episodes of each episode's maximum reward",
            "success": f"coverage > {SUCCESS_THRESHOLD} at some step (the episode ends there)",
            "observation_horizon": observation_horizon,
            "action_horizon": action_horizon,
            "latency_steps": config.latency_steps,
            "noise_seed": config.noise_seed,
        },
        "execution": {
            "device": plan.device,
            "workers": plan.workers,
            "batch_size": plan.batch_size,
            "threads_per_worker": plan.threads,
            "parallelism": _parallelism(config.policy, plan),
        },
        "results": {
            "mean_score": round(result.mean_score, 6),
            "success_rate": round(result.success_rate, 6),
            "successes": len(successes),
            "episodes": len(episodes),
            f"mean_max_{score}": _mean([e.max_score for e in episodes]),
            "mean_steps_of_successes": _mean([float(e.steps) for e in successes]),
            "failed_seeds": [e.seed for e in episodes if not e.success],
        },
        "wall_time_s": round(result.wall_time_s, 3),
        "timing": {
            "load_s": [round(t.load_s, 3) for t in timings],
            "controller_s": round(sum(t.controller_s for t in timings), 3),
            "env_s": round(sum(t.env_s for t in timings), 3),
            "controller_calls": sum(t.controller_calls for t in timings),
        },
        "machine": machine_info(plan.device),
        "montage": MONTAGE_NAME if any(e.frames for e in episodes) else None,
        "coverage_plot": COVERAGE_PLOT_NAME,
        "episodes": [e.to_json(score) for e in episodes],
    }


def write_montage(result: EvaluationResult, path: Path) -> bool:
    """A grid: one row per montage episode, its frames at evenly spaced times; False if none."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = [e for e in result.episodes if e.frames]
    if not rows:
        return False
    period = result.task.control_period
    label = "cov" if result.task.score_name == "coverage" else result.task.score_name
    columns = max(len(e.frames) for e in rows)
    figure = Figure(figsize=(1.7 * columns, 1.85 * len(rows) + 0.5), dpi=110)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, episode in zip(axes, rows, strict=True):
        for column, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if column >= len(episode.frames):
                ax.axis("off")
                continue
            step, image, score = episode.frames[column]
            ax.imshow(image, interpolation="nearest")
            ax.set_title(f"t={step * period:.1f} s, {label} {score:.2f}", fontsize=7, pad=2)
        outcome = "success" if episode.success else "failure"
        reward = "reward" if "max_reward" in episode.details else "score"
        row[0].set_ylabel(
            f"seed {episode.seed}\n{outcome}, {reward} {episode.score:.2f}", fontsize=7
        )
    figure.suptitle(
        f"{_title(result.task.name)} {result.config.name}: score {result.mean_score:.3f}, "
        f"success {result.success_rate:.0%} over {len(result.episodes)} episodes",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path)
    return True


def write_coverage_plot(result: EvaluationResult, path: Path) -> None:
    """The score (PushT: coverage) over time, one thin line per episode: where each got and
    when it stalled."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    episodes = result.episodes
    period, score = result.task.control_period, result.task.score_name
    figure = Figure(figsize=(8.0, 4.0), dpi=110)
    ax = figure.subplots()
    colors = {True: "tab:green", False: "tab:red"}
    for episode in episodes:
        # The trace holds the score after steps 1, 2, ...: step k ends at k control periods.
        times = period * np.arange(1, len(episode.score_trace) + 1)
        ax.plot(times, episode.score_trace, color=colors[episode.success], linewidth=0.7, alpha=0.6)
    ax.axhline(SUCCESS_THRESHOLD, color="black", linestyle="--", linewidth=1.0)
    ax.set_xlim(0.0, result.config.max_steps * period)
    ax.set_ylim(0.0, 1.02)  # a line at full coverage stays visible
    ax.set_xlabel("time (s)")
    ax.set_ylabel("coverage of the goal" if score == "coverage" else score)
    ax.legend(
        handles=[
            Line2D([], [], color=colors[True], label="success"),
            Line2D([], [], color=colors[False], label="failure"),
            Line2D([], [], color="black", linestyle="--", label=f"success > {SUCCESS_THRESHOLD}"),
        ],
        # Outside the axes: any corner inside may hide some episode's line.
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=7,
    )
    mean_max = float(np.mean([e.max_score for e in episodes]))
    successes = sum(e.success for e in episodes)
    ax.set_title(
        f"{_title(result.task.name)} {result.config.name}: mean max {score} {mean_max:.3f}, "
        f"{successes}/{len(episodes)} successes",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path)


def write_outputs(result: EvaluationResult, directory: Path) -> dict[str, Any]:
    """Write ``eval.json``, ``montage.png`` (where episodes kept frames) and ``coverage.png``
    into ``directory``.

    Returns the report.
    """
    directory.mkdir(parents=True, exist_ok=True)
    report = build_report(result)
    if report["montage"] and not write_montage(result, directory / MONTAGE_NAME):
        report["montage"] = None
    write_coverage_plot(result, directory / COVERAGE_PLOT_NAME)
    temporary = directory / f".{JSON_NAME}.tmp"
    temporary.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, directory / JSON_NAME)
    return report
