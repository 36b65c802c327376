"""Episodes: names, where their bags go, their custom data and their events as bag messages.

No ROS here. The custom data keys are the contract with the dataset builder (README.md lists
them); values are strings, as rosbag2's ``custom_data`` requires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rosbags.typesys.store import Typestore

EVENT_TOPIC = "/dp/episode"
EVENT_TYPE = "dp_msgs/msg/EpisodeEvent"
DISCARDED_DIR = "discarded"

# Values of the custom data key "outcome".
OUTCOME_SUCCESS = "success"  # stopped, task succeeded
OUTCOME_FAILURE = "failure"  # stopped, task failed
OUTCOME_DISCARDED = "discarded"  # stopped with discard: not for training
OUTCOME_TIMEOUT = "timeout"  # stopped by max_episode_duration
OUTCOME_INTERRUPTED = "interrupted"  # the recorder was shut down (or killed) mid-episode
OUTCOME_ERROR = "error"  # writing failed (full disk...); the bag keeps what was written

# EpisodeEvent.event values (dp_msgs/msg/EpisodeEvent).
EVENT_START = 1
EVENT_STOP = 2
EVENT_DISCARD = 3

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


class EpisodeRequestError(ValueError):
    """A start request that cannot be honoured; the message is for the operator."""


def episode_name(task: str, index: int, now: datetime | None = None) -> str:
    """A name for an episode: task, UTC start time and index, safe as a directory name."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    slug = _UNSAFE.sub("_", task).strip("_.-")[:60] or "episode"
    return f"{slug}_{stamp}_{index:04d}"


def check_episode_name(name: str) -> str:
    """``name`` if it is usable as a bag directory name; raises EpisodeRequestError."""
    if not _NAME.fullmatch(name) or name in (DISCARDED_DIR,):
        raise EpisodeRequestError(
            f"episode name {name!r} is not usable as a directory name: use letters, digits, "
            "'_', '-' and '.', starting with a letter or digit (at most 200 characters)"
        )
    return name


def discarded_path(output_dir: Path, name: str) -> Path:
    """Where a discarded episode's bag is kept."""
    return output_dir / DISCARDED_DIR / name


@dataclass(frozen=True)
class EpisodeInfo:
    """What is known about an episode when it starts."""

    index: int
    name: str
    task: str
    notes: str
    robot: str
    software_version: str
    recorder_version: str
    start_time: datetime

    def custom_data(self) -> dict[str, str]:
        """The bag's custom data at the start; the outcome is added when the episode ends."""
        return {
            "task": self.task,
            "episode_name": self.name,
            "episode_index": str(self.index),
            "robot": self.robot,
            "software_version": self.software_version,
            "recorder": f"dp_recorder {self.recorder_version}",
            "start_time": self.start_time.isoformat(),
            "notes": self.notes,
        }


def end_custom_data(
    outcome: str, task_success: bool, notes: str, start_notes: str, dropped: int
) -> dict[str, str]:
    """The custom data that an episode's end adds."""
    all_notes = "\n".join(text for text in (start_notes, notes) if text)
    return {
        "outcome": outcome,
        "success": "true" if task_success else "false",
        "notes": all_notes,
        "dropped_messages": str(dropped),
    }


def episode_event_cdr(
    typestore: Typestore,
    stamp_ns: int,
    event: int,
    info: EpisodeInfo,
    success: bool = False,
    notes: str = "",
) -> bytes:
    """An EpisodeEvent serialised as CDR, exactly as a subscriber would receive it."""
    types = typestore.types
    message = types[EVENT_TYPE](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](
                sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
            ),
            frame_id="",
        ),
        event=event,
        episode_index=info.index,
        episode_name=info.name,
        task=info.task,
        success=success,
        notes=notes,
    )
    return bytes(typestore.serialize_cdr(message, EVENT_TYPE))
