"""``python -m scripts.demo``: record, train, serve, evaluate; a summary at the end.

The default sizes fit a 2-core CPU in about 17 minutes (measured on a 2-core VM: 40 episodes
recorded in 101 s, 4000 training steps in 781 s; more steps with --train-steps): the low-dim
policy (pusher position and T pose) with a U-Net narrowed to 64/128/256 channels, which trains
about ten times faster than the paper's 256/512/1024 on a CPU. The image policy
(``--policy image``, the paper's ResNet-18 + U-Net) needs a GPU: on 2 CPU cores a training
step takes about 11 s.
"""

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

# Narrow enough for a CPU to train thousands of steps in minutes; the rest is the paper's
# low-dim recipe (To 2, Tp 16, Ta 8, DDPM 100 steps, DDIM 10 at inference).
CPU_LOWDIM_OVERRIDES = ["policy.unet.down_dims=[64,128,256]", "training.batch_size=64"]


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/demo.sh", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--episodes", type=int, default=40, help="expert episodes to record (default: 40)")
    add("--train-steps", type=int, default=4000, help="training steps (default: 4000)")
    add("--eval-episodes", type=int, default=20, help="offline eval episodes (default: 20)")
    add("--serve-episodes", type=int, default=3, help="online episodes served (default: 3)")
    add("--serve-max-steps", type=int, default=300, help="step limit of served episodes")
    add("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="(default: cpu)")
    add("--policy", default="lowdim", choices=("lowdim", "image"), help="(default: lowdim)")
    add("--full-size", action="store_true", help="lowdim: the paper's U-Net widths")
    add("--record-rtf", type=float, default=8.0, help="real-time factor while recording")
    add("--seed", type=int, default=0, help="seed of the first recorded episode (default: 0)")
    add(
        "--max-step-fraction",
        type=float,
        default=0.25,
        help="policy_node's per-point step limit as a fraction of the range (default: 0.25)",
    )
    add("--out", type=Path, default=None, help="run directory (default: runs/demo/<UTC time>)")
    add("--train-override", action="append", default=[], help="extra key=value for training")
    return parser.parse_args(argv)


def timed(stage: str, timings: dict[str, float], action: Callable[[], T]) -> T:
    print(f"== {stage}", flush=True)
    start = time.monotonic()
    try:
        return action()
    finally:
        timings[stage] = round(time.monotonic() - start, 1)
        print(f"== {stage}: {timings[stage]:.1f} s", flush=True)


def train_command(args: argparse.Namespace, bags: Path, output: Path, cache: Path) -> list[str]:
    steps = args.train_steps
    argv = [sys.executable, "-m", "dp_policy.train"]
    argv += ["--config", f"train_pusht_{args.policy}", "--bags", str(bags), "--output", str(output)]
    argv += ["--device", args.device]
    if args.policy == "lowdim" and not args.full_size:
        argv += CPU_LOWDIM_OVERRIDES
    argv += [
        f"training.max_steps={steps}",
        f"optimizer.warmup_steps={min(500, max(1, steps // 10))}",
        f"training.val_every_steps={max(1, min(1000, steps))}",
        f"training.checkpoint_every_steps={steps}",
        f"training.log_every_steps={max(1, min(100, steps // 20))}",
        "training.progress_bar=false",
        # Demo episodes are few: a tiny run may have a single one for validation.
        "data.val_ratio=0.1",
        f"data.cache_dir={cache}",
        *args.train_override,
    ]
    return argv


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
                pm, out / "bags", args.episodes, args.record_rtf, args.seed, with_camera
            )

    recorded = timed("record", timings, do_record)
    summary["record"] = record.summarize(recorded)

    train_dir = out / "train"
    argv = train_command(args, out / "bags", train_dir, out / "dataset_cache")
    timed("train", timings, lambda: run_to_completion("train", "train", argv, out / "logs"))
    checkpoint = train_dir / "checkpoints" / "best"
    if not checkpoint.is_dir():
        checkpoint = train_dir / "checkpoints" / "latest"
    summary["train"] = {
        "steps": args.train_steps,
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
                real_time_factor=1.0,
                device=args.device,
                cpu_threads=1,
                max_step_fraction=args.max_step_fraction,
            )

    summary["serve"] = serve.summarize(timed("serve", timings, do_serve))

    eval_dir = out / "eval"
    eval_argv = [sys.executable, "-m", "dp_policy.eval", "--checkpoint", str(checkpoint)]
    eval_argv += ["--episodes", str(args.eval_episodes), "--out", str(eval_dir), "--no-progress"]
    eval_argv += ["--device", args.device]
    timed("eval", timings, lambda: run_to_completion("eval", "eval", eval_argv, out / "logs"))
    results = json.loads((eval_dir / "eval.json").read_text())["results"]
    keys = ("episodes", "mean_score", "successes", "success_rate", "mean_max_coverage")
    summary["eval"] = {key: results.get(key) for key in keys} | {
        "eval_json": str(eval_dir / "eval.json")
    }
    return summary


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
        f"coverage {srv['mean_max_coverage']:.3f}"
    )
    print(
        f"evaluated: {evl['episodes']} episodes offline, score {evl['mean_score']:.3f}, "
        f"success {evl['successes']}/{evl['episodes']}"
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
