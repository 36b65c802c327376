"""The fast sampling paths the inference worker may serve with, and the check that admits them.

``FastPath`` wraps ``dp_policy.fast_sampling``'s ``FastChunkSampler`` (and, for the
``cuda_graph`` backend, its ``CudaGraphChunkSampler``) for batch ``num_samples`` and feeds it
like the eager path: same observation checks and conversion, noise drawn from the same
generator in the same order and shapes. ``FastPath.check`` measures its chunk against the
eager one for the same observations and noise. ROS-free, like the worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from dp_policy import DiffusionPolicy, NoiseScheduleConfig
from dp_policy.fast_sampling import CudaGraphChunkSampler, FastChunkSampler
from dp_policy.static_schedule import static_schedule

# Weight dtype of the fast samplers' noise network, and whether only the convolution weights
# take it (activations, GroupNorm and FiLM stay float32).
PRECISION_DTYPES: dict[str, tuple[torch.dtype, bool]] = {
    "fp32": (torch.float32, False),
    "bf16mix": (torch.bfloat16, True),
    "fp16mix": (torch.float16, True),
    "fp16": (torch.float16, False),
    "bf16": (torch.bfloat16, False),
}
# Largest allowed difference between a fast chunk and the eager one for the same observations
# and noise, in normalised action units ([-1, 1] is the training range): the tolerances of
# bench/inference_latency.py, float32 rounding vs. half-precision weights.
CHECK_TOLERANCE = {"fp32": 1e-3, "bf16mix": 2e-2, "fp16mix": 2e-2, "fp16": 2e-2, "bf16": 2e-2}
# One GEMM per convolution: at batch 1 and a 16-step horizon it streams the weights once, and
# it is the mode the measured speed-ups were obtained with (bench/results/inference_latency_*).
CONV_MODE = "gemm"
# Seed of the warm-up check's noise (its own generator: the serving generator is not touched).
CHECK_SEED = 0


def cpu_has_fast_bf16() -> bool:
    """Whether the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16 tiles).

    Asked through torch's own cpuinfo-based probes (``torch.cpu._is_avx512_bf16_supported``,
    ``_is_amx_tile_supported``), the instructions oneDNN uses for bf16 GEMMs. Not
    ``torch.backends.mkldnn``'s bf16 check, which is true on any AVX512 CPU where bf16 is
    emulated and halved weights only add conversions. Private probes: missing ones read as no.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        with contextlib.suppress(Exception):
            if probe is not None and probe():
                return True
    return False


def fast_sampling_unsupported(noise: NoiseScheduleConfig, num_steps: int | None) -> str | None:
    """Why the fast samplers cannot run this noise schedule (None when they can).

    They exist for diffusers' DDIM and DDPM only (``dp_policy.static_schedule``); asking that
    module keeps this answer in step with the library.
    """
    try:
        static_schedule(noise, None, num_steps or None)
    except ValueError as error:
        return f"the checkpoint samples with {noise.inference_scheduler}: {error}"
    return None


class FastPath:
    """A fast sampler (and its CUDA graph) for batch ``num_samples``, fed like the eager path."""

    def __init__(
        self,
        policy: DiffusionPolicy,
        backend: str,
        precision: str,
        num_inference_steps: int | None,
        num_samples: int,
        example_observations: Mapping[str, np.ndarray],
        compile_sampling: bool = False,
    ) -> None:
        """``compile_sampling``: ``FastChunkSampler.compile_sampling`` before the first chunk
        (and before the CUDA graph is captured, which then holds the compiled kernels)."""
        self.policy = policy
        self.device = policy.device
        self.num_samples = num_samples
        self.shape = (num_samples, *policy_shape(policy))
        dtype, mixed = PRECISION_DTYPES[precision]
        # no_grad, not inference_mode: the copied weights and the graph's static buffers must be
        # ordinary tensors (bench/inference_latency.py builds them the same way).
        with torch.no_grad(), exact_float32():
            self.sampler = FastChunkSampler(
                policy,
                scheduler_name=None,  # the checkpoint's, as the eager path
                num_inference_steps=num_inference_steps,
                dtype=dtype,
                conv_mode=CONV_MODE,
                mixed=mixed,
            )
            if compile_sampling:
                self.sampler.compile_sampling()
            self.graph = (
                CudaGraphChunkSampler(
                    self.sampler, self._to_device(example_observations), batch=num_samples
                )
                if backend == "cuda_graph"
                else None
            )
        self.schedule = self.sampler.schedule

    def _to_device(self, observations: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """``{key: (To, ...)}`` -> ``(1, To, ...)`` float32 on the device, converted as
        ``DiffusionPolicy.predict_action`` converts (uint8 images scaled to [0, 1]). The sampler
        encodes it once for all ``num_samples`` chunks, as ``predict_action`` does."""
        # Checked and converted exactly as predict_action does; only the policy's keys come
        # back (the graph has buffers for those alone).
        return self.policy.check_observations(batched(observations, self.device))

    def _noise(self, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Initial and per-step noise drawn exactly as the eager path draws them: the initial
        ``(B, Tp, Da)`` first (``predict_action``), then one ``(B, Tp, Da)`` per DDPM step with
        ``t > 0`` (diffusers' ``DDPMScheduler.step``), where the generator lives."""
        where = generator.device if generator is not None else self.device

        def draw() -> torch.Tensor:
            return torch.randn(self.shape, generator=generator, device=where).to(self.device)

        noise = draw()
        if not self.schedule.needs_step_noise:
            return noise, None
        zeros = torch.zeros(self.shape, device=self.device)
        steps = [draw() if t > 0 else zeros for t in self.schedule.timesteps]
        return noise, torch.stack(steps)

    def _normalized(
        self,
        observations: Mapping[str, np.ndarray],
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(normalised, actions)``, both ``(B, Tp, Da)``; the graph's are its static outputs."""
        tensors = self._to_device(observations)
        noise, step_noise = self._noise(generator)
        if self.graph is not None:
            return self.graph(tensors, noise, step_noise)
        with exact_float32():
            normalized = self.sampler.sample_normalized(tensors, noise, step_noise)
        return normalized, self.sampler.unnormalize(normalized)

    def sample(
        self, observations: Mapping[str, np.ndarray], generator: torch.Generator | None
    ) -> np.ndarray:
        """Chunks ``(num_samples, Tp, Da)`` in action units, float64 on the CPU."""
        with torch.no_grad():
            _, actions = self._normalized(observations, generator)
            # A copy (the graph's outputs are overwritten by the next replay); .cpu() waits
            # for the device, so the latency covers the whole chunk.
            return actions.to(torch.float64).cpu().numpy()

    def check(self, observations: Mapping[str, np.ndarray], reference: torch.Tensor) -> float:
        """Largest difference to the eager ``reference`` in normalised units, same noise.

        NaN where eager gives NaN counts as agreement (a broken model stays broken and is refused
        downstream either way); anywhere else a non-finite value is an infinite difference.
        """
        generator = torch.Generator(device=self.device).manual_seed(CHECK_SEED)
        with torch.no_grad():
            normalized, _ = self._normalized(observations, generator)
            normalized = normalized.float().clone()
        if normalized.shape != reference.shape:
            raise RuntimeError(f"chunk shape {tuple(normalized.shape)}, eager {reference.shape}")
        both_finite = torch.isfinite(normalized) & torch.isfinite(reference)
        same_nan = torch.isnan(normalized) & torch.isnan(reference)
        if not bool((both_finite | same_nan).all()):
            return float("inf")
        if not bool(both_finite.any()):
            return 0.0
        return float((normalized - reference).abs()[both_finite].max())


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off on CUDA for the check and the fast paths: the check then measures the fast
    sampler's own error against exact float32, and the captured graph keeps those kernels (the
    configuration bench/inference_latency.py measured). No effect on the CPU. The flags are
    process-wide; the worker's thread is the only one running the model."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def policy_shape(policy: DiffusionPolicy) -> tuple[int, int]:
    """``(Tp, Da)`` of the policy's chunks."""
    return policy.config.horizon.prediction_horizon, policy.config.action.dim


def batched(observations: Mapping[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    return {
        key: torch.from_numpy(np.ascontiguousarray(value)).unsqueeze(0).to(device)
        for key, value in observations.items()
    }


def varied_observations(policy: DiffusionPolicy, seed: int = CHECK_SEED) -> dict[str, np.ndarray]:
    """Random pixels and low-dim values spread over the training range, for the warm-up check:
    the spatial-softmax keypoints of a uniform image do not depend on its brightness, so grey
    images would hide a wrong image conversion on a fast path."""
    generator = np.random.default_rng(seed)
    To = policy.config.horizon.observation_horizon
    spec = policy.config.observation
    observations: dict[str, np.ndarray] = {
        key: generator.integers(0, 256, size=(To, *shape), dtype=np.uint8)
        for key, shape in spec.cameras.items()
    }
    statistics = policy.normalizer.statistics()
    for key, size in spec.low_dim.items():
        low, high = np.asarray(statistics[key]["min"]), np.asarray(statistics[key]["max"])
        observations[key] = low + (high - low) * generator.uniform(size=(To, size))
    return observations
