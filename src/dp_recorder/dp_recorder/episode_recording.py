"""An episode being recorded: its bag written by a thread of its own, fed through a queue.

The ROS executor must never wait for the disk: a callback only puts the serialised message into
a queue (``write``), and this thread writes, flushes every ``flush_period_s`` and closes. The
queue is bounded in bytes; a message that does not fit is dropped and counted, never blocking
the executor. A write error (full disk, file size limit, I/O error) stops the writing: the bag is
repaired in place so that what was written stays readable, later messages are counted as
dropped, and ``on_error`` tells the owner (from this thread).

Each message of a topic added with a ``MessageCheck`` is checked in this thread before it is
written (see ``message_checks``): bytes that do not decode as the topic's type are refused, odd
but decodable messages are written and noted; both are counted per topic and cause, and summed up
in the bag's custom data when it closes (``refused_messages``, ``anomalies``).

No ROS here.
"""

from __future__ import annotations

import errno
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

from dp_recorder.episode_writer import BagResult, EpisodeWriter, TopicInfo
from dp_recorder.message_checks import MessageCheck, Verdict
from dp_recorder.recover import RecoveryReport

_FLUSH_POLL_S = 0.05


@dataclass
class TopicCounters:
    """Messages and bytes of one topic: written (or queued to be), dropped, refused, noted."""

    messages: int = 0
    bytes: int = 0
    dropped: int = 0
    refused: int = 0
    refusals: dict[str, int] = field(default_factory=dict)  # cause: messages refused
    notes: dict[str, int] = field(default_factory=dict)  # cause: messages written with it
    examples: dict[str, str] = field(default_factory=dict)  # refusal cause: the first detail

    def copy(self) -> TopicCounters:
        return TopicCounters(
            self.messages,
            self.bytes,
            self.dropped,
            self.refused,
            dict(self.refusals),
            dict(self.notes),
            dict(self.examples),
        )


@dataclass
class FinishResult:
    """How an episode's bag ended up."""

    bag: BagResult
    error: str = ""  # empty when the bag was closed properly
    dropped: int = 0
    counters: dict[str, TopicCounters] = field(default_factory=dict)


@dataclass
class _Message:
    topic: str
    timestamp_ns: int
    data: bytes


@dataclass
class _AddTopic:
    topic: TopicInfo
    check: MessageCheck | None = None


@dataclass
class _Finish:
    custom_data: dict[str, str]
    result: Future


class EpisodeRecording:
    """Owns an ``EpisodeWriter`` and the thread that writes it."""

    def __init__(
        self,
        writer: EpisodeWriter,
        flush_period_s: float = 1.0,
        max_queue_bytes: int = 512 * 2**20,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.writer = writer
        self.flush_period_s = flush_period_s
        self.max_queue_bytes = max_queue_bytes
        self._on_error = on_error
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self.peak_queued_bytes = 0
        self.counters: dict[str, TopicCounters] = {}
        self._error = ""
        self._repaired: RecoveryReport | None = None
        self._checks: dict[str, MessageCheck] = {}  # owned by the writer thread
        self._finishing = False
        self._thread = threading.Thread(
            target=self._run, name=f"writer {writer.path.name}", daemon=True
        )
        self._opened: Future = Future()
        self._finished: Future = Future()

    # Called by the owner (the executor thread) ------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        """Open the bag in the writer thread; raises what opening raised."""
        self._thread.start()
        self._opened.result(timeout=timeout_s)

    def add_topic(self, topic: TopicInfo, check: MessageCheck | None = None) -> None:
        """Declare a topic; with ``check``, its messages are checked before they are written."""
        with self._lock:
            self.counters.setdefault(topic.name, TopicCounters())
        self._queue.put(_AddTopic(topic, check))

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> bool:
        """Queue one message; False when it was dropped (queue full, or after a write error)."""
        size = len(data)
        with self._lock:
            counters = self.counters.setdefault(topic, TopicCounters())
            if self._error or self._finishing or self._queued_bytes + size > self.max_queue_bytes:
                counters.dropped += 1
                return False
            self._queued_bytes += size
            self.peak_queued_bytes = max(self.peak_queued_bytes, self._queued_bytes)
            counters.messages += 1
            counters.bytes += size
        self._queue.put(_Message(topic, timestamp_ns, data))
        return True

    def finish(
        self, custom_data: Mapping[str, str], timeout_s: float | None = None
    ) -> FinishResult:
        """Write what is queued, close the bag with ``custom_data`` and end the thread."""
        with self._lock:
            first = not self._finishing
            self._finishing = True
        if first:
            self._queue.put(_Finish(dict(custom_data), self._finished))
        # A second call (an interrupted first one) waits for the same result.
        result = self._finished.result(timeout=timeout_s)
        self._thread.join(timeout=5.0)
        return result

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def dropped(self) -> int:
        with self._lock:
            return sum(counter.dropped for counter in self.counters.values())

    def counters_copy(self) -> dict[str, TopicCounters]:
        """A snapshot of the per-topic counters (safe from any thread)."""
        with self._lock:
            return {name: counters.copy() for name, counters in self.counters.items()}

    @property
    def error(self) -> str:
        return self._error

    # The writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.writer.open()
        except BaseException as error:
            self._opened.set_exception(error)
            return
        self._opened.set_result(None)
        next_flush = time.monotonic() + self.flush_period_s
        while True:
            try:
                item = self._queue.get(timeout=_FLUSH_POLL_S)
            except queue.Empty:
                item = None
            if isinstance(item, _Finish):
                item.result.set_result(self._close(item.custom_data))
                return
            if item is not None and not self._error:
                self._guarded(self._handle, item)
            if isinstance(item, _Message):
                with self._lock:
                    self._queued_bytes -= len(item.data)
            # Checked after every item, so that a backlog does not postpone durability.
            if time.monotonic() >= next_flush:
                if not self._error:
                    self._guarded(self.writer.flush)
                next_flush = time.monotonic() + self.flush_period_s

    def _handle(self, item: _Message | _AddTopic) -> None:
        if isinstance(item, _Message):
            check = self._checks.get(item.topic)
            if check is not None and not self._checked(item, check):
                return
            self.writer.write(item.topic, item.timestamp_ns, item.data)
        else:
            if item.check is not None:
                self._checks.setdefault(item.topic.name, item.check)
            self.writer.add_topic(item.topic)

    def _checked(self, item: _Message, check: MessageCheck) -> bool:
        """Count what the check says about the message; False when it is refused."""
        try:
            verdict = check.check(item.data, item.timestamp_ns)
        except Exception as error:
            # A fault of the check, not of the bag: the message is written, the fault noted
            # (the writer's own errors stop the episode; this one must not).
            verdict = Verdict(notes=(f"check failed: {type(error).__name__}",))
        if not verdict.refused and not verdict.notes:
            return True
        with self._lock:
            counters = self.counters.setdefault(item.topic, TopicCounters())
            for note in verdict.notes:
                counters.notes[note] = counters.notes.get(note, 0) + 1
            if not verdict.refused:
                return True
            # Not in the bag: it leaves the written counts for the refused ones.
            counters.messages -= 1
            counters.bytes -= len(item.data)
            counters.refused += 1
            counters.refusals[verdict.refused] = counters.refusals.get(verdict.refused, 0) + 1
            counters.examples.setdefault(verdict.refused, verdict.detail)
        return False

    def _guarded(self, action: Callable, *args) -> None:
        try:
            action(*args)
        except Exception as error:
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        written = self.writer.message_counts
        with self._lock:
            self._error = f"writing the bag {self.writer.path} failed: {_describe(error)}"
        report = self._repaired = self.writer.abandon({"outcome": "error", "error": self._error})
        if report is None:
            self._error += (
                f"; the bag could not be repaired now: run `python -m dp_recorder.recover "
                f"{self.writer.path}` once the cause is fixed"
            )
        else:
            self._error += (
                f"; the bag keeps the {report.message_count} messages written before the "
                f"error ({sum(written.values())} were handed to the writer)"
            )
        if self._on_error is not None:
            self._on_error(self._error)

    def _close(self, custom_data: dict[str, str]) -> FinishResult:
        # Here, not by the owner: only now is every queued message checked.
        custom_data = {**custom_data, **check_custom_data(self.counters_copy())}
        if not self._error:
            try:
                bag = self.writer.close(custom_data)
            except Exception as error:
                self._fail(error)
            else:
                return FinishResult(bag, "", self.dropped, self.counters_copy())
        repaired = self._repaired
        bag = (
            BagResult(self.writer.path, repaired.topics, repaired.start_ns, repaired.end_ns)
            if repaired is not None
            else BagResult(self.writer.path, self.writer.message_counts)
        )
        return FinishResult(
            bag,
            self._error,
            self.dropped,
            self.counters_copy(),
        )


def check_custom_data(counters: Mapping[str, TopicCounters]) -> dict[str, str]:
    """The bag's custom data about refused and noted messages (see ``message_checks``)."""
    refused = sum(c.refused for c in counters.values())
    anomalies = [
        f"{topic}: {count} x {cause}"
        for topic, c in sorted(counters.items())
        for cause, count in sorted(c.notes.items())
    ]
    refusals = [
        f"{topic}: {count} x {cause}"
        for topic, c in sorted(counters.items())
        for cause, count in sorted(c.refusals.items())
    ]
    return {
        "refused_messages": str(refused),
        "refusals": "; ".join(refusals),
        "anomalies": "; ".join(anomalies),
    }


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        text += " (the disk is full)"
    elif code == errno.EFBIG:
        text += " (the file size limit is reached: a full file system, or `ulimit -f`)"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        text += " (the directory is not writable)"
    return text
