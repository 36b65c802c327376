"""GPU check of the policy node's ROS-free core: device, warm-up, inference thread, scheduling.

    # On a GPU machine (no ROS needed; torch, torchvision, diffusers, safetensors, numpy):
    PYTHONPATH=src/dp_policy:src/dp_policy_node:/tmp/site python bench/policy_node_gpu_check.py
    # Anywhere, on the CPU, with small models:
    python bench/policy_node_gpu_check.py --device cpu --small
    # A trained checkpoint at its own rate (dt, To, Tp, Ta, cameras from its manifest):
    python bench/policy_node_gpu_check.py --device cpu --checkpoint runs/lift_image_cpu/final \
        --output bench/results/served_rate_lift_image_cpu2.json

For two policies -- the paper's image policy (one 96x96 camera + 2-D agent position, U-Net
down_dims (512, 1024, 2048), ResNet-18 encoder) and a low-dim one (2-D agent + 5-D block pose,
U-Net (256, 512, 1024)) -- built with random weights and saved as real checkpoints
(safetensors + JSON), it runs what the node runs on configure and while active:

- device selection (``resolve_device``), loading and warm-up on the inference thread;
- chunks requested through ``InferenceWorker.submit`` while the calling thread keeps ticking
  (its longest stall shows whether callbacks would wait on the GPU);
- latency per chunk (p50, p99, max) and turnaround (submit to result);
- the ``ChunkScheduler``'s decisions with the measured turnaround: how early the next chunk
  is requested, whether it fits, and a replay of the measured latencies through the
  scheduler and ``plan_chunk`` (chunks late, gaps between chunks);
- device memory before loading, after loading and after ``close`` (cleanup must free it);
- each of ``--sampler-backends`` (default eager and auto: the CUDA graph on a GPU, the fast
  path on a CPU) in turn, with what actually served, its warm-up check against eager, and the
  speed-up over eager.

``--checkpoint DIR`` serves that checkpoint instead (its weights, its timing: the chunk period is
its Ta times its dt), so the same figures answer "does this policy keep up on this machine?":
``served_rate`` says whether the p99 turnaround plus the margin fits in a chunk's execution.

Writes JSON to bench/results/policy_node_gpu_check.json (machine, settings, results, checks)
and exits 1 if a check fails. Meant to finish within 2 minutes on an H100.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Runs from a checkout, with or without the workspace's install space.
for package in ("dp_policy", "dp_policy_node"):
    sys.path.insert(0, str(ROOT / "src" / package))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dp_policy import (  # noqa: E402
    ActionSpec,
    DiffusionPolicy,
    HorizonConfig,
    NoiseScheduleConfig,
    ObservationSpec,
    PolicyConfig,
    UNetConfig,
    VisionConfig,
    read_checkpoint_manifest,
    save_checkpoint,
)
from dp_policy_node.chunk_scheduler import ChunkScheduler  # noqa: E402
from dp_policy_node.fast_path import cpu_has_fast_bf16  # noqa: E402
from dp_policy_node.inference_worker import InferenceWorker, resolve_device  # noqa: E402
from dp_policy_node.trajectory_builder import plan_chunk  # noqa: E402

NS = 1_000_000_000
DT, TO, TP, TA = 0.1, 2, 16, 8  # PushT: 10 Hz, the paper's horizons
LATENCY_MARGIN = 0.02
MIB = 2**20


def policy_configs(small: bool) -> dict[str, PolicyConfig]:
    horizon = HorizonConfig(observation_horizon=TO, prediction_horizon=TP, action_horizon=TA)
    noise = NoiseScheduleConfig(num_inference_steps=10)
    image_dims = (32, 64, 128) if small else (512, 1024, 2048)
    low_dim_dims = (32, 64, 128) if small else (256, 512, 1024)
    return {
        "image": PolicyConfig(
            observation=ObservationSpec(cameras={"image": (3, 96, 96)}, low_dim={"agent_pos": 2}),
            action=ActionSpec(dim=2, dt=DT, names=("pusher_x_joint", "pusher_y_joint")),
            horizon=horizon,
            unet=UNetConfig(down_dims=image_dims),
            vision=VisionConfig(crop_shape=(84, 84)),
            noise=noise,
        ),
        "low_dim": PolicyConfig(
            observation=ObservationSpec(low_dim={"agent_pos": 2, "block_pose": 5}),
            action=ActionSpec(dim=2, dt=DT, names=("pusher_x_joint", "pusher_y_joint")),
            horizon=horizon,
            unet=UNetConfig(down_dims=low_dim_dims),
            noise=noise,
        ),
    }


def save_random_checkpoint(config: PolicyConfig, directory: Path) -> float:
    """Random weights, normaliser fitted on random data, saved as the node would load it."""
    started = time.perf_counter()
    torch.manual_seed(0)
    policy = DiffusionPolicy(config)
    actions = torch.rand(512, config.action.dim) * 0.5 - 0.25
    low_dim = {key: torch.rand(512, size) for key, size in config.observation.low_dim.items()}
    policy.fit_normalizer(actions, low_dim)
    save_checkpoint(policy, directory)
    del policy
    return time.perf_counter() - started


def random_observations(config: PolicyConfig, generator: np.random.Generator) -> dict:
    """One request's observations ``{key: (To, ...)}``: the network's cost does not depend on
    their content."""
    steps = config.horizon.observation_horizon
    observations = {
        key: generator.integers(0, 256, size=(steps, *shape), dtype=np.uint8)
        for key, shape in config.observation.cameras.items()
    }
    for key, size in config.observation.low_dim.items():
        observations[key] = generator.uniform(0.0, 1.0, size=(steps, size))
    return observations


def memory(device: str) -> dict:
    if not device.startswith("cuda"):
        return {}
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    return {
        "allocated_mib": round(torch.cuda.memory_allocated(device) / MIB, 2),
        "reserved_mib": round(torch.cuda.memory_reserved(device) / MIB, 2),
        # The driver's view, CUDA context included (which lives as long as the process).
        "device_used_mib": round((total - free) / MIB, 1),
    }


def percentiles(values: list[float]) -> dict:
    array = np.asarray(values) * 1e3
    return {
        "count": int(array.size),
        "p50_ms": round(float(np.percentile(array, 50)), 3),
        "p99_ms": round(float(np.percentile(array, 99)), 3),
        "max_ms": round(float(array.max()), 3),
        "mean_ms": round(float(array.mean()), 3),
    }


def serve(worker: InferenceWorker, config: PolicyConfig, requests: int, budget_s: float) -> dict:
    """Submit chunks one at a time while this thread ticks every millisecond, as an executor."""
    generator = np.random.default_rng(0)
    latencies, turnarounds, stalls, bad = [], [], [], 0
    deadline = time.perf_counter() + budget_s
    for sequence in range(requests):
        if time.perf_counter() > deadline:
            break
        assert worker.submit(random_observations(config, generator), sequence * NS, sequence)
        last_tick = time.perf_counter()
        longest = 0.0
        result = None
        while result is None:
            result = worker.wait_result(timeout=0.001)
            now = time.perf_counter()
            longest = max(longest, now - last_tick)
            last_tick = now
        if result.error is not None:
            raise RuntimeError(f"inference failed: {result.error}")
        if result.samples.shape != (1, config.horizon.prediction_horizon, config.action.dim):
            raise RuntimeError(f"unexpected chunk shape {result.samples.shape}")
        bad += int(not np.all(np.isfinite(result.samples)))
        latencies.append(result.latency)
        turnarounds.append(result.turnaround)
        stalls.append(longest)
    return {
        "latency": percentiles(latencies),
        "turnaround": percentiles(turnarounds),
        "caller_longest_stall_ms": round(max(stalls) * 1e3, 3),
        "non_finite_chunks": bad,
        "raw_turnarounds_s": [round(value, 6) for value in turnarounds],
    }


def schedule(turnarounds: list[float], config: PolicyConfig) -> dict:
    """The scheduler's decisions with the measured turnaround, and a replay of the latencies,
    at the policy's own rate (its dt and horizons)."""
    dt = config.action.dt
    To = config.horizon.observation_horizon
    Tp = config.horizon.prediction_horizon
    Ta = config.horizon.action_horizon
    scheduler = ChunkScheduler(dt=dt, action_horizon=Ta, latency_margin=LATENCY_MARGIN)
    for value in turnarounds:
        scheduler.record_turnaround(value)
    end = 10 * NS
    scheduler.chunk_published(end)
    decisions = {
        "lead_s": round(scheduler.lead_s, 4),
        "request_before_chunk_end_s": round((end - scheduler.request_at_ns()) / NS, 4),
        "fits": scheduler.fits(),
        "chunk_execution_s": round((Ta - 1) * dt, 3),
    }
    # Replay: camera at 30 Hz, the node looks every 10 ms, each chunk takes the next measured
    # turnaround (cycled); the scheduler learns from them as the node does.
    replay = ChunkScheduler(dt=dt, action_horizon=Ta, latency_margin=LATENCY_MARGIN)
    replay.record_turnaround(turnarounds[0])
    frame = NS // 30
    now, index, previous_end = 0, 0, None
    chunks = late = gaps = 0
    executed: list[float] = []
    sequence = np.zeros((Tp, config.action.dim))
    while now < 60 * NS:
        if replay.decide(now).request:
            latency = turnarounds[index % len(turnarounds)]
            index += 1
            publish = now + round(latency * NS)
            plan = plan_chunk(sequence, now - now % frame, dt, To, Ta, publish, 20_000_000)
            replay.record_turnaround(latency)
            chunks += 1
            if not len(plan):
                late += 1
                replay.reset()
            else:
                if previous_end is not None:
                    gaps += int(publish >= previous_end)
                    executed.append(len(plan))
                previous_end = plan.end_ns
                replay.chunk_published(plan.end_ns)
            now = publish
        now += 10_000_000
    decisions["replay"] = {
        "simulated_s": 60,
        "chunks": chunks,
        "late_chunks": late,
        "gaps_between_chunks": gaps,
        "mean_points_sent_per_chunk": round(float(np.mean(executed)), 2) if executed else 0,
    }
    return decisions


def check_policy(
    name: str, config: PolicyConfig, device: str, args, workdir: Path, trained: Path | None = None
) -> dict:
    """One checkpoint, served by each of ``args.sampler_backends`` in turn (the budget shared):
    ``trained``, or random weights saved under ``workdir``."""
    if trained is None:
        directory = workdir / name
        save_s = save_random_checkpoint(config, directory)
    else:
        directory, save_s = trained, 0.0
    result: dict = {
        "checkpoint": str(trained) if trained is not None else None,
        "dt": config.action.dt,
        "horizons": {
            "To": config.horizon.observation_horizon,
            "Tp": config.horizon.prediction_horizon,
            "Ta": config.horizon.action_horizon,
        },
        "down_dims": list(config.unet.down_dims),
        "cameras": {key: list(shape) for key, shape in config.observation.cameras.items()},
        "low_dim": dict(config.observation.low_dim),
        "checkpoint_bytes": sum(f.stat().st_size for f in directory.iterdir()),
        "save_s": round(save_s, 2),
        "backends": {},
        "checks": {},
    }
    backends = args.sampler_backends.split(",")
    for backend in backends:
        served, checks = serve_backend(
            directory, config, device, backend, args, args.budget_s / len(backends)
        )
        result["parameters_m"] = served.pop("parameters_m")
        result["backends"][backend] = served
        result["checks"].update({f"{backend}.{check}": ok for check, ok in checks.items()})
        # Served at its rate: the next chunk, asked for p99 turnaround + margin before the
        # current one ends, arrives before the robot runs out of set points.
        result.setdefault("served_rate", {})[backend] = {
            "fits": served["scheduler"]["fits"],
            "turnaround_p99_ms": served["turnaround"]["p99_ms"],
            "chunk_execution_ms": round(served["scheduler"]["chunk_execution_s"] * 1e3, 1),
            "late_chunks_in_replay": served["scheduler"]["replay"]["late_chunks"],
        }
    if "eager" in result["backends"] and len(backends) > 1:
        eager = result["backends"]["eager"]["latency"]["p50_ms"]
        result["speedup_p50_vs_eager"] = {
            backend: round(eager / served["latency"]["p50_ms"], 2)
            for backend, served in result["backends"].items()
            if backend != "eager"
        }
    return result


def serve_backend(
    directory: Path, config: PolicyConfig, device: str, backend: str, args, budget_s: float
) -> tuple[dict, dict]:
    before = memory(device)
    worker = InferenceWorker(
        directory,
        device=device,
        num_inference_steps=args.num_inference_steps,
        warmup_iterations=3,
        sampler_backend=backend,
        sampler_precision=args.sampler_precision,
        sampler_compile=args.sampler_compile and backend != "eager",
    )
    started = time.perf_counter()
    report = worker.start(timeout=180)
    start_s = time.perf_counter() - started
    loaded = memory(device)
    try:
        served = serve(worker, config, args.requests, budget_s)
    finally:
        closed = worker.close(timeout=60)
    after = memory(device)
    result = {
        "parameters_m": round(report.parameter_count / 1e6, 2),
        "device": report.device,
        # What served, and the warm-up check against eager (normalised action units).
        "sampler_backend": report.sampler_backend,
        "sampler_precision": report.sampler_precision,
        "sampler_compiled": report.sampler_compiled,
        "sampler_difference": report.sampler_difference,
        "sampler_tolerance": report.sampler_tolerance,
        "sampler_notes": list(report.sampler_notes),
        "load_s": round(report.load_seconds, 3),
        # Load + sampler build and check (+ CUDA graph capture) + warm-up: configure's cost.
        "start_s": round(start_s, 3),
        "warmup_ms": [round(value * 1e3, 3) for value in report.warmup_latencies],
        "worker_thread_stopped": closed,
        "memory_before_load": before,
        "memory_after_load": loaded,
        "memory_after_cleanup": after,
        **{key: value for key, value in served.items() if key != "raw_turnarounds_s"},
        "scheduler": schedule(served["raw_turnarounds_s"], config),
    }
    checks = {
        "worker_thread_stopped": closed,
        "finite_chunks": served["non_finite_chunks"] == 0,
        "caller_not_blocked": served["caller_longest_stall_ms"] < 50.0,
    }
    if backend != "eager":
        # A fast backend that fell back to eager works, but is a finding on this machine.
        checks["fast_path_used"] = report.sampler_backend != "eager"
    if device.startswith("cuda"):
        checks["cleanup_freed_memory"] = (
            after["allocated_mib"] <= before["allocated_mib"] + 1.0
            and after["reserved_mib"] <= before["reserved_mib"] + 1.0
        )
        checks["model_was_on_gpu"] = loaded["allocated_mib"] > before["allocated_mib"] + 1.0
    return result, checks


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine(device: str) -> dict:
    info = {
        "hostname": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        # What sampler_precision auto goes by on the CPU (bf16mix when true).
        "cpu_bf16_hardware": cpu_has_fast_bf16(),
        # Other work on the machine inflates CPU figures; the load shows how quiet it was.
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(device)
        info.update(
            gpu=properties.name,
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            gpu_capability=f"{properties.major}.{properties.minor}",
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--small", action="store_true", help="small U-Nets (CPU smoke run)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="serve this trained checkpoint at its own rate instead of the two random ones",
    )
    parser.add_argument("--requests", type=int, default=200, help="chunks per policy (at most)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=20.0,
        help="seconds of serving per policy (at most), shared by the sampler backends",
    )
    parser.add_argument(
        "--sampler-backends",
        default="eager,auto",
        help="the worker's sampler_backend values to serve each policy with, in turn",
    )
    parser.add_argument("--sampler-precision", default="auto", help="the worker's precision")
    parser.add_argument(
        "--num-inference-steps",
        type=int,
        default=10,
        help="denoising steps per chunk (the node's num_inference_steps; default: 10, DDIM-10)",
    )
    parser.add_argument(
        "--sampler-compile",
        action="store_true",
        help="torch.compile the fast backends (sampler_compile); start_s then includes it",
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "policy_node_gpu_check.json"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    device = resolve_device(args.device)
    print(f"device {device} (requested {args.device})", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="dp_gpu_check_") as workdir:
        if args.checkpoint is not None:
            manifest = read_checkpoint_manifest(args.checkpoint)
            policies = {"checkpoint": PolicyConfig.from_dict(manifest["policy_config"])}
        else:
            policies = policy_configs(args.small)
        for name, config in policies.items():
            print(f"{name}: building, saving, loading, serving ...", flush=True)
            results[name] = check_policy(name, config, device, args, Path(workdir), args.checkpoint)
            for backend, served in results[name]["backends"].items():
                latency = served["latency"]
                print(
                    f"{name} {backend} ({served['sampler_backend']} "
                    f"{served['sampler_precision']}): p50 {latency['p50_ms']} ms, "
                    f"p99 {latency['p99_ms']} ms, start {served['start_s']} s"
                    + (f", notes {served['sampler_notes']}" if served["sampler_notes"] else ""),
                    flush=True,
                )
            print(f"{name}: checks {results[name]['checks']}", flush=True)
            print(f"{name}: served at its rate {results[name]['served_rate']}", flush=True)
    document = {
        "benchmark": "dp_policy_node GPU check: inference thread, latency, scheduling, cleanup",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(device),
        "settings": {
            "device_requested": args.device,
            "device": device,
            "small": args.small,
            "checkpoint": str(args.checkpoint) if args.checkpoint is not None else None,
            # The random policies' timing; a trained checkpoint's is in its result.
            "dt": DT,
            "horizons": {"To": TO, "Tp": TP, "Ta": TA},
            "num_inference_steps": args.num_inference_steps,
            "scheduler": "DDIM",
            "latency_margin_s": LATENCY_MARGIN,
            "sampler_backends": args.sampler_backends.split(","),
            "sampler_precision": args.sampler_precision,
            "sampler_compile": args.sampler_compile,
            "torch_threads": torch.get_num_threads(),
            "threads": threading.active_count(),
        },
        "results": results,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    failed = [
        f"{name}.{check}"
        for name, result in results.items()
        for check, passed in result["checks"].items()
        if not passed
    ]
    document["failed_checks"] = failed
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.output} in {document['wall_time_s']} s; failed checks: {failed or 'none'}")
    # The PNG is a by-product, drawn in a process of its own: a plotting problem (say, no
    # matplotlib on a GPU box) is reported there and costs the benchmark nothing.
    subprocess.run([sys.executable, str(Path(__file__).with_name("plots.py")), str(args.output)])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
