"""Training for a wall-clock budget: ``training.max_time: 30m`` (or ``--budget 2h``).

Users budget training in hours, not steps: how many steps fit depends on the machine, the
batch and the model. With a budget the run

- counts from the start of the train command, so building the dataset cache counts too;
- decays the learning rate by the fraction of the budget used (warm-up stays in steps): the
  cosine reaches zero when the budget ends, whatever the step count then is;
- stops in time to validate and write its last checkpoint before the budget ends (both are
  timed when they first run, and the loop keeps that much in hand).

Durations are written ``90s``, ``30m``, ``2h``, ``1h30m``, ``1.5h`` or a plain number of
seconds.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(
    rf"\s*(?:{_NUMBER}\s*d)?\s*(?:{_NUMBER}\s*h)?\s*(?:{_NUMBER}\s*m)?\s*(?:{_NUMBER}\s*s)?\s*"
)
_UNIT_SECONDS = (86400.0, 3600.0, 60.0, 1.0)


def parse_duration(value: object) -> float:
    """Seconds in ``value`` (``"30m"``, ``"1h30m"``, ``"2h"``, ``45``); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.lower())
        try:
            seconds = float(value)
        except ValueError:
            if match is None or not any(match.groups()):
                raise ValueError(
                    f"not a duration: {value!r} (write e.g. 90s, 30m, 2h, 1h30m or seconds)"
                ) from None
            seconds = sum(
                float(part) * unit
                for part, unit in zip(match.groups(), _UNIT_SECONDS, strict=True)
                if part
            )
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive and finite, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{rest:02d}s" if hours else f"{minutes}m{rest:02d}s"


class TrainingBudget:
    """The wall clock a run may use, counted from ``start`` (``time.monotonic`` seconds).

    ``used_before`` is budget spent by earlier processes of the same run (resume).
    """

    def __init__(
        self,
        seconds: float,
        start: float | None = None,
        used_before: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = float(seconds)
        self._clock = clock
        self.start = (clock() if start is None else float(start)) - float(used_before)
        # Seconds kept in hand at the end for the final validation and checkpoint, measured.
        self.reserve = 0.0
        self._loop_start: float | None = None

    def used(self) -> float:
        return self._clock() - self.start

    def remaining(self) -> float:
        return self.seconds - self.used()

    def start_loop(self) -> None:
        """The training loop starts now: the schedule spans from here to the end."""
        self._loop_start = self._clock()

    def fraction(self) -> float:
        """How much of the loop's share of the budget is used, in [0, 1] (the LR's clock)."""
        if self._loop_start is None:
            return 0.0
        end = self.start + self.seconds - self.reserve
        span = end - self._loop_start
        if span <= 0:
            return 1.0
        return min(1.0, max(0.0, (self._clock() - self._loop_start) / span))

    def exhausted(self, next_step_s: float = 0.0) -> bool:
        """Whether the loop must stop now to finish (one more step of ``next_step_s``, then
        validate and save) within the budget."""
        return self.remaining() <= self.reserve + next_step_s

    def keep_in_hand(self, seconds: float) -> None:
        """Keep at least ``seconds`` for the end (the largest final step measured so far)."""
        self.reserve = max(self.reserve, float(seconds))


def budget_lr_lambda(
    warmup_steps: int, schedule: str, fraction: Callable[[], float]
) -> Callable[[int], float]:
    """LR factor per step: linear warm-up over steps, then cosine (or constant) over the
    budget's ``fraction`` in use."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return float(step) / float(max(1, warmup_steps))
        if schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * fraction()))

    return factor
