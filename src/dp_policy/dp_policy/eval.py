"""Evaluate a checkpoint (or a scripted expert) offline with the Diffusion Policy protocol.

    python -m dp_policy.eval --checkpoint runs/pusht_image/checkpoints/best
    ros2 run dp_policy eval --checkpoint DIR --episodes 50 --start-seed 100000 --max-steps 300 \\
        [--workers N] [--num-inference-steps K] [--device auto|cpu|cuda] [--out DIR]
    python -m dp_policy.eval --policy expert            # the harness's own check, a baseline

50 episodes from seed 100000, 300 steps of 0.1 s each; score = mean over episodes of the
episode's highest reward (gym-pusht: min(coverage / 0.95, 1)); success = coverage above 0.95.
The policy sees what the ROS simulation would publish for its data spec's streams, in the same
units, and runs receding-horizon as served. Writes ``eval.json``, ``montage.png`` and
``coverage.png`` to ``--out``. See EVALUATION.md.

The arm tasks (``--task lift`` or ``can``, found from the checkpoint's topics by default):
the Robomimic protocol, 50 episodes from seed 100000 of at most 400 steps of 0.05 s, success
rate; writes ``eval.json`` and ``outcomes.png``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from dp_policy.train import strip_ros_arguments

EXIT_USAGE = 2
EXIT_FAILED = 1


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dp_policy.eval", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--checkpoint", type=Path, help="checkpoint directory (dp_policy format)")
    add(
        "--policy",
        choices=("diffusion", "expert"),
        default="diffusion",
        help="'expert': dp_sim's scripted expert through the same harness, no checkpoint "
        "(default: diffusion)",
    )
    add("--episodes", type=int, default=50, help="number of episodes (default: 50)")
    add("--start-seed", type=int, default=100000, help="first episode's seed (default: 100000)")
    add(
        "--task",
        choices=("auto", "pusht", "lift", "can"),
        default="auto",
        help="the simulated task (default: the checkpoint's, from its data spec's topics; "
        "pusht for --policy expert)",
    )
    add(
        "--max-steps",
        type=int,
        default=None,
        help="control steps per episode (default: 300 of 0.1 s for PushT, 400 of 0.05 s for "
        "Lift and Can)",
    )
    add(
        "--workers",
        type=int,
        default=None,
        help="processes, each with its own envs and model copy (default: one per core, <= 8)",
    )
    add(
        "--batch-size",
        type=int,
        default=None,
        help="episodes run in lockstep and sampled together (default: the worker's share)",
    )
    add("--num-inference-steps", type=int, default=None, help="(default: the checkpoint's)")
    add("--scheduler", default=None, help="diffusers scheduler class (default: the checkpoint's)")
    add("--device", choices=("auto", "cpu", "cuda"), default="auto", help="(default: auto)")
    add(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per process (default: cores / workers)",
    )
    add(
        "--latency-steps",
        type=int,
        default=0,
        help="steps from an observation to its plan's first executed set point: 0 is the "
        "paper's protocol (default), 1 the ROS sim loop's one step",
    )
    add(
        "--action-horizon",
        type=int,
        default=None,
        help="set points executed from each plan (Ta; default: the checkpoint's). The node "
        "replaces a chunk about one inference turnaround before its end, so it runs fewer",
    )
    add("--noise-seed", type=int, default=0, help="mixed with each episode's seed (default: 0)")
    add("--out", type=Path, default=None, help="output directory (default: runs/eval/NAME-TIME)")
    add("--montage-episodes", type=int, default=6, help="rows of the montage (default: 6)")
    add("--montage-frames", type=int, default=6, help="frames per row (default: 6)")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(list(argv))


def default_output(name: str) -> Path:
    return Path("runs") / "eval" / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def _task(arguments: argparse.Namespace) -> str:
    if arguments.task != "auto":
        return arguments.task
    if arguments.checkpoint is None:
        return "pusht"
    from dp_policy.data_spec import data_spec_from_checkpoint
    from dp_policy.evaluation.task_eval import task_of_spec

    return task_of_spec(data_spec_from_checkpoint(arguments.checkpoint))


def _evaluate_task(config, task: str, out: Path | None) -> int:
    from dp_policy.evaluation.task_eval import run_task_evaluation, write_task_outputs

    result = run_task_evaluation(config, task)
    out = out or default_output(f"{task}-{config.name}")
    report = write_task_outputs(result, out)
    results = report["results"]
    print(
        f"{task}: success {results['successes']}/{results['episodes']} "
        f"({results['success_rate']:.0%}), {report['wall_time_s']:.1f} s on {report['device']}"
    )
    print(f"wrote {out / 'eval.json'}, {out / report['outcome_plot']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(strip_ros_arguments(sys.argv[1:] if argv is None else argv))
    # Imported here so that --help and usage errors answer without loading gym and the sim.
    from dp_policy.checkpoint import CheckpointError
    from dp_policy.data_spec import DataSpecError
    from dp_policy.evaluation import (
        EvalConfig,
        EvaluationError,
        UnmappableSpecError,
        run_evaluation,
        write_outputs,
    )

    try:
        task = _task(arguments)
        default_steps = 300 if task == "pusht" else 400
        config = EvalConfig(
            checkpoint=arguments.checkpoint,
            policy=arguments.policy,
            task=task,
            episodes=arguments.episodes,
            start_seed=arguments.start_seed,
            max_steps=arguments.max_steps or default_steps,
            latency_steps=arguments.latency_steps,
            action_horizon=arguments.action_horizon,
            num_inference_steps=arguments.num_inference_steps,
            scheduler=arguments.scheduler,
            noise_seed=arguments.noise_seed,
            device=arguments.device,
            workers=arguments.workers,
            batch_size=arguments.batch_size,
            threads=arguments.threads,
            montage_episodes=arguments.montage_episodes,
            montage_frames=arguments.montage_frames,
            progress=not arguments.no_progress,
        )
        if task != "pusht":
            return _evaluate_task(config, task, arguments.out)
        result = run_evaluation(config)
    except (ValueError, CheckpointError, DataSpecError, UnmappableSpecError) as error:
        print(f"dp_policy.eval: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except EvaluationError as error:
        print(f"dp_policy.eval: {error}", file=sys.stderr)
        return EXIT_FAILED
    out = arguments.out or default_output(config.name)
    report = write_outputs(result, out)
    results = report["results"]
    print(
        f"score {results['mean_score']:.3f}, success {results['successes']}/"
        f"{results['episodes']} ({results['success_rate']:.0%}), "
        f"{report['wall_time_s']:.1f} s on {report['execution']['device']} "
        f"({report['execution']['parallelism']})"
    )
    written = [name for name in ("eval.json", report["montage"], report["coverage_plot"]) if name]
    print("wrote " + ", ".join(str(out / name) for name in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
