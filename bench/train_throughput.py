"""Training throughput of dp_policy, written as JSON naming the machine.

    source scripts/env.sh && PYTHONPATH=src/dp_policy python bench/train_throughput.py
    PYTHONPATH=src/dp_policy python bench/train_throughput.py --device cuda      # on a GPU
    ... --cache-frames 2000     # also time building the dataset cache (needs rosbags, zarr)

1. Samples per second of full training steps (the trainer's own ``OptimizationStep``:
   forward and loss under autocast, backward, gradient clipping, AdamW, LR schedule, EMA
   update) on synthetic batches, after warm-up steps:
   - ``image``: the paper's image-PushT policy (ResNet-18 with GroupNorm and spatial softmax,
     84x84 random crops of a 96x96 camera, 1-D U-Net 512/1024/2048, To=2, Tp=16), batch 64;
   - ``lowdim``: the low-dimensional PushT policy (U-Net 256/512/1024 on 6 values), batch 64.
   Batches start on the host (images uint8) and are moved to the device every step, as in
   training. bf16 autocast on CUDA, full precision on the CPU.
2. Optional (``--cache-frames N``): seconds to build the dataset cache from N frames of
   simulated-PushT bags (96x96 rgb8 camera with gradient and noise, joint states, block pose,
   commands, events; 200-frame episodes, one bag each), per 1,000 frames, and the time of a
   second, cache-hit run (hashing every bag's bytes included).

Only torch, diffusers and dp_policy are needed for part 1 (no ROS, rosbags or zarr).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src" / "dp_policy"))

from dp_policy import (  # noqa: E402
    ActionSpec,
    DiffusionPolicy,
    HorizonConfig,
    ObservationSpec,
    PolicyConfig,
    PolicyEMA,
    UNetConfig,
)
from dp_policy.training.config import OptimizerConfig  # noqa: E402
from dp_policy.training.loop import (  # noqa: E402
    LossModule,
    OptimizationStep,
    make_optimizer,
    make_scheduler,
    resolve_precision,
)

JOINTS = ("pusher_x_joint", "pusher_y_joint")


def policy_configs() -> dict[str, PolicyConfig]:
    """The benchmarked policies: the paper's image PushT and a low-dim PushT."""
    horizon = HorizonConfig(observation_horizon=2, prediction_horizon=16, action_horizon=8)
    action = ActionSpec(dim=2, dt=0.1, names=JOINTS)
    return {
        "image": PolicyConfig(
            observation=ObservationSpec(cameras={"image": (3, 96, 96)}, low_dim={"agent_pos": 2}),
            action=action,
            horizon=horizon,
        ),
        "lowdim": PolicyConfig(
            observation=ObservationSpec(low_dim={"agent_pos": 2, "block_pose": 4}),
            action=action,
            horizon=horizon,
            unet=UNetConfig(down_dims=(256, 512, 1024)),
        ),
    }


def synthetic_batch(config: PolicyConfig, batch_size: int, pin: bool) -> dict[str, Any]:
    """A host batch shaped like the dataset's: images uint8 ``(B, To, C, H, W)``."""
    generator = torch.Generator().manual_seed(0)
    To, Tp = config.horizon.observation_horizon, config.horizon.prediction_horizon
    observations = {
        key: torch.randint(0, 256, (batch_size, To, *shape), dtype=torch.uint8, generator=generator)
        for key, shape in config.observation.cameras.items()
    }
    for key, size in config.observation.low_dim.items():
        observations[key] = torch.rand((batch_size, To, size), generator=generator)
    batch = {
        "obs": observations,
        "action": torch.rand((batch_size, Tp, config.action.dim), generator=generator),
    }
    if pin:
        batch = {
            "obs": {k: v.pin_memory() for k, v in batch["obs"].items()},
            "action": batch["action"].pin_memory(),
        }
    return batch


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_policy(
    name: str,
    config: PolicyConfig,
    device: torch.device,
    batch_size: int,
    warmup: int,
    steps: int,
) -> dict[str, Any]:
    torch.manual_seed(0)
    policy = DiffusionPolicy(config)
    batch = synthetic_batch(config, batch_size, pin=device.type == "cuda")
    policy.fit_normalizer(batch["action"], {k: batch["obs"][k] for k in config.observation.low_dim})
    policy.to(device).train()
    ema = PolicyEMA(policy)
    optimizer_config = OptimizerConfig(warmup_steps=min(500, warmup + steps))
    optimizer = make_optimizer(policy, optimizer_config)
    scheduler = make_scheduler(optimizer, optimizer_config, 100_000)
    autocast = resolve_precision("auto", device)
    step = OptimizationStep(
        policy,
        LossModule(policy),
        optimizer,
        scheduler,
        ema,
        device,
        autocast,
        optimizer_config.grad_clip_norm,
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step(batch)
    _synchronize(device)
    started = time.perf_counter()
    losses = [step(batch) for _ in range(steps)]
    _synchronize(device)
    elapsed = time.perf_counter() - started
    final_loss = float(losses[-1].detach())
    result = {
        "policy": name,
        "batch_size": batch_size,
        "parameters": sum(p.numel() for p in policy.parameters()),
        "autocast": str(autocast).replace("torch.", "") if autocast else "none",
        "warmup_steps": warmup,
        "timed_steps": steps,
        "seconds_per_step": elapsed / steps,
        "samples_per_s": steps * batch_size / elapsed,
        "final_loss": final_loss,
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(
        f"{name}: {result['samples_per_s']:.1f} samples/s "
        f"({1000 * result['seconds_per_step']:.1f} ms/step, batch {batch_size}, "
        f"{result['autocast']})",
        flush=True,
    )
    return result


def measure_cache(frames: int, episode_frames: int = 200) -> dict[str, Any]:
    """Seconds to build the dataset cache of ``frames`` frames of sim-like bags."""
    sys.path.insert(0, str(ROOT / "tests"))
    from dp_policy.data_spec import DataSpec
    from dp_policy.datasets.cache import DatasetCache
    from dp_testing import demonstration_bags as fixtures  # the tests' record-free bag writer

    spec_data = dict(fixtures.PUSHT_SPEC)
    spec_data["observations"] = [
        dict(spec_data["observations"][0], shape=[3, 96, 96]),
        spec_data["observations"][1],
    ]
    spec = DataSpec.from_dict(spec_data)
    root = Path(tempfile.mkdtemp(prefix="dp_cache_bench_"))
    try:
        bags = root / "bags"
        count = max(1, frames // episode_frames)
        started = time.perf_counter()
        for index in range(count):
            fixtures.write_pusht_bag(
                bags / f"episode_{index:04d}",
                [fixtures.EpisodePlan(episode_frames)],
                image_size=(96, 96),
                first_frame=index * episode_frames,
                seed=index,
                texture=48,
            )
        write_seconds = time.perf_counter() - started
        bag_bytes = sum(f.stat().st_size for f in bags.rglob("*") if f.is_file())
        cache = DatasetCache(root / "cache")
        started = time.perf_counter()
        built = cache.get_or_build([bags], spec, show_progress=False)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        again = cache.get_or_build([bags], spec, show_progress=False)
        warm = time.perf_counter() - started
        assert again.hit
        stored = built.report["frames"]
        cache_bytes = sum(f.stat().st_size for f in built.path.rglob("*") if f.is_file())
        result = {
            "bags": count,
            "frames_written": count * episode_frames,
            "frames_stored": stored,
            "bag_mib": bag_bytes / 2**20,
            "cache_mib": cache_bytes / 2**20,
            "write_bags_seconds": write_seconds,
            "build_seconds": cold,
            "build_seconds_per_1000_frames": 1000 * cold / stored,
            "hash_seconds": built.hash_seconds,
            "hash_gib_per_s": bag_bytes / 2**30 / max(built.hash_seconds, 1e-9),
            "cache_hit_seconds": warm,
        }
        print(
            f"dataset cache: {result['build_seconds_per_1000_frames']:.2f} s per 1000 frames "
            f"({stored} frames, {result['bag_mib']:.0f} MiB of bags -> "
            f"{result['cache_mib']:.0f} MiB), cache hit {warm:.2f} s",
            flush=True,
        )
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def machine(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(device),
        # Other work on the machine slows the CPU figures; this says how much there was.
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["gpu"] = properties.name
        info["gpu_memory_gib"] = round(properties.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, help="timed steps (default 50 on GPU, 3 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 10 / 1)")
    parser.add_argument("--policies", default="image,lowdim", help="comma-separated")
    parser.add_argument(
        "--cache-frames", type=int, default=0, help="also time the dataset cache (0: skip)"
    )
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/...)")
    arguments = parser.parse_args()
    if arguments.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(arguments.device)
    gpu = device.type == "cuda"
    steps = arguments.steps or (50 if gpu else 3)
    warmup = arguments.warmup if arguments.warmup is not None else (10 if gpu else 1)
    configs = policy_configs()
    report: dict[str, Any] = {
        "benchmark": "train_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(device),
        "training_step": "forward + loss (autocast bf16 on CUDA) + backward + grad clip 1.0 + "
        "AdamW + cosine LR + EMA; synthetic batches moved host->device every step",
        "policies": [],
    }
    for name in arguments.policies.split(","):
        report["policies"].append(
            measure_policy(name, configs[name], device, arguments.batch_size, warmup, steps)
        )
    if arguments.cache_frames:
        report["dataset_cache"] = measure_cache(arguments.cache_frames)
    label = "cpu"
    if gpu:
        label = re.sub(r"[^a-z0-9]+", "_", report["machine"]["gpu"].lower()).strip("_")
        label = label.removeprefix("nvidia_")
    output = arguments.output or ROOT / "bench" / "results" / f"train_throughput_{label}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {output}")
    # The PNG is a by-product, drawn in a process of its own: a plotting problem (say, no
    # matplotlib on a GPU box) is reported there and costs the benchmark nothing.
    subprocess.run([sys.executable, str(Path(__file__).with_name("plots.py")), str(output)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
