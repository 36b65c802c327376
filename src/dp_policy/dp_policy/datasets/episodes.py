"""Episodes of a bag: cut by ``dp_msgs/msg/EpisodeEvent`` or the whole bag, and their outcome.

Bags come from dp_recorder (one episode per bag: START and STOP/DISCARD events, plus the
outcome in metadata.yaml's custom data) or from plain ``ros2 bag record`` (any number of
episodes cut by the events that the simulation or an operator tool published, or none).

- No event in the bag: the whole bag is one episode; its outcome is the custom data's
  ``outcome`` (dp_recorder) or ``unknown`` (a plain recording, kept by default).
- START opens an episode; STOP closes it as ``success`` or ``failure`` (the event's
  ``success``); DISCARD closes it as ``discarded``. A START while one is open closes the open
  one as ``incomplete``; an episode still open at the end of the bag is ``incomplete``.
- A STOP or DISCARD before any START closes an episode that began before the recording did.

Times are the events' header stamps (their receive time when the stamp is zero), the same
clock as the data streams.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EVENT_START = 1
EVENT_STOP = 2
EVENT_DISCARD = 3

OUTCOMES = ("success", "failure", "discarded", "incomplete", "unknown")
# dp_recorder's custom-data outcome -> ours.
_RECORDER_OUTCOMES = {
    "success": "success",
    "failure": "failure",
    "timeout": "failure",
    "discarded": "discarded",
    "interrupted": "incomplete",
    "error": "incomplete",
    "recording": "incomplete",
}


@dataclass(frozen=True)
class EventRecord:
    """An EpisodeEvent as read from a bag."""

    time_ns: int
    event: int
    success: bool = False
    task: str = ""
    name: str = ""


@dataclass(frozen=True)
class EpisodeSegment:
    """A stretch of a bag; ``None`` bounds mean the bag's first or last message."""

    start_ns: int | None
    end_ns: int | None
    outcome: str
    task: str = ""
    name: str = ""

    def contains(self, time_ns: int) -> bool:
        after_start = self.start_ns is None or time_ns >= self.start_ns
        before_end = self.end_ns is None or time_ns <= self.end_ns
        return after_start and before_end


@dataclass(frozen=True)
class EpisodeSelection:
    """Which episodes become training data. Successful and unknown outcomes always do."""

    include_failed: bool = False
    include_discarded: bool = False
    include_incomplete: bool = False
    tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("include_failed", "include_discarded", "include_incomplete"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EpisodeSelection: {name} must be true or false")
        object.__setattr__(self, "tasks", tuple(str(task) for task in self.tasks))

    def rejects(self, segment: EpisodeSegment) -> str | None:
        """Why ``segment`` is skipped, or None when it is used."""
        if self.tasks and segment.task not in self.tasks:
            return f"task {segment.task!r} is not one of {list(self.tasks)}"
        if segment.outcome == "failure" and not self.include_failed:
            return "unsuccessful (include_failed: true to use it)"
        if segment.outcome == "discarded" and not self.include_discarded:
            return "discarded by the operator (include_discarded: true to use it)"
        if segment.outcome == "incomplete" and not self.include_incomplete:
            return "incomplete: no end event (include_incomplete: true to use it)"
        return None

    def to_dict(self) -> dict:
        return {
            "include_failed": self.include_failed,
            "include_discarded": self.include_discarded,
            "include_incomplete": self.include_incomplete,
            "tasks": list(self.tasks),
        }


def outcome_from_custom_data(custom_data: Mapping[str, str]) -> str:
    """The outcome that a dp_recorder bag's custom data states, or ``unknown``."""
    outcome = custom_data.get("outcome", "")
    if outcome in _RECORDER_OUTCOMES:
        return _RECORDER_OUTCOMES[outcome]
    success = custom_data.get("success", "").lower()
    if success in ("true", "false"):
        return "success" if success == "true" else "failure"
    return "unknown"


def cut_episodes(
    events: Sequence[EventRecord], custom_data: Mapping[str, str], bag_name: str
) -> list[EpisodeSegment]:
    """The episodes of one bag, in time order (see the module docstring for the rules)."""
    task = custom_data.get("task", "")
    if not any(e.event in (EVENT_START, EVENT_STOP, EVENT_DISCARD) for e in events):
        name = custom_data.get("episode_name", "") or bag_name
        return [EpisodeSegment(None, None, outcome_from_custom_data(custom_data), task, name)]
    segments: list[EpisodeSegment] = []
    open_start: EventRecord | None = None
    seen_start = False
    for event in sorted(events, key=lambda e: e.time_ns):
        if event.event == EVENT_START:
            if open_start is not None:
                segments.append(_segment(open_start, event.time_ns, "incomplete", task))
            open_start = event
            seen_start = True
        elif event.event in (EVENT_STOP, EVENT_DISCARD):
            if event.event == EVENT_DISCARD:
                outcome = "discarded"
            else:
                outcome = "success" if event.success else "failure"
            if open_start is not None:
                segments.append(_segment(open_start, event.time_ns, outcome, task))
                open_start = None
            elif not seen_start and not segments:
                segments.append(
                    EpisodeSegment(None, event.time_ns, outcome, event.task or task, event.name)
                )
            # Any other STOP repeats one already applied (two publishers of events): ignored.
    if open_start is not None:
        segments.append(_segment(open_start, None, "incomplete", task))
    return [
        segment if segment.name else _renamed(segment, f"{bag_name}#{index}")
        for index, segment in enumerate(segments)
    ]


def _segment(start: EventRecord, end_ns: int | None, outcome: str, task: str) -> EpisodeSegment:
    return EpisodeSegment(start.time_ns, end_ns, outcome, start.task or task, start.name)


def _renamed(segment: EpisodeSegment, name: str) -> EpisodeSegment:
    return EpisodeSegment(segment.start_ns, segment.end_ns, segment.outcome, segment.task, name)
