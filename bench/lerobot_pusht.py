"""LeRobot's DiffusionPolicy on our PushT data, budget and evaluation: a side-by-side row.

    bench/lerobot_env.sh                                  # the venv (Python 3.12, lerobot 0.6.1)
    .venv-lerobot/bin/python bench/lerobot_pusht.py --bags ~/demos
    .venv-lerobot/bin/python bench/lerobot_pusht.py --dataset CACHE.zarr --budget 60 \\
        --points 2 --eval-episodes 2 --threads 1          # smoke

The other half of ``bench/task_success.py``'s learning curve, run in LeRobot's own venv (it
needs another Python and torch than the project's), with everything but the policy ours:

1. Data: the project's dataset cache (a zarr replay buffer) of the demonstration bags, built by
   our own ``python -m dp_policy.train --build-dataset-only`` in the project's venv (``--bags``;
   into a fresh cache directory, so that the build counts in the budget as it does for
   task_success.py) or given as ``--dataset``. The same training episodes as our train config
   (``split_episodes`` with its ``val_ratio`` and seed) and the same windows (our
   ``SequenceSampler``: To=2 observations, Tp=16 actions, edges padded by repetition).
2. Policy: ``lerobot.policies.diffusion.DiffusionPolicy`` with its PushT settings (horizon 16,
   8 action steps, 100 train timesteps, its optimiser and cosine schedule with 500 warm-up
   steps, no EMA), low-dim: the pusher position as ``observation.state`` and the T pose as
   ``observation.environment_state`` (it requires an image or an environment state), both
   min-max normalised by its own processor pipeline with statistics of the training frames;
   DDIM with 10 inference steps, as our checkpoints sample.
3. Budget: ``--budget`` of wall clock from this script's start (imports and data included);
   LeRobot's schedule needs a step count, estimated from the steps/s of the first
   ``--probe-steps`` steps. The weights are kept at ``--points`` evenly spaced times.
4. Evaluation after training, with our harness (``dp_policy.evaluation``'s rollout, the sim's
   messages read through the data spec): ``--eval-episodes`` from seed 100000, 300 steps, no
   latency, each episode's initial noise from its own seeded generator as ours.

Writes ``bench/results/task_success_pusht_lowdim_lerobot_<machine>.json``: rows in
task_success.py's format (``implementation``: ``lerobot 0.6.1``) for its ``--merge``.
"""

from __future__ import annotations

import time

# The budget counts from here, imports included: ours counts from the train command's start.
STARTED = time.monotonic()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Our source tree, not an install: this venv has none of the project's packages installed.
sys.path[:0] = [str(ROOT / "src" / "dp_policy"), str(ROOT / "src" / "dp_sim"), str(ROOT / "bench")]

from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature  # noqa: E402
from lerobot.policies.diffusion import (  # noqa: E402
    DiffusionConfig,
    DiffusionPolicy,
    make_diffusion_pre_post_processors,
)
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_STATE  # noqa: E402
from task_success import machine, machine_slug  # noqa: E402

from dp_policy.data_spec import DataSpec  # noqa: E402
from dp_policy.datasets.replay_store import ReplayData, identity_mappings, open_replay  # noqa: E402
from dp_policy.datasets.sampler import Horizons, SequenceSampler, split_episodes  # noqa: E402
from dp_policy.evaluation.controllers import noise_generator  # noqa: E402
from dp_policy.evaluation.rollout import EpisodeResult, RolloutRunner, RolloutSettings  # noqa: E402
from dp_policy.evaluation.task_binding import TaskBinding, task_factory  # noqa: E402
from dp_policy.training.budget import parse_duration  # noqa: E402

TASK = "pusht"
POLICY = "lowdim"
LEROBOT_VERSION = metadata.version("lerobot")
IMPLEMENTATION = f"lerobot {LEROBOT_VERSION}"
FIRST_SEED = 100000
MAX_STEPS = 300
# Our low-dim keys -> LeRobot's: it conditions on observation.state and needs an image or an
# environment state besides, so the T pose is the environment state (as its PushT keypoints).
STATE_KEY, ENV_KEY = "agent_pos", "block_pose"


# -- data ----------------------------------------------------------------------------------------


def build_dataset(bags: Sequence[str], config: str, cache_dir: Path, python: Path) -> Path:
    """Our own dataset build (the project's venv and train command); returns the cache path."""
    with tempfile.TemporaryDirectory(prefix="lerobot_pusht_run_") as run_dir:
        command = [str(python), "-m", "dp_policy.train", "--config", config, "--bags", *bags]
        command += ["--output", run_dir, "--build-dataset-only", f"data.cache_dir={cache_dir}"]
        # Our venv's interpreter with our source tree; nothing of this venv may leak into it.
        leaking = ("VIRTUAL_ENV", "PYTHONHOME")
        environment = {k: v for k, v in os.environ.items() if k not in leaking}
        environment["PYTHONPATH"] = str(ROOT / "src" / "dp_policy")
        done = subprocess.run(
            command, cwd=ROOT, env=environment, check=True, stdout=subprocess.PIPE, text=True
        )
    return Path(json.loads(done.stdout)["cache"])


@dataclass
class Windows:
    """Our training windows over the replay buffer, served as LeRobot batches."""

    replay: ReplayData
    sampler: SequenceSampler
    horizons: Horizons
    episodes: list[int]  # the training episodes the sampler draws from

    def __len__(self) -> int:
        return len(self.sampler)

    def batch(self, windows: np.ndarray) -> dict[str, torch.Tensor]:
        rows = self.sampler.frame_indices(windows)  # (B, Tp); clamped at the edges = padded
        observed = rows[:, : self.horizons.observation]
        arrays = self.replay.arrays
        return {
            OBS_STATE: torch.from_numpy(np.asarray(arrays[STATE_KEY][observed], np.float32)),
            OBS_ENV_STATE: torch.from_numpy(np.asarray(arrays[ENV_KEY][observed], np.float32)),
            ACTION: torch.from_numpy(np.asarray(arrays["action"][rows], np.float32)),
            # Its loss asserts the key (it masks with it only with do_mask_loss_for_padding).
            "action_is_pad": torch.from_numpy(padded(rows)),
        }

    def min_max_stats(self) -> dict[str, dict[str, torch.Tensor]]:
        """LeRobot's statistics format, over the training episodes' frames (ours fits there)."""
        rows = np.concatenate([np.arange(*self.replay.episode_bounds(e)) for e in self.episodes])
        stats = {}
        for lerobot_key, key in (
            (OBS_STATE, STATE_KEY),
            (OBS_ENV_STATE, ENV_KEY),
            (ACTION, "action"),
        ):
            values = np.asarray(self.replay.arrays[key][rows], dtype=np.float32)
            stats[lerobot_key] = {
                "min": torch.from_numpy(values.min(axis=0)),
                "max": torch.from_numpy(values.max(axis=0)),
            }
        return stats


def padded(rows: np.ndarray) -> np.ndarray:
    """Which frames of windows ``(B, T)`` of buffer rows repeat an episode's first or last frame.

    Within an episode the rows increase by one, so a run of equal rows at a window's start is
    the first frame repeated (all copies but the last are padding), and one at its end the last
    frame (all copies but the first).
    """
    T = rows.shape[1]
    positions = np.arange(T)[None, :]
    before = (rows == rows[:, :1]).sum(axis=1, keepdims=True) - 1
    after = (rows == rows[:, -1:]).sum(axis=1, keepdims=True) - 1
    return (positions < before) | (positions >= T - after)


def load_windows(
    dataset: Path, spec: DataSpec, train_config: Mapping[str, Any], horizons: Horizons
) -> tuple[Windows, dict[str, Any]]:
    """The windows of our train config's training episodes, and a description for the report."""
    replay = open_replay(dataset, spec, identity_mappings(spec), in_memory=True)
    data = train_config.get("data") or {}
    seed = int((train_config.get("training") or {}).get("seed", 42))
    val_ratio = float(data.get("val_ratio", 0.05))
    train_episodes, val_episodes = split_episodes(
        replay.num_episodes, val_ratio, seed, data.get("max_val_episodes")
    )
    # As our loader does: fragments that a gap cut off were reported by the build.
    fragments = [i for i, e in enumerate(replay.episodes) if int(e.get("fragments", 1)) > 1]
    sampler = SequenceSampler(
        replay.episode_ends,
        horizons,
        train_episodes,
        skip_short=bool(data.get("skip_short_episodes", False)),
        tolerated_short=fragments,
    )
    skipped = {episode for episode, _ in sampler.skipped}
    used = [e for e in train_episodes if e not in skipped]
    description = {
        "cache": str(dataset),
        "frames": replay.num_frames,
        "episodes": replay.num_episodes,
        "train_episodes": len(used),
        "validation_episodes_left_out": len(val_episodes),
        "train_windows": len(sampler),
        "split": f"dp_policy split_episodes(val_ratio={val_ratio}, seed={seed}), as our training",
    }
    return Windows(replay, sampler, horizons, used), description


# -- policy --------------------------------------------------------------------------------------


def make_policy(
    args: argparse.Namespace, spec: DataSpec, stats: dict[str, dict[str, torch.Tensor]]
) -> tuple[DiffusionPolicy, Any, Any]:
    """LeRobot's DiffusionPolicy with its PushT settings, low-dim, and its processors."""
    sizes = {stream.key: stream.size for stream in spec.streams}
    config = DiffusionConfig(
        n_obs_steps=args.observation_horizon,
        horizon=args.prediction_horizon,
        n_action_steps=args.action_horizon,
        input_features={
            OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(sizes[STATE_KEY],)),
            OBS_ENV_STATE: PolicyFeature(type=FeatureType.ENV, shape=(sizes[ENV_KEY],)),
        },
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(sizes["action"],))},
        # Its default mapping leaves ENV features unnormalised; min-max like its state.
        normalization_mapping={
            "VISUAL": NormalizationMode.MEAN_STD,
            "STATE": NormalizationMode.MIN_MAX,
            "ENV": NormalizationMode.MIN_MAX,
            "ACTION": NormalizationMode.MIN_MAX,
        },
        down_dims=tuple(args.down_dims),
        num_train_timesteps=100,
        noise_scheduler_type="DDIM",
        num_inference_steps=args.inference_steps,
        # No camera, so no backbone; nothing may be downloaded either.
        pretrained_backbone_weights=None,
        device=args.device,
        push_to_hub=False,
    )
    policy = DiffusionPolicy(config).to(args.device)
    preprocessor, postprocessor = make_diffusion_pre_post_processors(config, dataset_stats=stats)
    return policy, preprocessor, postprocessor


def policy_summary(policy: DiffusionPolicy) -> dict[str, Any]:
    config = policy.config
    optimizer = config.get_optimizer_preset()
    scheduler = config.get_scheduler_preset()
    return {
        "class": f"{type(policy).__module__}.{type(policy).__name__}",
        "parameters": sum(p.numel() for p in policy.parameters()),
        "inputs": {key: list(feature.shape) for key, feature in config.input_features.items()},
        "normalization": {key: mode.value for key, mode in config.normalization_mapping.items()},
        "n_obs_steps": config.n_obs_steps,
        "horizon": config.horizon,
        "n_action_steps": config.n_action_steps,
        "down_dims": list(config.down_dims),
        "kernel_size": config.kernel_size,
        "n_groups": config.n_groups,
        "diffusion_step_embed_dim": config.diffusion_step_embed_dim,
        "use_film_scale_modulation": config.use_film_scale_modulation,
        "num_train_timesteps": config.num_train_timesteps,
        "beta_schedule": config.beta_schedule,
        "prediction_type": config.prediction_type,
        "clip_sample": config.clip_sample,
        "inference": f"{config.noise_scheduler_type} {config.num_inference_steps} steps",
        "do_mask_loss_for_padding": config.do_mask_loss_for_padding,
        "optimizer": {
            "class": "torch.optim.Adam (DiffusionConfig.get_optimizer_preset: AdamConfig)",
            "lr": optimizer.lr,
            "betas": list(optimizer.betas),
            "eps": optimizer.eps,
            "weight_decay": optimizer.weight_decay,
            "grad_clip_norm": optimizer.grad_clip_norm,
        },
        "lr_scheduler": {"name": scheduler.name, "num_warmup_steps": scheduler.num_warmup_steps},
        "ema": None,
        "mixed_precision": None,
    }


# -- training ------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The weights at one point of the budget."""

    point: int
    step: int
    wall_clock_s: float
    weights: dict[str, torch.Tensor]


# Steps before the speed is measured: the first ones pay for allocations and warm-up.
_UNTIMED_STEPS = 10
# The schedule's length until the probe has measured the speed: only its warm-up is used
# meanwhile (the probe is shorter than the warm-up), and that does not depend on the length.
_PROVISIONAL_STEPS = 10**9


def train(
    policy: DiffusionPolicy, preprocessor: Any, windows: Windows, args: argparse.Namespace
) -> tuple[list[Snapshot], dict[str, Any]]:
    """LeRobot's update step (forward, backward, clip, step, schedule) until the budget ends."""
    config = policy.config
    optimizer_config = config.get_optimizer_preset()
    optimizer = optimizer_config.build(policy.get_optim_params())
    scheduler_config = config.get_scheduler_preset()
    scheduler = scheduler_config.build(optimizer, _PROVISIONAL_STEPS)
    total_steps = _PROVISIONAL_STEPS
    probe: dict[str, Any] = {"probe_steps": args.probe_steps, "measured_steps_per_s": None}
    budget = args.budget_s
    times = [budget * i / args.points for i in range(1, args.points + 1)]
    snapshots: list[Snapshot] = []
    rng = np.random.default_rng(args.seed)
    order, cursor = rng.permutation(len(windows)), 0
    step, step_s, probe_started = 0, 0.0, None
    first_step_at = time.monotonic() - STARTED
    losses: list[torch.Tensor] = []
    last_log = time.monotonic()
    policy.train()

    def snapshot(point: int) -> None:
        weights = {k: v.detach().to("cpu", copy=True) for k, v in policy.state_dict().items()}
        elapsed = time.monotonic() - STARTED
        snapshots.append(Snapshot(point, step, elapsed, weights))
        print(f"point {point}: step {step} at {elapsed:.1f} s", flush=True)

    while True:
        now = time.monotonic()
        elapsed = now - STARTED
        # Stop when one more step would overrun the budget; the last snapshot costs nothing.
        if elapsed + step_s >= budget:
            break
        while len(snapshots) < args.points - 1 and elapsed >= times[len(snapshots)]:
            snapshot(len(snapshots) + 1)
        if cursor + args.batch_size > len(order):
            order, cursor = rng.permutation(len(windows)), 0
        batch = windows.batch(order[cursor : cursor + args.batch_size])
        cursor += args.batch_size

        batch = preprocessor(batch)
        loss, _ = policy.forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), optimizer_config.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # Past the estimated length the cosine would rise again: hold its end (lr 0) instead.
        if step < total_steps:
            scheduler.step()
        step += 1
        losses.append(loss.detach())

        done = time.monotonic()
        step_s = done - now if step_s == 0.0 else 0.9 * step_s + 0.1 * (done - now)
        if step == _UNTIMED_STEPS:
            probe_started = done
        if step == args.probe_steps and probe_started is not None:
            # The schedule's length: the steps so far plus what the rest of the budget holds.
            rate = (step - _UNTIMED_STEPS) / (done - probe_started)
            total_steps = step + max(1, int(rate * (budget - (done - STARTED))))
            scheduler = scheduler_config.build(optimizer, total_steps)
            for _ in range(step):  # to where the provisional one was
                scheduler.step()
            probe.update(measured_steps_per_s=round(rate, 3), estimated_total_steps=total_steps)
            print(f"{rate:.2f} steps/s: lr schedule over {total_steps} steps", flush=True)
        if done - last_log >= args.log_every:
            mean = torch.stack(losses).mean().item()
            lr = optimizer.param_groups[0]["lr"]
            print(f"step {step} {done - STARTED:.0f} s loss {mean:.4f} lr {lr:.2e}", flush=True)
            losses.clear()
            last_log = done
    while len(snapshots) < args.points:
        snapshot(len(snapshots) + 1)
    probe["actual_steps"] = step
    if probe["measured_steps_per_s"] is None:
        probe["note"] = "the budget ended before the probe: only the warm-up was used"
    report = {
        "steps": step,
        "wall_clock_s": round(time.monotonic() - STARTED, 1),
        # Imports, data and model before the first step: part of the budget, as in ours.
        "first_step_at_s": round(first_step_at, 1),
        "last_loss": round(torch.stack(losses).mean().item(), 5) if losses else None,
        "lr_schedule": {
            "how": (
                "LeRobot's cosine with warm-up needs its length in steps: estimated from the "
                f"steps/s measured over steps {_UNTIMED_STEPS}..{args.probe_steps} and the "
                "budget left then; held at its end (lr 0) if training ran past it"
            ),
            **probe,
        },
    }
    return snapshots, report


# -- evaluation ----------------------------------------------------------------------------------


class LeRobotController:
    """Our evaluation's Controller around LeRobot's policy: its processors, its sampling.

    ``predict_action_chunk`` returns the Ta actions from index To-1 of the predicted sequence
    (as our DiffusionController executes); its initial noise comes from each episode's own
    generator, seeded as ours (DDIM with eta 0 draws no other noise), so an episode's actions
    depend on its seed only, not on the other episodes of its batch.
    """

    def __init__(
        self,
        policy: DiffusionPolicy,
        preprocessor: Any,
        postprocessor: Any,
        binding: TaskBinding,
        noise_seed: int = 0,
    ) -> None:
        self.policy = policy.eval()
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.binding = binding
        self.noise_seed = noise_seed
        self.observation_horizon = policy.config.n_obs_steps
        self._generators: dict[int, torch.Generator] = {}
        self.predictions = 0

    def reset(self, slot: int, seed: int) -> None:
        self._generators[slot] = noise_generator(seed, self.noise_seed)

    def plan(
        self,
        slots: Sequence[int],
        observations: Mapping[str, np.ndarray],
        messages: Sequence[Mapping[str, Any]],
    ) -> np.ndarray:
        config = self.policy.config
        shape = (1, config.horizon, config.action_feature.shape[0])
        noise = torch.cat([torch.randn(shape, generator=self._generators[s]) for s in slots])
        batch = {
            OBS_STATE: torch.from_numpy(np.asarray(observations[STATE_KEY], np.float32)),
            OBS_ENV_STATE: torch.from_numpy(np.asarray(observations[ENV_KEY], np.float32)),
        }
        with torch.inference_mode():
            batch = self.preprocessor(batch)
            # Empty queues (no select_action): it samples from the batch's (B, To, D) as given.
            actions = self.policy.predict_action_chunk(batch, noise=noise.to(config.device))
            actions = self.postprocessor(actions)
        actions = actions.to(torch.float64).cpu().numpy()
        self.predictions += 1
        if not np.all(np.isfinite(actions)):
            raise FloatingPointError("the policy predicted NaN or infinite actions")
        return self.binding.command_vector(actions)


def evaluate(
    policy: DiffusionPolicy,
    preprocessor: Any,
    postprocessor: Any,
    binding: TaskBinding,
    args: argparse.Namespace,
) -> tuple[list[EpisodeResult], dict[str, float]]:
    """Our protocol: the episodes in lockstep groups, 300 steps, no latency."""
    policy.reset()
    controller = LeRobotController(policy, preprocessor, postprocessor, binding, args.noise_seed)
    make_task = task_factory(binding.spec, TASK, MAX_STEPS)
    settings = RolloutSettings(MAX_STEPS, latency_steps=0)
    runner = RolloutRunner(make_task, controller, binding, settings)
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.eval_episodes))
    started = time.perf_counter()
    results: list[EpisodeResult] = []
    try:
        for start in range(0, len(seeds), args.eval_batch):
            results += runner.run(seeds[start : start + args.eval_batch])
    finally:
        runner.close()
    timing = {
        "wall_time_s": round(time.perf_counter() - started, 1),
        "controller_s": round(runner.timing.controller_s, 1),
        "env_s": round(runner.timing.env_s, 1),
    }
    return results, timing


def row(snapshot: Snapshot, results: list[EpisodeResult]) -> dict[str, Any]:
    """A row as task_success.py writes ours."""
    count = len(results)
    successes = sum(r.success for r in results)
    return {
        "task": TASK,
        "policy": POLICY,
        "implementation": IMPLEMENTATION,
        "budget_s": round(snapshot.wall_clock_s, 1),
        "step": snapshot.step,
        "checkpoint": f"point_{snapshot.point}",
        "mean_max_coverage": round(float(np.mean([r.max_score for r in results])), 4),
        "mean_score": round(float(np.mean([r.score for r in results])), 4),
        "success_rate": round(successes / count, 4),
        "successes": successes,
        "episodes": count,
        "first_seed": FIRST_SEED,
    }


# -- main ----------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bags", nargs="+", help="demonstration bags: built with our venv")
    source.add_argument("--dataset", type=Path, help="a dataset cache (<key>.zarr) to use as is")
    add("--cache-dir", type=Path, help="dataset cache for --bags (default: a fresh temporary one)")
    add("--project-python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    add("--config", default="train_pusht_lowdim", help="our train config: spec, split, seed")
    add("--budget", default="30m", help="wall clock from the script's start (default: 30m)")
    add("--points", type=int, default=6, help="evaluated points of the budget (default: 6)")
    add("--eval-episodes", type=int, default=50, help="episodes per point (default: 50)")
    add("--eval-batch", type=int, default=50, help="episodes in lockstep (default: 50)")
    add("--threads", type=int, default=2, help="torch threads (default: 2)")
    add("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    add("--down-dims", type=int, nargs="+", default=[64, 128, 256], help="U-Net widths")
    add("--batch-size", type=int, default=64, help="LeRobot's PushT batch (default: 64)")
    add("--observation-horizon", type=int, default=2)
    add("--prediction-horizon", type=int, default=16)
    add("--action-horizon", type=int, default=8)
    add("--inference-steps", type=int, default=10, help="DDIM steps (default: 10)")
    add("--probe-steps", type=int, default=100, help="steps that time the schedule's length")
    add("--seed", type=int, default=42, help="training seed (default: 42)")
    add("--noise-seed", type=int, default=0, help="evaluation noise seed, as ours (default: 0)")
    add("--log-every", type=float, default=30.0, help="seconds between progress lines")
    add("--output", type=Path, help="result JSON (default: bench/results/..)")
    args = parser.parse_args(argv)
    args.budget_s = parse_duration(args.budget)
    if args.points < 1:
        parser.error("--points must be >= 1")
    if args.probe_steps <= _UNTIMED_STEPS:
        parser.error(f"--probe-steps must exceed {_UNTIMED_STEPS}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config_path = ROOT / "src" / "dp_policy" / "config" / f"{args.config}.yaml"
    train_config = yaml.safe_load(config_path.read_text())
    spec = DataSpec.from_yaml(config_path.parent / train_config["data"]["spec"])
    horizons = Horizons(args.observation_horizon, args.prediction_horizon, args.action_horizon)

    started = time.monotonic()
    if args.bags:
        bags = [str(Path(b).resolve()) for b in args.bags]
        with tempfile.TemporaryDirectory(prefix="lerobot_pusht_cache_") as fresh:
            cache_dir = args.cache_dir or Path(fresh)
            print(f"building the dataset in {cache_dir} with our venv ...", flush=True)
            dataset = build_dataset(bags, args.config, cache_dir, args.project_python)
            windows, description = load_windows(dataset, spec, train_config, horizons)
            description["cache_removed"] = args.cache_dir is None  # loaded in memory first
        demonstrations: dict[str, Any] = {"bags": bags}
    else:
        windows, description = load_windows(args.dataset.resolve(), spec, train_config, horizons)
        demonstrations = {"dataset": str(args.dataset.resolve())}
    description["seconds"] = round(time.monotonic() - started, 1)
    print(f"dataset: {json.dumps(description)}", flush=True)

    policy, preprocessor, postprocessor = make_policy(args, spec, windows.min_max_stats())
    summary = policy_summary(policy)
    print(f"training {summary['class']} ({summary['parameters']} parameters) ...", flush=True)
    snapshots, training = train(policy, preprocessor, windows, args)
    training["dataset"] = description
    print(f"trained {training['steps']} steps in {training['wall_clock_s']} s", flush=True)

    # The spec bound to one PushT task (the topics and controllers every episode's task has).
    template = task_factory(spec, TASK, MAX_STEPS)()
    binding = TaskBinding(spec, template)
    template.reset(FIRST_SEED)
    binding.check_messages()
    rows, evaluations = [], []
    try:
        for snapshot in snapshots:
            policy.load_state_dict(snapshot.weights)
            results, timing = evaluate(policy, preprocessor, postprocessor, binding, args)
            rows.append(row(snapshot, results))
            evaluations.append({"checkpoint": rows[-1]["checkpoint"], **timing})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        template.close()

    info = machine()
    output = args.output or (
        ROOT
        / "bench"
        / "results"
        / f"task_success_{TASK}_{POLICY}_lerobot_{machine_slug(info)}.json"
    )
    report = {
        "benchmark": f"task_success {TASK} {POLICY} ({IMPLEMENTATION})",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {
            "implementation": IMPLEMENTATION,
            "budget_s": args.budget_s,
            "points": args.points,
            "eval_episodes": args.eval_episodes,
            "eval_first_seed": FIRST_SEED,
            "max_steps": MAX_STEPS,
            "latency_steps": 0,
            "eval_batch": args.eval_batch,
            "noise_seed": args.noise_seed,
            "device": args.device,
            "threads": args.threads,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "train_config": args.config,
            "policy": summary,
        },
        "demonstrations": demonstrations,
        "training": training,
        "evaluation": evaluations,
        "rows": rows,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
