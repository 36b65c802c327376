"""Simulated time at a message's reception, from the middleware's reception timestamps.

With ``use_sim_time`` the node clock is whatever ``/clock`` message the executor handled last.
A busy recorder (a large image being written, the writer thread holding the GIL) handles its
callbacks late and in batches: several steps' observations then arrive in one executor pass,
after the newest ``/clock``, and all get the newest time, so a dataset pairs frames with the
wrong steps (seen at 8x: 31 gaps in 150 demo episodes). The middleware stamps every sample on
reception (system time) before any callback runs, so the simulated time at which a message
arrived is the value of the last ``/clock`` sample received before it, whatever order the
executor takes them in. This keeps that history of ``/clock`` and answers the lookup.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

CLOCK_TOPIC = "/clock"
# /clock samples kept: at 8x and 10 Hz a second of delay is 80; far more than any backlog.
HISTORY = 4096


class SimulatedClockTrace:
    """``/clock`` samples by their reception time: ``time_at(received_ns)`` answers with the
    simulated time (ns) then, or None when that reception predates the history."""

    def __init__(self, node: Node, history: int = HISTORY) -> None:
        self._received: deque[int] = deque(maxlen=history)
        self._sim: deque[int] = deque(maxlen=history)
        # Best effort matches every publisher; the depth keeps a backlog until it is taken.
        qos = QoSProfile(depth=256, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._subscription = node.create_subscription(Clock, CLOCK_TOPIC, self._on_clock, qos)

    def _on_clock(self, message: Clock, info: dict[str, Any]) -> None:
        self._add(message, info)

    def _add(self, message: Clock, info: dict[str, Any]) -> None:
        received = int(info.get("received_timestamp") or 0)
        if not received:
            return
        sim = message.clock.sec * 1_000_000_000 + message.clock.nanosec
        if self._received and received < self._received[-1]:
            return  # out of order reception: keep the history sorted for the search
        self._received.append(received)
        self._sim.append(sim)

    def _take_pending(self) -> None:
        # /clock samples the executor has not handled yet are in the subscription's queue; the
        # lookup needs them now (the executor runs one callback at a time, this one included).
        subscription = self._subscription
        while True:
            with subscription.handle:
                taken = subscription.handle.take_message(subscription.msg_type, False)
            if taken is None:
                return
            self._add(*taken)

    def time_at(self, received_ns: int) -> int | None:
        """Simulated time of the last ``/clock`` received at or before ``received_ns``."""
        self._take_pending()
        # Lookups are for messages just received: the answer is near the end of the history.
        for index in range(len(self._received) - 1, -1, -1):
            if self._received[index] <= received_ns:
                return self._sim[index]
        return None
