"""Task success against training time: demonstrations -> train for a budget -> learning curve.

    scripts/setup.sh && source scripts/env.sh
    python bench/task_success.py                        # 200 expert episodes, 30 min, low-dim
    python bench/task_success.py --bags ~/demos --budget 2h --policy image --device cuda
    python bench/task_success.py --episodes 20 --budget 3m --points 1 --eval-episodes 5  # smoke
    python bench/task_success.py --task lift --episodes 100 --budget 30m   # the simulated arm
    python bench/task_success.py --task can --policy expert                # the scripted expert

1. Demonstrations: recorded with dp_sim's scripted expert over ROS exactly as the demo records
   them (the PushT sim, the expert node, dp_recorder, one bag per episode; seeds from
   ``--record-seed``, far from the evaluation seeds), or taken from ``--bags``.
2. Training: the project's own train command (``python -m dp_policy.train --config
   train_pusht_<policy> --budget ...``) with a wall-clock budget that counts dataset building,
   writing a checkpoint at ``--points`` evenly spaced times of the budget (and the last one
   when the budget ends).
3. Evaluation: every one of those checkpoints on the paper's protocol (``python -m
   dp_policy.eval``: ``--eval-episodes`` from seed 100000, 300 steps, the checkpoint's own
   inference steps), after training, so that evaluating does not slow the training down.

Writes ``bench/results/task_success_<task>_<policy>_<machine>.json`` (one row per evaluated
checkpoint: ``budget_s`` of training wall clock so far, ``mean_max_coverage``,
``success_rate``, ...) and the learning curve as a PNG beside it. Rows of other runs (a
LeRobot side-by-side written by ``bench/lerobot_pusht.py``) are kept when ``--merge`` names
their JSON.

``--task lift`` / ``can``: the simulated Panda (dp_sim's arm sim and arm expert over ROS,
recorded at 3x), ``train_<task>_lowdim_cpu``, the Robomimic protocol (50 episodes from seed
100000, at most 400 steps of 0.05 s, success rate; rows carry ``mean_max_score``).
``--policy expert`` evaluates the task's scripted expert through the same offline harness
(one row, ``budget_s`` 0, no training).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = {"pusht": 300, "lift": 400, "can": 400}
RECORD_RTF = {"pusht": 8.0, "lift": 3.0, "can": 3.0}


def machine() -> dict[str, Any]:
    """The machine as offline evaluation records it, with the GPU named when there is one."""
    import torch

    from dp_policy.evaluation.report import machine_info

    return machine_info("cuda" if torch.cuda.is_available() else "cpu")


def source_version() -> dict[str, Any]:
    """The commit the benchmark ran from and whether the tree had changes, so that a result can
    be traced to its code (None where this is no git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return {"commit": None, "modified": None}
    if commit.returncode != 0:
        return {"commit": None, "modified": None}
    return {"commit": commit.stdout.strip(), "modified": bool(status.stdout.strip())}


def machine_slug(info: dict[str, Any]) -> str:
    """``cpu2`` for a 2-core CPU, ``h100`` for an H100: short enough for a file name."""
    gpu = info.get("gpu")
    if gpu:
        match = re.search(r"(H100|H200|A100|L40S?|A10G?|RTX ?\d+|V100|T4)", gpu)
        return (match.group(1) if match else "gpu").replace(" ", "").lower()
    return f"cpu{info.get('cpu_count') or ''}"


def record_demonstrations(
    out: Path, episodes: int, seed: int, with_camera: bool, task: str = "pusht"
) -> dict:
    """Records expert episodes with the demo's recording stage (sim, expert, recorder)."""
    sys.path.insert(0, str(ROOT))
    from scripts.demo import record
    from scripts.demo.processes import ProcessManager

    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    started = time.monotonic()
    with ProcessManager(out / "logs" / "record") as pm:
        recorded = record.record(
            pm,
            out / "bags",
            episodes,
            RECORD_RTF[task],
            seed,
            with_camera,
            record.recording_task(task, with_camera),
        )
    summary = record.summarize(recorded)
    summary.pop("episodes_list", None)
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["first_seed"] = seed
    return summary


def train(args: argparse.Namespace, bags: list[str], out: Path) -> tuple[Path, float]:
    """The project's train command for the budget; returns the run directory and its time."""
    run_dir = out / "train"
    every = args.budget_s / args.points
    command = [sys.executable, "-m", "dp_policy.train", "--config", args.config]
    command += ["--bags", *bags, "--output", str(run_dir), "--budget", f"{args.budget_s}s"]
    command += ["--device", args.device]
    command += [
        # A timed checkpoint a little before each point would land it just short: the point's
        # checkpoint is written at the first step after it.
        f"training.checkpoint_every_time={every:.3f}s",
        "training.checkpoint_every_steps=100000000",
        f"training.keep_checkpoints={args.points + 2}",
        "training.progress_bar=false",
        f"data.cache_dir={out / 'dataset_cache'}",
        *args.train_override,
    ]
    started = time.monotonic()
    with open(out / "train.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return run_dir, time.monotonic() - started


def evaluate(checkpoint: Path | None, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "dp_policy.eval", "--task", args.task]
    command += ["--policy", "expert"] if checkpoint is None else ["--checkpoint", str(checkpoint)]
    command += ["--episodes", str(args.eval_episodes), "--start-seed", "100000"]
    command += ["--max-steps", str(MAX_STEPS[args.task]), "--device", args.device]
    command += ["--no-progress", "--out", str(out)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return json.loads((out / "eval.json").read_text())


def checkpoint_row(
    checkpoint: Path | None, report: dict[str, Any], args: argparse.Namespace
) -> dict:
    training: dict[str, Any] = {}
    if checkpoint is not None:
        manifest = json.loads((checkpoint / "config.json").read_text())
        training = (manifest.get("extra_metadata") or {}).get("training") or {}
    results = report["results"]
    row = {
        "task": args.task,
        "policy": args.policy,
        "implementation": "dp_policy" if checkpoint is not None else "dp_sim scripted expert",
        "budget_s": round(float(training.get("wall_clock_s", 0.0)), 1),
        "step": training.get("step"),
        "checkpoint": checkpoint.name if checkpoint is not None else None,
    }
    # PushT scores coverage; the arm tasks score success (their score is 1 when solved).
    for key in ("mean_max_coverage", "mean_score", "mean_max_score"):
        if key in results:
            row[key] = round(float(results[key]), 4)
    row |= {
        "success_rate": round(float(results["success_rate"]), 4),
        "successes": results["successes"],
        "episodes": results["episodes"],
        "first_seed": 100000,
    }
    return row


def _config_exists(name: str) -> bool:
    from dp_policy.train import resolve_config_path

    try:
        resolve_config_path(name)
    except FileNotFoundError:
        return False
    return True


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--bags", nargs="+", help="demonstration bags (default: record --episodes of the expert)")
    add(
        "--train-dir",
        type=Path,
        default=None,
        help="a finished run of the train command for a budget: evaluate its timed checkpoints "
        "instead of training (the run's own wall clock is each row's budget_s)",
    )
    add("--episodes", type=int, default=200, help="expert episodes to record (default: 200)")
    add("--record-seed", type=int, default=0, help="first recorded seed (default: 0)")
    add("--task", choices=tuple(MAX_STEPS), default="pusht", help="(default: pusht)")
    add("--policy", choices=("lowdim", "image", "expert"), default="lowdim")
    add(
        "--config",
        default=None,
        help="train config (default: train_<task>_lowdim_cpu on a CPU, else train_<task>_<policy>)",
    )
    add("--budget", default="30m", help="training wall clock, dataset included (default: 30m)")
    add("--points", type=int, default=6, help="evaluated points of the budget (default: 6)")
    add("--eval-episodes", type=int, default=50, help="episodes per point (default: 50)")
    add(
        "--eval-points",
        type=int,
        default=None,
        help="evaluate only this many of the timed checkpoints, evenly spread, the last one "
        "always (default: every one)",
    )
    add("--device", default="auto", help="training and evaluation device (default: auto)")
    add("--work-dir", type=Path, default=None, help="bags, run, evals (default: runs/bench/..)")
    add("--output", type=Path, default=None, help="result JSON (default: bench/results/..)")
    add("--merge", type=Path, nargs="*", default=[], help="JSON files whose rows to add")
    add("--train-override", action="append", default=[], help="key=value for training")
    args = parser.parse_args(argv)
    from dp_policy.training.budget import parse_duration

    args.budget_s = parse_duration(args.budget)
    if args.config is None:
        # A CPU trains the CPU-sized recipe where one ships (train_<task>_<policy>_cpu), a GPU
        # the paper's.
        on_cpu = args.device == "cpu" or (args.device == "auto" and not _cuda_available())
        args.config = f"train_{args.task}_{args.policy}"
        if on_cpu and _config_exists(f"{args.config}_cpu"):
            args.config += "_cpu"
    if args.points < 1:
        parser.error("--points must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    info = machine()
    slug = machine_slug(info)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = (args.work_dir or ROOT / "runs" / "bench" / f"task_success_{stamp}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    output = (
        args.output
        or ROOT / "bench" / "results" / f"task_success_{args.task}_{args.policy}_{slug}.json"
    )
    report: dict[str, Any] = {
        "benchmark": f"task_success {args.task} {args.policy}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "source": source_version(),
        "settings": {
            "config": args.config,
            "budget_s": args.budget_s,
            "points": args.points,
            "eval_episodes": args.eval_episodes,
            "eval_first_seed": 100000,
            "max_steps": MAX_STEPS[args.task],
            "train_overrides": args.train_override,
            "device": args.device,
        },
    }
    if args.policy == "expert":
        print(f"evaluating the {args.task} expert ...", flush=True)
        report["settings"]["config"] = None
        evaluation = evaluate(None, args, work / "eval" / "expert")
        report["rows"] = [checkpoint_row(None, evaluation, args)]
        return _write(report, output)
    if args.train_dir is not None:
        run_dir = args.train_dir.resolve()
        report["settings"]["train_dir"] = str(run_dir)
        report["demonstrations"] = {"bags": _run_bags(run_dir)}
        report["training"] = {
            "wall_clock_s": _last_wall_clock(run_dir),
            "dataset": _dataset_summary(run_dir),
            "loss_curve": loss_curve(run_dir),
        }
        return _evaluate_run(run_dir, args, work, report, output)
    if args.bags:
        bags = [str(Path(b).resolve()) for b in args.bags]
        report["demonstrations"] = {"bags": bags}
    else:
        print(f"recording {args.episodes} expert episodes ...", flush=True)
        report["demonstrations"] = record_demonstrations(
            work, args.episodes, args.record_seed, args.policy == "image", args.task
        )
        bags = [str(work / "bags")]
    print(f"training {args.config} for {args.budget} ...", flush=True)
    run_dir, seconds = train(args, bags, work)
    report["training"] = {
        "wall_clock_s": round(seconds, 1),
        "dataset": _dataset_summary(run_dir),
        "loss_curve": loss_curve(run_dir),
    }
    return _evaluate_run(run_dir, args, work, report, output)


def _run_bags(run_dir: Path) -> list[str] | None:
    """The bags a run of the train command was trained on, from its config.yaml."""
    import yaml

    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return (config.get("data") or {}).get("bags")


def _dataset_summary(run_dir: Path) -> dict[str, Any]:
    """What the run's dataset was: its build report without the long lists."""
    data = json.loads((run_dir / "dataset.json").read_text())
    data = data.get("report", data)
    summary = {key: value for key, value in data.items() if key not in ("bags", "cache")}
    for key in ("train_episodes", "val_episodes"):
        if isinstance(summary.get(key), list):
            summary[key] = len(summary[key])
    return summary


def _spread(checkpoints: list[Path], count: int | None) -> list[Path]:
    """``count`` of ``checkpoints`` evenly spread over the run, the last one included."""
    if count is None or count >= len(checkpoints) or count < 1:
        return checkpoints
    picks = {round(i * (len(checkpoints) - 1) / max(1, count - 1)) for i in range(count)}
    if count == 1:
        picks = {len(checkpoints) - 1}
    return [checkpoints[i] for i in sorted(picks)]


def loss_curve(run_dir: Path, points: int = 200) -> dict[str, list[float]]:
    """The run's training and validation losses against its wall clock (at most ``points`` of
    each, evenly thinned), from its metrics.jsonl: that the network learns, on any budget."""
    train: list[tuple[int, float, float]] = []
    val: list[tuple[int, float]] = []
    clock = 0.0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        clock = float(record.get("wall_clock_s", clock))
        if "loss" in record:
            train.append((int(record["step"]), clock, float(record["loss"])))
        if "val_loss" in record:
            val.append((int(record["step"]), float(record["val_loss"])))
    keep = max(1, len(train) // points)
    train = train[::keep]
    keep = max(1, len(val) // points)
    val = val[::keep]
    return {
        "step": [row[0] for row in train],
        "wall_clock_s": [round(row[1], 1) for row in train],
        "loss": [round(row[2], 5) for row in train],
        "val_step": [row[0] for row in val],
        "val_loss": [round(row[1], 5) for row in val],
    }


def _last_wall_clock(run_dir: Path) -> float | None:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    clocks = [json.loads(line).get("wall_clock_s") for line in lines]
    return max((c for c in clocks if c is not None), default=None)


def _evaluate_run(
    run_dir: Path, args: argparse.Namespace, work: Path, report: dict[str, Any], output: Path
) -> int:
    """Every timed checkpoint of ``run_dir`` on the protocol, one row each, then the JSON."""
    rows = []
    checkpoints = _spread(sorted((run_dir / "checkpoints").glob("step_*")), args.eval_points)
    for checkpoint in checkpoints:
        print(f"evaluating {checkpoint.name} ...", flush=True)
        evaluation = evaluate(checkpoint, args, work / "eval" / checkpoint.name)
        rows.append(checkpoint_row(checkpoint, evaluation, args))
        print(json.dumps(rows[-1]), flush=True)
    for path in args.merge:
        rows += json.loads(path.read_text()).get("rows", [])
    report["rows"] = rows
    return _write(report, output)


def _write(report: dict[str, Any], output: Path) -> int:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    subprocess.run([sys.executable, str(Path(__file__).with_name("plots.py")), str(output)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
