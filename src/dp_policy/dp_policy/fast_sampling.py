"""Low-latency chunk sampling for serving: the same maths as ``predict_action``, fewer kernels.

* ``StaticSchedule`` replaces diffusers' per-step Python and GPU synchronisation.
* ``FiLMTableUnet`` computes the FiLM scale/bias of every residual block for every denoising
  step in one matrix product per chunk (the condition is fixed for a chunk and the step
  embeddings are known in advance), instead of ~20 small products per step. Its convolutions
  can run as cuDNN/oneDNN Conv1d or as one GEMM each (``conv_mode="gemm"``), and its weights
  can be kept in bf16/fp16, either with all activations in that dtype or only the convolution
  weights (``mixed=True``). The encoder, FiLM table and scheduler arithmetic stay float32.
* ``FastChunkSampler.compile_sampling`` runs the per-chunk preparation and the per-step
  network + reverse step through ``torch.compile``: at batch 1 and Tp=16 a U-Net step is
  hundreds of tiny kernels, and fusing the normalisation, activation, FiLM and window copies
  between the GEMMs removes most of them.
* ``CudaGraphChunkSampler`` captures encoder + all denoising steps + scheduler arithmetic +
  unnormalisation (compiled or not) in one CUDA graph with static input and noise buffers.

Only the batch given at construction is supported; ``predict_action`` stays the general path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn import functional

from dp_policy.normalizer import ACTION_KEY
from dp_policy.policy import DiffusionPolicy
from dp_policy.static_schedule import StaticSchedule, static_schedule
from dp_policy.unet import ConditionalUnet1D, FiLMResidualBlock

CONV_MODES = ("native", "gemm")


def conv1d_as_gemm(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv(x)`` for ``x (B, Cin, L)`` as one GEMM: ``(B*Lout, Cin*k) @ (Cin*k, Cout)``.

    At L <= 16 and batch 1 a convolution kernel has almost no parallel work per weight; a GEMM
    with the weights as the large operand streams them once at full bandwidth (and, on CPUs
    with AMX/AVX512-FP16, runs half-precision weights fast where oneDNN's conv1d does not).
    """
    batch, channels, _ = x.shape
    k, stride, padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    padded = functional.pad(x, (padding, padding)) if padding else x
    windows = padded.unfold(2, k, stride)  # (B, Cin, Lout, k)
    length = windows.shape[2]
    columns = windows.permute(0, 2, 1, 3).reshape(batch * length, channels * k)
    weight = conv.weight.reshape(conv.out_channels, channels * k)
    out = torch.addmm(conv.bias, columns, weight.t())
    return out.reshape(batch, length, -1).transpose(1, 2)


def conv_transpose1d_as_gemm(x: torch.Tensor, conv: nn.ConvTranspose1d) -> torch.Tensor:
    """``conv(x)`` for ``x (B, Cin, L)`` as one GEMM ``(B*L, Cin) @ (Cin, Cout*k)`` followed by
    the overlap-add of the k taps (``fold``)."""
    batch, channels, length = x.shape
    k, stride, padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    out_channels = conv.weight.shape[1]
    taps = x.transpose(1, 2).reshape(batch * length, channels) @ conv.weight.reshape(channels, -1)
    taps = taps.reshape(batch, length, out_channels * k).transpose(1, 2)  # (B, Cout*k, L)
    full = (length - 1) * stride + k
    out = functional.fold(taps, output_size=(1, full), kernel_size=(1, k), stride=(1, stride))
    out_length = full - 2 * padding + conv.output_padding[0]
    return out[:, :, 0, padding : padding + out_length] + conv.bias[None, :, None]


class FiLMTableUnet(nn.Module):
    """``ConditionalUnet1D`` with precomputed FiLM parameters, its weights in ``dtype`` (shared
    with the policy in float32, copied otherwise).

    ``mixed``: only the convolution weights become ``dtype``; activations, GroupNorm, FiLM and
    residual sums stay float32, each convolution casting its input and output. This keeps the
    halved weight traffic (the cost at batch 1) with a fraction of the rounding error.
    """

    def __init__(
        self,
        unet: ConditionalUnet1D,
        dtype: torch.dtype,
        conv_mode: str = "native",
        mixed: bool = False,
    ) -> None:
        super().__init__()
        if conv_mode not in CONV_MODES:
            raise ValueError(f"conv_mode must be one of {CONV_MODES}, got {conv_mode!r}")
        self.conv_mode = conv_mode
        self.activation_dtype = torch.float32 if mixed else dtype
        if dtype == torch.float32:
            # New modules (rewired below) over the policy's own weight tensors: a float32
            # sampler costs no second copy of the network. requires_grad is left alone, as it
            # belongs to the policy; sampling runs without autograd anyway.
            shared = {id(t): t for t in (*unet.parameters(), *unet.buffers())}
            self.body = copy.deepcopy(unet, shared)
        else:
            self.body = copy.deepcopy(unet).requires_grad_(False)
        self.step_embedding = unet.step_embedding
        self.step_encoder = copy.deepcopy(unet.step_encoder).float().requires_grad_(False)
        blocks = [m for m in self.body.modules() if isinstance(m, FiLMResidualBlock)]
        self.film_weight = nn.Parameter(
            torch.cat([b.film[1].weight.detach().float() for b in blocks]), requires_grad=False
        )
        self.film_bias = nn.Parameter(
            torch.cat([b.film[1].bias.detach().float() for b in blocks]), requires_grad=False
        )
        start = 0
        for block in blocks:
            # Plain int attributes (not id()-keyed dicts) so torch.compile sees constants.
            block.film_offset = start
            start += 2 * block.out_channels
            block.film = None  # now part of film_weight; the copy would only cost memory
        self.body.step_encoder = None
        self.body.to(self.activation_dtype)
        for module in self.body.modules():
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
                module.to(dtype)

    def film_table(self, global_cond: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """FiLM parameters for every step: ``global_cond (B, G)``, ``timesteps (S,)`` ->
        ``(S, B, total)`` in the activation dtype, computed in float32."""
        steps = self.step_encoder(self.step_embedding(timesteps))  # (S, step_dim)
        S, B = steps.shape[0], global_cond.shape[0]
        cond = torch.cat(
            [steps[:, None, :].expand(S, B, -1), global_cond.float()[None].expand(S, B, -1)], dim=-1
        )
        table = functional.linear(functional.mish(cond), self.film_weight, self.film_bias)
        return table.to(self.activation_dtype)

    def _conv(self, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = x.to(conv.weight.dtype)  # no-op unless mixed
        if self.conv_mode == "native":
            out = conv(x)
        elif isinstance(conv, nn.ConvTranspose1d):
            out = conv_transpose1d_as_gemm(x, conv)
        else:
            out = conv1d_as_gemm(x, conv)
        return out.to(self.activation_dtype)

    def _conv_block(self, block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        conv, norm, activation = block
        return activation(norm(self._conv(conv, x)))

    def _residual(
        self, block: FiLMResidualBlock, x: torch.Tensor, film: torch.Tensor
    ) -> torch.Tensor:
        start, channels = block.film_offset, block.out_channels
        scale = film[:, start : start + channels, None]
        bias = film[:, start + channels : start + 2 * channels, None]
        hidden = torch.addcmul(bias, scale, self._conv_block(block.first, x))  # one kernel
        residual = block.residual
        skip = self._conv(residual, x) if isinstance(residual, nn.Conv1d) else x
        return self._conv_block(block.second, hidden) + skip

    def forward(self, sample: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """``sample (B, Tp, Da)``, one step's ``film (B, total)`` -> ``(B, Tp, Da)``."""
        body = self.body
        x = sample.to(self.activation_dtype).transpose(1, 2)
        skips = []
        for first, second, downsample in body.down:
            x = self._residual(second, self._residual(first, x, film), film)
            skips.append(x)
            if isinstance(downsample, nn.Conv1d):
                x = self._conv(downsample, x)
        for block in body.middle:
            x = self._residual(block, x, film)
        for first, second, upsample in body.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = self._conv(upsample, self._residual(second, self._residual(first, x, film), film))
        head_block, head_out = body.head
        return self._conv(head_out, self._conv_block(head_block, x)).transpose(1, 2)


class FastChunkSampler(nn.Module):
    """Encoder + static-schedule sampling for a fixed batch; no checks, no Python-side syncs."""

    def __init__(
        self,
        policy: DiffusionPolicy,
        scheduler_name: str | None = None,
        num_inference_steps: int | None = None,
        dtype: torch.dtype = torch.float32,
        conv_mode: str = "native",
        denoiser: nn.Module | None = None,
        mixed: bool = False,
    ) -> None:
        """``dtype``/``conv_mode``/``mixed``: see ``FiLMTableUnet`` (the transformer is simply
        cast to ``dtype``). ``denoiser``: reuse the network of another sampler of ``policy``
        built with the same settings instead of copying the weights."""
        super().__init__()
        self.policy = policy.eval()
        self.schedule: StaticSchedule = static_schedule(
            policy.config.noise, scheduler_name, num_inference_steps
        )
        self.dtype = dtype
        self.is_unet = policy.config.backbone == "unet"
        if denoiser is not None:
            self.denoiser: nn.Module = denoiser
        elif self.is_unet:
            self.denoiser = FiLMTableUnet(policy.noise_net, dtype, conv_mode, mixed)
        else:
            self.denoiser = copy.deepcopy(policy.noise_net).to(dtype)
        self.input_dtype = getattr(self.denoiser, "activation_dtype", dtype)
        device = policy.device
        self.register_buffer(
            "timesteps", torch.tensor(self.schedule.timesteps, device=device), persistent=False
        )
        self.register_buffer(
            "coefficients", self.schedule.coefficient_table(device), persistent=False
        )
        self.compiled = False
        self._prepare: Callable[..., torch.Tensor] = self.prepare
        self._step: Callable[..., torch.Tensor] = self.denoise_step

    def compile_sampling(self, **options) -> None:
        """``torch.compile`` the two parts of a chunk: ``prepare`` (encoder + FiLM table) and
        ``denoise_step`` (network + reverse step), so that GroupNorm, FiLM, Mish, the
        convolutions' input windows and the scheduler arithmetic fuse into few kernels.

        Whole graphs or an error (``fullgraph``), static shapes; the step coefficients are
        tensor rows so that one compiled step serves every step. Every sampler instance adds
        guarded entries for the same code, so the recompile limit is raised to keep a process
        with several samplers from silently falling back to uncompiled code.
        """
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, name, max(getattr(config, name), 64))  # older torch: cache_size_limit
        options = {"fullgraph": True, "dynamic": False, **options}
        self._prepare = torch.compile(self.prepare, **options)
        self._step = torch.compile(self.denoise_step, **options)
        self.compiled = True

    def encode(self, observations: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw observations ``{key: (B, To, ...)}`` on the device -> features ``(B, To, F)``."""
        policy = self.policy
        prepared = {}
        for key in policy.config.observation.cameras:
            prepared[key] = policy.normalizer.normalize_image(observations[key])
        for key in policy.config.observation.low_dim:
            prepared[key] = policy.normalizer.ranges[key].normalize(observations[key])
        return policy.obs_encoder(prepared)

    def prepare(self, observations: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The per-chunk condition: U-Net FiLM table ``(S, B, total)`` or transformer
        features ``(B, To, F)`` in the network's input dtype."""
        features = self.encode(observations)
        if self.is_unet:
            return self.denoiser.film_table(features.flatten(1), self.timesteps)
        return features.to(self.input_dtype)

    def denoise_step(
        self,
        sample: torch.Tensor,
        condition: torch.Tensor,
        timestep: torch.Tensor,
        coefficients: tuple | torch.Tensor,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """One reverse step: ``sample (B, Tp, Da)`` float32, the step's ``condition`` (FiLM row
        ``(B, total)`` or features ``(B, To, F)``), ``timestep`` 0-d -> float32 ``(B, Tp, Da)``."""
        model_input = sample.to(self.input_dtype)
        if self.is_unet:
            output = self.denoiser(model_input, condition)
        else:
            output = self.denoiser(model_input, timestep, condition)
        return self.schedule.combine(coefficients, sample, output.float(), noise)

    def sample_normalized(
        self,
        observations: Mapping[str, torch.Tensor],
        noise: torch.Tensor,
        step_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``noise (B, Tp, Da)``, DDPM ``step_noise (S, B, Tp, Da)`` -> normalised float32 chunk.

        ``observations`` have batch ``B``, or batch 1 for ``B`` samples of one observation
        history: it is then encoded once and its condition shared, as ``predict_action`` does
        for ``num_samples``.
        """
        schedule = self.schedule
        if schedule.needs_step_noise and step_noise is None:
            raise ValueError(f"a {schedule.kind} schedule needs step_noise (S, B, Tp, Da)")
        condition = self._shared(self._prepare(observations), noise.shape[0])
        sample = noise
        for index in range(schedule.num_steps):
            step_condition = condition[index] if self.is_unet else condition
            # Eager: Python floats (a scalar operand costs no kernel). Compiled: the tensor
            # row, so that the compiled step is not specialised on the step's values.
            coefficients = (
                self.coefficients[index] if self.compiled else schedule.coefficients(index)
            )
            step_noise_i = step_noise[index] if schedule.noise_std[index] > 0 else None
            sample = self._step(
                sample, step_condition, self.timesteps[index], coefficients, step_noise_i
            )
        return sample

    def _shared(self, condition: torch.Tensor, batch: int) -> torch.Tensor:
        """The condition of a batch-1 observation as a view for ``batch`` samples (no copy)."""
        axis = 1 if self.is_unet else 0  # FiLM table (S, B, total), features (B, To, F)
        if condition.shape[axis] == batch:
            return condition
        if condition.shape[axis] != 1:
            raise ValueError(
                f"observations of batch {condition.shape[axis]} for noise of batch {batch}: "
                "give one observation history per sample, or one for all"
            )
        shape = list(condition.shape)
        shape[axis] = batch
        return condition.expand(shape)

    def unnormalize(self, normalized: torch.Tensor) -> torch.Tensor:
        return self.policy.normalizer.ranges[ACTION_KEY].unnormalize(normalized)


class CudaGraphChunkSampler:
    """One CUDA graph for a whole chunk: copy inputs in, replay, read the static outputs."""

    def __init__(
        self,
        sampler: FastChunkSampler,
        example_observations: Mapping[str, torch.Tensor],
        warmup: int = 3,
        batch: int | None = None,
    ) -> None:
        """``batch``: chunks per replay; unset, the batch of ``example_observations``. A batch-1
        observation with ``batch > 1`` is encoded once for all of them."""
        device = sampler.policy.device
        if device.type != "cuda":
            raise ValueError("CUDA graphs need the policy on a CUDA device")
        self.sampler = sampler
        self.static_observations = {k: v.detach().clone() for k, v in example_observations.items()}
        batch = batch or next(iter(example_observations.values())).shape[0]
        horizon = sampler.policy.config.horizon.prediction_horizon
        shape = (batch, horizon, sampler.policy.config.action.dim)
        self.static_noise = torch.zeros(shape, device=device)
        schedule = sampler.schedule
        self.static_step_noise = (
            torch.zeros((schedule.num_steps, *shape), device=device)
            if schedule.needs_step_noise
            else None
        )
        with torch.no_grad():
            # Warm-up on a side stream: cuDNN autotuning, lazy initialisation and torch.compile
            # must happen before capture, as the PyTorch CUDA-graph recipe requires.
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self._run()
            torch.cuda.current_stream(device).wait_stream(side)
            torch.cuda.synchronize(device)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.normalized, self.actions = self._run()

    def _run(self) -> tuple[torch.Tensor, torch.Tensor]:
        normalized = self.sampler.sample_normalized(
            self.static_observations, self.static_noise, self.static_step_noise
        )
        return normalized, self.sampler.unnormalize(normalized)

    def __call__(
        self,
        observations: Mapping[str, torch.Tensor],
        noise: torch.Tensor | None = None,
        step_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the static ``(normalized, actions)`` tensors ``(B, Tp, Da)``; copy them before
        the next call. Noise not given is drawn into the static buffers (outside the graph)."""
        for key, value in observations.items():
            self.static_observations[key].copy_(value, non_blocking=True)
        if noise is None:
            self.static_noise.normal_(generator=generator)
        else:
            self.static_noise.copy_(noise, non_blocking=True)
        if self.static_step_noise is not None:
            if step_noise is None:
                self.static_step_noise.normal_(generator=generator)
            else:
                self.static_step_noise.copy_(step_noise, non_blocking=True)
        self.graph.replay()
        return self.normalized, self.actions
