"""The inference thread: owns the policy on its device, one request at a time.

ROS-free (torch, numpy and dp_policy only), so the GPU check runs it without ROS. The thread
loads the checkpoint onto the device, warms the model up (CUDA context, kernels, allocator)
and then serves requests: observations in, sampled chunks and their latency out. Callers
never wait on the device: ``submit`` only hands the request over, and the result comes back
through a queue plus an optional ``notify`` callback (the node triggers a guard condition
with it, so the result is handled on the executor thread). ``close`` stops the thread, which
drops the model and returns the device memory.

Chunks are sampled by one of three backends (parameter ``sampler_backend``):

eager       ``DiffusionPolicy.predict_action``: diffusers schedulers, the library's modules.
fast        ``dp_policy.fast_sampling.FastChunkSampler``: the same maths with a static
            schedule, a FiLM table and one GEMM per convolution, weights in the chosen
            precision (``sampler_precision``).
cuda_graph  the fast sampler captured as one CUDA graph for the batch ``num_samples``.

A fast backend is only served after it reproduced the eager chunk for the same (varied)
observations and noise within ``CHECK_TOLERANCE`` (normalised action units) at warm-up.
``auto`` falls back to eager, saying why, when it cannot be built, is not supported or
disagrees; a backend named explicitly fails ``start`` instead. Noise is drawn from the
worker's generator in exactly the order and shapes of the eager path (initial noise, then
DDPM's per-step noise), so a seed gives the same noise whatever the backend.
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
from dp_policy.normalizer import ACTION_KEY
from dp_policy_node import fast_path
from dp_policy_node.fast_path import (
    CHECK_SEED,
    CHECK_TOLERANCE,
    FastPath,
    batched,
    exact_float32,
    fast_sampling_unsupported,
    policy_shape,
    varied_observations,
)
from dp_policy_node.parameters import SAMPLER_BACKENDS, SAMPLER_PRECISIONS


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


def resolve_sampler(backend: str, precision: str, device: str) -> tuple[str, tuple[str, ...]]:
    """The backend to build on ``device`` and the precisions to try in order, or WorkerError.

    ``auto`` backend: cuda_graph on CUDA, fast on the CPU. ``auto`` precision: fp16 on CUDA,
    bf16mix on a CPU with bf16 hardware, else fp32; a half precision is followed by fp32, tried
    when the half-precision chunk does not pass the check.
    """
    backend, precision = backend.strip().lower(), precision.strip().lower()
    if backend not in SAMPLER_BACKENDS:
        raise WorkerError(
            f"sampler_backend {backend!r} is not one of {', '.join(SAMPLER_BACKENDS)}"
        )
    if precision not in SAMPLER_PRECISIONS:
        raise WorkerError(
            f"sampler_precision {precision!r} is not one of {', '.join(SAMPLER_PRECISIONS)}"
        )
    cuda = device.startswith("cuda")
    if backend == "auto":
        backend = "cuda_graph" if cuda else "fast"
    if backend == "cuda_graph" and not cuda:
        raise WorkerError(
            f"sampler_backend 'cuda_graph' needs a CUDA device, but the device is {device!r}; "
            "use sampler_backend fast or auto on the CPU"
        )
    if backend == "eager":
        if precision not in ("auto", "fp32"):
            raise WorkerError(
                f"sampler_precision {precision!r} needs sampler_backend fast or cuda_graph: "
                "eager runs the checkpoint's float32 weights"
            )
        return "eager", ("fp32",)
    if precision != "auto":
        return backend, (precision,)
    if cuda:
        return backend, ("fp16", "fp32")
    return backend, ("bf16mix", "fp32") if fast_path.cpu_has_fast_bf16() else ("fp32",)


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
    """What ``start`` did: device, load time and the warm-up latencies (first one included).

    sampler_backend / sampler_precision: what serves (``eager`` runs ``fp32``).
    sampler_difference: the warm-up check's largest difference to the eager chunk (normalised
        action units) and sampler_tolerance its limit; None for eager.
    sampler_notes: why a backend or precision that was asked for (or picked by auto) was passed
        over, in order; empty when the first choice serves.
    """

    device: str
    load_seconds: float
    warmup_latencies: list[float] = field(default_factory=list)
    parameter_count: int = 0
    sampler_backend: str = "eager"
    sampler_precision: str = "fp32"
    sampler_compiled: bool = False
    sampler_difference: float | None = None
    sampler_tolerance: float | None = None
    sampler_notes: tuple[str, ...] = ()
    # torch's intra-op threads that run inference on the CPU (0 on CUDA).
    cpu_threads: int = 0

    @property
    def steady_latencies(self) -> list[float]:
        """Warm-up latencies without the first call, which pays for lazy initialisation."""
        return self.warmup_latencies[1:] if len(self.warmup_latencies) > 1 else []

    @property
    def sampler_summary(self) -> str:
        """For logs and status: e.g. ``fast sampler (bf16mix, differs from eager by 3.1e-03 at
        most, tolerance 2e-02)``."""
        if self.sampler_backend == "eager":
            return "eager sampler (fp32)"
        compiled = "compiled " if self.sampler_compiled else ""
        return (
            f"{compiled}{self.sampler_backend} sampler ({self.sampler_precision}, differs from "
            "eager by "
            f"{self.sampler_difference:.1e} at most, tolerance {self.sampler_tolerance:.0e})"
        )


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
        sampler_backend: str = "auto",
        sampler_precision: str = "auto",
        sampler_compile: bool = False,
    ) -> None:
        """WorkerError for a device or sampler choice that cannot work here (before loading)."""
        if num_samples < 1 or warmup_iterations < 1:
            raise ValueError("num_samples and warmup_iterations must be >= 1")
        self.checkpoint = Path(checkpoint)
        self.device = resolve_device(device)
        self.requested_backend = sampler_backend.strip().lower()
        self.sampler_backend, self._precisions = resolve_sampler(
            sampler_backend, sampler_precision, self.device
        )
        self.sampler_compile = sampler_compile
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
        fast = holder.get("fast")
        while (request := self._requests.get()) is not _STOP:
            result = self._infer(policy, fast, generator, request)
            self._results.put(result)
            with self._lock:
                self._in_flight = False
            if self._notify is not None:
                self._notify()

    def _load_and_warm_up(self, holder: dict[str, object]) -> WarmupReport:
        started = time.perf_counter()
        threads = 0
        if self.device == "cpu":
            if self.cpu_threads > 0:
                # Set on this thread, which runs every inference (OpenMP's setting is per
                # thread).
                torch.set_num_threads(self.cpu_threads)
            threads = torch.get_num_threads()
        policy = load_checkpoint(self.checkpoint, device=self.device)
        holder["policy"] = policy
        if self.seed is not None:
            holder["generator"] = torch.Generator(device=self.device).manual_seed(self.seed)
        load_seconds = time.perf_counter() - started
        # Counted before a fast sampler registers (and copies) the network.
        parameter_count = sum(p.numel() for p in policy.parameters())
        observations = synthetic_observations(policy)
        choice = self._choose_sampler(policy, varied_observations(policy), holder)
        fast = holder.get("fast")
        latencies = []
        for _ in range(self.warmup_iterations):
            request = _Request(-1, 0, observations, time.perf_counter())
            result = self._infer(policy, fast, None, request)
            if result.error is not None:
                raise WorkerError(f"warm-up inference failed: {result.error}")
            latencies.append(result.latency)
        return WarmupReport(
            device=self.device,
            load_seconds=load_seconds,
            warmup_latencies=latencies,
            parameter_count=parameter_count,
            cpu_threads=threads,
            **choice,
        )

    def _choose_sampler(
        self,
        policy: DiffusionPolicy,
        observations: Mapping[str, np.ndarray],
        holder: dict[str, object],
    ) -> dict[str, object]:
        """Build the fast sampler candidates in order until one reproduces the eager chunk;
        the winner goes into ``holder["fast"]``. Returns the report's sampler fields."""
        if self.sampler_backend == "eager":
            return {}
        notes: list[str] = []
        unsupported = fast_sampling_unsupported(policy.config.noise, self.num_inference_steps)
        if unsupported is not None:
            notes.append(f"{self.sampler_backend} cannot be used: {unsupported}")
        else:
            reference = self._eager_reference(policy, observations)
            for precision in self._precisions:
                fast: FastPath | None = None
                try:
                    fast = FastPath(
                        policy,
                        self.sampler_backend,
                        precision,
                        self.num_inference_steps,
                        self.num_samples,
                        observations,
                        compile_sampling=self.sampler_compile,
                    )
                    difference = fast.check(observations, reference)
                except Exception as error:  # any failure to build or run means: not this one
                    notes.append(
                        f"{self.sampler_backend} {precision} failed: {type(error).__name__}: "
                        f"{error}"
                    )
                else:
                    tolerance = CHECK_TOLERANCE[precision]
                    if difference <= tolerance:
                        holder["fast"] = fast
                        return {
                            "sampler_backend": self.sampler_backend,
                            "sampler_precision": precision,
                            "sampler_compiled": self.sampler_compile,
                            "sampler_difference": difference,
                            "sampler_tolerance": tolerance,
                            "sampler_notes": tuple(notes),
                        }
                    notes.append(
                        f"{self.sampler_backend} {precision} differs from the eager chunk by "
                        f"{difference:.2e} (normalised action units; tolerance {tolerance:.0e})"
                    )
                del fast  # a rejected candidate's weight copy and graph pool go now
                self._free_cached_memory()
        if self.requested_backend != "auto":
            raise WorkerError(
                f"sampler_backend {self.sampler_backend} cannot serve {self.checkpoint}: "
                f"{'; '.join(notes)}. Set sampler_backend to auto (falls back to eager) or eager"
            )
        return {"sampler_notes": (*notes, "serving with the eager sampler")}

    def _eager_reference(
        self, policy: DiffusionPolicy, observations: Mapping[str, np.ndarray]
    ) -> torch.Tensor:
        """The eager chunk(s) ``(num_samples, Tp, Da)`` in normalised units, noise from a
        generator seeded with CHECK_SEED (the served ones use the worker's generator)."""
        generator = torch.Generator(device=self.device).manual_seed(CHECK_SEED)
        with torch.inference_mode(), exact_float32():
            prediction = policy.predict_action(
                batched(observations, self.device),
                num_inference_steps=self.num_inference_steps,
                generator=generator,
                num_samples=self.num_samples,
            )
            actions = prediction.action_sequence.reshape(self.num_samples, *policy_shape(policy))
            return policy.normalizer.normalize(ACTION_KEY, actions).float().clone()

    def _free_cached_memory(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _infer(
        self,
        policy: DiffusionPolicy,
        fast: object,
        generator: object,
        request: _Request,
    ) -> InferenceResult:
        started = time.perf_counter()
        generator = generator if isinstance(generator, torch.Generator) else None
        try:
            if isinstance(fast, FastPath):
                sequence = fast.sample(request.observations, generator)
            else:
                with torch.inference_mode():
                    prediction = policy.predict_action(
                        batched(request.observations, self.device),
                        num_inference_steps=self.num_inference_steps,
                        generator=generator,
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
