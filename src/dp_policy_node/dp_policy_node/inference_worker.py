"""The inference thread: owns the policy on its device, one request at a time.

ROS-free (torch, numpy and dp_policy only), so the GPU check runs it without ROS. The thread
loads the checkpoint onto the device, warms the model up (CUDA context, kernels, allocator)
and then serves requests: observations in, sampled chunks and their latency out. Callers
never wait on the device: ``submit`` only hands the request over, and the result comes back
through a queue plus an optional ``notify`` callback (the node triggers a guard condition
with it, so the result is handled on the executor thread). ``close`` stops the thread, which
drops the model and returns the device memory.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dp_policy import DiffusionPolicy, load_checkpoint


class WorkerError(RuntimeError):
    """The worker could not start (device, checkpoint, warm-up); the message says why."""


def resolve_device(requested: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` to a device torch can use, or WorkerError."""
    requested = requested.strip().lower()
    cuda = torch.cuda.is_available()
    if requested == "auto":
        return "cuda:0" if cuda else "cpu"
    if requested == "cpu":
        return "cpu"
    prefix, _, index_text = requested.partition(":")
    if prefix != "cuda" or (index_text and not index_text.isdigit()):
        raise WorkerError(f"device {requested!r} is not one of auto, cpu, cuda, cuda:N")
    if not cuda:
        raise WorkerError(
            f"device {requested!r} requested, but torch {torch.__version__} sees no CUDA device "
            f"(CUDA build: {torch.version.cuda or 'none'}); set device to auto or cpu"
        )
    index = int(index_text or 0)
    if index >= torch.cuda.device_count():
        raise WorkerError(
            f"device {requested!r} requested, but torch sees {torch.cuda.device_count()} CUDA "
            f"device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1} or auto"
        )
    return f"cuda:{index}"


@dataclass(frozen=True)
class InferenceResult:
    """Sampled chunks for one request, in the action's units.

    samples: ``(S, Tp, Da)``; sample 0 is the one to execute. None when ``error`` is set.
    latency: seconds of model time (observations to the device, encoding, sampling loop,
        result back on the CPU).
    turnaround: seconds from ``submit`` to the result being queued.
    """

    sequence: int
    observation_stamp_ns: int
    samples: np.ndarray | None
    latency: float
    turnaround: float
    error: str | None = None

    @property
    def actions(self) -> np.ndarray:
        """``(Tp, Da)``: the chunk to execute."""
        if self.samples is None:
            raise ValueError(f"inference failed: {self.error}")
        return self.samples[0]


@dataclass(frozen=True)
class WarmupReport:
    """What ``start`` did: device, load time and the warm-up latencies (first one included)."""

    device: str
    load_seconds: float
    warmup_latencies: list[float] = field(default_factory=list)
    parameter_count: int = 0

    @property
    def steady_latencies(self) -> list[float]:
        """Warm-up latencies without the first call, which pays for lazy initialisation."""
        return self.warmup_latencies[1:] if len(self.warmup_latencies) > 1 else []


@dataclass(frozen=True)
class _Request:
    sequence: int
    observation_stamp_ns: int
    observations: Mapping[str, np.ndarray]
    submitted_at: float


_STOP = object()


class InferenceWorker:
    """A thread that owns a ``DiffusionPolicy`` on one device and samples chunks on request."""

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "auto",
        num_inference_steps: int | None = None,
        num_samples: int = 1,
        seed: int | None = None,
        warmup_iterations: int = 2,
        cpu_threads: int = 0,
        notify: Callable[[], None] | None = None,
        name: str = "dp_inference",
    ) -> None:
        if num_samples < 1 or warmup_iterations < 1:
            raise ValueError("num_samples and warmup_iterations must be >= 1")
        self.checkpoint = Path(checkpoint)
        self.device = resolve_device(device)
        self.num_inference_steps = num_inference_steps or None
        self.num_samples = num_samples
        self.seed = seed if seed is not None and seed >= 0 else None
        self.warmup_iterations = warmup_iterations
        self.cpu_threads = cpu_threads
        self._notify = notify
        self._requests: queue.Queue = queue.Queue()
        self._results: queue.Queue[InferenceResult] = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight = False
        self._closed = False
        self._ready = threading.Event()
        self._report: WarmupReport | None = None
        self._startup_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- caller side ------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> WarmupReport:
        """Load and warm up on the worker thread; block until done. WorkerError on failure."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise WorkerError(f"loading and warming up {self.checkpoint} took over {timeout} s")
        if self._startup_error is not None:
            self._thread.join(timeout=5.0)
            raise WorkerError(self._startup_error)
        assert self._report is not None
        return self._report

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._in_flight

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(
        self, observations: Mapping[str, np.ndarray], observation_stamp_ns: int, sequence: int
    ) -> bool:
        """Hand over one history ``{key: (To, ...)}``; False while one is in flight or closed."""
        with self._lock:
            if self._in_flight or self._closed or not self._ready.is_set():
                return False
            self._in_flight = True
        self._requests.put(
            _Request(sequence, observation_stamp_ns, dict(observations), time.perf_counter())
        )
        return True

    def take_results(self) -> list[InferenceResult]:
        """Every result queued so far (without waiting)."""
        results = []
        while True:
            try:
                results.append(self._results.get_nowait())
            except queue.Empty:
                return results

    def wait_result(self, timeout: float) -> InferenceResult | None:
        try:
            return self._results.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self, timeout: float = 30.0) -> bool:
        """Stop the thread and free the model's memory; True when the thread has ended."""
        with self._lock:
            self._closed = True
        if not self._thread.is_alive():
            return True
        self._requests.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- worker thread ------------------------------------------------------------------------

    def _run(self) -> None:
        holder: dict[str, object] = {}
        try:
            if self._start_up(holder):
                self._serve(holder)
        finally:
            # Drop every reference to device memory on the thread that made it, then give the
            # cached blocks back, so cleanup really frees the GPU for another process.
            holder.clear()
            gc.collect()
            if self.device.startswith("cuda"):
                torch.cuda.synchronize(self.device)
                # cuBLAS keeps a workspace per handle and stream in the caching allocator;
                # without this, tens of MiB stay allocated after the model is gone.
                clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
                if clear_workspaces is not None:
                    clear_workspaces()
                torch.cuda.empty_cache()

    def _start_up(self, holder: dict[str, object]) -> bool:
        try:
            self._report = self._load_and_warm_up(holder)
            return True
        except Exception as error:  # any failure here is a configure failure to report
            self._startup_error = _describe(error, self.checkpoint)
            return False
        finally:
            self._ready.set()

    def _serve(self, holder: dict[str, object]) -> None:
        # The policy lives in this frame and in ``holder`` only: both are gone after return.
        policy = holder["policy"]
        assert isinstance(policy, DiffusionPolicy)
        generator = holder.get("generator")
        while (request := self._requests.get()) is not _STOP:
            result = self._infer(policy, generator, request)
            self._results.put(result)
            with self._lock:
                self._in_flight = False
            if self._notify is not None:
                self._notify()

    def _load_and_warm_up(self, holder: dict[str, object]) -> WarmupReport:
        started = time.perf_counter()
        if self.device == "cpu" and self.cpu_threads > 0:
            # Set on this thread, which runs every inference (OpenMP's setting is per thread).
            torch.set_num_threads(self.cpu_threads)
        policy = load_checkpoint(self.checkpoint, device=self.device)
        holder["policy"] = policy
        if self.seed is not None:
            holder["generator"] = torch.Generator(device=self.device).manual_seed(self.seed)
        load_seconds = time.perf_counter() - started
        observations = synthetic_observations(policy)
        latencies = []
        for _ in range(self.warmup_iterations):
            request = _Request(-1, 0, observations, time.perf_counter())
            result = self._infer(policy, None, request)
            if result.error is not None:
                raise WorkerError(f"warm-up inference failed: {result.error}")
            latencies.append(result.latency)
        return WarmupReport(
            device=self.device,
            load_seconds=load_seconds,
            warmup_latencies=latencies,
            parameter_count=sum(p.numel() for p in policy.parameters()),
        )

    def _infer(
        self, policy: DiffusionPolicy, generator: object, request: _Request
    ) -> InferenceResult:
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                batch = {
                    key: torch.from_numpy(np.ascontiguousarray(value)).unsqueeze(0).to(self.device)
                    for key, value in request.observations.items()
                }
                prediction = policy.predict_action(
                    batch,
                    num_inference_steps=self.num_inference_steps,
                    generator=generator if isinstance(generator, torch.Generator) else None,
                    num_samples=self.num_samples,
                )
                # .cpu() waits for the device: the latency covers the whole sampling loop.
                sequence = prediction.action_sequence.to(torch.float64).cpu().numpy()
        except Exception as error:  # reported per chunk; the node decides what it means
            finished = time.perf_counter()
            return InferenceResult(
                request.sequence,
                request.observation_stamp_ns,
                None,
                finished - started,
                finished - request.submitted_at,
                f"{type(error).__name__}: {error}",
            )
        finished = time.perf_counter()
        samples = sequence.reshape(-1, *sequence.shape[-2:])
        return InferenceResult(
            request.sequence,
            request.observation_stamp_ns,
            samples,
            finished - started,
            finished - request.submitted_at,
        )


def synthetic_observations(policy: DiffusionPolicy) -> dict[str, np.ndarray]:
    """Plausible inputs of the right shapes: grey images, low-dim mid-range of the training data."""
    To = policy.config.horizon.observation_horizon
    spec = policy.config.observation
    observations: dict[str, np.ndarray] = {
        key: np.full((To, *shape), 128, dtype=np.uint8) for key, shape in spec.cameras.items()
    }
    statistics = policy.normalizer.statistics()
    for key, size in spec.low_dim.items():
        centre = (np.asarray(statistics[key]["min"]) + np.asarray(statistics[key]["max"])) / 2
        observations[key] = np.broadcast_to(centre.astype(np.float64), (To, size)).copy()
    return observations


def _describe(error: Exception, checkpoint: Path) -> str:
    if isinstance(error, WorkerError):
        return str(error)
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return f"out of GPU memory loading {checkpoint}: {error}"
    return f"cannot serve {checkpoint}: {type(error).__name__}: {error}"
