"""The inference thread: device choice, warm-up, one request at a time, results, clean-up."""

from __future__ import annotations

import platform
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from dp_policy_node_test_support import TA, TO, TP

from dp_policy import load_checkpoint
from dp_policy.fast_sampling import FastChunkSampler
from dp_policy_node import fast_path
from dp_policy_node.fast_path import CHECK_TOLERANCE
from dp_policy_node.inference_worker import (
    InferenceWorker,
    WorkerError,
    resolve_device,
    resolve_sampler,
    synthetic_observations,
)


def test_device_selection() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(WorkerError, match="not one of"):
        resolve_device("gpu")
    if torch.cuda.is_available():
        with pytest.raises(WorkerError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(WorkerError, match="sees no CUDA device"):
            resolve_device("cuda")


def test_the_worker_warms_up_serves_one_request_at_a_time_and_closes(checkpoints) -> None:
    notified = threading.Event()
    worker = InferenceWorker(
        checkpoints["camera"],
        device="cpu",
        num_samples=3,
        seed=7,
        warmup_iterations=2,
        cpu_threads=1,
        notify=notified.set,
    )
    report = worker.start(timeout=60)
    try:
        assert report.device == "cpu" and len(report.warmup_latencies) == 2
        assert report.steady_latencies == report.warmup_latencies[1:]
        assert report.parameter_count > 0
        observations = {
            "image": np.full((TO, 3, 32, 32), 200, dtype=np.uint8),
            "agent_pos": np.zeros((TO, 2)),
        }
        assert worker.submit(observations, observation_stamp_ns=123, sequence=1)
        assert not worker.submit(observations, 124, 2), "two inferences at once"
        result = worker.wait_result(timeout=30)
        assert result is not None and result.error is None, result
        assert notified.is_set()
        assert result.sequence == 1 and result.observation_stamp_ns == 123
        assert result.samples.shape == (3, TP, 2) and result.actions.shape == (TP, 2)
        assert 0 < result.latency <= result.turnaround
        assert np.all(np.abs(result.actions) <= 0.25 + 1e-6)  # clipped to the training range
        assert not worker.busy
        assert worker.submit(observations, 125, 3)
        assert worker.wait_result(timeout=30).sequence == 3
        # Exceptions in the model come back as results, not as a dead thread.
        assert worker.submit({"image": observations["image"]}, 126, 4)
        failed = worker.wait_result(timeout=30)
        assert failed.error is not None and "agent_pos" in failed.error
        # The fast paths check what predict_action checks: NaN is an error, not a chunk.
        assert worker.submit({**observations, "agent_pos": np.full((TO, 2), np.nan)}, 127, 5)
        failed = worker.wait_result(timeout=30)
        assert failed.error is not None and "NaN" in failed.error and failed.samples is None
        assert worker.alive
    finally:
        assert worker.close(timeout=30)
    assert not worker.alive
    assert not worker.submit(observations, 128, 6)


@pytest.mark.parametrize("backend", ["eager", "auto"])
def test_a_seed_makes_sampling_reproducible(checkpoints, backend) -> None:
    outputs = []
    for _ in range(2):
        worker = InferenceWorker(
            checkpoints["low_dim"],
            device="cpu",
            seed=3,
            warmup_iterations=1,
            sampler_backend=backend,
        )
        worker.start(timeout=60)
        worker.submit({"agent_pos": np.full((TO, 2), 0.1)}, 1, 1)
        outputs.append(worker.wait_result(timeout=30).actions)
        worker.close()
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_a_missing_checkpoint_fails_start_with_its_path(tmp_path) -> None:
    worker = InferenceWorker(tmp_path / "nothing", device="cpu", warmup_iterations=1)
    with pytest.raises(WorkerError, match="nothing"):
        worker.start(timeout=30)
    assert not worker.alive


def test_synthetic_observations_fit_the_policy(checkpoints) -> None:
    from dp_policy import load_checkpoint

    policy = load_checkpoint(checkpoints["camera"])
    observations = synthetic_observations(policy)
    assert observations["image"].shape == (TO, 3, 32, 32)
    assert observations["agent_pos"].shape == (TO, 2)
    prediction = policy.predict_action({k: v[None] for k, v in observations.items()})
    assert prediction.executable.shape == (1, TA, 2)


def test_the_ros_free_modules_import_without_rclpy() -> None:
    """The GPU check runs them on a machine without ROS."""
    code = (
        "import sys\n"
        "import dp_policy_node.inference_worker, dp_policy_node.chunk_scheduler\n"
        "import dp_policy_node.trajectory_builder, dp_policy_node.observation_buffers\n"
        "import dp_policy_node.markers, dp_policy_node.faults\n"
        "ros = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "    ('rclpy', 'sensor_msgs', 'trajectory_msgs', 'dp_msgs', 'std_msgs'))\n"
        "assert not ros, ros\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- sampler backends ---------------------------------------------------------------------------


def camera_observations(seed: int, position: float = 0.1) -> dict[str, np.ndarray]:
    """For the 72x72 "pixels" checkpoints. Random pixels: a uniform image gives the same
    spatial-softmax keypoints whatever its brightness, so it would hide a wrong conversion."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(TO, 3, 72, 72), dtype=np.uint8)
    return {"image": pixels, "agent_pos": np.full((TO, 2), position)}


def sample_chunks(
    checkpoint: Path, observations: list[dict], backend: str, precision: str = "auto", **options
) -> tuple[object, list[np.ndarray]]:
    """Start a worker, sample one request per observation set, close; (report, samples)."""
    worker = InferenceWorker(
        checkpoint,
        device="cpu",
        warmup_iterations=1,
        sampler_backend=backend,
        sampler_precision=precision,
        **options,
    )
    report = worker.start(timeout=60)
    samples = []
    try:
        for sequence, values in enumerate(observations):
            assert worker.submit(values, sequence, sequence)
            result = worker.wait_result(timeout=60)
            assert result is not None and result.error is None, result
            samples.append(result.samples)
    finally:
        assert worker.close(timeout=30)
    return report, samples


def test_the_pixels_checkpoints_chunks_depend_on_the_pixels(sampler_checkpoints) -> None:
    """Else the comparisons below could not see a wrong image conversion on a fast path."""
    policy = load_checkpoint(sampler_checkpoints["pixels"])
    chunks = []
    for seed in (1, 2):
        observations = camera_observations(seed, position=0.1)
        batch = {key: torch.from_numpy(value)[None] for key, value in observations.items()}
        prediction = policy.predict_action(batch, generator=torch.Generator().manual_seed(0))
        chunks.append(policy.normalizer.normalize("action", prediction.action_sequence))
    # Well above the float32 tolerance, so the fp32 comparisons would see a wrong conversion.
    assert float((chunks[0] - chunks[1]).abs().max()) > 10 * CHECK_TOLERANCE["fp32"]


def normalized(checkpoint: Path, actions: np.ndarray) -> np.ndarray:
    """Actions in the checkpoint's normalised units ([-1, 1] is the training range)."""
    policy = load_checkpoint(checkpoint)
    return policy.normalizer.normalize("action", torch.from_numpy(actions)).numpy()


@pytest.mark.parametrize(
    ("kind", "precision", "num_samples"),
    [
        ("pixels", "fp32", 1),  # DDIM, U-Net, float32 weights
        ("pixels", "bf16mix", 2),  # half-precision convolution weights, two samples
        ("ddpm", "fp32", 2),  # per-step noise: drawn as diffusers draws it
        ("transformer", "fp32", 1),
    ],
)
def test_the_fast_backend_samples_the_eager_chunks_for_the_same_seed(
    sampler_checkpoints, kind, precision, num_samples
) -> None:
    checkpoint = sampler_checkpoints[kind]
    requests = [camera_observations(1, 0.1), camera_observations(2, -0.2)]
    if kind == "ddpm":  # low-dim only
        requests = [{"agent_pos": values["agent_pos"]} for values in requests]
    options = {"seed": 11, "num_samples": num_samples}
    eager_report, eager = sample_chunks(checkpoint, requests, "eager", **options)
    report, fast = sample_chunks(checkpoint, requests, "fast", precision, **options)

    assert (eager_report.sampler_backend, eager_report.sampler_precision) == ("eager", "fp32")
    assert eager_report.sampler_difference is None and eager_report.sampler_notes == ()
    assert (report.sampler_backend, report.sampler_precision) == ("fast", precision)
    assert report.sampler_notes == ()
    tolerance = CHECK_TOLERANCE[precision]
    assert report.sampler_tolerance == tolerance
    assert 0.0 <= report.sampler_difference <= tolerance
    assert f"fast sampler ({precision}" in report.sampler_summary
    # Both requests, not only the first: the generator is consumed as the eager path consumes it.
    for eager_chunks, fast_chunks in zip(eager, fast, strict=True):
        assert fast_chunks.shape == eager_chunks.shape == (num_samples, TP, 2)
        difference = np.abs(
            normalized(checkpoint, fast_chunks) - normalized(checkpoint, eager_chunks)
        )
        assert difference.max() <= tolerance, difference.max()
    if num_samples > 1:  # every sample has noise of its own
        assert np.abs(fast[0][0] - fast[0][1]).max() > 10 * tolerance
    # Successive requests draw fresh noise (the seed starts the sequence; it does not repeat it).
    assert np.abs(fast[0] - fast[1]).max() > 10 * tolerance


def test_the_compiled_fast_backend_samples_the_eager_chunks(sampler_checkpoints) -> None:
    """sampler_compile: torch.compile (inductor's C++ code on this CPU) serves the same chunks."""
    checkpoint = sampler_checkpoints["ddpm"]
    requests = [{"agent_pos": camera_observations(1, 0.1)["agent_pos"]}]
    _, eager = sample_chunks(checkpoint, requests, "eager", seed=5)
    report, fast = sample_chunks(checkpoint, requests, "fast", "fp32", seed=5, sampler_compile=True)
    assert report.sampler_compiled and report.sampler_backend == "fast"
    assert report.sampler_summary.startswith("compiled fast sampler (fp32")
    assert report.sampler_difference <= CHECK_TOLERANCE["fp32"]
    difference = np.abs(normalized(checkpoint, fast[0]) - normalized(checkpoint, eager[0]))
    assert difference.max() <= CHECK_TOLERANCE["fp32"], difference.max()


# diffusers' DPM-Solver set-up trips a numpy 2 deprecation; not this package's concern.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_auto_serves_a_scheduler_the_fast_path_lacks_with_eager_and_says_why(
    sampler_checkpoints,
) -> None:
    checkpoint = sampler_checkpoints["dpm_solver"]
    request = {"agent_pos": np.full((TO, 2), 0.1)}
    report, samples = sample_chunks(checkpoint, [request], "auto", seed=2)
    assert (report.sampler_backend, report.sampler_precision) == ("eager", "fp32")
    assert "DPMSolverMultistepScheduler" in report.sampler_notes[0]
    assert report.sampler_notes[-1] == "serving with the eager sampler"
    assert np.isfinite(samples[0]).all()
    with pytest.raises(
        WorkerError, match=r"sampler_backend fast cannot serve .*DPMSolverMultistep"
    ):
        InferenceWorker(checkpoint, device="cpu", sampler_backend="fast").start(timeout=60)


def test_a_fast_path_that_disagrees_with_eager_is_not_served(checkpoints, monkeypatch) -> None:
    original = FastChunkSampler.sample_normalized

    def off_by_a_bit(self, observations, noise, step_noise=None):
        # 0.05 normalised units: beyond the half-precision tolerance (2e-2) as well.
        return original(self, observations, noise, step_noise) + 0.05

    monkeypatch.setattr(FastChunkSampler, "sample_normalized", off_by_a_bit)
    monkeypatch.setattr(fast_path, "cpu_has_fast_bf16", lambda: True)
    report, samples = sample_chunks(
        checkpoints["low_dim"], [{"agent_pos": np.zeros((TO, 2))}], "auto"
    )
    assert report.sampler_backend == "eager"
    tried = report.sampler_notes[:-1]
    assert [note.split(" differs")[0] for note in tried] == ["fast bf16mix", "fast fp32"], tried
    assert "by 5.00e-02" in tried[1], tried  # the offset, and float32 rounding below 5e-5
    assert samples[0].shape == (1, TP, 2)
    with pytest.raises(WorkerError, match=r"fast fp32 differs from the eager chunk by 5\.00e-02"):
        InferenceWorker(
            checkpoints["low_dim"], device="cpu", sampler_backend="fast", sampler_precision="fp32"
        ).start(timeout=60)


def test_auto_precision_steps_down_to_fp32_when_half_precision_disagrees(
    checkpoints, monkeypatch
) -> None:
    original = FastChunkSampler.sample_normalized

    def off_in_half_precision(self, observations, noise, step_noise=None):
        result = original(self, observations, noise, step_noise)
        return result if self.dtype == torch.float32 else result + 0.05

    monkeypatch.setattr(FastChunkSampler, "sample_normalized", off_in_half_precision)
    monkeypatch.setattr(fast_path, "cpu_has_fast_bf16", lambda: True)
    report, _ = sample_chunks(checkpoints["low_dim"], [{"agent_pos": np.zeros((TO, 2))}], "fast")
    assert (report.sampler_backend, report.sampler_precision) == ("fast", "fp32")
    assert len(report.sampler_notes) == 1 and "fast bf16mix differs" in report.sampler_notes[0]
    # An explicit precision is not stepped down.
    with pytest.raises(WorkerError, match="fast bf16mix differs"):
        InferenceWorker(
            checkpoints["low_dim"],
            device="cpu",
            sampler_backend="fast",
            sampler_precision="bf16mix",
        ).start(timeout=60)


def test_a_fast_path_that_cannot_be_built_falls_back_under_auto_only(
    checkpoints, monkeypatch
) -> None:
    def no_kernel(self, *args, **kwargs):
        raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(FastChunkSampler, "__init__", no_kernel)
    report, samples = sample_chunks(
        checkpoints["low_dim"], [{"agent_pos": np.zeros((TO, 2))}], "auto"
    )
    assert report.sampler_backend == "eager"
    assert "failed: RuntimeError: no kernel for this device" in report.sampler_notes[0]
    assert np.isfinite(samples[0]).all()
    worker = InferenceWorker(checkpoints["low_dim"], device="cpu", sampler_backend="fast")
    with pytest.raises(WorkerError, match=r"Set sampler_backend to auto .* or eager"):
        worker.start(timeout=60)
    assert not worker.alive


def test_sampler_choice_by_device_and_the_impossible_ones(monkeypatch) -> None:
    monkeypatch.setattr(fast_path, "cpu_has_fast_bf16", lambda: True)
    assert resolve_sampler("auto", "auto", "cpu") == ("fast", ("bf16mix", "fp32"))
    assert resolve_sampler("auto", "auto", "cuda:0") == ("cuda_graph", ("fp16", "fp32"))
    assert resolve_sampler("fast", "auto", "cuda:1") == ("fast", ("fp16", "fp32"))
    assert resolve_sampler("auto", "fp16mix", "cpu") == ("fast", ("fp16mix",))
    assert resolve_sampler("eager", "auto", "cuda:0") == ("eager", ("fp32",))
    monkeypatch.setattr(fast_path, "cpu_has_fast_bf16", lambda: False)
    assert resolve_sampler(" Auto ", "AUTO", "cpu") == ("fast", ("fp32",))
    with pytest.raises(WorkerError, match="'cuda_graph' needs a CUDA device, but the device is"):
        resolve_sampler("cuda_graph", "auto", "cpu")
    with pytest.raises(WorkerError, match="needs sampler_backend fast or cuda_graph"):
        resolve_sampler("eager", "bf16", "cpu")
    with pytest.raises(WorkerError, match="sampler_backend 'graph' is not one of"):
        resolve_sampler("graph", "auto", "cpu")
    with pytest.raises(WorkerError, match="sampler_precision 'int8' is not one of"):
        resolve_sampler("fast", "int8", "cpu")
    # Checked when the worker is made, before anything loads (the checkpoint does not exist).
    with pytest.raises(WorkerError, match="needs a CUDA device"):
        InferenceWorker("/nonexistent", device="cpu", sampler_backend="cuda_graph")


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or not Path("/proc/cpuinfo").exists(),
    reason="the CPU flags are read from Linux's /proc/cpuinfo on x86",
)
def test_the_bf16_probe_agrees_with_the_cpu_flags() -> None:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    expected = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert fast_path.cpu_has_fast_bf16() is expected
