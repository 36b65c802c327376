"""``python -m scripts.demo``: record, train, serve, evaluate; a summary at the end.

``--task lift`` (or ``can``) runs the same on the simulated Panda arm (robosuite): 100 expert
episodes, the low-dim policy (``train_lift_lowdim_cpu``), served over ROS to the arm's two
controllers (arm and gripper), evaluated offline on the Robomimic protocol (success rate).

The defaults fit a 2-core CPU in under 20 minutes: 150 expert episodes recorded at 8x (about
2.2 s each), the low-dim policy (pusher position and T pose) trained with
``train_pusht_lowdim_cpu`` for a 10-minute budget (``--train-budget``; ``--train-steps`` trains
a step count instead), 5 episodes served over ROS and 20 evaluated offline on the same first
seeds, and the served seeds again offline with the node's timing. The image policy
(``--policy image``, the paper's ResNet-18 + U-Net) needs a GPU: on 2 CPU cores a training
step takes about 11 s. On the arm, ``--policy image`` records both cameras and trains
``train_<task>_image`` (``train_<task>_image_cpu`` with ``--device cpu``: the paper's two
ResNet-18 encoders, a small U-Net, about 2 s a step), served in slowed simulated time on a
CPU (``--serve-rtf``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from . import record, serve
from .processes import ProcessManager, StageError, run_to_completion

T = TypeVar("T")

# Demonstrations over steps: 50 episodes and 11 minutes overfit (validation loss lowest at
# step 1,000 of 7,400; offline score 0.49), while recording 100 more costs under 4 minutes.
DEFAULT_EPISODES = {"pusht": 150, "lift": 100, "can": 100}
DEFAULT_TRAIN_BUDGET = {"pusht": "10m", "lift": "10m", "can": "15m"}
DEFAULT_RECORD_RTF = {"pusht": 8.0, "lift": 3.0, "can": 3.0}
ARM_TASKS = ("lift", "can")
ARM_IMAGE_CPU_SERVE_RTF = 0.2


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/demo.sh", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add(
        "--task",
        default="pusht",
        choices=("pusht", *ARM_TASKS),
        help="the simulated robot and task: PushT, or the Panda arm on Lift or Can "
        "(default: pusht)",
    )
    add(
        "--episodes",
        type=int,
        default=None,
        help=f"expert episodes to record (default per task: {DEFAULT_EPISODES})",
    )
    add(
        "--train-budget",
        default=None,
        help="training wall clock, dataset building included (default per task: "
        f"{DEFAULT_TRAIN_BUDGET})",
    )
    add("--train-steps", type=int, default=None, help="train this many steps instead of a budget")
    add("--eval-episodes", type=int, default=20, help="offline eval episodes (default: 20)")
    add("--serve-episodes", type=int, default=5, help="online episodes served (default: 5)")
    add(
        "--serve-max-steps",
        type=int,
        default=None,
        help="step limit of served episodes (default: 300 for PushT, 400 for the arm)",
    )
    add("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="(default: cpu)")
    add("--policy", default="lowdim", choices=("lowdim", "image"), help="(default: lowdim)")
    add(
        "--full-size",
        action="store_true",
        help="lowdim: the paper recipe (train_pusht_lowdim) instead of train_pusht_lowdim_cpu",
    )
    add(
        "--serve-rtf",
        type=float,
        default=None,
        help="real-time factor while serving (default: 1.0; for the arm's image policy on the "
        f"CPU {ARM_IMAGE_CPU_SERVE_RTF}: the sim renders its two cameras slower than 20 Hz, so "
        "sim, node and monitor run in slowed simulated time)",
    )
    add(
        "--record-rtf",
        type=float,
        default=None,
        help=f"real-time factor while recording (default per task: {DEFAULT_RECORD_RTF})",
    )
    add("--seed", type=int, default=0, help="seed of the first recorded episode (default: 0)")
    add(
        "--max-step-fraction",
        type=float,
        default=None,
        help="policy_node's per-point step limit as a fraction of the range (default: 0.25; "
        "0.5 for the arm, whose commanded set points lead its measured joints by up to a "
        "quarter of their range: the position loop lags them by about 0.07 s)",
    )
    add("--out", type=Path, default=None, help="run directory (default: runs/demo/<UTC time>)")
    add("--train-override", action="append", default=[], help="extra key=value for training")
    args = parser.parse_args(argv)
    if args.task in ARM_TASKS and args.full_size:
        parser.error(f"--full-size: --task {args.task} has no paper-size low-dim recipe")
    args.episodes = args.episodes or DEFAULT_EPISODES[args.task]
    image_arm = args.task in ARM_TASKS and args.policy == "image"
    default_budget = "30m" if image_arm else DEFAULT_TRAIN_BUDGET[args.task]
    args.train_budget = args.train_budget or default_budget
    args.record_rtf = args.record_rtf or DEFAULT_RECORD_RTF[args.task]
    args.serve_max_steps = args.serve_max_steps or (300 if args.task == "pusht" else 400)
    args.max_step_fraction = args.max_step_fraction or (0.25 if args.task == "pusht" else 0.5)
    if args.serve_rtf is None:
        # Software rendering of the arm's two cameras runs about 6 steps/s on 2 cores, short of
        # 20 Hz: a CPU serves the arm's image policy in slowed simulated time.
        slow = args.task in ARM_TASKS and args.policy == "image" and args.device == "cpu"
        args.serve_rtf = ARM_IMAGE_CPU_SERVE_RTF if slow else 1.0
    if not args.serve_rtf > 0:
        parser.error("--serve-rtf must be > 0")
    return args


def timed(stage: str, timings: dict[str, float], action: Callable[[], T]) -> T:
    print(f"== {stage}", flush=True)
    start = time.monotonic()
    try:
        return action()
    finally:
        timings[stage] = round(time.monotonic() - start, 1)
        print(f"== {stage}: {timings[stage]:.1f} s", flush=True)


def train_command(args: argparse.Namespace, bags: Path, output: Path, cache: Path) -> list[str]:
    task = getattr(args, "task", "pusht")
    config = f"train_{task}_{args.policy}"
    if args.policy == "lowdim" and not args.full_size:
        config += "_cpu"
    elif task in ARM_TASKS and args.device == "cpu":
        config += "_cpu"  # the arm's image recipe sized for a CPU (train_<task>_image_cpu)
    argv = [sys.executable, "-m", "dp_policy.train"]
    argv += ["--config", config, "--bags", str(bags), "--output", str(output)]
    argv += ["--device", args.device]
    steps = args.train_steps
    if steps is None:
        argv += ["--budget", args.train_budget, "training.val_every_steps=1000"]
        argv += ["training.checkpoint_every_steps=100000000", "training.log_every_steps=100"]
    else:
        argv += [
            f"training.max_steps={steps}",
            f"optimizer.warmup_steps={min(500, max(1, steps // 10))}",
            f"training.val_every_steps={max(1, min(1000, steps))}",
            f"training.checkpoint_every_steps={steps}",
            f"training.log_every_steps={max(1, min(100, steps // 20))}",
        ]
    argv += [
        "training.progress_bar=false",
        # Demo episodes are few: a tiny run may have a single one for validation.
        "data.val_ratio=0.1",
        f"data.cache_dir={cache}",
        *args.train_override,
    ]
    return argv


def trained_steps(metrics: Path) -> int:
    return max((json.loads(line)["step"] for line in metrics.read_text().splitlines()), default=0)


def final_losses(metrics: Path) -> dict[str, float | None]:
    loss: float | None = None
    val_loss: float | None = None
    for line in metrics.read_text().splitlines():
        entry = json.loads(line)
        loss = entry.get("loss", loss)
        val_loss = entry.get("val_loss", val_loss)
    return {"final_train_loss": loss, "final_val_loss": val_loss}


def run(args: argparse.Namespace) -> dict[str, object]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = (args.out or Path("runs/demo") / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Without a domain of its own the demo would talk to any ROS graph on this machine.
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    timings: dict[str, float] = {}
    summary: dict[str, object] = {"run_dir": str(out), "arguments": vars(args) | {"out": str(out)}}
    summary["timings_s"] = timings
    with_camera = args.policy == "image"

    def do_record() -> list[record.RecordedEpisode]:
        with ProcessManager(out / "logs" / "record") as pm:
            return record.record(
                pm,
                out / "bags",
                args.episodes,
                args.record_rtf,
                args.seed,
                with_camera,
                record.recording_task(args.task, with_camera),
            )

    recorded = timed("record", timings, do_record)
    summary["record"] = record.summarize(recorded)

    train_dir = out / "train"
    argv = train_command(args, out / "bags", train_dir, out / "dataset_cache")
    timed("train", timings, lambda: run_to_completion("train", "train", argv, out / "logs"))
    # The last weights: the learning rate has decayed to zero over the budget, and the lowest
    # validation loss ("best") says little about a diffusion policy's task success.
    checkpoint = train_dir / "checkpoints" / "latest"
    summary["train"] = {
        "steps": trained_steps(train_dir / "metrics.jsonl"),
        "checkpoint": str(checkpoint),
        **final_losses(train_dir / "metrics.jsonl"),
    }

    def do_serve() -> list[serve.ServedEpisode]:
        with ProcessManager(out / "logs" / "serve") as pm:
            return serve.serve(
                pm,
                checkpoint,
                args.serve_episodes,
                start_seed=100000,
                max_episode_steps=args.serve_max_steps,
                real_time_factor=args.serve_rtf,
                device=args.device,
                cpu_threads=1,
                max_step_fraction=args.max_step_fraction,
                task=(
                    serve.PUSHT_SERVING
                    if args.task == "pusht"
                    else serve.arm_serving(args.task, with_camera)
                ),
            )

    summary["serve"] = serve.summarize(timed("serve", timings, do_serve))

    eval_dir = out / "eval"
    evaluation = timed(
        "eval", timings, lambda: evaluate(args, checkpoint, eval_dir, out, args.eval_episodes)
    )
    results = evaluation["results"]
    keys = (
        "episodes",
        "mean_score",
        "successes",
        "success_rate",
        "mean_max_coverage",
        "mean_max_score",
    )
    summary["eval"] = {key: results.get(key) for key in keys} | {
        "eval_json": str(eval_dir / "eval.json")
    }
    # The node replans about one inference turnaround before a chunk ends, one step after its
    # observation: the served seeds again offline with that timing, to tell a difference in
    # timing from a difference between the sim loop over ROS and the offline one.
    executed = node_timing_horizon(summary["serve"], evaluation["protocol"]["action_horizon"])
    node_timing = None
    if executed is not None:
        node_timing = timed(
            "eval_node_timing",
            timings,
            lambda: evaluate(
                args,
                checkpoint,
                out / "eval_node_timing",
                out,
                args.serve_episodes,
                "--latency-steps",
                "1",
                "--action-horizon",
                str(executed),
            ),
        )
        summary["eval_node_timing"] = {
            "latency_steps": 1,
            "action_horizon": executed,
            "mean_max_coverage": _max_score(node_timing["results"]),
            "successes": node_timing["results"]["successes"],
        }
    summary["online_vs_offline"] = online_vs_offline(summary["serve"], evaluation, node_timing)
    return summary


def evaluate(
    args: argparse.Namespace,
    checkpoint: Path,
    eval_dir: Path,
    out: Path,
    episodes: int,
    *extra: str,
) -> dict:
    """Runs ``dp_policy.eval`` from seed 100000 and returns its eval.json."""
    argv = [sys.executable, "-m", "dp_policy.eval", "--checkpoint", str(checkpoint)]
    argv += ["--episodes", str(episodes), "--out", str(eval_dir), "--no-progress"]
    argv += ["--device", args.device, *extra]
    run_to_completion(eval_dir.name, eval_dir.name, argv, out / "logs")
    return json.loads((eval_dir / "eval.json").read_text())


def node_timing_horizon(served: dict, action_horizon: int) -> int | None:
    """The offline Ta that, with one step of latency, runs as many set points per chunk as the
    node did on average over the served episodes (the first set point of a plan is already
    past when it arrives). At most the checkpoint's Ta: more set points per chunk means the
    node paused between chunks, which the offline loop does not model."""
    episodes = served["episodes_list"]
    steps = sum(episode["steps"] for episode in episodes)
    chunks = sum(episode["chunks_received"] for episode in episodes)
    if not chunks or not steps:
        return None
    return max(2, min(action_horizon, round(steps / chunks) + 1))


def online_vs_offline(
    served: dict, evaluation: dict, node_timing: dict | None = None
) -> list[dict[str, object]]:
    """Each served seed beside the offline episodes of the same seed (when evaluated): the
    paper's timing and, when given, the node's (one step of latency, its replanning period)."""
    offline = {episode["seed"]: episode for episode in evaluation.get("episodes", [])}
    timed_twins = {e["seed"]: e for e in (node_timing or {}).get("episodes", [])}
    rows = []
    for episode in served["episodes_list"]:
        twin = offline.get(episode["seed"])
        timed_twin = timed_twins.get(episode["seed"])
        rows.append(
            {
                "seed": episode["seed"],
                "online_success": episode["success"],
                "online_max_coverage": round(episode["max_coverage"], 4),
                "offline_success": None if twin is None else twin["success"],
                "offline_max_coverage": None if twin is None else _max_score(twin),
                "offline_node_timing_success": (
                    None if timed_twin is None else timed_twin["success"]
                ),
                "offline_node_timing_max_coverage": (
                    None if timed_twin is None else _max_score(timed_twin)
                ),
            }
        )
    return rows


def _max_score(entry: dict) -> float | None:
    """PushT's (mean) highest coverage, or the arm tasks' (mean) highest score (success)."""
    for key in ("mean_max_coverage", "max_coverage", "mean_max_score", "max_score"):
        if key in entry:
            return entry[key]
    return None


def print_summary(summary: dict[str, object]) -> None:
    rec, trn, srv, evl = (summary[k] for k in ("record", "train", "serve", "eval"))
    assert isinstance(rec, dict) and isinstance(trn, dict)
    assert isinstance(srv, dict) and isinstance(evl, dict)
    print("\n== summary")
    print(
        f"recorded:  {rec['episodes']} expert episodes ({rec['successes']} solved), "
        f"{rec['sim_steps_total']} steps, {rec['frames_missing_total']} frames missing"
    )
    print(
        f"trained:   {trn['steps']} steps, final train loss {trn['final_train_loss']}, "
        f"val loss {trn['final_val_loss']}"
    )
    print(
        f"served:    {srv['episodes']} episodes online, {srv['successes']} solved, mean highest "
        f"score {srv['mean_max_coverage']:.3f}; the node refused {srv['predictions_rejected']} "
        f"predictions and dropped {srv['observations_dropped']} observations"
    )
    score = evl.get("mean_score")
    print(
        f"evaluated: {evl['episodes']} episodes offline, "
        + (f"score {score:.3f}, " if score is not None else "")
        + f"success {evl['successes']}/{evl['episodes']}"
    )
    for row in summary.get("online_vs_offline", []):
        print(
            f"seed {row['seed']}: online success={row['online_success']} max score "
            f"{row['online_max_coverage']:.3f}; offline success={row['offline_success']} max "
            f"score {row['offline_max_coverage']}; offline with the node's timing "
            f"max score {row['offline_node_timing_max_coverage']}"
        )
    print(f"timings:   {summary['timings_s']}")
    print(f"results:   {summary['run_dir']}/summary.json")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    # A SIGTERM (a CI timeout, `kill`) must stop the nodes too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run(args)
    except StageError as error:
        print(f"demo: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # The process managers have stopped every child on the way out.
        print("demo: interrupted", file=sys.stderr)
        return 130
    run_dir = Path(str(summary["run_dir"]))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
