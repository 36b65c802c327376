#!/usr/bin/env python3
"""Plots of the bench/ results: one PNG next to each JSON, naming the machine in the figure.

    source scripts/env.sh && python3 bench/plots.py bench/results/*.json

The kind of benchmark is recognised from the JSON itself (its "benchmark" field, else the
shape of its content), so results written before the scripts plotted can be plotted too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

COLOURS = colormaps["tab10"].colors
OK, BAD, MUTED = "#2ca02c", "#d62728", "dimgray"
DPI = 120
SMALL = {"fontsize": 8}


class ResultError(ValueError):
    """A file that is not a result of one of the bench/ scripts, or not readable as one."""


def machine_label(report: dict[str, Any]) -> str:
    """The machine in a few words: the accelerator if any, then the host CPU and its cores."""
    machine = report.get("machine")
    if not isinstance(machine, dict) or not machine:
        return "not recorded"
    cpu = machine.get("cpu_model") or machine.get("cpu") or "unknown CPU"
    cores = machine.get("cpu_cores") or machine.get("cpu_count")
    host = f"{cpu}, {cores} cores" if cores else cpu
    # inference_latency names a CPU run's device "CPU: <model>"; that is no accelerator.
    accelerator = machine.get("gpu") or machine.get("device_name") or ""
    if accelerator and not accelerator.startswith("CPU"):
        memory = f" ({machine['gpu_memory_gib']:g} GiB)" if "gpu_memory_gib" in machine else ""
        return f"{accelerator}{memory}, host {host}"
    return host


def _header(figure: Figure, report: dict[str, Any], title: str) -> None:
    machine = report.get("machine") if isinstance(report.get("machine"), dict) else {}
    torch_version = (report.get("versions") or {}).get("torch") or machine.get("torch")
    date = str(report.get("created") or report.get("date") or "date not recorded")
    details = [f"torch {torch_version}"] if torch_version else []
    details.append(date.replace("T", " ").replace("+00:00", " UTC"))
    # The machine gets a line of its own so that narrow figures do not clip it.
    lines = [title, f"machine: {machine_label(report)}", "  ·  ".join(details)]
    figure.suptitle("\n".join(lines), fontsize=10.5)


def _save(figure: Figure, out: Path) -> Path:
    # An explicit Agg canvas: no pyplot state, no display needed, nothing left open afterwards.
    FigureCanvasAgg(figure)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=DPI)
    return out


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _sampler_label(name: str) -> str:
    match = re.fullmatch(r"([a-z]+)(\d+)", name)
    return f"{match[1].upper()}-{match[2]}" if match else name


def plot_inference_latency(report: dict[str, Any], out: Path) -> Path:
    """p50 bars per variant, grouped by sampler, one panel per config; p90/p99 and targets."""
    results = report.get("results") or []
    configs = list(dict.fromkeys(r["config"] for r in results)) or ["(no results)"]
    variants = list(dict.fromkeys(r["variant"] for r in results))
    colour = {v: COLOURS[i % len(COLOURS)] for i, v in enumerate(variants)}
    targets = {(t["config"], t["sampler"]): t for t in report.get("targets") or []}
    groups = max(len({r["sampler"] for r in results if r["config"] == c}) for c in configs)
    width = max(11.0, 0.38 * groups * len(variants) + 3)
    figure = Figure(figsize=(width, 3.9 * len(configs) + 2), layout="constrained")
    axes = figure.subplots(len(configs), 1, squeeze=False)[:, 0]
    timed = [r["latency_ms"] for r in results if r.get("status") == "ok"]
    limits = [t["limit_ms"] for t in targets.values()]
    low = min([t["p50"] for t in timed] + limits, default=1.0) / 4
    high = max([t["p99"] for t in timed] + limits, default=10.0) * 3
    bar = min(0.84 / max(len(variants), 1), 0.2)  # a few variants need no wide bars
    for ax, config in zip(axes, configs, strict=True):
        ax.set_yscale("log")
        ax.set_ylim(low, high)
        rows = {(r["sampler"], r["variant"]): r for r in results if r["config"] == config}
        samplers = list(dict.fromkeys(sampler for sampler, _ in rows))
        for group, sampler in enumerate(samplers):
            for index, variant in enumerate(variants):
                if (sampler, variant) in rows:
                    x = group + (index - (len(variants) - 1) / 2) * bar
                    _latency_bar(ax, rows[sampler, variant], x, bar, colour[variant], low)
        mine = [(g, targets[config, s]) for g, s in enumerate(samplers) if (config, s) in targets]
        _targets(ax, mine)
        ax.set_xticks(range(len(samplers)), [_sampler_label(s) for s in samplers])
        ax.set_xlim(-0.5, len(samplers) - 0.5)
        ax.set_ylabel("ms per chunk (log)")
        parameters = (report.get("models") or {}).get(config, {}).get("parameters", {})
        size = f" — {parameters['total'] / 1e6:.0f} M parameters" if "total" in parameters else ""
        ax.set_title(f"{config}{size}", fontsize=10, loc="left")
        ax.grid(axis="y", which="both", alpha=0.25)
    handles = [Patch(color=colour[v], label=v) for v in variants] + [
        Line2D([], [], color="black", ls="", marker="o", ms=3, label="p90"),
        Line2D([], [], color="black", lw=1.5, label="p99 (whisker top)"),
        Patch(facecolor="white", edgecolor="black", hatch="///", label="outside tolerance"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=9)
    notes = " (smoke run: tiny models)" if (report.get("settings") or {}).get("smoke") else ""
    notes += "" if report.get("complete", True) else " (incomplete run)"
    device = report.get("device", "?")
    title = f"Inference latency per action chunk, batch 1, on {device}: bars and numbers p50"
    _header(figure, report, title + notes)
    return _save(figure, out)


def _latency_bar(ax: Axes, row: dict, x: float, width: float, colour: Any, low: float) -> None:
    if row.get("status") != "ok":
        # Shown, not dropped: a missing bar would read as "not measured" or as zero.
        reason = str(row.get("reason") or row.get("error") or "").split(" (")[0].split(":")[0]
        text = f"{row.get('status', '?')}: {reason}"[:28]
        box = {"facecolor": "whitesmoke", "edgecolor": MUTED, "ls": ":"}
        ax.text(x, low * 1.3, text, rotation=90, ha="center", color=MUTED, bbox=box, **SMALL)
        return
    latency = row["latency_ms"]
    # Hatched, not hidden: a variant off the eager chunk is a finding, not a result to drop.
    hatch = None if row.get("tolerance_pass", True) is not False else "///"
    ax.bar(x, latency["p50"], width, color=colour, edgecolor="white", lw=0, hatch=hatch)
    # A cap narrower than the bar stays visible where p99 equals p50 (CUDA graphs).
    ax.vlines(x, latency["p50"], latency["p99"], colors="black", lw=1)
    ax.hlines(latency["p99"], x - width / 4, x + width / 4, colors="black", lw=1.5)
    ax.plot(x, latency["p90"], "o", color="black", ms=3)
    label = _ms(latency["p50"])
    ax.text(x, latency["p99"] * 1.1, label, rotation=90, ha="center", va="bottom", fontsize=7.5)


def _targets(ax: Axes, targets: list[tuple[int, dict]]) -> None:
    """Dashed lines over their sampler's bars, described in the panel's right-hand title."""
    notes = []
    for group, target in targets:
        value = target.get("value_ms")
        measured = f"{_ms(value)} ms" if value is not None else "not measured"
        verdict = "met" if target.get("pass") else "missed"
        colour = OK if target.get("pass") else BAD
        ax.hlines(target["limit_ms"], group - 0.46, group + 0.46, colors=colour, ls="--", lw=1.5)
        sampler = _sampler_label(target["sampler"])
        notes.append(
            f"{sampler} {target['statistic']} < {target['limit_ms']:g} ms {verdict} ({measured})"
        )
    if notes:
        colour = OK if all(t.get("pass") for _, t in targets) else BAD
        ax.set_title("target (dashed): " + "; ".join(notes), loc="right", color=colour, fontsize=9)


def plot_train_throughput(report: dict[str, Any], out: Path) -> Path:
    """Training samples per second per policy, with batch, precision and step time."""
    policies = report.get("policies") or []
    figure = Figure(figsize=(9, 2.2 + 0.8 * max(len(policies), 1)), layout="constrained")
    ax = figure.subplots()
    values = [p["samples_per_s"] for p in policies]
    colours = [COLOURS[i % len(COLOURS)] for i in range(len(policies))]
    ax.barh([p["policy"] for p in policies], values, color=colours)
    for y, policy in enumerate(policies):
        step = policy["seconds_per_step"]
        step_time = f"{step:.1f} s" if step >= 1 else f"{1e3 * step:.1f} ms"
        detail = (
            f"  {policy['samples_per_s']:.1f} samples/s — batch {policy['batch_size']}, "
            f"autocast {policy.get('autocast', '?')}, {step_time}/step, "
            f"{policy.get('parameters', 0) / 1e6:.0f} M parameters"
        )
        ax.text(policy["samples_per_s"], y, detail, va="center", fontsize=8.5)
    ax.set_xlim(0, max(values, default=1.0) * 2.3)
    ax.invert_yaxis()
    ax.set_xlabel("training samples per second (full optimisation step incl. EMA)")
    ax.grid(axis="x", alpha=0.25)
    cache = report.get("dataset_cache")
    if cache:
        ax.set_title(
            f"dataset cache: {cache['build_seconds_per_1000_frames']:.2f} s per 1000 frames "
            f"({cache['frames_stored']} frames), cache hit {cache['cache_hit_seconds']:.2f} s",
            loc="left",
            fontsize=9,
        )
    device = (report.get("machine") or {}).get("device", "?")
    _header(figure, report, f"Training throughput on {device}")
    return _save(figure, out)


def plot_recorder_throughput(report: dict[str, Any], out: Path) -> Path:
    """Achieved vs requested camera rate per transport, and the drops of every run."""
    runs = report.get("runs") or []
    figure = Figure(figsize=(13, 5.6), layout="constrained")
    rate_ax, drop_ax = figure.subplots(1, 2, width_ratios=[1, 1.4])
    transports = list(dict.fromkeys(r.get("transport", "default") for r in runs))
    ramps = {r["transport"]: r for r in report.get("camera_ramp") or []}
    for index, transport in enumerate(transports):
        colour = COLOURS[index % len(COLOURS)]
        mine = [r for r in runs if r.get("transport", "default") == transport]
        mine.sort(key=lambda r: r["camera_rate_hz"])
        requested = [r["camera_rate_hz"] for r in mine]
        achieved = [r["measured_publish_rate_hz"]["camera"] for r in mine]
        rate_ax.plot(requested, achieved, "o-", color=colour, label=transport)
        for run, x, y in zip(mine, requested, achieved, strict=True):
            if run["drops"]:
                rate_ax.plot(x, y, "X", color=BAD, ms=11)
                note = f"{transport}: {run['drops']} drops"
                # Below the diagonal, to the right: the empty corner (the x axis leaves room).
                where = {"xytext": (8, -16), "textcoords": "offset points"}
                rate_ax.annotate(note, (x, y), color=BAD, **where, **SMALL)
        highest = (ramps.get(transport) or {}).get("highest_camera_rate_without_drops_hz")
        if highest:
            label = f"{transport}: highest without drops {highest:g} Hz"
            rate_ax.axvline(highest, color=colour, ls="--", lw=1, label=label)
    top = max((r["camera_rate_hz"] for r in runs), default=30.0) * 1.1
    rate_ax.plot([0, top], [0, top], ":", color=MUTED, label="achieved = requested")
    rate_ax.set(
        xlim=(0, top * 1.25), ylim=(0, top), xlabel="requested camera rate (Hz), 640x480 rgb8"
    )
    rate_ax.set_ylabel("camera rate the publisher achieved (Hz)")
    rate_ax.legend(loc="upper left", **SMALL)
    rate_ax.grid(alpha=0.25)

    names = [r["name"] for r in runs]
    camera = [r["topics"]["camera"]["missing"] for r in runs]
    joints = [r["topics"]["joints"]["missing"] for r in runs]
    drop_ax.bar(names, camera, color=COLOURS[3], label="camera messages missing")
    drop_ax.bar(names, joints, bottom=camera, color=COLOURS[4], label="joint states missing")
    for x, run in enumerate(runs):
        colour = BAD if run["drops"] else OK
        drop_ax.text(x, run["drops"], str(run["drops"]), ha="center", va="bottom", color=colour)
    drop_ax.set_ylim(0, max(max((r["drops"] for r in runs), default=0) * 1.25, 1))
    drop_ax.set_xticks(range(len(names)), names, rotation=50, ha="right", rotation_mode="anchor")
    drop_ax.tick_params(axis="x", labelsize=8)
    drop_ax.yaxis.get_major_locator().set_params(integer=True)  # messages come whole
    drop_ax.set_ylabel("messages published but not in the bag")
    drop_ax.legend(loc="upper left", **SMALL)
    stated = report.get("stated_load") or {}
    drops = sum((stated.get("drops") or {}).values())
    title = (
        f"Recorder throughput: stated load {stated.get('camera_hz', '?')} Hz camera + "
        f"{stated.get('joints_hz', '?')} Hz joints, {drops} drops in "
        f"{len(stated.get('drops') or {})} runs; then the camera rate raised until drops"
    )
    _header(figure, report, title)
    return _save(figure, out)


def plot_expert_success(report: dict[str, Any], out: Path) -> Path:
    """Success rate per latency setting, and the steps each seed's episode took."""
    results = report.get("results") or []
    figure = Figure(figsize=(12, 5.2), layout="constrained")
    summary_ax, seed_ax = figure.subplots(1, 2, width_ratios=[1, 2.8])
    labels = [
        f"latency {r['latency_steps']} step{'s' * (r['latency_steps'] != 1)}" for r in results
    ]
    colours = [COLOURS[i % len(COLOURS)] for i in range(len(results))]
    summary_ax.bar(labels, [100 * r["success_rate"] for r in results], color=colours)
    for x, result in enumerate(results):
        solved = f"{result['successes']}/{result['episodes']}"
        summary_ax.text(x, 100 * result["success_rate"] + 1, solved, ha="center", va="bottom")
    summary_ax.set(ylim=(0, 115), ylabel="episodes solved (%)")
    longest = 300
    for index, result in enumerate(results):
        episodes = result.get("per_seed") or []
        longest = max([longest, *(e["steps"] for e in episodes)])
        for success, style in ((True, "o"), (False, "x")):
            chosen = [e for e in episodes if e["success"] is success]
            if chosen:
                label = f"{labels[index]}: {'solved' if success else 'not solved'}"
                seeds, steps = [e["seed"] for e in chosen], [e["steps"] for e in chosen]
                seed_colour = colours[index] if success else BAD
                seed_ax.plot(
                    seeds, steps, style, ms=4 if success else 7, color=seed_colour, label=label
                )
    seed_ax.axhline(300, color=MUTED, ls="--", lw=1, label="step limit (300)")
    seed_ax.set(xlabel="seed", ylabel="steps of the episode", ylim=(0, longest * 1.1))
    seed_ax.ticklabel_format(axis="x", useOffset=False, style="plain")  # seeds, not "+1e5"
    seed_ax.legend(loc="upper center", ncols=3, bbox_to_anchor=(0.5, -0.13), **SMALL)
    seed_ax.grid(alpha=0.25)
    seeds = report.get("seeds") or {}
    title = (
        f"Scripted PushT expert: success (coverage > 0.95 within 300 steps), "
        f"{seeds.get('count', '?')} seeds from {seeds.get('first', '?')}"
    )
    _header(figure, report, title)
    return _save(figure, out)


def plot_node_check(report: dict[str, Any], out: Path) -> Path:
    """The node's inference worker: latency p50 with p99 and max, per policy and backend."""
    entries = []
    for policy, result in (report.get("results") or {}).items():
        # Older results served one backend and kept its figures at the policy's level.
        for backend, served in (result.get("backends") or {"": result}).items():
            keys = ("sampler_backend", "sampler_precision")
            served_by = " ".join(str(served[k]) for k in keys if k in served)
            label = f"{policy}\n{backend}" + (f" → {served_by}" if served_by else "")
            entries.append((label.strip(), served["latency"]))
    figure = Figure(figsize=(max(7.0, 1.6 * len(entries) + 3), 5.2), layout="constrained")
    ax = figure.subplots()
    for x, (_, latency) in enumerate(entries):
        ax.bar(x, latency["p50_ms"], 0.6, color=COLOURS[x % len(COLOURS)])
        ax.hlines(latency["p99_ms"], x - 0.3, x + 0.3, colors="black")
        ax.plot(x, latency["max_ms"], "v", color="black", ms=5)
        text = f"p50 {latency['p50_ms']:.3g}\np99 {latency['p99_ms']:.3g}"
        ax.text(x, latency["max_ms"] * 1.03, text, ha="center", va="bottom", **SMALL)
    ax.set_xticks(range(len(entries)), [label for label, _ in entries], fontsize=8.5)
    ax.set_ylim(0, max((latency["max_ms"] for _, latency in entries), default=1.0) * 1.3)
    ax.set_ylabel("ms per chunk (DDIM-10, in the worker thread)")
    ax.grid(axis="y", alpha=0.25)
    p99 = Line2D([], [], color="black", label="p99")
    worst = Line2D([], [], color="black", marker="v", ls="", label="max")
    ax.legend(handles=[p99, worst], loc="upper right", **SMALL)
    failed = report.get("failed_checks")
    checks = "checks not recorded" if failed is None else f"failed checks: {failed or 'none'}"
    device = (report.get("settings") or {}).get("device", "?")
    _header(figure, report, f"Policy node inference worker on {device}: bars p50; {checks}")
    return _save(figure, out)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


# The issues' targets per task: (mean max score, success %); the arm tasks score success.
TASK_TARGETS = {"pusht": (0.85, 50.0), "lift": (None, 90.0), "can": (None, 80.0)}


def _score(row: dict[str, Any]) -> float:
    """PushT's mean highest coverage, or an arm task's mean highest score."""
    return float(row.get("mean_max_coverage", row.get("mean_max_score", 0.0)))


def plot_task_success(report: dict[str, Any], out: Path) -> Path:
    """The learning curve: score and success against training wall clock, per implementation."""
    rows = report.get("rows") or []
    curve = (report.get("training") or {}).get("loss_curve")
    panels = 3 if curve and curve.get("loss") else 2
    figure = Figure(figsize=(5.5 * panels, 4.8), layout="constrained")
    axes = figure.subplots(1, panels)
    coverage_ax, success_ax = axes[0], axes[1]
    if panels == 3:
        _loss_panel(axes[2], curve)
    implementations = sorted({str(row.get("implementation", "?")) for row in rows})
    for index, name in enumerate(implementations):
        chosen = sorted(
            (r for r in rows if str(r.get("implementation", "?")) == name),
            key=lambda r: r["budget_s"],
        )
        minutes = [r["budget_s"] / 60.0 for r in chosen]
        colour = COLOURS[index % len(COLOURS)]
        coverage_ax.plot(minutes, [_score(r) for r in chosen], "o-", color=colour, label=name)
        success_ax.plot(
            minutes, [100 * r["success_rate"] for r in chosen], "o-", color=colour, label=name
        )
        for r, x in zip(chosen, minutes, strict=True):
            success_ax.annotate(
                f"{r['successes']}/{r['episodes']}",
                (x, 100 * r["success_rate"]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                **SMALL,
            )
    task = str(report.get("benchmark", "")).split(" ")[1:2] or ["pusht"]
    score_target, success_target = TASK_TARGETS.get(task[0], (None, None))
    score_label = "mean max coverage" if task[0] == "pusht" else "mean max score (1: solved)"
    for ax, label, target in (
        (coverage_ax, score_label, score_target),
        (success_ax, "episodes solved (%)", success_target),
    ):
        if target is not None:
            ax.axhline(target, color=MUTED, ls="--", lw=1, label=f"target {target:g}")
        ax.set(xlabel="training wall clock, dataset included (min)", ylabel=label)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.25)
        ax.legend(loc="lower right", **SMALL)
    coverage_ax.set_ylim(0, 1.05)
    success_ax.set_ylim(0, 110)
    settings = report.get("settings") or {}
    title = (
        f"{report.get('benchmark', 'task success')}: {settings.get('eval_episodes', '?')} "
        f"episodes from seed {settings.get('eval_first_seed', '?')} per point, "
        f"budget {_duration(float(settings.get('budget_s', 0)))}"
    )
    _header(figure, report, title)
    return _save(figure, out)


def _loss_panel(ax: Axes, curve: dict[str, list[float]]) -> None:
    """Training loss (and validation loss at its steps) against the training step."""
    ax.plot(curve["step"], curve["loss"], color=COLOURS[0], lw=1, label="training loss")
    if curve.get("val_loss"):
        ax.plot(curve["val_step"], curve["val_loss"], "o-", color=COLOURS[1], ms=3, label="val")
    ax.set_yscale("log")
    minutes = curve["wall_clock_s"][-1] / 60.0 if curve.get("wall_clock_s") else 0.0
    ax.set(xlabel=f"training step ({minutes:.0f} min of wall clock)", ylabel="diffusion loss")
    ax.grid(alpha=0.25, which="both")
    ax.legend(loc="upper right", **SMALL)


def plot_arm_sim_speed(report: dict[str, Any], out: Path) -> Path:
    """Control steps per second of the simulated arm per task and camera setting."""
    rows = report.get("rows") or []
    figure = Figure(figsize=(9, 4.2), layout="constrained")
    ax = figure.subplots()
    tasks = sorted({row["task"] for row in rows})
    settings = list(dict.fromkeys(row["setting"] for row in rows))
    width = 0.8 / max(1, len(tasks))
    for index, task in enumerate(tasks):
        values = [
            next((r["steps_per_s"] for r in rows if r["task"] == task and r["setting"] == s), 0)
            for s in settings
        ]
        xs = [x + index * width for x in range(len(settings))]
        bars = ax.bar(xs, values, width, color=COLOURS[index % len(COLOURS)], label=task)
        ax.bar_label(bars, fmt="%.0f", **SMALL)
    ax.axhline(20.0, color=MUTED, ls="--", lw=1, label="real time (20 Hz)")
    ax.set_xticks([x + width * (len(tasks) - 1) / 2 for x in range(len(settings))], settings)
    ax.set(ylabel="control steps per second", yscale="log")
    ax.legend(**SMALL)
    _header(figure, report, "simulated Panda (robosuite): steps per second")
    return _save(figure, out)


Plotter = Callable[[dict[str, Any], Path], Path]
# kind: (how its "benchmark" field starts, plotter)
KINDS: dict[str, tuple[str, Plotter]] = {
    "inference_latency": ("dp_policy inference latency", plot_inference_latency),
    "train_throughput": ("train_throughput", plot_train_throughput),
    "recorder_throughput": ("dp_recorder throughput", plot_recorder_throughput),
    "expert_success": ("dp_sim scripted PushT expert", plot_expert_success),
    "policy_node_check": ("dp_policy_node GPU check", plot_node_check),
    "task_success": ("task_success", plot_task_success),
    "arm_sim_speed": ("arm_sim_speed", plot_arm_sim_speed),
}


def detect_kind(report: Any) -> str:
    """The benchmark that wrote ``report``; ``ResultError`` when it is none of ours."""
    if not isinstance(report, dict):
        raise ResultError(f"expected a JSON object, found {type(report).__name__}")
    name = str(report.get("benchmark", ""))
    for kind, (prefix, _) in KINDS.items():
        if name.startswith(prefix):
            return kind
    # No or a renamed "benchmark" field: go by the keys each script writes.
    results = report.get("results")
    first = results[0] if isinstance(results, list) and results else {}
    if isinstance(first, dict) and {"config", "sampler", "variant"} <= first.keys():
        return "inference_latency"
    if isinstance(first, dict) and "latency_steps" in first:
        return "expert_success"
    if isinstance(report.get("policies"), list):
        return "train_throughput"
    rows = report.get("rows")
    if isinstance(rows, list) and rows and isinstance(rows[0], dict) and "budget_s" in rows[0]:
        return "task_success"
    if isinstance(rows, list) and rows and isinstance(rows[0], dict) and "steps_per_s" in rows[0]:
        return "arm_sim_speed"
    if "camera_ramp" in report and isinstance(report.get("runs"), list):
        return "recorder_throughput"
    if isinstance(results, dict) and results and all(isinstance(v, dict) for v in results.values()):
        return "policy_node_check"
    raise ResultError(
        f"not a known benchmark result (benchmark {name!r}; known kinds: {', '.join(KINDS)})"
    )


def plot_report(report: dict[str, Any], out: Path) -> Path:
    """Plot an already loaded result as the PNG ``out``."""
    kind = detect_kind(report)
    try:
        return KINDS[kind][1](report, Path(out))
    except (KeyError, TypeError) as error:  # a field missing or of another type
        raise ResultError(f"malformed {kind} result ({type(error).__name__}: {error})") from error


def plot_result(json_path: Path | str) -> Path:
    """Plot a result JSON as ``<same name>.png`` next to it; returns the PNG's path."""
    path = Path(json_path)
    try:
        return plot_report(json.loads(path.read_text(encoding="utf-8")), path.with_suffix(".png"))
    except json.JSONDecodeError as error:
        raise ResultError(f"{path}: not valid JSON ({error})") from error
    except ResultError as error:
        raise ResultError(f"{path}: {error}") from error


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="result JSON files")
    paths = parser.parse_args(argv).results
    failures = 0
    for path in paths:
        try:
            print(plot_result(path))
        except Exception as error:  # one bad file must not stop the others being plotted
            failures += 1
            message = str(error) if isinstance(error, ResultError) else f"{path}: {error!r}"
            print(f"error: {message}", file=sys.stderr)
    if failures:
        print(f"{failures} of {len(paths)} files not plotted", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
