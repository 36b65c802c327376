"""The run's metrics: ``metrics.jsonl`` (one JSON object per line) and the loss-curve PNG.

Lines are ``{"step", "loss", "lr", "samples_per_s"}`` for training intervals and
``{"step", "val_loss"}`` for validations. A resumed run first drops the lines after the step
it resumes from (they belong to the interrupted stretch that is trained again).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"


class MetricsLog:
    """Appends metric records to ``<output_dir>/metrics.jsonl``."""

    def __init__(self, output_dir: str | os.PathLike, resume_step: int | None = None) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        if resume_step is not None and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self._rewrite(kept)
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        temporary = self.path.with_suffix(".jsonl.tmp")
        temporary.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        os.replace(temporary, self.path)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics file; a torn last line (a killed run) is ignored."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_loss_curve(metrics_path: str | os.PathLike, output: str | os.PathLike) -> Path | None:
    """Training and validation loss against step, log scale, as a PNG; None without data."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    from matplotlib import pyplot

    records = read_metrics(metrics_path) if Path(metrics_path).is_file() else []
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and _finite(r["loss"])]
    val = [
        (r["step"], r["val_loss"]) for r in records if "val_loss" in r and _finite(r["val_loss"])
    ]
    if not train and not val:
        return None
    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
    if train:
        axes.plot(*zip(*train, strict=True), label="training loss", linewidth=1.0)
    if val:
        axes.plot(*zip(*val, strict=True), "o-", label="validation loss (EMA weights)")
    if all(value > 0 for _, value in train + val):
        axes.set_yscale("log")
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("denoising loss (MSE)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    output = Path(output)
    temporary = output.with_name(f".{output.name}.tmp")
    figure.savefig(temporary, format="png")
    pyplot.close(figure)
    os.replace(temporary, output)
    return output


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
