"""The serving fast path samples the same chunks as the library path."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dp_policy_test_factories import fitted_policy, make_observations, tiny_config

from dp_policy.config import NoiseScheduleConfig
from dp_policy.fast_sampling import (
    FastChunkSampler,
    conv1d_as_gemm,
    conv_transpose1d_as_gemm,
)
from dp_policy.static_schedule import static_schedule

BENCH = Path(__file__).resolve().parents[3] / "bench" / "inference_latency.py"


def test_convolutions_as_gemm_equal_the_torch_layers():
    torch.manual_seed(0)
    layers = [
        torch.nn.Conv1d(6, 4, 1),
        torch.nn.Conv1d(6, 4, 3, padding=1),
        torch.nn.Conv1d(6, 4, 5, padding=2),
        torch.nn.Conv1d(6, 6, 3, stride=2, padding=1),  # the U-Net's downsampling
    ]
    x = torch.randn(2, 6, 8)
    for conv in layers:
        assert torch.allclose(conv1d_as_gemm(x, conv), conv(x), atol=1e-5)
    upsample = torch.nn.ConvTranspose1d(6, 5, 4, stride=2, padding=1)  # the U-Net's upsampling
    assert torch.allclose(conv_transpose1d_as_gemm(x, upsample), upsample(x), atol=1e-5)


@pytest.mark.parametrize(
    ("backbone", "scheduler", "steps", "conv_mode"),
    [
        ("unet", "DDIMScheduler", 10, "native"),
        ("unet", "DDIMScheduler", 16, "gemm"),
        ("unet", "DDPMScheduler", 100, "gemm"),
        ("transformer", "DDIMScheduler", 10, "native"),
        ("transformer", "DDPMScheduler", 30, "native"),
    ],
)
def test_fast_sampler_matches_the_library_path(backbone, scheduler, steps, conv_mode):
    config = tiny_config(backbone, cameras=scheduler == "DDIMScheduler")
    policy = fitted_policy(config).eval()
    observations = make_observations(config, 2)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn((2, 8, 2), generator=generator)
    # The library's DDPM draws one noise tensor per step from the generator, in order.
    step_noise = torch.stack([torch.randn((2, 8, 2), generator=generator) for _ in range(steps)])
    with torch.no_grad():
        replay = torch.Generator().manual_seed(0)
        torch.randn((2, 8, 2), generator=replay)
        features = policy.encode_observations(observations)
        expected = policy.sample_normalized(features, noise, steps, scheduler, replay)
        fast = FastChunkSampler(policy, scheduler, steps, conv_mode=conv_mode)
        actual = fast.sample_normalized(observations, noise, step_noise)
        actions = fast.unnormalize(actual)
    assert (actual - expected).abs().max() < 1e-4
    assert torch.allclose(actions, policy.normalizer.unnormalize("action", expected), atol=1e-3)


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
@pytest.mark.parametrize(("scheduler", "steps"), [("DDIMScheduler", 10), ("DDPMScheduler", 20)])
def test_fast_sampler_matches_for_every_prediction_type(prediction_type, scheduler, steps):
    """The shipped CPU recipe predicts the clean sample: the fast path's scheduler arithmetic
    must turn any prediction type into the library's step."""
    config = tiny_config(
        "unet", cameras=False, noise=NoiseScheduleConfig(prediction_type=prediction_type)
    )
    policy = fitted_policy(config).eval()
    observations = make_observations(config, 2)
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn((2, 8, 2), generator=generator)
    step_noise = torch.stack([torch.randn((2, 8, 2), generator=generator) for _ in range(steps)])
    with torch.no_grad():
        replay = torch.Generator().manual_seed(1)
        torch.randn((2, 8, 2), generator=replay)
        features = policy.encode_observations(observations)
        expected = policy.sample_normalized(features, noise, steps, scheduler, replay)
        actual = FastChunkSampler(policy, scheduler, steps).sample_normalized(
            observations, noise, step_noise
        )
    assert (actual - expected).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("backbone", "scheduler", "steps"),
    [
        ("unet", "DDIMScheduler", 10),
        ("unet", "DDPMScheduler", 12),
        ("transformer", "DDIMScheduler", 6),
    ],
)
def test_compiled_sampling_matches_and_compiles_once_per_shape(backbone, scheduler, steps):
    """torch.compile (inductor's C++ backend here; Triton on a GPU) traces the same maths as a
    whole graph, and one compiled step serves every step: no recompilation per step."""
    config = tiny_config(backbone, cameras=backbone == "unet")
    policy = fitted_policy(config).eval()
    observations = make_observations(config, 2)
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn((2, 8, 2), generator=generator)
    step_noise = torch.randn((steps, 2, 8, 2), generator=generator)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch.no_grad():
        reference = FastChunkSampler(policy, scheduler, steps, conv_mode="gemm")
        expected = reference.sample_normalized(observations, noise, step_noise)
        fast = FastChunkSampler(policy, scheduler, steps, conv_mode="gemm")
        fast.compile_sampling()
        first = fast.sample_normalized(observations, noise, step_noise)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        second = fast.sample_normalized(observations, 2 * noise, step_noise)
    assert fast.compiled
    assert (first - expected).abs().max() < 1e-4
    assert not torch.equal(first, second)
    # prepare + step (+ the DDPM last step, which adds no noise); nothing new on a second chunk.
    assert graphs == (3 if scheduler == "DDPMScheduler" else 2)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize(
    ("backbone", "compiled"), [("unet", False), ("unet", True), ("transformer", False)]
)
def test_one_history_for_several_samples_is_encoded_once(backbone, compiled):
    """Several chunks of one observation history (the node's visualised samples) share one
    encoding, and sample what the history repeated per sample gives."""
    config = tiny_config(backbone, cameras=True)
    policy = fitted_policy(config).eval()
    single = make_observations(config, 1)
    repeated = {key: value.expand(3, *value.shape[1:]) for key, value in single.items()}
    noise = torch.randn((3, 8, 2), generator=torch.Generator().manual_seed(5))
    encoded_batches = []
    hook = policy.obs_encoder.register_forward_hook(
        lambda _module, inputs, _output: encoded_batches.append(
            next(iter(inputs[0].values())).shape[0]
        )
    )
    torch._dynamo.reset()
    with torch.no_grad():
        expected = FastChunkSampler(policy, conv_mode="gemm").sample_normalized(repeated, noise)
        fast = FastChunkSampler(policy, conv_mode="gemm")
        if compiled:
            fast.compile_sampling()
        del encoded_batches[:]
        chunks = fast.sample_normalized(single, noise)
        with pytest.raises(ValueError, match="batch 2 for noise of batch 3"):
            fast.sample_normalized(make_observations(config, 2), noise)
    hook.remove()
    assert chunks.shape == (3, 8, 2)
    assert (chunks - expected).abs().max() < 1e-4
    assert len({tuple(chunk.flatten().tolist()) for chunk in chunks}) == 3, "one noise per sample"
    if not compiled:  # compiled code does not run the module's hooks
        assert encoded_batches[0] == 1


def test_a_float32_sampler_shares_the_policy_weights_and_a_half_one_leaves_them_alone():
    policy = fitted_policy(tiny_config("unet", cameras=False)).eval()
    weights = {id(p): p for p in policy.noise_net.parameters()}
    storages = {p.data_ptr() for p in policy.noise_net.parameters()}
    shared = FastChunkSampler(policy, conv_mode="gemm").denoiser.body
    assert {p.data_ptr() for p in shared.parameters()} <= storages
    assert any(b.film is not None for b in policy.noise_net.modules() if hasattr(b, "film"))
    half = FastChunkSampler(policy, dtype=torch.bfloat16, conv_mode="gemm").denoiser.body
    assert not {p.data_ptr() for p in half.parameters()} & storages
    assert all(p.dtype == torch.float32 and p.requires_grad for p in policy.noise_net.parameters())
    assert {id(p): p for p in policy.noise_net.parameters()} == weights


def test_half_precision_weights_stay_close():
    config = tiny_config("unet", cameras=False)
    policy = fitted_policy(config).eval()
    observations = make_observations(config, 2)
    noise = torch.randn((2, 8, 2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = FastChunkSampler(policy).sample_normalized(observations, noise)
        for mixed in (False, True):
            half = FastChunkSampler(policy, dtype=torch.bfloat16, conv_mode="gemm", mixed=mixed)
            chunk = half.sample_normalized(observations, noise)
            assert chunk.dtype == torch.float32
            assert (chunk - reference).abs().max() < 0.1


def test_static_schedule_refuses_other_schedulers():
    config = tiny_config().noise
    assert static_schedule(config).timesteps == (90, 80, 70, 60, 50, 40, 30, 20, 10, 0)
    with pytest.raises(ValueError, match="DDIMScheduler and DDPMScheduler"):
        static_schedule(config, "DPMSolverMultistepScheduler", 10)


@pytest.mark.skipif(not BENCH.is_file(), reason="bench/ is not part of an installed package")
def test_latency_benchmark_smoke_mode_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("inference_latency", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    out = tmp_path / "latency.json"
    arguments = ["--smoke", "--device", "cpu", "--samplers", "ddim10,ddpm100", "--out", str(out)]
    arguments += ["--variants", "eager,fast_fp32_native,fast_fp32_gemm"]
    report = bench.main([*arguments, "--skip", "image_unet:ddpm100", "--threads", "1"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    ok = [r for r in report["results"] if r["status"] == "ok"]
    assert {r["variant"] for r in ok} >= {"eager", "fast_fp32_native", "fast_fp32_gemm"}
    assert all(r["tolerance_pass"] for r in ok if "fp32" in r["variant"])
    assert report["models"]["image_unet"]["parameters"]["total"] > 0
    # The per-chunk operator count explains batch-1 latency; the FiLM table and static
    # schedule must save operators against eager (diffusers' step, per-step FiLM products).
    ops = {(r["config"], r["sampler"], r["variant"]): r["aten_ops_per_chunk"] for r in ok}
    for config, sampler in {("lowdim_unet", "ddim10"), ("lowdim_unet", "ddpm100")}:
        assert ops[config, sampler, "fast_fp32_native"] < ops[config, sampler, "eager"]
    assert {(r["config"], r["sampler"]) for r in ok} == {
        ("image_unet", "ddim10"),
        ("lowdim_unet", "ddim10"),
        ("lowdim_unet", "ddpm100"),
    }


def test_library_imports_nothing_from_ros():
    code = (
        "import sys, dp_policy, dp_policy.fast_sampling;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rclpy', 'rosidl_runtime_py', 'rosbag2_py', 'std_msgs', 'sensor_msgs',"
        " 'builtin_interfaces'));"
        "print(bad)"
    )
    package_root = str(Path(__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": package_root, "PATH": "/usr/bin:/bin"},
    )
    assert result.stdout.strip() == "[]"
