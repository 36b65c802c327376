"""Speed of the simulated Panda (dp_sim.arm_robot: robosuite, MuJoCo): control steps per second.

    source scripts/env.sh && python bench/arm_sim_speed.py            # Lift and Can, 3 settings

Steps the task with joint set points that move the arm (no policy, no ROS) in three settings:
no camera (low-dim recording and evaluation), the front camera only, and both the front and
the wrist camera (84x84 by default, off-screen rendering in software with OSMesa on a machine
without a GPU, MUJOCO_GL). Each setting runs a fresh environment: a warm-up, then timed steps.
Writes bench/results/arm_sim_speed_<machine>.json and its PNG. The 20 Hz control rate needs
20 steps/s for real time; recording and evaluation run faster than real time when they can.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src" / "dp_sim"))
sys.path.insert(0, str(ROOT / "bench"))

SETTINGS = {
    "no camera": (),
    "front camera": ("agentview",),
    "front + wrist cameras": ("agentview", "robot0_eye_in_hand"),
}


def measure(task: str, cameras: tuple[str, ...], size: int, steps: int) -> dict:
    from dp_sim.arm_robot import ArmRobot

    robot = ArmRobot(task, cameras, size, size, max_episode_steps=10 * steps)
    try:
        state = robot.reset(0)
        start = state.arm_position.copy()
        swing = np.array([0.3, 0.2, 0.0, 0.2, 0.0, 0.2, 0.3])

        def step(k: int) -> None:
            robot.step(start + swing * np.sin(k / 20.0), 0.02 + 0.02 * np.sin(k / 10.0))

        for k in range(5):
            step(k)
        times = []
        for k in range(steps):
            began = time.perf_counter()
            step(k)
            times.append(time.perf_counter() - began)
    finally:
        robot.close()
    times_ms = np.array(times) * 1e3
    return {
        "task": task,
        "cameras": list(cameras),
        "image_size": size,
        "steps": steps,
        "step_ms_p50": round(float(np.percentile(times_ms, 50)), 2),
        "step_ms_p99": round(float(np.percentile(times_ms, 99)), 2),
        "steps_per_s": round(float(1e3 / times_ms.mean()), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["lift", "can"])
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--steps", type=int, default=200, help="timed steps without cameras")
    parser.add_argument("--camera-steps", type=int, default=40, help="timed steps with cameras")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    from task_success import machine, machine_slug, source_version

    info = machine()
    rows = []
    for task in args.tasks:
        for label, cameras in SETTINGS.items():
            steps = args.camera_steps if cameras else args.steps
            row = {"setting": label, **measure(task, cameras, args.image_size, steps)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "benchmark": "arm_sim_speed (dp_sim.arm_robot, robosuite)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "source": source_version(),
        "settings": {
            "control_period_s": 0.05,
            "image_size": args.image_size,
            "renderer": "MuJoCo off-screen, MUJOCO_GL (osmesa by default here)",
        },
        "rows": rows,
    }
    output = args.output or ROOT / "bench" / "results" / f"arm_sim_speed_{machine_slug(info)}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    import subprocess

    subprocess.run([sys.executable, str(ROOT / "bench" / "plots.py"), str(output)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
