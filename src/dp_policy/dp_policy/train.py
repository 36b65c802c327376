"""Train a diffusion policy from demonstration bags or a zarr replay buffer: one command.

    ros2 run dp_policy train --config train_pusht_image --bags ~/dp_demonstrations
    python -m dp_policy.train --config train_pusht_image.yaml --bags DIR [DIR ...] \\
        --output runs/pusht training.max_steps=20000 training.batch_size=32
    torchrun --nproc_per_node 4 -m dp_policy.train --config ... --bags ...     # several GPUs

``--config`` is a YAML file, or the name of one installed with dp_policy (``share/dp_policy/
config``); ``section.key=value`` arguments override it. The dataset is built into the cache on
the first run over some bags and found there afterwards. The served checkpoint (EMA weights
with the data spec, for the inference node) is ``<output>/checkpoints/best`` (lowest
validation loss) or ``<output>/checkpoints/latest``; ``--resume auto`` continues a run.
See TRAINING.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

PACKAGE = "dp_policy"
_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")
LOGGER = logging.getLogger("dp_policy.train")


def installed_config_dirs() -> list[Path]:
    """Where configs shipped with dp_policy are: the source tree, then the install spaces."""
    directories = [Path(__file__).resolve().parents[1] / "config"]
    prefixes = [*os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep), sys.prefix]
    directories += [Path(p) / "share" / PACKAGE / "config" for p in prefixes if p]
    return [d for d in dict.fromkeys(directories) if d.is_dir()]


def resolve_config_path(name: str) -> Path:
    """A config file path, or the name of an installed config (with or without .yaml)."""
    given = Path(name).expanduser()
    if given.is_file():
        return given
    if given.parent == Path("."):
        for directory in installed_config_dirs():
            for candidate in (directory / name, directory / f"{name}.yaml"):
                if candidate.is_file():
                    return candidate
    available = sorted({p.stem for d in installed_config_dirs() for p in d.glob("train_*.yaml")})
    raise FileNotFoundError(
        f"training config {name!r} not found (a YAML file, or one of the installed configs: "
        f"{', '.join(available) or 'none found'})"
    )


def strip_ros_arguments(argv: Sequence[str]) -> list[str]:
    """Drop ``--ros-args ... [--]`` that ``ros2 run``/launch may append."""
    result, skipping = [], False
    for argument in argv:
        if argument == "--ros-args":
            skipping = True
        elif skipping and argument == "--":
            skipping = False
        elif not skipping:
            result.append(argument)
    return result


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train",
        description="Train a diffusion policy from rosbag2 demonstrations or a zarr replay buffer.",
        epilog="Overrides: section.key=value with YAML values, e.g. training.batch_size=32 "
        "optimizer.lr=3e-4 data.include_failed=true. See TRAINING.md.",
    )
    parser.add_argument("--config", required=True, help="YAML file or installed config name")
    parser.add_argument(
        "--bags", nargs="+", metavar="DIR", help="bag directories or folders of bags"
    )
    parser.add_argument("--zarr", metavar="PATH", help="a Diffusion Policy zarr replay buffer")
    parser.add_argument("--output", metavar="DIR", help="run directory (output_dir)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (training.device)")
    parser.add_argument(
        "--budget",
        metavar="DURATION",
        help="train for this much wall clock (30m, 2h, 1h30m), dataset building included: "
        "training.max_time, with no step or epoch limit unless overridden too",
    )
    parser.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="'auto' (the run's latest checkpoint, if any) or a step_<N> checkpoint directory",
    )
    parser.add_argument(
        "--build-dataset-only",
        action="store_true",
        help="build (or find) the dataset cache, print its report, and stop",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and stop"
    )
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    arguments = parser.parse_args(argv)
    # "--bags DIR training.max_steps=10": nargs="+" swallows the overrides that follow.
    bags = arguments.bags or []
    arguments.overrides = [b for b in bags if _OVERRIDE.match(b)] + arguments.overrides
    arguments.bags = [b for b in bags if not _OVERRIDE.match(b)] or None
    return arguments


def _flag_overrides(arguments: argparse.Namespace) -> list[str]:
    overrides = []
    if arguments.bags:
        paths = [str(Path(p).expanduser().resolve()) for p in arguments.bags]
        overrides.append(f"data.bags={json.dumps(paths)}")
    if arguments.zarr:
        overrides.append(f"data.zarr.path={json.dumps(str(Path(arguments.zarr).expanduser()))}")
    if arguments.output:
        overrides.append(f"output_dir={json.dumps(arguments.output)}")
    if arguments.device:
        overrides.append(f"training.device={arguments.device}")
    if arguments.budget:
        overrides.append(f"training.max_time={json.dumps(arguments.budget)}")
        overrides += ["training.max_steps=null", "training.num_epochs=null"]
    return overrides


def _setup_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="[%(name)s] %(levelname)s: %(message)s"
        if rank == 0
        else f"[rank {rank}] %(message)s",
        stream=sys.stderr,
    )


def _resume_checkpoint(argument: str | None, output_dir: Path) -> Path | None:
    from dp_policy.training.loop import find_latest_checkpoint

    if argument is None:
        existing = find_latest_checkpoint(output_dir)
        if existing is not None:
            raise FileExistsError(
                f"{output_dir} holds a training run already (latest checkpoint {existing.name}): "
                "pass --resume auto to continue it, or choose another --output"
            )
        return None
    if argument == "auto":
        found = find_latest_checkpoint(output_dir)
        if found is None:
            LOGGER.info("no checkpoint in %s to resume from: starting a new run", output_dir)
        return found
    path = Path(argument).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {argument}: no such checkpoint directory")
    return path.resolve()


def run_training(arguments: argparse.Namespace) -> int:
    # Imported here so that --help answers without loading torch.
    from dp_policy.checkpoint import CheckpointError
    from dp_policy.datasets.errors import DatasetError
    from dp_policy.training.config import ConfigError, build_config
    from dp_policy.training.data import prepare_data
    from dp_policy.training.distributed import init_distributed
    from dp_policy.training.loop import Trainer
    from dp_policy.training.state import TrainingStateError

    # A time budget counts from here: building the dataset is part of what the user waits for.
    started_at = time.monotonic()
    rank = int(os.environ.get("RANK", "0"))
    _setup_logging(rank)
    context = None
    try:
        config_path = resolve_config_path(arguments.config)
        config = build_config(config_path, [*_flag_overrides(arguments), *arguments.overrides])
        if arguments.print_config:
            print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
            return 0
        if config.data.source == "bags" and not config.data.bags:
            raise ConfigError("no demonstrations: pass --bags DIR (or set data.bags, or data.zarr)")
        output_dir = Path(config.output_dir).expanduser().resolve()
        resume = (
            None
            if arguments.build_dataset_only
            else _resume_checkpoint(arguments.resume, output_dir)
        )
        context = init_distributed(config.training.device)
        data = prepare_data(config, context, show_progress=config.training.progress_bar)
        description = data.describe()
        if arguments.build_dataset_only:
            if context.is_main:
                print(json.dumps(description, indent=2))
            return 0
        if context.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "config.yaml").write_text(
                yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8"
            )
            (output_dir / "dataset.json").write_text(
                json.dumps(description, indent=2) + "\n", encoding="utf-8"
            )
            LOGGER.info(
                "training on %d windows of %d episode(s), validating on %d window(s)",
                description["train_windows"],
                len(description["train_episodes"]),
                description["val_windows"],
            )
        trainer = Trainer(config, data, context, output_dir, started_at=started_at)
        if resume is not None:
            trainer.resume_from(resume)
        result = trainer.run()
        if context.is_main:
            served = result.best_checkpoint or result.latest_checkpoint
            print(
                f"trained {result.step} steps ({result.samples_per_second:.1f} samples/s)\n"
                f"  checkpoint to serve: {served}\n"
                f"  latest (resumable):  {result.latest_checkpoint}\n"
                f"  loss curve:          {output_dir / 'loss_curve.png'}\n"
                f"  TensorBoard:         tensorboard --logdir {output_dir / 'tensorboard'}"
            )
        return 0
    except (
        ConfigError,
        DatasetError,
        TrainingStateError,
        CheckpointError,
        FileNotFoundError,
        FileExistsError,
        FloatingPointError,
    ) as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train: interrupted; resume with --resume auto", file=sys.stderr)
        return 130
    finally:
        if context is not None:
            context.close()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(strip_ros_arguments(sys.argv[1:] if argv is None else argv))
    return run_training(arguments)


if __name__ == "__main__":
    sys.exit(main())
