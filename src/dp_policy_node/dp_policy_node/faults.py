"""Active problems per subject (a topic, the prediction), and when to log them.

ROS-free. Bad input tends to come as a stream: a camera in the wrong encoding sends every
frame wrong. The node must say so once -- in the log and in PolicyStatus -- not once per
message. A fault is raised per subject with a cause; while it persists, further reports only
count. It is logged when it starts, unless the same cause on the same subject was logged
within ``relog_after`` seconds (a flapping stream logs once, not at every flap). It clears
when the subject delivers good data again; that recovery is worth a log line only when the
fault itself was logged (``Fault.logged``), so a flapping stream logs one fault and one
recovery per cause, not one recovery per flap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Fault:
    """One active problem: where, why, and how often since it started."""

    subject: str
    cause: str
    message: str
    count: int = 1
    # Whether its start was logged: only then is its end ("valid again") worth a line.
    logged: bool = False


class FaultBook:
    """The active fault of each subject, and the once-per-cause logging decision."""

    def __init__(
        self, relog_after: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.relog_after = relog_after
        self._clock = clock
        self._active: dict[str, Fault] = {}
        self._logged_at: dict[tuple[str, str], float] = {}

    def report(self, subject: str, cause: str, message: str) -> bool:
        """Record a problem; True when it should be logged now (a new cause for ``subject``)."""
        fault = self._active.get(subject)
        if fault is not None and fault.cause == cause:
            # The first message stays: PolicyStatus goes out on every change, and a message
            # that changed with each bad frame would flood it.
            fault.count += 1
            return False
        fault = Fault(subject, cause, message)
        self._active[subject] = fault
        now = self._clock()
        last = self._logged_at.get((subject, cause))
        if last is not None and now - last < self.relog_after:
            return False
        self._logged_at[(subject, cause)] = now
        fault.logged = True
        return True

    def clear(self, subject: str) -> Fault | None:
        """Good data from ``subject``: its fault (if any) is over; returns it."""
        return self._active.pop(subject, None)

    def get(self, subject: str) -> Fault | None:
        return self._active.get(subject)

    def active(self) -> list[Fault]:
        return list(self._active.values())

    def reset(self) -> None:
        """Forget active faults (deactivate); the logging memory stays."""
        self._active.clear()
