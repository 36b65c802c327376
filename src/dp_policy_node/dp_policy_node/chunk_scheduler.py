"""When to request the next chunk: receding horizon with latency compensation.

ROS-free; absolute times are integer nanoseconds on the node clock, latencies are seconds.

A published chunk ends at the due time of its last point (the Ta-th executed action). The
next chunk must replace it before then, or the controller holds the last point and the robot
stops. So the next inference is requested at

    end - (p99 turnaround + margin)

where the turnaround (request to publication) is measured over a sliding window, seeded by
the warm-up. It is requested from the newest observations at that moment, so each chunk uses
the freshest history that still lets it arrive in time. With no chunk executing (start,
after a refused prediction, after stale observations), the request is immediate. One
inference at a time: the caller asks only while none is in flight. That bounds what can be
compensated: a chunk covers (Ta-1)*dt after its observation, spends one turnaround getting
published and another for its successor, so 2 * (p99 + margin) must stay below (Ta-1)*dt;
beyond that, chunks are computed back to back and the controller briefly holds between them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class LatencyStats:
    """Seconds over the window: last, median, 99th percentile, maximum (0 when empty)."""

    last: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    count: int = 0


class LatencyWindow:
    """The most recent latencies, for percentiles."""

    def __init__(self, size: int = 100) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        if math.isfinite(seconds) and seconds >= 0:
            self._values.append(float(seconds))

    def clear(self) -> None:
        self._values.clear()

    def stats(self) -> LatencyStats:
        if not self._values:
            return LatencyStats()
        values = np.asarray(self._values)
        return LatencyStats(
            last=float(values[-1]),
            p50=float(np.percentile(values, 50)),
            p99=float(np.percentile(values, 99)),
            max=float(values.max()),
            count=int(values.size),
        )


@dataclass(frozen=True)
class ScheduleDecision:
    """What the scheduler decided at ``now_ns`` and why (for logs and the GPU check)."""

    request: bool
    request_at_ns: int | None
    lead_s: float
    slack_s: float | None


class ChunkScheduler:
    """Decides when the next inference starts, from the executing chunk's end and latency."""

    def __init__(
        self, dt: float, action_horizon: int, latency_margin: float, window: int = 100
    ) -> None:
        if not dt > 0 or action_horizon < 1 or latency_margin < 0:
            raise ValueError("need dt > 0, action_horizon >= 1 and latency_margin >= 0")
        self.dt = float(dt)
        self.action_horizon = int(action_horizon)
        self.latency_margin = float(latency_margin)
        self.turnaround = LatencyWindow(window)
        self._chunk_end_ns: int | None = None

    @property
    def lead_s(self) -> float:
        """How long before the executing chunk's end the next request goes out."""
        return self.turnaround.stats().p99 + self.latency_margin

    @property
    def chunk_end_ns(self) -> int | None:
        return self._chunk_end_ns

    def fits(self) -> bool:
        """Whether chunks can follow each other without a gap.

        A chunk covers (Ta-1)*dt from its observation, and the next request cannot start
        before it is published (one inference at a time): the turnaround is spent twice, once
        before the chunk is there and once for its successor to arrive in time.
        """
        return 2 * self.lead_s < (self.action_horizon - 1) * self.dt

    def record_turnaround(self, seconds: float) -> None:
        """Time from a request to its chunk being published (or refused)."""
        self.turnaround.add(seconds)

    def chunk_published(self, end_ns: int) -> None:
        """A chunk now executes; ``end_ns`` is the due time of its last point."""
        self._chunk_end_ns = int(end_ns)

    def reset(self) -> None:
        """No chunk executes any more (deactivated, stream stopped, prediction refused)."""
        self._chunk_end_ns = None

    def request_at_ns(self) -> int | None:
        """When the next request is due; None: at once (nothing executing)."""
        if self._chunk_end_ns is None:
            return None
        return self._chunk_end_ns - round(self.lead_s * NS_PER_S)

    def decide(self, now_ns: int) -> ScheduleDecision:
        """Whether to request a chunk now."""
        request_at = self.request_at_ns()
        slack = None if self._chunk_end_ns is None else (self._chunk_end_ns - now_ns) / NS_PER_S
        return ScheduleDecision(
            request=request_at is None or now_ns >= request_at,
            request_at_ns=request_at,
            lead_s=self.lead_s,
            slack_s=slack,
        )
