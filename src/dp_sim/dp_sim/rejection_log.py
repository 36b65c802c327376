"""One warning line per rejected command, with repeats of the same kind counted, not logged."""

from __future__ import annotations

import math
import re
import time

# Rejections of the same kind are logged at most this often (s); the rest are counted.
REJECTION_LOG_INTERVAL_S = 2.0


class RejectionLog:
    """Logs ``<prefix>: <reason>`` at most every few seconds per kind of reason.

    Two reasons are of one kind when they differ only in their numbers; the number of those
    not logged is reported with the next one that is.
    """

    def __init__(self, logger, interval_s: float = REJECTION_LOG_INTERVAL_S) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._seen: dict[str, tuple[float, int]] = {}

    def log(self, reason: str, prefix: str = "Rejected trajectory") -> None:
        kind = re.sub(r"[-+]?\d[\d.e+-]*", "#", f"{prefix}: {reason}")
        now = time.monotonic()
        last, suppressed = self._seen.get(kind, (-math.inf, 0))
        if now - last < self._interval_s:
            self._seen[kind] = (last, suppressed + 1)
            return
        more = f" ({suppressed} more like this not logged)" if suppressed else ""
        self._logger.warning(f"{prefix}: {reason}{more}")
        self._seen[kind] = (now, 0)
