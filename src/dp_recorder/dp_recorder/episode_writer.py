"""One episode's bag: rosbag2 (MCAP or sqlite3) written with ``rosbags``, durable as it goes.

``EpisodeWriter`` adds to what ``rosbags.rosbag2.Writer`` does:

- ``flush()`` makes everything written so far durable: the MCAP chunk being filled is closed
  and written, the sqlite3 transaction committed, and the file synced. The caller flushes
  periodically; that period bounds what a SIGKILL can lose (see ``recover``).
- a provisional ``metadata.yaml`` from the start, with the episode's custom data and the outcome
  "recording", so that a bag whose writer died can be recovered with its task and robot.
- an exclusive lock on the storage file while the bag is open, so that recovery never touches
  a bag that a live recorder is writing.
- ``abandon()`` after a write error (full disk...): releases the file and repairs the bag in
  place, so that what was written stays readable.

No ROS here: messages arrive already serialised (CDR), with their definitions.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.interfaces import Connection, Qos
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

from dp_recorder.bag_metadata import BagDescription, TopicEntry, write_metadata
from dp_recorder.message_definitions import MessageDefinition
from dp_recorder.recover import OUTCOME_RECORDING, RecoveryReport, recover_bag

STORAGE_IDS = ("mcap", "sqlite3")
COMPRESSIONS = ("none", "zstd")


class EpisodeWriterError(Exception):
    """The bag cannot be created or written; the message says what and where."""


@dataclass(frozen=True)
class BagOptions:
    """How bags are written."""

    storage_id: str = "mcap"
    compression: str = "none"  # "zstd": MCAP chunk compression, sqlite3 message compression
    metadata_version: int = 9
    ros_distro: str = ""

    def __post_init__(self) -> None:
        if self.storage_id not in STORAGE_IDS:
            raise ValueError(f"storage_id {self.storage_id!r} is not one of {STORAGE_IDS}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression {self.compression!r} is not one of {COMPRESSIONS}")
        if self.metadata_version not in (8, 9):
            raise ValueError(f"metadata_version {self.metadata_version} is not 8 or 9")


@dataclass(frozen=True)
class TopicInfo:
    """A topic as the bag describes it."""

    name: str
    definition: MessageDefinition
    offered_qos: Sequence[Qos] = ()

    @property
    def msgtype(self) -> str:
        return self.definition.msgtype


@dataclass
class BagResult:
    """What a closed (or abandoned) bag holds."""

    path: Path
    message_counts: dict[str, int] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0

    @property
    def message_count(self) -> int:
        return sum(self.message_counts.values())

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


class EpisodeWriter:
    """Writes one bag; every method but ``path`` is for the one thread that owns the writer."""

    def __init__(self, path: Path, options: BagOptions, custom_data: Mapping[str, str]) -> None:
        self.path = Path(path)
        self.options = options
        self.custom_data = dict(custom_data)
        self._writer: Writer | None = None
        self._connections: dict[str, Connection] = {}
        self._topics: dict[str, TopicInfo] = {}
        self._counts: dict[str, int] = {}
        self._start_ns = 0
        self._end_ns = 0
        self._dirty = True
        self._lock_fd: int | None = None

    # Lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Create the bag directory and its storage file; raises EpisodeWriterError."""
        if self.path.exists():
            raise EpisodeWriterError(f"cannot create the bag {self.path}: it exists already")
        writer = Writer(
            self.path,
            version=self.options.metadata_version,
            storage_plugin=StoragePlugin.MCAP
            if self.options.storage_id == "mcap"
            else StoragePlugin.SQLITE3,
        )
        if self.options.compression == "zstd":
            # MCAP compresses whole chunks inside the file (readers need nothing else); rosbag2's
            # sqlite3 storage only knows per-message compression.
            mode = (
                CompressionMode.STORAGE
                if self.options.storage_id == "mcap"
                else CompressionMode.MESSAGE
            )
            writer.set_compression(mode, CompressionFormat.ZSTD)
        for key, value in self.custom_data.items():
            writer.set_custom_data(key, value)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer.open()
        except Exception as error:
            raise EpisodeWriterError(
                f"cannot create the bag {self.path}: {_why_not_writable(self.path) or error}"
            ) from error
        self._writer = writer
        try:
            self._lock_storage_file()
            self._write_provisional_metadata()
            self.flush()
        except Exception as error:
            self.abandon()
            raise EpisodeWriterError(f"cannot write the bag {self.path}: {error}") from error

    def add_topic(self, topic: TopicInfo) -> None:
        """Declare a topic before its first message; declaring it again changes nothing."""
        if topic.name in self._connections:
            return
        writer = self._require_open()
        self._connections[topic.name] = writer.add_connection(
            topic.name,
            topic.msgtype,
            msgdef=topic.definition.text,
            rihs01=topic.definition.rihs01,
            offered_qos_profiles=list(topic.offered_qos),
        )
        self._topics[topic.name] = topic
        self._counts[topic.name] = 0
        self._dirty = True
        self._write_provisional_metadata()

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Write one serialised message received at ``timestamp_ns``."""
        writer = self._require_open()
        connection = self._connections.get(topic)
        if connection is None:
            raise EpisodeWriterError(f"{topic} was not declared with add_topic before writing")
        writer.write(connection, timestamp_ns, data)
        self._counts[topic] += 1
        if self._start_ns == 0 or timestamp_ns < self._start_ns:
            self._start_ns = timestamp_ns
        self._end_ns = max(self._end_ns, timestamp_ns)
        self._dirty = True

    def flush(self) -> None:
        """Make every message written so far durable: after this, a SIGKILL loses none of them."""
        writer = self._require_open()
        if not self._dirty:
            return
        storage = writer.storage
        # rosbags has no public flush; these are the attributes of the pinned version
        # (requirements/python.txt), and the recorder's tests fail if they change.
        if self.options.storage_id == "mcap":
            if storage.chunk.bio.tell():
                storage.close_chunk()
            storage.bio.flush()
            os.fsync(storage.bio.fileno())
        else:
            storage.conn.commit()
        self._dirty = False

    def close(self, custom_data: Mapping[str, str] | None = None) -> BagResult:
        """Close the bag properly: summary, footer and final metadata.yaml."""
        writer = self._require_open()
        for key, value in (custom_data or {}).items():
            writer.set_custom_data(key, value)
            self.custom_data[key] = value
        # On an error the writer stays referenced, so that abandon() can release and repair it.
        writer.close()
        self._writer = None
        self._unlock_storage_file()
        return self._result()

    def abandon(self, custom_data: Mapping[str, str] | None = None) -> RecoveryReport | None:
        """After a write error: let go of the file and repair the bag in place.

        Returns the repair's report, or None when the bag could not be repaired (it stays
        recoverable with ``python -m dp_recorder.recover`` once the cause is fixed).
        """
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.abort()
        self.custom_data.update(custom_data or {})
        try:
            report = recover_bag(
                self.path,
                outcome=self.custom_data.get("outcome", "error"),
                extra_custom_data=self.custom_data,
                force=True,
                locked=True,
            )
        except Exception:
            report = None
        finally:
            self._unlock_storage_file()
        return report

    # Inspection ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    @property
    def message_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def _result(self) -> BagResult:
        return BagResult(self.path, dict(self._counts), self._start_ns, self._end_ns)

    # Internals ----------------------------------------------------------------------------

    def _require_open(self) -> Writer:
        if self._writer is None:
            raise EpisodeWriterError(f"the bag {self.path} is not open")
        return self._writer

    def _storage_file(self) -> Path:
        return Path(self._require_open().storage.path)

    def _lock_storage_file(self) -> None:
        self._lock_fd = os.open(self._storage_file(), os.O_RDONLY)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_storage_file(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _write_provisional_metadata(self) -> None:
        compression = self.options.compression == "zstd" and self.options.storage_id == "sqlite3"
        write_metadata(
            self.path,
            BagDescription(
                storage_identifier=self.options.storage_id,
                file_name=self._storage_file().name,
                version=self.options.metadata_version,
                topics=[
                    TopicEntry(
                        name=topic.name,
                        msgtype=topic.msgtype,
                        offered_qos=topic.offered_qos,
                        type_description_hash=topic.definition.rihs01,
                    )
                    for topic in self._topics.values()
                ],
                compression_format="zstd" if compression else "",
                compression_mode="message" if compression else "",
                custom_data={**self.custom_data, "outcome": OUTCOME_RECORDING},
                ros_distro=self.options.ros_distro,
            ),
        )


def _why_not_writable(path: Path) -> str:
    """What keeps a directory from being created at ``path``, in words; "" if not obvious."""
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is a file, not a directory"
            if not os.access(ancestor, os.W_OK):
                return f"the directory {ancestor} is not writable"
            return ""
    return ""
