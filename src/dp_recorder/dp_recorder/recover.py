"""Recover a bag whose recorder was killed or stopped by a write error.

Usage: ``python -m dp_recorder.recover BAG_DIR [BAG_DIR ...]`` (or the ``recover_bag``
function). The bag is repaired in place:

- MCAP: the file is cut after its last complete record and gets the summary and footer that a
  clean close writes (see ``mcap_repair``); messages in the cut-off record are lost, which is at
  most what the recorder had not yet flushed (``flush_period``, 1 s by default).
- sqlite3: the database rolls back to its last commit (the recorder commits every
  ``flush_period``).

Either way ``metadata.yaml`` is rewritten from what the storage file holds, keeping the custom
data (task, robot, ...) that the recorder wrote when the episode started; an episode whose outcome
was still "recording" becomes "interrupted", with ``recovered: "true"``.

A bag that a running recorder is writing is refused (the recorder holds a lock on its storage
file), and a bag that was closed properly is left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from dp_recorder import mcap_repair
from dp_recorder.bag_metadata import (
    BagDescription,
    TopicEntry,
    custom_data_of,
    metadata_document,
    qos_from_metadata,
    read_metadata,
    write_metadata,
)

# custom_data "outcome" of a bag whose recorder had not finished it.
OUTCOME_RECORDING = "recording"
OUTCOME_INTERRUPTED = "interrupted"


class RecoveryError(Exception):
    """The bag could not be recovered; the message says why."""


@dataclass
class RecoveryReport:
    """What a recovery found and did."""

    bag: Path
    storage_identifier: str
    already_complete: bool = False
    topics: dict[str, int] = field(default_factory=dict)  # topic -> messages in the bag
    discarded_bytes: int = 0  # bytes of an incomplete record cut off the end of the file
    custom_data: dict[str, str] = field(default_factory=dict)
    start_ns: int = 0  # log times of the first and last message in the bag
    end_ns: int = 0

    @property
    def message_count(self) -> int:
        return sum(self.topics.values())

    def summary(self) -> str:
        if self.already_complete:
            return f"{self.bag}: complete already, left as it is"
        topics = ", ".join(f"{name} {count}" for name, count in sorted(self.topics.items()))
        cut = f"; cut off {self.discarded_bytes} bytes of an incomplete record" * bool(
            self.discarded_bytes
        )
        return (
            f"{self.bag}: recovered {self.message_count} messages ({topics or 'no topics'})"
            f"{cut}; outcome {self.custom_data.get('outcome', '?')}"
        )


def storage_file(bag: Path) -> tuple[str, Path]:
    """The storage identifier and file of a bag directory (from metadata.yaml, else by suffix)."""
    information = read_metadata(bag)
    if information:
        identifier = information.get("storage_identifier", "")
        paths = information.get("relative_file_paths") or []
        if identifier in ("mcap", "sqlite3") and len(paths) == 1 and (bag / paths[0]).is_file():
            return identifier, bag / paths[0]
    candidates = sorted(bag.glob("*.mcap")) + sorted(bag.glob("*.db3"))
    if len(candidates) != 1:
        found = ", ".join(path.name for path in candidates) or "none"
        raise RecoveryError(
            f"{bag}: expected exactly one .mcap or .db3 file in the bag directory, found {found}"
        )
    return ("mcap" if candidates[0].suffix == ".mcap" else "sqlite3"), candidates[0]


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold the lock that a recorder holds on the storage file while it writes."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecoveryError(
                f"{path} is being written by a running recorder; stop that episode first"
            ) from None
        yield
    finally:
        os.close(descriptor)


def recover_bag(
    bag: Path | str,
    *,
    outcome: str = OUTCOME_INTERRUPTED,
    extra_custom_data: dict[str, str] | None = None,
    force: bool = False,
    locked: bool = False,
) -> RecoveryReport:
    """Make ``bag`` readable again and rewrite its metadata.yaml; see the module doc.

    ``outcome`` replaces an outcome of "recording"; ``extra_custom_data`` is added to the custom
    data. ``force`` repairs even a bag that looks complete. ``locked`` says that the caller holds
    the writer's lock itself (the recorder, recovering its own bag after a write error).
    """
    bag = Path(bag)
    if not bag.is_dir():
        raise RecoveryError(f"{bag} is not a bag directory")
    identifier, path = storage_file(bag)
    information = read_metadata(bag)
    custom_data = custom_data_of(information)
    finished = bool(information) and custom_data.get("outcome") != OUTCOME_RECORDING
    lock = contextlib.nullcontext() if locked else exclusive_lock(path)
    with lock:
        if identifier == "mcap":
            complete = _ends_with_magic(path)
        else:
            complete = not Path(f"{path}-journal").exists()
        if finished and complete and not force:
            return RecoveryReport(bag, identifier, already_complete=True, custom_data=custom_data)
        if custom_data.get("outcome", OUTCOME_RECORDING) == OUTCOME_RECORDING:
            custom_data["outcome"] = outcome
        custom_data["recovered"] = "true"
        custom_data.update(extra_custom_data or {})
        description = BagDescription(
            storage_identifier=identifier,
            file_name=path.name,
            version=int((information or {}).get("version", 9)),
            compression_format=(information or {}).get("compression_format", "") or "",
            compression_mode=(information or {}).get("compression_mode", "") or "",
            custom_data=custom_data,
            ros_distro=(information or {}).get("ros_distro", "")
            or os.environ.get("ROS_DISTRO", ""),
        )
        known_hashes = _known_hashes(information)
        if identifier == "mcap":
            discarded = _recover_mcap(path, description, known_hashes)
        else:
            discarded = 0
            _recover_sqlite3(path, description)
        write_metadata(bag, description)
    return RecoveryReport(
        bag,
        identifier,
        topics={topic.name: topic.message_count for topic in description.topics},
        discarded_bytes=discarded,
        custom_data=custom_data,
        start_ns=description.start_ns,
        end_ns=description.end_ns,
    )


def _recover_mcap(path: Path, description: BagDescription, known: dict[str, str]) -> int:
    size_before = path.stat().st_size
    content = mcap_repair.scan(path)
    description.topics = []
    for channel_id, channel in sorted(content.channels.items()):
        schema = content.schemas.get(channel.schema_id)
        msgtype = schema.name if schema is not None else ""
        type_hash = (
            known.get(f"{channel.topic} {msgtype}")
            or channel.metadata.get("topic_type_hash", "")
            or _hash_of(schema)
        )
        description.topics.append(
            TopicEntry(
                name=channel.topic,
                msgtype=msgtype,
                offered_qos=qos_from_metadata(channel.metadata.get("offered_qos_profiles", "")),
                type_description_hash=type_hash,
                message_count=content.message_counts.get(channel_id, 0),
                serialization_format=channel.message_encoding,
            )
        )
    description.start_ns, description.end_ns = content.start_time, content.end_time
    serialized = yaml.safe_dump(
        metadata_document(description)["rosbag2_bagfile_information"], sort_keys=False
    )
    mcap_repair.repair(path, {"serialized_metadata": serialized})
    return max(0, size_before - content.data_end) if not content.complete else 0


def _recover_sqlite3(path: Path, description: BagDescription) -> None:
    # Opening the database read-write rolls back a transaction that the killed writer left open.
    try:
        connection = sqlite3.connect(f"file:{path}", uri=True)
        try:
            topics = connection.execute(
                "SELECT id, name, type, serialization_format, offered_qos_profiles, "
                "type_description_hash FROM topics ORDER BY id"
            ).fetchall()
            counts = {
                topic_id: (count, first, last)
                for topic_id, count, first, last in connection.execute(
                    "SELECT topic_id, COUNT(*), MIN(timestamp), MAX(timestamp) FROM messages "
                    "GROUP BY topic_id"
                )
            }
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise RecoveryError(f"{path}: the database cannot be read: {error}") from error
    description.topics = [
        TopicEntry(
            name=name,
            msgtype=msgtype,
            offered_qos=qos_from_metadata(qos),
            type_description_hash=type_hash,
            message_count=counts.get(topic_id, (0, 0, 0))[0],
            serialization_format=serialization,
        )
        for topic_id, name, msgtype, serialization, qos, type_hash in topics
    ]
    spans = [(first, last) for count, first, last in counts.values() if count]
    if spans:
        description.start_ns = min(first for first, _ in spans)
        description.end_ns = max(last for _, last in spans)


def _ends_with_magic(path: Path) -> bool:
    with open(path, "rb") as stream:
        stream.seek(0, os.SEEK_END)
        if stream.tell() < 2 * len(mcap_repair.MAGIC):
            return False
        stream.seek(-len(mcap_repair.MAGIC), os.SEEK_END)
        return stream.read() == mcap_repair.MAGIC


def _known_hashes(information: dict[str, Any] | None) -> dict[str, str]:
    """Type hashes that metadata.yaml lists, by "topic type"."""
    hashes = {}
    for entry in (information or {}).get("topics_with_message_count") or []:
        topic = entry.get("topic_metadata", {})
        if topic.get("type_description_hash"):
            hashes[f"{topic.get('name')} {topic.get('type')}"] = topic["type_description_hash"]
    return hashes


def _hash_of(schema: mcap_repair.Schema | None) -> str:
    """The RIHS01 hash of a type from its ros2msg definition in the file; "" if unknown."""
    if schema is None or schema.encoding != "ros2msg":
        return ""
    try:
        typestore = get_typestore(Stores.EMPTY)
        typestore.register(get_types_from_msg(schema.data.decode("utf-8"), schema.name))
        return typestore.hash_rihs01(schema.name)
    except Exception:  # an unparsable definition only costs the hash, never the data
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dp_recorder.recover",
        description="Make bags readable whose recorder was killed or hit a full disk.",
    )
    parser.add_argument("bags", nargs="+", type=Path, help="bag directories")
    parser.add_argument("--force", action="store_true", help="repair even bags that look complete")
    arguments = parser.parse_args(argv)
    status = 0
    for bag in arguments.bags:
        try:
            print(recover_bag(bag, force=arguments.force).summary())
        except (RecoveryError, mcap_repair.McapRepairError, OSError) as error:
            print(f"{bag}: cannot recover: {error}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
