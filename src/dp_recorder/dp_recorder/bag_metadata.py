"""rosbag2's ``metadata.yaml``: written while an episode runs and when a bag is recovered.

A finished bag gets its ``metadata.yaml`` from ``rosbags`` when it is closed. Two cases need one
written here instead: the provisional file of a bag being recorded (it carries the episode's custom
data, so that a bag whose recorder was killed can be recovered with its task and outcome), and the
file of a recovered bag. The layout is rosbag2's, in the metadata version the bag is written in
(8 or 9; see README.md for which distros read which).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rosbags.interfaces import Qos
from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9, parse_qos

METADATA_FILE = "metadata.yaml"
SUPPORTED_VERSIONS = (8, 9)


@dataclass
class TopicEntry:
    """One topic of a bag as metadata.yaml lists it."""

    name: str
    msgtype: str
    offered_qos: Sequence[Qos] = ()
    type_description_hash: str = ""
    message_count: int = 0
    serialization_format: str = "cdr"


@dataclass
class BagDescription:
    """Everything metadata.yaml says about a bag."""

    storage_identifier: str  # "mcap" or "sqlite3"
    file_name: str  # the storage file, relative to the bag directory
    version: int = 9
    topics: list[TopicEntry] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0
    compression_format: str = ""
    compression_mode: str = ""
    custom_data: dict[str, str] = field(default_factory=dict)
    ros_distro: str = ""

    @property
    def message_count(self) -> int:
        return sum(topic.message_count for topic in self.topics)


def metadata_document(bag: BagDescription) -> dict[str, Any]:
    """The content of metadata.yaml for ``bag``, as rosbag2 lays it out."""
    if bag.version not in SUPPORTED_VERSIONS:
        raise ValueError(f"metadata version {bag.version} is not one of {SUPPORTED_VERSIONS}")
    duration = max(0, bag.end_ns - bag.start_ns) if bag.message_count else 0
    start = bag.start_ns if bag.message_count else 0
    # Version 9 stores QoS profiles as YAML with policy names; version 8 as a string of YAML
    # with policy numbers. rosbag2 reads each version only in its own form.
    dump_qos = dump_qos_v9 if bag.version >= 9 else dump_qos_v8
    return {
        "rosbag2_bagfile_information": {
            "version": bag.version,
            "storage_identifier": bag.storage_identifier,
            "relative_file_paths": [bag.file_name],
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": bag.message_count,
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": topic.name,
                        "type": topic.msgtype,
                        "serialization_format": topic.serialization_format,
                        "offered_qos_profiles": dump_qos(list(topic.offered_qos)),
                        "type_description_hash": topic.type_description_hash,
                    },
                    "message_count": topic.message_count,
                }
                for topic in bag.topics
            ],
            "compression_format": bag.compression_format,
            "compression_mode": bag.compression_mode,
            "files": [
                {
                    "path": bag.file_name,
                    "starting_time": {"nanoseconds_since_epoch": start},
                    "duration": {"nanoseconds": duration},
                    "message_count": bag.message_count,
                }
            ],
            "custom_data": dict(bag.custom_data) or None,
            "ros_distro": bag.ros_distro,
        }
    }


def write_metadata(bag_dir: Path, bag: BagDescription) -> None:
    """Write ``bag_dir/metadata.yaml`` atomically: a reader sees the old file or the new one."""
    text = yaml.safe_dump(metadata_document(bag), sort_keys=False, default_flow_style=False)
    target = Path(bag_dir) / METADATA_FILE
    temporary = target.with_suffix(".yaml.tmp")
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, target)


def read_metadata(bag_dir: Path) -> dict[str, Any] | None:
    """The ``rosbag2_bagfile_information`` of ``bag_dir``, or None without a readable one."""
    path = Path(bag_dir) / METADATA_FILE
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(document, dict):
        return None
    information = document.get("rosbag2_bagfile_information")
    return information if isinstance(information, dict) else None


def qos_from_metadata(value: Any) -> list[Qos]:
    """QoS profiles as metadata.yaml (either version) or an MCAP channel stores them."""
    if not value:
        return []
    return parse_qos(value)


def custom_data_of(information: Mapping[str, Any] | None) -> dict[str, str]:
    """The custom data of a metadata mapping, as strings."""
    custom = (information or {}).get("custom_data") or {}
    return {str(key): str(value) for key, value in custom.items()}
