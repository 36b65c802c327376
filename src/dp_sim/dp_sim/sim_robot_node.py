"""What every simulated robot node shares: the control loop's timing, episodes, resets.

A subclass (``sim_node.PushTSimNode``, ``arm_sim_node.ArmSimNode``) owns its robot and its
topics and implements four hooks; this base runs them in the order a ros2_control robot's
loop implies:

- a steady wall-clock timer steps the task at its control rate (``real_time_factor`` times
  faster or slower); with ``publish_clock`` (or any factor other than 1) simulated time starts
  at the wall-clock time of start-up, advances exactly one control period per step, stamps
  everything and goes out on ``/clock``;
- each tick takes every command received before it, samples the set points at the step's
  time (``_sample``), publishes the state at that time (``_publish_state``), then steps the
  task towards the set points (``_step``): a command answering the observation stamped t acts
  from the next tick on, one step of latency as on a real robot;
- episodes start at each reset (start-up, the reset service, ``auto_reset``) and end when
  ``_step`` says so; the end is announced once (EVENT_STOP, after the final observation went
  out), a reset during an episode announces EVENT_DISCARD; after the end the task holds until
  the next reset.
"""

from __future__ import annotations

import random
import time
from typing import Any

from builtin_interfaces.msg import Time as TimeMsg
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg

from dp_msgs.msg import EpisodeEvent
from dp_msgs.srv import ResetSimulation
from dp_sim.parameters import Parameter, declare
from dp_sim.rejection_log import RejectionLog

MAX_SEED = 2**63 - 1
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def episode_parameters(
    control_period_s: float, max_episode_steps: int, ends_when: str
) -> tuple[Parameter, ...]:
    """The parameters of the loop and the episodes, the same for every simulated robot."""
    rate = f"{1.0 / control_period_s:.0f} Hz"
    return (
        Parameter(
            "seed",
            0,
            "Seed of the first episode (auto_reset goes on with seed + 1, seed + 2, ...).",
            (0, MAX_SEED),
        ),
        Parameter(
            "max_episode_steps",
            max_episode_steps,
            f"An episode ends after this many {rate} steps unless {ends_when} first.",
            (1, 1_000_000),
        ),
        Parameter(
            "real_time_factor",
            1.0,
            "Simulated seconds per wall-clock second. Other than 1 implies publish_clock: run "
            "the other nodes with use_sim_time:=true.",
            (0.01, 100.0),
        ),
        Parameter(
            "publish_clock",
            False,
            f"Keep a simulated clock that advances {control_period_s:g} s per step, stamp "
            f"everything with it and publish it on /clock.",
        ),
        Parameter("auto_reset", False, "Start the next episode (next seed) when one ends."),
        Parameter(
            "auto_reset_delay",
            1.0,
            "Simulated seconds between the end of an episode and the automatic reset.",
            (0.0, 3600.0),
        ),
    )


def stamp_seconds(stamp: TimeMsg) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class SimRobotNode(Node):
    """The loop, the clock and the episodes of a simulated robot; see the module docstring.

    Subclasses call ``_start`` at the end of their constructor and implement ``_sample``,
    ``_publish_state``, ``_step``, ``_reset_task`` and ``_episode_summary``.
    """

    def __init__(
        self, name: str, parameters: tuple[Parameter, ...], control_period_s: float
    ) -> None:
        super().__init__(name)
        self.parameters = declare(self, parameters)
        self.control_period_s = control_period_s
        self._period_ns = round(control_period_s * 1e9)
        self._auto_reset = self.parameters["auto_reset"]
        self._auto_reset_ticks = round(self.parameters["auto_reset_delay"] / control_period_s)
        self.real_time_factor = self.parameters["real_time_factor"]
        self._publish_clock = self.parameters["publish_clock"] or self.real_time_factor != 1.0
        if self._publish_clock and not self.parameters["publish_clock"]:
            self.get_logger().info(
                f"real_time_factor {self.real_time_factor}: publishing a simulated clock on /clock"
            )
        # Simulated time starts at the wall-clock time of start-up, so stamps are plausible
        # dates, and then advances exactly one control period per step.
        self._sim_time_ns = time.time_ns()
        # The simulated time of the next step; between steps the clock reads 1 ns after the
        # last one (see _tick).
        self._step_time_ns = self._sim_time_ns
        self.episode_index = -1
        self.seed = int(self.parameters["seed"])
        self._episode_over = False
        self._end_announced = False
        self._ticks_to_reset: int | None = None
        self.rejections = RejectionLog(self.get_logger())
        self._command_subscriptions: list[Any] = []
        self._clock_pub = (
            self.create_publisher(ClockMsg, "/clock", QoSProfile(depth=1))
            if self._publish_clock
            else None
        )

    def _start(self, episode_topic: str, reset_service: str) -> None:
        """Create the episode topic and the reset service, reset to ``seed``, start the loop."""
        self._episode_pub = self.create_publisher(EpisodeEvent, episode_topic, RELIABLE)
        self.create_service(ResetSimulation, reset_service, self._on_reset)
        self._reset(self.seed)
        # A steady wall-clock timer: the task keeps real time (times real_time_factor) whatever
        # the ROS clock does.
        self._timer = self.create_timer(
            self.control_period_s / self.real_time_factor,
            self._tick,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

    def command_subscription(self, message_type: type, topic: str, callback: Any) -> Any:
        """A command topic whose pending messages every step takes before it samples."""
        subscription = self.create_subscription(message_type, topic, callback, RELIABLE)
        self._command_subscriptions.append(subscription)
        return subscription

    # -- hooks --------------------------------------------------------------------------------

    def _sample(self, now_s: float) -> Any:
        """The set points in force at ``now_s`` (the node clock, seconds)."""
        raise NotImplementedError

    def _publish_state(self, stamp: TimeMsg) -> None:
        """Everything observable of the current state, stamped ``stamp``."""
        raise NotImplementedError

    def _step(self, setpoints: Any) -> bool:
        """One control period towards ``setpoints``; True when the episode is over."""
        raise NotImplementedError

    def _reset_task(self, seed: int, stamp: TimeMsg) -> None:
        """A new episode of the task with ``seed`` (followers hold the new state)."""
        raise NotImplementedError

    def _episode_summary(self) -> tuple[bool, str, str]:
        """(success, the event's notes, the log line's outcome) of the current episode."""
        raise NotImplementedError

    # -- time ---------------------------------------------------------------------------------

    def now(self) -> Time:
        if self._publish_clock:
            return Time(nanoseconds=self._sim_time_ns, clock_type=ClockType.ROS_TIME)
        return self.get_clock().now()

    # -- the loop -----------------------------------------------------------------------------

    def _tick(self) -> None:
        """One control period: read the commands, sample the set points, publish, step.

        Like ros2_control's control loop, the step uses every command that reached the node
        before it: pending messages are taken here, because an executor that is behind
        schedule runs this ready timer before the ready subscription, which would apply a
        command one step later than it arrived.
        """
        self._take_pending_commands()
        if self._publish_clock:
            self._sim_time_ns = self._step_time_ns
        now = self.now()
        setpoints = None if self._episode_over else self._sample(now.nanoseconds * 1e-9)
        if self._publish_clock:
            # The set points of this step are fixed: from now on the clock reads just after
            # the step's time, so a command that arrives from here on is stamped (by recorders,
            # and by this node's followers) after this step and before the next, the step that
            # applies it. The clock goes out before the observations, so that every command
            # answering them is received after it.
            self._sim_time_ns = self._step_time_ns + 1
            self._clock_pub.publish(ClockMsg(clock=self.now().to_msg()))
            self._step_time_ns += self._period_ns
        self._publish_state(now.to_msg())
        if setpoints is None:
            self._after_episode(now)
        else:
            self._episode_over = self._step(setpoints)

    def _take_pending_commands(self) -> None:
        for subscription in self._command_subscriptions:
            with subscription.handle:
                while True:
                    taken = subscription.handle.take_message(
                        subscription.msg_type, subscription.raw
                    )
                    if taken is None:
                        break
                    subscription.callback(taken[0])

    def _after_episode(self, now: Time) -> None:
        """Announce the end once (after the final observation went out, with its stamp), then
        maybe reset."""
        if not self._end_announced:
            self._end_announced = True
            success, notes, outcome = self._episode_summary()
            self._publish_event(EpisodeEvent.EVENT_STOP, now.to_msg(), success, notes)
            self.get_logger().info(f"episode {self.episode_index} ended after {outcome}")
            if self._auto_reset:
                self._ticks_to_reset = self._auto_reset_ticks
        if self._ticks_to_reset is not None:
            if self._ticks_to_reset <= 0:
                self._ticks_to_reset = None
                self._reset(self.seed + 1)
            else:
                self._ticks_to_reset -= 1

    # -- episodes -----------------------------------------------------------------------------

    def episode_name(self) -> str:
        raise NotImplementedError

    def task_name(self) -> str:
        raise NotImplementedError

    def _publish_event(self, event: int, stamp: TimeMsg, success: bool, notes: str) -> None:
        message = EpisodeEvent(
            event=event,
            episode_index=self.episode_index,
            episode_name=self.episode_name(),
            task=self.task_name(),
            success=success,
            notes=notes,
        )
        message.header.stamp = stamp
        self._episode_pub.publish(message)

    def _reset(self, seed: int) -> None:
        now = self.now().to_msg()
        if self.episode_index >= 0 and not self._end_announced:
            self._publish_event(
                EpisodeEvent.EVENT_DISCARD, now, False, "interrupted by a reset before its end"
            )
        self.seed = seed
        self._reset_task(seed, now)
        self.episode_index += 1
        self._episode_over = False
        self._end_announced = False
        self._ticks_to_reset = None
        _, notes, _ = self._episode_summary()
        self._publish_event(EpisodeEvent.EVENT_START, now, False, notes)
        self.get_logger().info(f"episode {self.episode_index} started with seed {seed}")

    def _on_reset(
        self, request: ResetSimulation.Request, response: ResetSimulation.Response
    ) -> ResetSimulation.Response:
        seed = random.SystemRandom().randrange(2**31) if request.random_seed else request.seed
        response.seed = seed
        if seed < 0:
            response.success = False
            response.message = f"seed must be >= 0, got {seed}"
            return response
        self._reset(seed)
        response.success = True
        response.message = f"episode {self.episode_index} started with seed {seed}"
        return response
