"""What to serve: the checkpoint's data spec matched against the node's parameters.

ROS-free. Reads only the checkpoint's ``config.json`` (never the weights), so a checkpoint for
another robot, a typo in a topic override or an impossible limit fails ``configure`` in
milliseconds with a message that says what to fix, before any model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dp_policy import NoiseScheduleConfig
from dp_policy.data_spec import DataSpec, StreamSpec
from dp_policy.field_encodings import split_field
from dp_policy_node.fast_path import fast_sampling_unsupported
from dp_policy_node.parameters import NodeSettings

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
# A joint whose training range is (nearly) zero gives no scale for a step limit.
_MIN_RANGE = 1e-9
# Rounding of a normalised encoding's components (float64, then float32 in the message path).
_UNIT_TOLERANCE = 1e-6
# The model computes in float32: a larger magnitude would reach it as inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class PlausibleRange:
    """Per value of a low-dim observation: the interval outside which it is refused at the door.

    Far wider than the training data (a robot may be somewhat outside what was demonstrated),
    but a value beyond it is a broken sensor or publisher, not a state: it would make the model
    predict garbage that then looks like a model failure. ``reasons`` says per value where the
    bound comes from, for the refusal's message.
    """

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    reasons: tuple[str, ...]

    def violation(self, values: np.ndarray) -> int | None:
        """Index of the first value outside its range, or None."""
        outside = np.flatnonzero((values < self.low) | (values > self.high))
        return int(outside[0]) if outside.size else None


class ConfigurationError(ValueError):
    """The checkpoint and the parameters do not fit together; the message says what to fix."""


@dataclass(frozen=True)
class ObservationStream:
    """One subscribed topic and how its messages become one observation key."""

    key: str
    topic: str
    kind: str  # image, joint_state or fields
    message_type: str
    shape: tuple[int, ...]
    joints: tuple[str, ...]
    joint_field: str
    fields: tuple[str, ...]
    align_max_age: float  # as the dataset builder: grid time minus stamp at most this
    stale_age: float  # now minus the newest stamp at most this, or the stream is stale
    # Low-dim streams: values outside it are refused (None: no check, e.g. images).
    plausible: PlausibleRange | None = None

    @property
    def compressed(self) -> bool:
        return self.message_type == "sensor_msgs/msg/CompressedImage"


@dataclass(frozen=True)
class CommandStream:
    """One action stream: the controller topic it is published on and its joints, which are
    ``columns`` of the policy's action vector."""

    key: str
    topic: str
    joints: tuple[str, ...]
    columns: slice


@dataclass(frozen=True)
class ServingPlan:
    """Everything the node needs from the checkpoint, checked against the parameters."""

    checkpoint: Path
    streams: tuple[ObservationStream, ...]
    reference: str
    dt: float
    observation_horizon: int
    prediction_horizon: int
    action_horizon: int
    # Every action stream's joints, in the order of the policy's action vector.
    action_joints: tuple[str, ...]
    lower_limits: np.ndarray
    upper_limits: np.ndarray
    max_step: np.ndarray
    num_inference_steps: int
    marker_dims: tuple[int, ...]
    # One per controller, in the spec's order; the first is published on trajectory_topic.
    commands: tuple[CommandStream, ...]
    # Measured positions of the action joints outside this are never taken as the robot's
    # position (first-point check, stop command): the limits widened like observations.
    position_bounds: PlausibleRange | None = None

    @property
    def action_dim(self) -> int:
        return len(self.action_joints)

    def stream(self, key: str) -> ObservationStream:
        return next(stream for stream in self.streams if stream.key == key)


def build_serving_plan(
    settings: NodeSettings, spec: DataSpec, manifest: dict[str, Any]
) -> ServingPlan:
    """Match checkpoint and parameters; raise ConfigurationError naming what to change."""
    checkpoint = Path(settings.checkpoint)
    policy_config = manifest["policy_config"]
    _check_spec_matches_policy(checkpoint, spec, policy_config)
    horizon = policy_config.get("horizon", {})
    To = int(horizon.get("observation_horizon", 2))
    Tp = int(horizon.get("prediction_horizon", 16))
    Ta = int(horizon.get("action_horizon", 8))

    commands = _command_streams(checkpoint, settings, spec)
    action_joints = tuple(joint for command in commands for joint in command.joints)
    _check_joint_names(checkpoint, settings.joint_names, action_joints)

    overrides = dict(settings.observation_topics)
    keys = [stream.key for stream in spec.observations]
    unknown = sorted(set(overrides) - set(keys))
    if unknown:
        raise ConfigurationError(
            f"observation_topics names key(s) {unknown}, but the checkpoint observes {keys}; "
            f"use 'key=/topic' with one of those keys"
        )
    range_min, range_max = _action_range(checkpoint, manifest, len(action_joints))
    lower, upper = _limits(settings, action_joints, range_min, range_max)
    explicit_limits = (
        dict(zip(action_joints, zip(lower, upper, strict=True), strict=True))
        if settings.joint_lower_limits
        else {}
    )
    streams = tuple(
        _stream(
            stream,
            overrides.get(stream.key),
            spec,
            settings,
            _plausible_range(stream, manifest, settings.observation_range_factor, explicit_limits),
        )
        for stream in spec.observations
    )
    max_step = _max_step(settings, action_joints, range_min, range_max)
    steps = _inference_steps(checkpoint, settings, policy_config)
    _check_sampler(checkpoint, settings, policy_config, steps)
    marker_dims = settings.marker_dims or tuple(range(min(2, len(action_joints))))
    too_high = [dim for dim in marker_dims if dim >= len(action_joints)]
    if too_high:
        raise ConfigurationError(
            f"marker_dims {list(marker_dims)} names action dimension(s) {too_high}, but the "
            f"checkpoint's actions have {len(action_joints)} dimension(s) {list(action_joints)}"
        )
    return ServingPlan(
        checkpoint=checkpoint,
        streams=streams,
        reference=spec.reference,
        dt=spec.dt,
        observation_horizon=To,
        prediction_horizon=Tp,
        action_horizon=Ta,
        action_joints=action_joints,
        lower_limits=lower,
        upper_limits=upper,
        max_step=max_step,
        num_inference_steps=steps,
        marker_dims=marker_dims,
        commands=commands,
        position_bounds=_widened(
            action_joints,
            lower,
            upper,
            settings.observation_range_factor,
            "joint limits" if settings.joint_lower_limits else "action limits",
        ),
    )


def _check_spec_matches_policy(checkpoint: Path, spec: DataSpec, policy_config: dict) -> None:
    # The spec and the model were saved together; a mismatch means a hand-edited or mixed-up
    # checkpoint, and serving it would feed the model inputs it was not built for.
    observation = policy_config.get("observation", {})
    expected = spec.observation_spec()
    cameras = {key: tuple(shape) for key, shape in observation.get("cameras", {}).items()}
    low_dim = dict(observation.get("low_dim", {}))
    if cameras != dict(expected.cameras) or low_dim != dict(expected.low_dim):
        raise ConfigurationError(
            f"{checkpoint}: the data spec (cameras {dict(expected.cameras)}, low-dim "
            f"{dict(expected.low_dim)}) disagrees with the model (cameras {cameras}, low-dim "
            f"{low_dim}); the checkpoint is inconsistent, re-export it"
        )
    action = policy_config.get("action", {})
    names = tuple(action.get("names", ()))
    spec_names = spec.action_spec().names
    if names and names != tuple(spec_names):
        raise ConfigurationError(
            f"{checkpoint}: the model's action names {list(names)} differ from the data spec's "
            f"{list(spec_names)}"
        )
    model_dt = action.get("dt")
    if model_dt is not None and not math.isclose(float(model_dt), spec.dt, rel_tol=1e-9):
        raise ConfigurationError(
            f"{checkpoint}: the model's action dt {model_dt} s differs from the data spec's dt "
            f"{spec.dt} s"
        )


def _command_streams(
    checkpoint: Path, settings: NodeSettings, spec: DataSpec
) -> tuple[CommandStream, ...]:
    """Each action stream with its topic: the first on ``trajectory_topic`` (as with a single
    controller), the others on their spec's topic unless ``command_topics`` moves them."""
    for action in spec.actions:
        if action.kind not in ("joint_trajectory", "joint_state"):
            raise ConfigurationError(
                f"{checkpoint}: the checkpoint's action stream {action.key!r} is of kind "
                f"{action.kind!r}; this node publishes JointTrajectory commands and needs "
                f"joint-space actions (kind joint_trajectory)"
            )
    overrides = dict(settings.command_topics)
    _check_command_keys(overrides, list(spec.action_keys), settings.trajectory_topic)
    slices = spec.action_slices()
    topics = [settings.trajectory_topic] + [
        overrides.get(action.key, action.topic) for action in spec.actions[1:]
    ]
    commands = tuple(
        CommandStream(action.key, topic, tuple(action.joints), slices[action.key])
        for action, topic in zip(spec.actions, topics, strict=True)
    )
    _check_distinct_topics(commands)
    return commands


def _check_command_keys(overrides: dict[str, str], keys: list[str], trajectory_topic: str) -> None:
    first, further = keys[0], keys[1:]
    unknown = sorted(set(overrides) - set(keys))
    if unknown:
        valid = (
            f"use 'key=/topic' with one of {further}"
            if further
            else "it has only one, so command_topics must stay unset"
        )
        raise ConfigurationError(
            f"command_topics names key(s) {unknown}, but the checkpoint's action streams are "
            f"{keys}; {valid} (the first, {first!r}, is published on trajectory_topic)"
        )
    if first in overrides:
        # One parameter per topic: with two for the same stream, which one wins is a guess.
        raise ConfigurationError(
            f"command_topics names {first!r}, the first action stream, which is published on "
            f"trajectory_topic ({trajectory_topic}); set trajectory_topic instead"
        )


def _check_distinct_topics(commands: tuple[CommandStream, ...]) -> None:
    # A joint_trajectory_controller drops its running trajectory when the next arrives: two
    # streams on one topic would cancel each other's chunks.
    seen: dict[str, str] = {}
    for command in commands:
        if command.topic in seen:
            raise ConfigurationError(
                f"action streams {seen[command.topic]!r} and {command.key!r} would both be "
                f"published on {command.topic}; each controller needs its own topic "
                f"(trajectory_topic for the first, command_topics for the others)"
            )
        seen[command.topic] = command.key


def _check_joint_names(
    checkpoint: Path, configured: tuple[str, ...], action_joints: tuple[str, ...]
) -> None:
    if not configured or set(configured) == set(action_joints):
        return
    missing = [joint for joint in configured if joint not in action_joints]
    extra = [joint for joint in action_joints if joint not in configured]
    raise ConfigurationError(
        f"{checkpoint} was trained for joints {list(action_joints)}, but parameter joint_names "
        f"(the controller's joints) is {list(configured)}: the checkpoint does not command "
        f"{missing} and commands unknown {extra}. Serve a checkpoint trained for this robot, "
        f"or fix joint_names"
    )


def _stream(
    stream: StreamSpec,
    topic: str | None,
    spec: DataSpec,
    settings: NodeSettings,
    plausible: PlausibleRange | None,
) -> ObservationStream:
    if stream.kind == "image" and stream.message_type not in IMAGE_TYPES:
        raise ConfigurationError(
            f"observation {stream.key!r}: image message type {stream.message_type!r} is not "
            f"one of {list(IMAGE_TYPES)}"
        )
    if stream.kind == "joint_state" and stream.message_type != JOINT_STATE_TYPE:
        raise ConfigurationError(
            f"observation {stream.key!r}: joint_state streams are {JOINT_STATE_TYPE}, got "
            f"{stream.message_type!r}"
        )
    align_max_age = spec.max_age_of(stream)
    return ObservationStream(
        key=stream.key,
        topic=topic or stream.topic,
        kind=stream.kind,
        message_type=stream.message_type,
        shape=tuple(stream.shape),
        joints=tuple(stream.joints),
        joint_field=stream.joint_field,
        fields=tuple(stream.fields),
        align_max_age=align_max_age,
        stale_age=settings.max_observation_age or align_max_age,
        plausible=plausible,
    )


def _widened(
    names: tuple[str, ...], low: np.ndarray, high: np.ndarray, factor: float, what: str
) -> PlausibleRange:
    """``[low - factor*width, high + factor*width]`` per value, within float32; factor 0 or a
    (nearly) zero width leaves only the float32 range."""
    bounds_low = np.full(len(names), -FLOAT32_MAX)
    bounds_high = np.full(len(names), FLOAT32_MAX)
    reasons = []
    for index, (minimum, maximum) in enumerate(zip(low, high, strict=True)):
        width = float(maximum - minimum)
        if factor > 0 and math.isfinite(width) and width > _MIN_RANGE:
            bounds_low[index] = max(-FLOAT32_MAX, minimum - factor * width)
            bounds_high[index] = min(FLOAT32_MAX, maximum + factor * width)
            reasons.append(f"{what} [{minimum:.4g}, {maximum:.4g}] {_widening(factor)}")
        else:
            reasons.append("the float32 range the model computes in")
    return PlausibleRange(tuple(names), bounds_low, bounds_high, tuple(reasons))


def _widening(factor: float) -> str:
    return f"widened on both sides by observation_range_factor {factor:g} x its width"


def _unit_bounded_encodings(plausible: PlausibleRange) -> PlausibleRange:
    """Encoded orientation values (``pose.orientation:quaternion.y``) are bounded by [-1, 1].

    Their training range says how the objects were turned in the demonstrations, not what is
    physical: a can standing upright in every demonstration has quaternion x and y within
    +-0.01, and a can tipped by 4 degrees while grasped (y 0.032) was refused as a broken sensor
    and stopped the robot (the Can demo, seed 100004). Every encoding normalises what it reads,
    so a broken publisher cannot push these values out of [-1, 1]; the check stays for the raw
    fields beside them.
    """
    low, high = plausible.low.copy(), plausible.high.copy()
    reasons = list(plausible.reasons)
    for index, name in enumerate(plausible.names):
        if split_field(name)[1] is not None:
            low[index], high[index] = -1.0 - _UNIT_TOLERANCE, 1.0 + _UNIT_TOLERANCE
            reasons[index] = "the components of a normalised orientation encoding"
    return PlausibleRange(plausible.names, low, high, tuple(reasons))


def _plausible_range(
    stream: StreamSpec,
    manifest: dict[str, Any],
    factor: float,
    joint_limits: dict[str, tuple[float, float]],
) -> PlausibleRange | None:
    """What a low-dim stream may plausibly report: its training range (the checkpoint's
    normaliser statistics) widened by ``factor`` x its width, and for positions of joints with
    configured limits also those limits widened alike; beyond either is refused. Values of an
    encoded orientation are bounded by [-1, 1] instead (``_unit_bounded_encodings``)."""
    if stream.kind not in ("joint_state", "fields"):
        return None
    names = tuple(stream.names)
    statistics = (manifest.get("normalizer") or {}).get(stream.key) or {}
    try:
        low = np.asarray(statistics["min"], dtype=np.float64)
        high = np.asarray(statistics["max"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        low = high = np.zeros(0)
    if low.shape != (len(names),) or high.shape != (len(names),):
        # No usable statistics (an older or hand-made checkpoint): float32 range only.
        low = high = np.zeros(len(names))
    plausible = _widened(names, low, high, factor, "training range")
    if stream.kind == "fields":
        return _unit_bounded_encodings(plausible)
    if stream.joint_field != "position" or factor <= 0:
        return plausible
    lower, upper = plausible.low.copy(), plausible.high.copy()
    reasons = list(plausible.reasons)
    for index, name in enumerate(names):
        if name not in joint_limits:
            continue
        limit_low, limit_high = joint_limits[name]
        limits = _widened((name,), np.array([limit_low]), np.array([limit_high]), factor, "")
        # Refused when beyond either: the intersection of both intervals.
        lower[index] = max(lower[index], limits.low[0])
        upper[index] = min(upper[index], limits.high[0])
        limits_text = f"joint limits [{limit_low:.4g}, {limit_high:.4g}]"
        trained = f"training range [{low[index]:.4g}, {high[index]:.4g}]"
        reasons[index] = (
            f"{trained} and {limits_text}, each {_widening(factor)}"
            if reasons[index].startswith("training range")
            else f"{limits_text} {_widening(factor)}"
        )
    return PlausibleRange(names, lower, upper, tuple(reasons))


def _action_range(
    checkpoint: Path, manifest: dict[str, Any], dim: int
) -> tuple[np.ndarray, np.ndarray]:
    statistics = (manifest.get("normalizer") or {}).get("action") or {}
    try:
        low = np.asarray(statistics["min"], dtype=np.float64)
        high = np.asarray(statistics["max"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(
            f"{checkpoint}: config.json has no action range in 'normalizer' ({error})"
        ) from error
    if low.shape != (dim,) or high.shape != (dim,):
        raise ConfigurationError(
            f"{checkpoint}: the action range has {low.size} values for {dim} action joints"
        )
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low <= high)):
        raise ConfigurationError(f"{checkpoint}: the action range in config.json is invalid")
    return low, high


def _limits(
    settings: NodeSettings, joints: tuple[str, ...], low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if settings.joint_lower_limits:
        if len(settings.joint_lower_limits) != len(joints):
            raise ConfigurationError(
                f"joint_lower_limits/joint_upper_limits have {len(settings.joint_lower_limits)} "
                f"values; the checkpoint's action joints are {list(joints)} (one value each, in "
                f"that order)"
            )
        return (
            np.asarray(settings.joint_lower_limits, dtype=np.float64),
            np.asarray(settings.joint_upper_limits, dtype=np.float64),
        )
    margin = settings.limit_margin * (high - low)
    return low - margin, high + margin


def _max_step(
    settings: NodeSettings, joints: tuple[str, ...], low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    if settings.max_step:
        if len(settings.max_step) == 1:
            return np.full(len(joints), settings.max_step[0])
        if len(settings.max_step) != len(joints):
            raise ConfigurationError(
                f"max_step has {len(settings.max_step)} values; give one for all joints or one "
                f"per action joint {list(joints)}"
            )
        return np.asarray(settings.max_step, dtype=np.float64)
    data_range = high - low
    derived = settings.max_step_fraction * data_range
    # No training range (a joint that never moved) or a zero fraction: no step limit for it;
    # the position limits still bound it.
    return np.where((data_range > _MIN_RANGE) & (derived > 0), derived, np.inf)


def _inference_steps(checkpoint: Path, settings: NodeSettings, policy_config: dict) -> int:
    noise = policy_config.get("noise", {})
    train_steps = int(noise.get("num_train_timesteps", 100))
    steps = settings.num_inference_steps or int(noise.get("num_inference_steps", 10))
    if steps > train_steps:
        raise ConfigurationError(
            f"num_inference_steps {steps} exceeds the {train_steps} diffusion steps the "
            f"checkpoint {checkpoint} was trained with"
        )
    return steps


def _check_sampler(
    checkpoint: Path, settings: NodeSettings, policy_config: dict, steps: int
) -> None:
    # An explicit fast backend on a schedule it does not implement fails here, before the
    # weights load; auto falls back to eager at warm-up instead (the worker says why).
    if settings.sampler_backend not in ("fast", "cuda_graph"):
        return
    reason = fast_sampling_unsupported(
        NoiseScheduleConfig.from_dict(policy_config.get("noise", {})), steps
    )
    if reason is not None:
        raise ConfigurationError(
            f"sampler_backend {settings.sampler_backend} cannot serve {checkpoint}: {reason}; "
            f"set sampler_backend to auto (falls back to eager) or eager"
        )
