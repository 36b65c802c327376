"""bench/plots.py draws every stored benchmark result, and says so clearly when it cannot."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
RESULTS = sorted((BENCH / "results").glob("*.json"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def plots() -> ModuleType:
    # Loaded by path as the bench scripts load it: bench/ is not a package.
    spec = importlib.util.spec_from_file_location("bench_plots", BENCH / "plots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > 10_000, f"{path} is suspiciously small ({len(data)} bytes)"


def test_the_stored_results_are_there() -> None:
    # Guards the parametrised test below against passing vacuously.
    assert len(RESULTS) >= 7, [path.name for path in RESULTS]


@pytest.mark.parametrize("result", RESULTS, ids=lambda path: path.name)
def test_every_stored_result_plots_next_to_its_json(
    plots: ModuleType, result: Path, tmp_path: Path
) -> None:
    json_path = tmp_path / result.name
    shutil.copy(result, json_path)
    png = plots.plot_result(json_path)
    assert png == tmp_path / f"{result.stem}.png"
    assert_png(png)
    report = json.loads(result.read_text())
    assert plots.machine_label(report) != "not recorded"


@pytest.mark.parametrize("result", RESULTS, ids=lambda path: path.name)
def test_the_kind_is_recognised_from_the_content_alone(plots: ModuleType, result: Path) -> None:
    report = json.loads(result.read_text())
    kind = plots.detect_kind(report)
    del report["benchmark"]
    assert plots.detect_kind(report) == kind


def test_failed_and_skipped_variants_and_served_backends_plot(
    plots: ModuleType, tmp_path: Path
) -> None:
    latency = json.loads((BENCH / "results" / "inference_latency_h200.json").read_text())
    failed = latency["results"][1]
    failed.update(status="failed", error="RuntimeError: compile failed")
    del failed["latency_ms"]
    latency["complete"] = False
    assert_png(plots.plot_report(latency, tmp_path / "latency.png"))

    # The node check's current layout: each policy served by several sampler backends.
    node = json.loads((BENCH / "results" / "policy_node_gpu_check_h200.json").read_text())
    for result in node["results"].values():
        served = {k: result.pop(k) for k in ("latency", "turnaround", "scheduler")}
        faster = copy.deepcopy(served)
        faster["latency"] = {k: v / 3 for k, v in served["latency"].items()}
        backend = {"sampler_backend": "cuda_graph", "sampler_precision": "fp16"}
        result["backends"] = {"eager": served, "auto": {**faster, **backend}}
    assert_png(plots.plot_report(node, tmp_path / "node.png"))


def test_unknown_and_malformed_files_give_a_clear_error(
    plots: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"benchmark": "something else", "values": [1, 2]}))
    with pytest.raises(plots.ResultError, match="not a known benchmark result"):
        plots.plot_result(unknown)
    broken = tmp_path / "broken.json"
    broken.write_text('{"benchmark": ')
    with pytest.raises(plots.ResultError, match="not valid JSON"):
        plots.plot_result(broken)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps({"benchmark": "train_throughput", "policies": [{}]}))
    with pytest.raises(plots.ResultError, match="malformed train_throughput result"):
        plots.plot_result(truncated)
    assert not list(tmp_path.glob("*.png"))

    # The command line plots the good files, names the bad ones and fails at the end.
    good = tmp_path / "expert_success.json"
    shutil.copy(BENCH / "results" / "expert_success.json", good)
    assert plots.main([str(unknown), str(good), str(broken)]) == 1
    assert_png(good.with_suffix(".png"))
    output = capsys.readouterr()
    assert str(good.with_suffix(".png")) in output.out
    assert f"error: {unknown}: not a known benchmark result" in output.err
    assert f"error: {broken}: not valid JSON" in output.err
    assert "2 of 3 files not plotted" in output.err
