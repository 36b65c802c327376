"""The inference thread: device choice, warm-up, one request at a time, results, clean-up."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from dp_policy_node_test_support import TA, TO, TP

from dp_policy_node.inference_worker import (
    InferenceWorker,
    WorkerError,
    resolve_device,
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
        assert worker.alive
    finally:
        assert worker.close(timeout=30)
    assert not worker.alive
    assert not worker.submit(observations, 127, 5)


def test_a_seed_makes_sampling_reproducible(checkpoints) -> None:
    outputs = []
    for _ in range(2):
        worker = InferenceWorker(checkpoints["low_dim"], device="cpu", seed=3, warmup_iterations=1)
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
