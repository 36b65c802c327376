"""The node's parameters: one table, read by the node, the YAML test and the README.

ROS-free on purpose: the table is plain data, so dp_bringup's test can check its YAML file
against it without starting a node, and the node turns each entry into a declaration with a
``ParameterDescriptor``. Parameters are read at ``configure`` (not at start-up), so a failed
configure can be fixed with ``ros2 param set`` and retried without restarting the node.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Types of parameters that have no default value: rclpy cannot type an empty list, so these
# are declared by type and an unset value means "derive it" (from the checkpoint).
STRING_ARRAY = "string_array"
DOUBLE_ARRAY = "double_array"
INTEGER_ARRAY = "integer_array"
ARRAY_TYPES = (STRING_ARRAY, DOUBLE_ARRAY, INTEGER_ARRAY)

DEFAULT_TRAJECTORY_TOPIC = "/joint_trajectory_controller/joint_trajectory"
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
# How chunks are sampled (inference_worker.py): the library's eager path, dp_policy's fast
# serving path, or that path captured as one CUDA graph; auto picks by device.
SAMPLER_BACKENDS = ("auto", "eager", "fast", "cuda_graph")
# Weights of the fast paths' noise network: "mix" halves only the convolution weights and keeps
# activations in float32; fp16/bf16 run the whole network in that dtype; auto picks by device.
SAMPLER_PRECISIONS = ("auto", "fp32", "bf16mix", "fp16mix", "fp16", "bf16")


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its default (or array type when it has none) and what it means."""

    name: str
    default: bool | int | float | str | list | None
    description: str
    array_type: str | None = None
    value_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None

    @property
    def has_default(self) -> bool:
        return self.array_type is None


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "checkpoint",
        "",
        "Checkpoint directory written by dp_policy (model.safetensors + config.json with the "
        "data spec). Required; read at configure.",
    ),
    ParameterSpec(
        "device",
        "auto",
        f"Torch device for inference: {DEVICE_CHOICES}. auto takes the first GPU when torch "
        "sees one, else the CPU.",
    ),
    ParameterSpec(
        "cpu_threads",
        0,
        "Threads for inference on the CPU (torch intra-op threads); 0: half the cores this "
        "process may run on, at least 1, so that the rest of the robot's software (drivers, "
        "controllers, the executor of this node) keeps cores of its own.",
        value_range=(0, 1024),
    ),
    ParameterSpec(
        "num_inference_steps",
        0,
        "Denoising steps per chunk; 0 takes the checkpoint's own setting.",
        value_range=(0, 1000),
    ),
    ParameterSpec(
        "sampler_backend",
        "auto",
        "How chunks are sampled: eager (dp_policy's predict_action with diffusers schedulers), "
        "fast (dp_policy.fast_sampling: static DDIM/DDPM schedule, FiLM table, GEMM "
        "convolutions), cuda_graph (fast captured as one CUDA graph; CUDA only) or auto "
        "(cuda_graph on CUDA, fast on the CPU). A fast path is checked against eager on one "
        "chunk at configure; auto falls back to eager with a warning when it cannot be used or "
        "disagrees, an explicit fast or cuda_graph fails configure instead.",
        choices=SAMPLER_BACKENDS,
    ),
    ParameterSpec(
        "sampler_precision",
        "auto",
        "Noise-network weights of the fast and cuda_graph samplers: fp32, bf16mix or fp16mix "
        "(convolution weights halved, activations float32), fp16 or bf16 (whole network), or "
        "auto: fp16 on CUDA, bf16mix on a CPU with bf16 hardware (AVX512-BF16 or AMX), else "
        "fp32; auto steps down to fp32 when the half-precision chunk disagrees with eager. "
        "eager always runs float32.",
        choices=SAMPLER_PRECISIONS,
    ),
    ParameterSpec(
        "sampler_compile",
        False,
        "torch.compile the fast and cuda_graph samplers at configure: GroupNorm, Mish, FiLM and "
        "the convolutions' input windows fuse into few kernels between the GEMMs, which is what "
        "batch-1 latency is made of. Costs compilation time at configure (about a minute for "
        "the paper network; needs a C++ compiler on the CPU, Triton on CUDA). Checked against "
        "eager like the uncompiled path; not for sampler_backend eager.",
    ),
    ParameterSpec(
        "warmup_iterations",
        3,
        "Inferences run at configure on synthetic observations: CUDA kernels and allocator are "
        "ready before the first real chunk, and their latency seeds the chunk scheduler (on "
        "wall-clock time; on simulated time it learns the turnaround from the first chunk).",
        value_range=(1, 100),
    ),
    ParameterSpec(
        "seed",
        -1,
        "Seed of the sampling noise (reproducible chunks for a given observation sequence); "
        "-1: random.",
        value_range=(-1, 2**31 - 1),
    ),
    ParameterSpec(
        "autostart",
        False,
        "Configure and activate at start-up, for running without a lifecycle manager.",
    ),
    ParameterSpec(
        "joint_names",
        None,
        "Joints of the controller that receives the trajectories (of all controllers together "
        "when the action spans several). Configure fails unless the checkpoint's action joints "
        "are exactly these (any order). Unset: the checkpoint's.",
        array_type=STRING_ARRAY,
    ),
    ParameterSpec(
        "observation_topics",
        None,
        "Topic overrides, 'key=/topic' per observation key of the checkpoint's data spec "
        "(for example 'image=/wrist/image_raw'). Unset: the topics the checkpoint was trained "
        "with. Remapping those names works too.",
        array_type=STRING_ARRAY,
    ),
    ParameterSpec(
        "trajectory_topic",
        DEFAULT_TRAJECTORY_TOPIC,
        "Topic of the trajectory_msgs/JointTrajectory commands (reliable); remappable. With an "
        "action of several streams (controllers), the first stream's topic; the others are on "
        "command_topics.",
    ),
    ParameterSpec(
        "command_topics",
        None,
        "Topic overrides for the further action streams of a checkpoint whose action spans "
        "several controllers, 'key=/topic' per action key of its data spec (for example "
        "'gripper=/gripper_controller/joint_trajectory'); the first stream is always on "
        "trajectory_topic. Unset: the topics the checkpoint names.",
        array_type=STRING_ARRAY,
    ),
    ParameterSpec(
        "joint_lower_limits",
        None,
        "Lowest allowed position per action joint (checkpoint order, SI units / radians). "
        "Unset: the checkpoint's training range widened by limit_margin.",
        array_type=DOUBLE_ARRAY,
    ),
    ParameterSpec(
        "joint_upper_limits",
        None,
        "Highest allowed position per action joint; unset: from the checkpoint, as the lower.",
        array_type=DOUBLE_ARRAY,
    ),
    ParameterSpec(
        "limit_margin",
        0.05,
        "Fraction of each joint's training range added on both sides when the limits come from "
        "the checkpoint.",
        value_range=(0.0, 10.0),
    ),
    ParameterSpec(
        "max_step",
        None,
        "Largest allowed change of a joint between consecutive points, and from the measured "
        "position to the first point: one value for all joints or one per joint. Unset: "
        "max_step_fraction of each joint's training range.",
        array_type=DOUBLE_ARRAY,
    ),
    ParameterSpec(
        "max_step_fraction",
        0.25,
        "max_step as a fraction of each joint's training range when max_step is unset.",
        value_range=(0.0, 100.0),
    ),
    ParameterSpec(
        "observation_range_factor",
        2.0,
        "Low-dim observations (joint states, fields) further outside their training range (the "
        "checkpoint's normaliser statistics) than this many times its width are refused as "
        "implausible (INVALID_OBSERVATIONS), as are joint positions as far outside "
        "joint_lower_limits/joint_upper_limits when those are set; 0: no such check (values "
        "beyond the float32 range are always refused).",
        value_range=(0.0, 1e6),
    ),
    ParameterSpec(
        "max_observation_age",
        0.0,
        "Seconds after which a stream's newest message is stale and the chunk stream stops; "
        "0: each stream's max_age from the checkpoint's data spec (as in training).",
        value_range=(0.0, 3600.0),
    ),
    ParameterSpec(
        "future_stamp_tolerance",
        0.05,
        "Messages stamped more than this many seconds ahead of the node clock are refused.",
        value_range=(0.0, 60.0),
    ),
    ParameterSpec(
        "latency_margin",
        0.02,
        "Seconds added to the measured p99 inference turnaround when deciding how early to "
        "request the next chunk.",
        value_range=(0.0, 10.0),
    ),
    ParameterSpec(
        "min_time_from_start",
        0.02,
        "Points due sooner than this after publishing are dropped, so the first point is never "
        "at 0 and the controller always has a ramp to it.",
        value_range=(0.001, 10.0),
    ),
    ParameterSpec(
        "hold_on_deactivate",
        True,
        "On deactivate, command a stop at the measured position of the action joints.",
    ),
    ParameterSpec(
        "status_period",
        1.0,
        "Seconds between dp_msgs/PolicyStatus messages (also sent on every change).",
        value_range=(0.05, 60.0),
    ),
    ParameterSpec(
        "num_visualized_samples",
        1,
        "Chunks sampled per inference and drawn as markers (the first is executed; more show "
        "the policy's modes at extra GPU cost); 0: no markers.",
        value_range=(0, 64),
    ),
    ParameterSpec(
        "marker_dims",
        None,
        "Action dimensions drawn as x, y (and z) of the marker paths. Unset: the first two.",
        array_type=INTEGER_ARRAY,
    ),
    ParameterSpec("marker_frame", "world", "Frame id of the markers."),
    ParameterSpec(
        "marker_line_width",
        0.005,
        "Line width of the marker paths, in metres.",
        value_range=(1e-6, 10.0),
    ),
)

PARAMETER_NAMES = tuple(parameter.name for parameter in PARAMETERS)


def default_cpu_threads() -> int:
    """``cpu_threads`` 0: half the cores this process may run on, at least 1.

    torch's own default (a thread per core) spins every core during each inference, so on a
    small robot computer the drivers, controllers and this node's executor fight it for CPU
    time, and the inference itself gets slower rather than faster.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


class SettingsError(ValueError):
    """A parameter value that cannot work; the message names the parameter and what to set."""


@dataclass(frozen=True)
class NodeSettings:
    """Validated parameter values (arrays unset are empty tuples)."""

    checkpoint: str
    device: str
    cpu_threads: int
    num_inference_steps: int
    sampler_backend: str
    sampler_precision: str
    sampler_compile: bool
    warmup_iterations: int
    seed: int
    autostart: bool
    joint_names: tuple[str, ...]
    observation_topics: dict[str, str]
    trajectory_topic: str
    command_topics: dict[str, str]
    joint_lower_limits: tuple[float, ...]
    joint_upper_limits: tuple[float, ...]
    limit_margin: float
    max_step: tuple[float, ...]
    max_step_fraction: float
    observation_range_factor: float
    max_observation_age: float
    future_stamp_tolerance: float
    latency_margin: float
    min_time_from_start: float
    hold_on_deactivate: bool
    status_period: float
    num_visualized_samples: int
    marker_dims: tuple[int, ...]
    marker_frame: str
    marker_line_width: float

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        """Check ``values`` (name -> value, None for an unset array) and build the settings."""
        unknown = sorted(set(values) - set(PARAMETER_NAMES))
        if unknown:
            raise SettingsError(f"unknown parameter(s) {unknown}")
        merged = {spec.name: values.get(spec.name, spec.default) for spec in PARAMETERS}
        for spec in PARAMETERS:
            if spec.value_range is not None:
                low, high = spec.value_range
                if not low <= merged[spec.name] <= high:
                    raise SettingsError(
                        f"parameter '{spec.name}' is {merged[spec.name]}, must be in "
                        f"[{low}, {high}]"
                    )
        checkpoint = str(merged["checkpoint"]).strip()
        if not checkpoint:
            raise SettingsError(
                "parameter 'checkpoint' is empty: set it to a dp_policy checkpoint directory "
                "(model.safetensors + config.json)"
            )
        device = str(merged["device"]).strip().lower()
        _check_device_text(device)
        backend = _choice(merged, "sampler_backend")
        precision = _choice(merged, "sampler_precision")
        sampler_compile = bool(merged["sampler_compile"])
        _check_sampler(device, backend, precision)
        if sampler_compile and backend == "eager":
            raise SettingsError(
                "parameter 'sampler_compile' is true, but sampler_backend 'eager' is not "
                "compiled; use sampler_backend fast, cuda_graph or auto, or sampler_compile false"
            )
        trajectory_topic = str(merged["trajectory_topic"]).strip()
        if not trajectory_topic:
            raise SettingsError("parameter 'trajectory_topic' is empty")
        lower = _floats(merged["joint_lower_limits"])
        upper = _floats(merged["joint_upper_limits"])
        if bool(lower) != bool(upper):
            raise SettingsError(
                "set both joint_lower_limits and joint_upper_limits, or neither (then the "
                "checkpoint's training range is used)"
            )
        for index, (low, high) in enumerate(zip(lower, upper, strict=False)):
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise SettingsError(
                    f"joint limits at index {index}: lower {low} must be below upper {high} and "
                    f"both finite"
                )
        if len(lower) != len(upper):
            raise SettingsError(
                f"joint_lower_limits has {len(lower)} values, joint_upper_limits {len(upper)}"
            )
        max_step = _floats(merged["max_step"])
        if any(not (step > 0) for step in max_step):
            raise SettingsError(f"max_step values must be positive, got {list(max_step)}")
        marker_dims = tuple(int(dim) for dim in (merged["marker_dims"] or ()))
        if len(marker_dims) > 3 or any(dim < 0 for dim in marker_dims):
            raise SettingsError(
                f"marker_dims names up to 3 non-negative action dimensions (x, y, z), got "
                f"{list(marker_dims)}"
            )
        joint_names = tuple(str(name) for name in (merged["joint_names"] or ()))
        if len(set(joint_names)) != len(joint_names):
            raise SettingsError(f"joint_names lists a joint twice: {list(joint_names)}")
        return cls(
            checkpoint=checkpoint,
            device=device,
            cpu_threads=int(merged["cpu_threads"]),
            num_inference_steps=int(merged["num_inference_steps"]),
            sampler_backend=backend,
            sampler_precision=precision,
            sampler_compile=sampler_compile,
            warmup_iterations=int(merged["warmup_iterations"]),
            seed=int(merged["seed"]),
            autostart=bool(merged["autostart"]),
            joint_names=joint_names,
            observation_topics=parse_topic_overrides(merged["observation_topics"] or ()),
            trajectory_topic=trajectory_topic,
            command_topics=parse_topic_overrides(
                merged["command_topics"] or (), "command_topics", "an action key"
            ),
            joint_lower_limits=lower,
            joint_upper_limits=upper,
            limit_margin=float(merged["limit_margin"]),
            max_step=max_step,
            max_step_fraction=float(merged["max_step_fraction"]),
            observation_range_factor=float(merged["observation_range_factor"]),
            max_observation_age=float(merged["max_observation_age"]),
            future_stamp_tolerance=float(merged["future_stamp_tolerance"]),
            latency_margin=float(merged["latency_margin"]),
            min_time_from_start=float(merged["min_time_from_start"]),
            hold_on_deactivate=bool(merged["hold_on_deactivate"]),
            status_period=float(merged["status_period"]),
            num_visualized_samples=int(merged["num_visualized_samples"]),
            marker_dims=marker_dims,
            marker_frame=str(merged["marker_frame"]),
            marker_line_width=float(merged["marker_line_width"]),
        )


def parse_topic_overrides(
    entries: Sequence[str],
    parameter: str = "observation_topics",
    what: str = "an observation key",
) -> dict[str, str]:
    """``['image=/wrist/image_raw', ...]`` -> ``{'image': '/wrist/image_raw'}``; errors name
    ``parameter`` and say that a key is ``what``."""
    overrides: dict[str, str] = {}
    for entry in entries:
        key, separator, topic = str(entry).partition("=")
        key, topic = key.strip(), topic.strip()
        if not separator or not key or not topic:
            raise SettingsError(
                f"{parameter} entry {entry!r} must be 'key=/topic' (key: {what} of the "
                f"checkpoint's data spec)"
            )
        if key in overrides:
            raise SettingsError(f"{parameter} names key {key!r} twice")
        overrides[key] = topic
    return overrides


def _floats(values: Sequence[float] | None) -> tuple[float, ...]:
    return tuple(float(value) for value in (values or ()))


def _check_device_text(device: str) -> None:
    if device in ("auto", "cpu", "cuda"):
        return
    prefix, _, index = device.partition(":")
    if prefix == "cuda" and index.isdigit():
        return
    raise SettingsError(f"parameter 'device' is {device!r}; use {DEVICE_CHOICES}")


def _choice(merged: Mapping[str, Any], name: str) -> str:
    spec = next(parameter for parameter in PARAMETERS if parameter.name == name)
    assert spec.choices is not None
    value = str(merged[name]).strip().lower()
    if value not in spec.choices:
        raise SettingsError(
            f"parameter '{name}' is {value!r}; use one of {', '.join(spec.choices)}"
        )
    return value


def _check_sampler(device: str, backend: str, precision: str) -> None:
    """Combinations that cannot work whatever the machine; the device-dependent ones (auto
    resolving to the CPU) are checked by the inference worker when it picks the device."""
    if backend == "cuda_graph" and device == "cpu":
        raise SettingsError(
            "parameter 'sampler_backend' is 'cuda_graph', which needs a CUDA device, but "
            "'device' is 'cpu'; use sampler_backend fast (or auto) on the CPU"
        )
    if backend == "eager" and precision not in ("auto", "fp32"):
        raise SettingsError(
            f"parameter 'sampler_precision' is {precision!r}, but sampler_backend 'eager' runs "
            "the checkpoint's float32 weights; use sampler_precision auto or fp32, or "
            "sampler_backend fast/cuda_graph/auto for half precision"
        )
