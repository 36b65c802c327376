"""ROS 2 lifecycle node ``policy_node``: serves a dp_policy checkpoint as action chunks.

configure  reads the parameters and the checkpoint's config.json, checks topics, joints and
           limits against it, loads the weights on the device and warms the model up;
activate   starts taking observations and publishing chunks;
deactivate stops the chunk stream (and commands a stop at the measured position);
cleanup    stops the inference thread and frees the device memory.

Topics (names relative to the node's namespace; remap as usual):
  in:  the checkpoint's observation topics (sensor_msgs/Image or CompressedImage,
       sensor_msgs/JointState, ...), with the sensor-data QoS
  out: /joint_trajectory_controller/joint_trajectory (trajectory_msgs/JointTrajectory, reliable;
       parameter trajectory_topic; an action spanning several controllers: one topic per
       action stream, the others from the checkpoint or command_topics),
       dp/action_chunk (dp_msgs/ActionChunk),
       dp/policy_status (dp_msgs/PolicyStatus, latched), dp/policy_markers
       (visualization_msgs/MarkerArray)

The numerics and timing live in ROS-free modules (observation_buffers, chunk_scheduler,
inference_worker, trajectory_builder, markers); this class connects them to topics.
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message

from dp_msgs.msg import ActionChunk, PolicyStatus
from dp_policy_node import ros_messages
from dp_policy_node.chunk_scheduler import ChunkScheduler, LatencyWindow
from dp_policy_node.faults import FaultBook
from dp_policy_node.markers import marker_paths
from dp_policy_node.observation_buffers import (
    STALE,
    ObservationBuffers,
    StreamTiming,
    to_ns,
)
from dp_policy_node.observation_conversion import (
    UNDECODABLE,
    ObservationRejectedError,
    convert,
    stamp_nanoseconds,
)
from dp_policy_node.parameters import (
    DOUBLE_ARRAY,
    INTEGER_ARRAY,
    PARAMETERS,
    NodeSettings,
    ParameterSpec,
    default_cpu_threads,
)
from dp_policy_node.serving_plan import CommandStream, ObservationStream, ServingPlan
from dp_policy_node.trajectory_builder import (
    PredictionRejectedError,
    SafetyLimits,
    check_chunk,
    plan_chunk,
)

NODE_NAME = "policy_node"
ACTION_CHUNK_TOPIC = "dp/action_chunk"
STATUS_TOPIC = "dp/policy_status"
MARKER_TOPIC = "dp/policy_markers"
# How often the node looks at its buffers and the schedule. Short against dt (typically 0.1 s)
# so a request goes out within 10 ms of its due time.
CONTROL_PERIOD_S = 0.01
# After a failed inference (an exception in the model), wait this long before trying again.
ERROR_BACKOFF_S = 1.0
# After a refused prediction, wait before the next inference: dt after the first refusal,
# doubling with each further one in a row, at most this long. Asking again at once would run
# the model back to back on the same observations, taking the CPU from the rest of the robot;
# after dt the history has moved on by a step.
PREDICTION_BACKOFF_MAX_S = 1.0
# Generous: the first CUDA initialisation and a large checkpoint can take a while.
WORKER_START_TIMEOUT_S = 300.0

# Fault subjects besides the observation keys.
STALE_SUBJECT = "stale observations"
PREDICTION_SUBJECT = "prediction"
INFERENCE_SUBJECT = "inference"
LATE_SUBJECT = "late chunk"
SLOW_SUBJECT = "slow inference"

_ARRAY_TYPES = {
    "string_array": Parameter.Type.STRING_ARRAY,
    DOUBLE_ARRAY: Parameter.Type.DOUBLE_ARRAY,
    INTEGER_ARRAY: Parameter.Type.INTEGER_ARRAY,
}


@dataclass
class _Counters:
    chunks_published: int = 0
    observations_received: int = 0
    observations_dropped: int = 0
    predictions_rejected: int = 0


class _Entities:
    """What configure creates on the node; ``destroy`` takes it all down (cleanup, failure)."""

    def __init__(self, node: PolicyNode) -> None:
        self._node = node
        self.publishers: dict[str, Any] = {}
        self.subscriptions: list[Any] = []
        self.timer: Any = None
        self.results_ready: Any = None
        self.worker: Any = None

    def stop_worker(self) -> bool:
        # Joined before the guard condition goes: the thread never notifies a destroyed one.
        return self.worker is None or self.worker.close()

    def destroy(self) -> None:
        node = self._node
        if not self.stop_worker():
            node.get_logger().error("the inference thread did not stop in time")
        if self.timer is not None:
            node.destroy_timer(self.timer)
        for subscription in self.subscriptions:
            node.destroy_subscription(subscription)
        for publisher in self.publishers.values():
            node.destroy_lifecycle_publisher(publisher)
        if self.results_ready is not None:
            node.destroy_guard_condition(self.results_ready)
        self.publishers, self.subscriptions = {}, []
        self.timer = self.results_ready = self.worker = None


@dataclass
class _Session:
    """Everything configure creates; cleanup drops it as a whole."""

    settings: NodeSettings
    plan: ServingPlan
    device: str
    entities: _Entities
    buffers: ObservationBuffers
    scheduler: ChunkScheduler
    limits: SafetyLimits
    faults: FaultBook
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    active: bool = False
    in_flight: bool = False
    # The request's time on the node's clock (simulated time under use_sim_time): the
    # scheduler plans on that clock, so a turnaround measured on another would request
    # chunks too early in a slowed simulation and too late in a sped-up one.
    submitted_at_ns: int = 0
    sequence: int = 0
    # Results of requests made before the latest activation belong to an earlier stream.
    first_sequence: int = 1
    chunk_index: int = 0
    retry_after_ns: int = 0
    accepted_since_activation: bool = False
    # Measured positions of the action joints and when each arrived (node clock): per joint,
    # since the joints of several controllers need not come in one message.
    joint_positions: dict[str, float] = field(default_factory=dict)
    joint_positions_ns: dict[str, int] = field(default_factory=dict)
    # Refused predictions since the last accepted chunk (or activation), the newest refusal
    # and the back-off it earned: the status states all three.
    rejections_in_a_row: int = 0
    last_rejection: str = ""
    rejection_backoff_s: float = 0.0

    @property
    def publishers(self) -> dict[str, Any]:
        return self.entities.publishers

    @property
    def worker(self) -> Any:
        return self.entities.worker

    def command_publishers(self) -> list[tuple[CommandStream, Any]]:
        """Each action stream with its trajectory publisher, in the spec's order."""
        return list(
            zip(self.plan.commands, _command_publishers(self.entities, self.plan), strict=True)
        )

    def command_topics_text(self) -> str:
        """The resolved topics of all action streams, for log and status lines."""
        return ", ".join(publisher.topic_name for _, publisher in self.command_publishers())


def _descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description)
    if spec.choices is not None:
        # Shown by `ros2 param describe`; the value itself is checked at configure.
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.value_range is not None:
        low, high = spec.value_range
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
        else:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(high))
            ]
    return descriptor


def message_class(type_name: str) -> type:
    """``pkg/msg/Name`` to the Python class; ValueError naming the type if it cannot."""
    package, _, name = type_name.replace("/msg/", "/").partition("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"message type {type_name!r} is not installed ({error})") from error


class PolicyNode(LifecycleNode):
    """Serves a diffusion policy checkpoint as receding-horizon JointTrajectory chunks."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in PARAMETERS:
            if spec.has_default:
                self.declare_parameter(spec.name, spec.default, _descriptor(spec))
            else:
                self.declare_parameter(spec.name, _ARRAY_TYPES[spec.array_type], _descriptor(spec))
        self.autostart = bool(self.get_parameter("autostart").value)
        self._session: _Session | None = None
        self._counters = _Counters()
        self._state = PolicyStatus.STATE_UNCONFIGURED
        self._message = "not configured: set the checkpoint parameter and configure"
        self._checkpoint = ""
        self._device = ""
        # What samples the chunks, e.g. "fast sampler (bf16mix, ...)"; stated in the status.
        self._sampler = ""
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._status_pub = self.create_publisher(PolicyStatus, STATUS_TOPIC, latched)
        # Wall-clock timers: the status keeps its 1 Hz even while a simulated clock is paused.
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._status_timer = self.create_timer(
            float(self.get_parameter("status_period").value),
            self._publish_status,
            clock=self._steady,
        )
        self._publish_status()
        self.get_logger().info("policy node ready (unconfigured)")

    # -- lifecycle ------------------------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            session = self._configure()
        except Exception as error:  # every failure becomes a clear message, never a crash
            message = f"configure failed: {error}"
            self.get_logger().error(message)
            self._set_state(PolicyStatus.STATE_ERROR, message)
            return TransitionCallbackReturn.FAILURE
        self._session = session
        self._set_state(
            PolicyStatus.STATE_INACTIVE,
            f"configured: {self._checkpoint} on {self._device} with the {self._sampler}; "
            "activate to publish",
        )
        return super().on_configure(state)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        session = self._session
        assert session is not None
        result = super().on_activate(state)
        session.buffers.reset()
        session.faults.reset()
        session.scheduler.reset()
        session.joint_positions.clear()
        session.joint_positions_ns.clear()
        session.first_sequence = session.sequence + 1
        session.chunk_index = 0
        session.accepted_since_activation = False
        session.rejections_in_a_row = 0
        session.retry_after_ns = 0
        session.active = True
        self._check_pace(session)
        self._update_state(self._now_ns())
        targets = " and ".join(
            f"{command.joints} to {publisher.topic_name}"
            for command, publisher in session.command_publishers()
        )
        self.get_logger().info(f"active: publishing on {targets}")
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        session = self._session
        assert session is not None
        session.active = False  # a chunk still being computed is dropped when it arrives
        session.scheduler.reset()
        if session.settings.hold_on_deactivate:
            self._command_hold(session)
        if session.settings.num_visualized_samples:
            stamp = self.get_clock().now().to_msg()
            session.publishers["markers"].publish(
                ros_messages.clear_markers(session.settings.marker_frame, stamp)
            )
        result = super().on_deactivate(state)
        self._set_state(
            PolicyStatus.STATE_INACTIVE,
            f"deactivated: {self._checkpoint} on {self._device} with the {self._sampler}",
        )
        return result

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self._set_state(PolicyStatus.STATE_UNCONFIGURED, "cleaned up: no checkpoint loaded")
        return super().on_cleanup(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self._set_state(PolicyStatus.STATE_UNCONFIGURED, "shut down")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self._set_state(PolicyStatus.STATE_ERROR, "error during a transition; cleaned up")
        return TransitionCallbackReturn.SUCCESS

    def autostart_if_requested(self) -> None:
        """``autostart``: configure and activate without a lifecycle manager."""
        if not self.autostart:
            return
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def release(self) -> None:
        """Stop the inference thread and free the device (process exit: the node's entities
        go with ``destroy_node``)."""
        self._release(destroy_entities=False)

    # -- configure ------------------------------------------------------------------------------

    def _parameter_values(self) -> dict[str, Any]:
        values = {}
        for spec in PARAMETERS:
            if spec.has_default:
                values[spec.name] = self.get_parameter(spec.name).value
            else:
                unset = Parameter(spec.name, Parameter.Type.NOT_SET, None)
                values[spec.name] = self.get_parameter_or(spec.name, unset).value
        return values

    def _configure(self) -> _Session:
        # Imported here: dp_policy pulls in torch, which the unconfigured node does not need.
        from dp_policy import read_checkpoint_manifest
        from dp_policy.data_spec import data_spec_from_checkpoint
        from dp_policy_node.inference_worker import InferenceWorker
        from dp_policy_node.serving_plan import build_serving_plan

        settings = NodeSettings.from_values(self._parameter_values())
        manifest = read_checkpoint_manifest(settings.checkpoint)
        spec = data_spec_from_checkpoint(settings.checkpoint)
        plan = build_serving_plan(settings, spec, manifest)
        classes = {stream.key: self._stream_class(stream) for stream in plan.streams}
        self._checkpoint = settings.checkpoint
        self._counters = _Counters()

        # Topic entities first (a bad topic name fails before the expensive load), then the
        # worker; whatever was made is taken down again if a later step fails.
        entities = _Entities(self)
        try:
            self._create_publishers(entities.publishers, plan)
            _check_distinct_resolved_topics(plan, entities.publishers)
            for stream in plan.streams:
                # Raw: bytes that do not deserialise as the type are then refused here, counted
                # and said once, instead of being dropped inside the executor's take, where
                # each one printed an rcutils error (eight lines) and nothing else noticed.
                entities.subscriptions.append(
                    self.create_subscription(
                        classes[stream.key],
                        stream.topic,
                        functools.partial(self._on_observation, stream, classes[stream.key]),
                        qos_profile_sensor_data,
                        raw=True,
                    )
                )
            entities.results_ready = self.create_guard_condition(self._on_results)
            entities.timer = self.create_timer(
                CONTROL_PERIOD_S, self._on_control_tick, clock=self._steady
            )
            worker = InferenceWorker(
                plan.checkpoint,
                device=settings.device,
                num_inference_steps=plan.num_inference_steps,
                num_samples=max(1, settings.num_visualized_samples),
                seed=settings.seed,
                warmup_iterations=settings.warmup_iterations,
                cpu_threads=settings.cpu_threads or default_cpu_threads(),
                notify=entities.results_ready.trigger,
                sampler_backend=settings.sampler_backend,
                sampler_precision=settings.sampler_precision,
                sampler_compile=settings.sampler_compile,
            )
            self._device = worker.device
            self.get_logger().info(f"loading {settings.checkpoint} on {worker.device}")
            entities.worker = worker
            report = worker.start(timeout=WORKER_START_TIMEOUT_S)
        except Exception:
            entities.destroy()
            self._device = ""
            raise
        scheduler = ChunkScheduler(plan.dt, plan.action_horizon, settings.latency_margin)
        latency = LatencyWindow()
        # Warm-up latencies are wall-clock seconds; on simulated time the scheduler learns the
        # turnaround on the simulation's clock from the first chunk on instead.
        on_sim_time = bool(self.get_parameter("use_sim_time").value)
        for seconds in report.steady_latencies:
            if not on_sim_time:
                scheduler.record_turnaround(seconds)
            latency.add(seconds)
        buffers = ObservationBuffers(
            [
                StreamTiming(stream.key, stream.topic, stream.align_max_age, stream.stale_age)
                for stream in plan.streams
            ],
            plan.reference,
            plan.dt,
            plan.observation_horizon,
            settings.future_stamp_tolerance,
        )
        steady = report.steady_latencies or report.warmup_latencies
        if report.sampler_notes:
            # A fallback is not an error (the chunks are right), but it costs latency: say why.
            self.get_logger().warning(
                f"sampler_backend {settings.sampler_backend}, sampler_precision "
                f"{settings.sampler_precision}: {'; '.join(report.sampler_notes)}"
            )
        self._sampler = report.sampler_summary
        self.get_logger().info(
            f"configured {settings.checkpoint}: {report.parameter_count / 1e6:.1f} M parameters "
            f"on {worker.device}{_threads_text(report.cpu_threads)}, loaded in "
            f"{report.load_seconds:.2f} s, {report.sampler_summary}, "
            f"warm-up latency {1e3 * float(np.median(steady)):.1f} ms, "
            f"{plan.num_inference_steps} denoising steps; observing "
            f"{[s.topic for s in plan.streams]}, commanding "
            f"{[publisher.topic_name for publisher in _command_publishers(entities, plan)]}"
        )
        if not scheduler.fits():
            self.get_logger().warning(
                f"inference takes {scheduler.lead_s:.3f} s with margin: twice that exceeds the "
                f"{(plan.action_horizon - 1) * plan.dt:.3f} s a chunk executes, so chunks will "
                f"be computed back to back and the controller will hold between them"
            )
        return _Session(
            settings=settings,
            plan=plan,
            device=worker.device,
            entities=entities,
            buffers=buffers,
            scheduler=scheduler,
            limits=SafetyLimits(
                plan.action_joints, plan.lower_limits, plan.upper_limits, plan.max_step
            ),
            faults=FaultBook(),
            latency=latency,
        )

    @staticmethod
    def _stream_class(stream: ObservationStream) -> type:
        from dp_policy_node.serving_plan import ConfigurationError

        try:
            cls = message_class(stream.message_type)
        except ValueError as error:
            raise ConfigurationError(f"observation {stream.key!r}: {error}") from error
        if "header" not in cls.get_fields_and_field_types():
            raise ConfigurationError(
                f"observation {stream.key!r}: {stream.message_type} has no header, so its "
                f"messages cannot be placed on the dt grid"
            )
        return cls

    def _create_publishers(self, publishers: dict[str, Any], plan: ServingPlan) -> None:
        """Into ``publishers`` one by one, so that a bad topic name (a command_topics entry)
        leaves those already made to be destroyed with the rest."""
        from trajectory_msgs.msg import JointTrajectory
        from visualization_msgs.msg import MarkerArray

        # Commands: reliable, and only the newest matters (an old chunk is never wanted).
        command = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        for stream in plan.commands:
            publishers[_command_key(stream)] = self.create_lifecycle_publisher(
                JointTrajectory, stream.topic, command
            )
        publishers["chunk"] = self.create_lifecycle_publisher(ActionChunk, ACTION_CHUNK_TOPIC, 10)
        publishers["markers"] = self.create_lifecycle_publisher(MarkerArray, MARKER_TOPIC, 1)

    def _release(self, destroy_entities: bool = True) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        session.active = False
        if destroy_entities:
            session.entities.destroy()
        elif not session.entities.stop_worker():
            self.get_logger().error("the inference thread did not stop in time")
        self._device = self._sampler = ""

    # -- observations ---------------------------------------------------------------------------

    def _on_observation(self, stream: ObservationStream, cls: type, data: bytes) -> None:
        session = self._session
        if session is None or not session.active:
            return
        self._counters.observations_received += 1
        now = self._now_ns()
        try:
            message = _deserialize(data, cls, stream)
            stamp = stamp_nanoseconds(message, stream.topic)
            value = convert(stream, message)
            session.buffers.add(stream.key, stamp, value, now)
        except ObservationRejectedError as rejected:
            self._counters.observations_dropped += 1
            if session.faults.report(stream.key, rejected.cause, rejected.message):
                self.get_logger().warning(f"dropping observations: {rejected.message}")
            self._update_state(now)
            return
        cleared = session.faults.clear(stream.key)
        if cleared is not None:
            # Only after a fault that was logged: a flapping stream says so once, not per flap.
            if cleared.logged:
                self.get_logger().info(f"valid observations on {stream.topic} again")
            self._update_state(now)
        if stream.kind == "joint_state" and stream.joint_field == "position":
            self._remember_positions(session, message, now)

    @staticmethod
    def _remember_positions(session: _Session, message: Any, now_ns: int) -> None:
        """Measured positions of the action joints from an accepted JointState (its names are
        distinct, or it was refused). A value outside the limits widened as observations are
        (``position_bounds``) is no measurement to check the first point or stop against."""
        bounds = session.plan.position_bounds
        wanted = session.plan.action_joints
        for name, position in zip(message.name, message.position, strict=False):
            if name not in wanted:
                continue
            index = wanted.index(name)
            if not np.isfinite(position) or (
                bounds is not None and not bounds.low[index] <= position <= bounds.high[index]
            ):
                continue
            session.joint_positions[name] = float(position)
            session.joint_positions_ns[name] = now_ns

    # -- scheduling and inference -----------------------------------------------------------------

    def _on_control_tick(self) -> None:
        session = self._session
        if session is None or not session.active:
            return
        now = self._now_ns()
        if not self._update_state(now):
            return
        if session.in_flight or now < session.retry_after_ns:
            return
        if not session.scheduler.decide(now).request:
            return
        history = session.buffers.history(now)
        session.sequence += 1
        if session.worker.submit(history.observations, history.stamp_ns, session.sequence):
            session.in_flight = True
            session.submitted_at_ns = now

    def _on_results(self) -> None:
        session = self._session
        if session is None:
            return
        for result in session.worker.take_results():
            self._handle_result(session, result)

    def _handle_result(self, session: _Session, result: Any) -> None:
        session.in_flight = False
        if not session.active or result.sequence < session.first_sequence:
            return
        now = self._now_ns()
        turnaround = max(0, now - session.submitted_at_ns) / 1e9
        if result.error is not None:
            if session.faults.report(INFERENCE_SUBJECT, "inference_error", result.error):
                self.get_logger().error(f"inference failed: {result.error}")
            session.retry_after_ns = now + to_ns(ERROR_BACKOFF_S)
            self._update_state(now)
            return
        cleared = session.faults.clear(INFERENCE_SUBJECT)
        if cleared is not None and cleared.logged:
            self.get_logger().info("inference works again")
        session.latency.add(result.latency)
        session.scheduler.record_turnaround(turnaround)
        self._check_pace(session)
        # Observations may have gone bad while the model was busy: then nothing is sent.
        if not self._update_state(now):
            return
        plan = session.plan
        try:
            timed = plan_chunk(
                result.actions,
                result.observation_stamp_ns,
                plan.dt,
                plan.observation_horizon,
                plan.action_horizon,
                now,
                to_ns(session.settings.min_time_from_start),
            )
            check_chunk(
                result.actions,
                plan.observation_horizon,
                plan.action_horizon,
                session.limits,
                timed,
                self._current_position(session),
            )
        except PredictionRejectedError as rejected:
            self._counters.predictions_rejected += 1
            session.scheduler.reset()
            session.rejections_in_a_row += 1
            # Bounded exponential back-off (the exponent capped so that it stays a float).
            backoff = min(
                PREDICTION_BACKOFF_MAX_S, plan.dt * 2.0 ** min(session.rejections_in_a_row - 1, 30)
            )
            session.retry_after_ns = now + to_ns(backoff)
            session.last_rejection = rejected.message
            session.rejection_backoff_s = backoff
            if session.faults.report(PREDICTION_SUBJECT, rejected.cause, rejected.message):
                self.get_logger().warning(
                    f"refusing predictions: {rejected.message}; the next inference waits "
                    f"{backoff:.3g} s, doubling with each refusal in a row up to "
                    f"{PREDICTION_BACKOFF_MAX_S:g} s"
                )
            self._update_state(now)
            return
        session.rejections_in_a_row = 0
        cleared = session.faults.clear(PREDICTION_SUBJECT)
        if cleared is not None and cleared.logged:
            self.get_logger().info("predictions are accepted again")
        if not len(timed):
            session.scheduler.reset()
            if session.faults.report(LATE_SUBJECT, "late", "late"):
                self.get_logger().warning(
                    f"a chunk arrived after its last action was due (inference took "
                    f"{result.latency:.3f} s, a chunk executes "
                    f"{(plan.action_horizon - 1) * plan.dt:.3f} s); requesting a new one"
                )
            return
        session.faults.clear(LATE_SUBJECT)
        self._publish_chunk(session, result, timed)
        session.scheduler.chunk_published(timed.end_ns)
        session.accepted_since_activation = True
        self._update_state(now)

    def _check_pace(self, session: _Session) -> None:
        """Whether inference keeps up with the chunk period; a fault (logged once, stated in the
        status) while it does not."""
        scheduler, plan = session.scheduler, session.plan
        if scheduler.fits():
            cleared = session.faults.clear(SLOW_SUBJECT)
            if cleared is not None and cleared.logged:
                self.get_logger().info("inference keeps up with the chunk period again")
            return
        # The figures of the moment it started: the message stays while the fault does, so
        # the status does not change with every chunk.
        message = (
            f"inference cannot keep up with the chunk period: p99 turnaround "
            f"{scheduler.turnaround.stats().p99:.3f} s + latency_margin "
            f"{scheduler.latency_margin:.3f} s, spent twice per chunk, exceeds the "
            f"{(plan.action_horizon - 1) * plan.dt:.3f} s a chunk executes ((Ta-1)*dt), so the "
            f"controller holds between chunks; use a GPU, fewer denoising steps or more "
            f"cpu_threads"
        )
        if session.faults.report(SLOW_SUBJECT, "slow", message):
            self.get_logger().warning(message)

    def _current_position(self, session: _Session) -> np.ndarray | None:
        """Measured positions of the action joints, NaN for a joint without a recent one;
        None when no joint has one."""
        # An old measurement is no basis for a step check or a stop command.
        max_age_ns = to_ns(max(stream.stale_age for stream in session.plan.streams))
        now = self._now_ns()
        position = np.full(session.plan.action_dim, np.nan)
        for index, joint in enumerate(session.plan.action_joints):
            measured_at = session.joint_positions_ns.get(joint)
            if measured_at is not None and now - measured_at <= max_age_ns:
                position[index] = session.joint_positions[joint]
        return None if np.isnan(position).all() else position

    # -- output -------------------------------------------------------------------------------

    def _publish_chunk(self, session: _Session, result: Any, timed: Any) -> None:
        plan, settings = session.plan, session.settings
        self._publish_trajectories(
            session.command_publishers(),
            timed.time_from_start_ns,
            timed.positions,
            timed.velocities,
        )
        session.publishers["chunk"].publish(
            ros_messages.action_chunk(
                actions=result.actions,
                action_names=plan.action_joints,
                dt=plan.dt,
                observation_horizon=plan.observation_horizon,
                action_horizon=plan.action_horizon,
                observation_stamp_ns=result.observation_stamp_ns,
                inference_time_s=result.latency,
                chunk_index=session.chunk_index,
                checkpoint=self._checkpoint,
            )
        )
        session.chunk_index += 1
        self._counters.chunks_published += 1
        if settings.num_visualized_samples:
            paths = marker_paths(
                result.samples[: settings.num_visualized_samples],
                plan.marker_dims,
                plan.observation_horizon,
            )
            lifetime = to_ns(2 * plan.prediction_horizon * plan.dt)
            session.publishers["markers"].publish(
                ros_messages.marker_array(
                    paths,
                    settings.marker_frame,
                    self.get_clock().now().to_msg(),
                    settings.marker_line_width,
                    lifetime,
                )
            )

    @staticmethod
    def _publish_trajectories(
        targets: list[tuple[CommandStream, Any]],
        time_from_start_ns: Any,
        positions: np.ndarray,
        velocities: np.ndarray,
    ) -> None:
        """One JointTrajectory per action stream, each with its own joints' columns and the
        same (zero) stamp and point times, so that the controllers move in step. All are built
        before any is sent: a failure leaves no controller with a chunk the others lack."""
        messages = [
            (
                publisher,
                ros_messages.joint_trajectory(
                    command.joints,
                    time_from_start_ns,
                    positions[:, command.columns],
                    velocities[:, command.columns],
                ),
            )
            for command, publisher in targets
        ]
        for publisher, message in messages:
            publisher.publish(message)

    def _command_hold(self, session: _Session) -> None:
        """A stop at the measured position, per controller whose joints all have one: an arm
        is stopped even when its gripper's position is unknown."""
        position = self._current_position(session)
        targets = session.command_publishers()
        several = len(targets) > 1
        held = []
        for command, publisher in targets:
            measured = None if position is None else position[command.columns]
            where = f" on {publisher.topic_name}" if several else ""
            if measured is None or np.isnan(measured).any():
                self.get_logger().warning(
                    f"cannot command a stop{where}: no recent joint state of "
                    f"{list(command.joints)}; the controller ends the last chunk and holds its "
                    f"final point"
                )
                continue
            held.append((command, publisher))
            self.get_logger().info(
                f"commanded a stop{where} at the measured position {measured.tolist()}"
            )
        if not held:
            return
        assert position is not None
        self._publish_trajectories(
            held,
            [to_ns(session.plan.dt)],
            position[None, :],
            np.zeros((1, position.size)),
        )

    # -- state and status -----------------------------------------------------------------------

    def _update_state(self, now_ns: int) -> bool:
        """Work out the state from faults and buffers; True when a chunk may be requested/sent."""
        session = self._session
        assert session is not None
        faults = session.faults
        invalid = [
            fault for fault in faults.active() if fault.subject in session.buffers.stream_keys()
        ]
        if invalid:
            message = invalid[0].message
            if len(invalid) > 1:
                message += f" (and {len(invalid) - 1} more problem(s))"
            self._set_state(PolicyStatus.STATE_INVALID_OBSERVATIONS, message)
            return False
        readiness = session.buffers.check(now_ns)
        if readiness.state == STALE:
            if faults.report(STALE_SUBJECT, readiness.key, readiness.message):
                self.get_logger().warning(f"stopping the chunk stream: {readiness.message}")
            self._set_state(PolicyStatus.STATE_STALE_OBSERVATIONS, readiness.message)
            return False
        cleared = faults.clear(STALE_SUBJECT)
        if cleared is not None and cleared.logged:
            self.get_logger().info("observations are fresh again")
        if not readiness.ready:
            self._set_state(PolicyStatus.STATE_WAITING_FOR_OBSERVATIONS, readiness.message)
            return False
        rejected = faults.get(PREDICTION_SUBJECT)
        if rejected is not None:
            # The newest refusal (joint, action, limit) and the back-off, in one line; it
            # changes at most once per back-off.
            self._set_state(
                PolicyStatus.STATE_PREDICTION_REJECTED,
                f"{session.last_rejection}; {session.rejections_in_a_row} refused in a row, "
                f"next inference after a back-off of {session.rejection_backoff_s:.3g} s "
                f"(dt doubling per refusal, at most {PREDICTION_BACKOFF_MAX_S:g} s)",
            )
            return True  # keep asking (after the back-off): the next prediction may be fine
        failed = faults.get(INFERENCE_SUBJECT)
        if failed is not None:
            self._set_state(
                PolicyStatus.STATE_ERROR,
                f"inference failed: {failed.message}; retrying every {ERROR_BACKOFF_S:g} s",
            )
            return True
        slow = faults.get(SLOW_SUBJECT)
        pace = "" if slow is None else f"; {slow.message}"
        if session.accepted_since_activation:
            self._set_state(
                PolicyStatus.STATE_RUNNING,
                f"publishing chunks on {session.command_topics_text()}{pace}",
            )
        else:
            self._set_state(
                PolicyStatus.STATE_WAITING_FOR_OBSERVATIONS,
                f"observations complete: computing the first chunk{pace}",
            )
        return True

    def _set_state(self, state: int, message: str) -> None:
        if (state, message) == (self._state, self._message):
            return
        self._state, self._message = state, message
        self._publish_status()

    def _publish_status(self) -> None:
        status = PolicyStatus()
        status.header.stamp = self.get_clock().now().to_msg()
        status.state = self._state
        status.message = self._message
        status.checkpoint = self._checkpoint
        status.device = self._device
        session = self._session
        if session is not None:
            stats = session.latency.stats()
            status.inference_latency_last = stats.last
            status.inference_latency_p50 = stats.p50
            status.inference_latency_p99 = stats.p99
            status.inference_latency_max = stats.max
            if session.active:
                ages = session.buffers.ages(self._now_ns())
                status.observation_age = max(
                    (float("inf") if age is None else age for age in ages.values()), default=0.0
                )
        counters = self._counters
        status.chunks_published = counters.chunks_published
        status.observations_received = counters.observations_received
        status.observations_dropped = counters.observations_dropped
        status.predictions_rejected = counters.predictions_rejected
        self._status_pub.publish(status)

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds


def _deserialize(data: bytes, cls: type, stream: ObservationStream) -> Any:
    try:
        return deserialize_message(data, cls)
    except Exception as error:  # rclpy raises its RMWError; any failure means the same here
        raise ObservationRejectedError(
            UNDECODABLE,
            f"a message on {stream.topic} does not deserialise as {stream.message_type} "
            f"({len(data)} bytes; {error}): a publisher of another type definition, or "
            f"corrupted data",
        ) from error


def _command_key(command: CommandStream) -> str:
    """The key of an action stream's publisher among the session's publishers."""
    return f"command:{command.key}"


def _command_publishers(entities: _Entities, plan: ServingPlan) -> list[Any]:
    return [entities.publishers[_command_key(command)] for command in plan.commands]


def _check_distinct_resolved_topics(plan: ServingPlan, publishers: dict[str, Any]) -> None:
    # The plan checked the names as given; a remap or the namespace can still make two of
    # them one topic, where one controller would get both streams and drop each in turn.
    from dp_policy_node.serving_plan import ConfigurationError

    seen: dict[str, str] = {}
    for command in plan.commands:
        topic = publishers[_command_key(command)].topic_name
        if topic in seen:
            raise ConfigurationError(
                f"action streams {seen[topic]!r} and {command.key!r} are both published on "
                f"{topic} (after remapping); each controller needs its own topic"
            )
        seen[topic] = command.key


def _threads_text(threads: int) -> str:
    return f" ({threads} inference thread{'s' if threads != 1 else ''})" if threads else ""


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    executor = SingleThreadedExecutor()
    try:
        node = PolicyNode()
        executor.add_node(node)
        node.autostart_if_requested()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except rclpy_implementation.RCLError:
        # rclpy's signal handler shuts the context down asynchronously: an executor between
        # its checks then fails to build its wait set, or a callback to publish. That is the
        # signal's shutdown, not a fault (exit 0); with the context still valid it is a fault.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
