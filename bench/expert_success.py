"""Success rate of dp_sim's scripted PushT expert, on the gym-pusht task directly (no ROS).

    source scripts/env.sh && python bench/expert_success.py            # 50 seeds from 100000
    python bench/expert_success.py --seeds 300 --first-seed 0 --output /tmp/expert.json

Each seed is one episode of the task as the Diffusion Policy paper evaluates it: success is a
coverage of the goal above 0.95 within 300 steps (10 Hz). Two settings are measured:

- ``latency 0``: the expert's action for step k is computed from the observation of step k,
  the task's own protocol;
- ``latency 1``: the action for step k comes from the observation of step k-1, which is what
  the expert node sees over ROS (it answers an observation after the simulation has already
  taken that step).

Writes JSON (machine, settings, per-seed results, success rate, mean of each episode's
highest coverage, steps of the successful episodes) to bench/results/expert_success.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Runs from a checkout whether or not the workspace's install space is sourced.
sys.path.insert(0, str(ROOT / "src" / "dp_sim"))

from dp_sim.expert import PushTExpert  # noqa: E402

MAX_STEPS = 300


def run_episode(seed: int, latency_steps: int) -> dict:
    """One episode with the expert in charge; the task's state observation (no rendering)."""
    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import gym_pusht  # noqa: F401

    env = gym.make("gym_pusht/PushT-v0", obs_type="state", disable_env_checker=True)
    _, info = env.reset(seed=seed)
    expert = PushTExpert()
    pending = [np.asarray(info["pos_agent"], dtype=float)] * latency_steps
    best = 0.0
    coverage = 0.0
    steps = 0
    while steps < MAX_STEPS:
        pending.append(expert.act(info["pos_agent"], info["block_pose"], info["goal_pose"]))
        _, _, terminated, truncated, info = env.step(pending.pop(0))
        steps += 1
        coverage = float(info["coverage"])
        best = max(best, coverage)
        if terminated or truncated:
            break
    env.close()
    return {
        "seed": seed,
        "success": bool(info["is_success"]),
        "steps": steps,
        "max_coverage": round(best, 4),
        "final_coverage": round(coverage, 4),
    }


def evaluate(seeds: list[int], latency_steps: int, workers: int) -> dict:
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        episodes = list(pool.map(run_episode, seeds, [latency_steps] * len(seeds)))
    successes = [episode for episode in episodes if episode["success"]]
    return {
        "latency_steps": latency_steps,
        "success_rate": len(successes) / len(episodes),
        "successes": len(successes),
        "episodes": len(episodes),
        "mean_max_coverage": round(float(np.mean([e["max_coverage"] for e in episodes])), 4),
        "mean_steps_of_successes": (
            round(float(np.mean([e["steps"] for e in successes])), 1) if successes else None
        ),
        "max_steps_of_successes": max((e["steps"] for e in successes), default=None),
        "failed_seeds": [e["seed"] for e in episodes if not e["success"]],
        "wall_time_s": round(time.perf_counter() - started, 1),
        "per_seed": episodes,
    }


def machine() -> dict:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "gym_pusht": metadata.version("gym-pusht"),
        "pymunk": metadata.version("pymunk"),
        "numpy": np.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50, help="number of seeds (episodes)")
    parser.add_argument("--first-seed", type=int, default=100000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "expert_success.json"
    )
    args = parser.parse_args()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    results = [evaluate(seeds, latency, args.workers) for latency in (0, 1)]
    report = {
        "benchmark": "dp_sim scripted PushT expert, success within 300 steps (coverage > 0.95)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "seeds": {"first": seeds[0], "count": len(seeds)},
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    for result in results:
        print(
            f"latency {result['latency_steps']} step(s): {result['successes']}/"
            f"{result['episodes']} solved ({result['success_rate']:.0%}), mean max coverage "
            f"{result['mean_max_coverage']:.3f}, mean steps of successes "
            f"{result['mean_steps_of_successes']}, {result['wall_time_s']} s"
        )
    print(f"wrote {args.output}")
    # The PNG is a by-product, drawn in a process of its own: a plotting problem (say, no
    # matplotlib on a GPU box) is reported there and costs the benchmark nothing.
    subprocess.run([sys.executable, str(Path(__file__).with_name("plots.py")), str(args.output)])


if __name__ == "__main__":
    main()
