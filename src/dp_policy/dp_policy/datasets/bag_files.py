"""Finding rosbag2 bags in folders and fingerprinting their content.

A bag is a directory with a ``metadata.yaml`` and its storage files (``.mcap`` or ``.db3``).
The fingerprint is a SHA-256 of every file's bytes (not sizes or times: a bag repaired in place
keeps its size and may keep its mtime), so the dataset cache is keyed by what the bags hold.
Streaming SHA-256 runs at roughly 1-2 GB/s, a few seconds for a large demonstration set.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dp_policy.datasets.errors import BagReadError, EmptyDatasetError

METADATA_FILE = "metadata.yaml"
STORAGE_SUFFIXES = (".mcap", ".db3")
# Files that belong to a bag being written or repaired, never to its content.
_TRANSIENT_SUFFIXES = (".tmp", ".lock")


@dataclass(frozen=True)
class BagFile:
    """One bag found on disk: its directory, storage and the custom data of metadata.yaml."""

    path: Path
    storage: str
    custom_data: dict[str, str] = field(default_factory=dict)
    digest: str = ""

    @property
    def name(self) -> str:
        return self.path.name


def find_bags(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Every bag directory in ``paths`` (bags themselves or folders searched recursively).

    A folder holding ``.mcap``/``.db3`` files without a ``metadata.yaml`` is an unfinished bag
    and raises BagReadError, as does a path that does not exist. Sorted, without duplicates.
    """
    if not paths:
        raise EmptyDatasetError("no bag folders given (pass --bags DIR or set data.bags)")
    found: set[Path] = set()
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise BagReadError(f"{path}: no such bag or folder")
        if path.is_file():
            raise BagReadError(
                f"{path}: give the bag's directory (the one with {METADATA_FILE}), not a file"
            )
        found.update(_bags_under(path))
    if not found:
        raise EmptyDatasetError(
            f"no rosbag2 bag (a directory with {METADATA_FILE}) under {[str(p) for p in paths]}"
        )
    return sorted(found)


def _bags_under(root: Path) -> Iterable[Path]:
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        here = Path(directory)
        if METADATA_FILE in files:
            subdirectories.clear()  # a bag's directory holds no further bags
            yield here
        elif any(name.endswith(STORAGE_SUFFIXES) for name in files):
            raise BagReadError(
                f"{here}: storage files without {METADATA_FILE}: the recording did not finish. "
                "Repair it with `python -m dp_recorder.recover "
                f"{here}` (or `ros2 bag reindex`), or move it out of the dataset folder"
            )
        subdirectories.sort()


def read_bag_file(path: Path) -> BagFile:
    """The storage and custom data of the bag at ``path``; raises BagReadError."""
    metadata_path = path / METADATA_FILE
    try:
        document = yaml.safe_load(metadata_path.read_text(encoding="utf-8"))
        information = document["rosbag2_bagfile_information"]
        storage = str(information.get("storage_identifier", ""))
        custom = information.get("custom_data") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError) as error:
        raise BagReadError(
            f"{metadata_path}: not a readable rosbag2 metadata file ({error})"
        ) from error
    if not isinstance(custom, dict):
        raise BagReadError(f"{metadata_path}: custom_data must be a mapping")
    return BagFile(
        path=path,
        storage=storage,
        custom_data={str(key): str(value) for key, value in custom.items()},
        digest=bag_digest(path),
    )


def bag_digest(path: Path) -> str:
    """SHA-256 over the names and bytes of the bag's files (metadata and storage), hex."""
    digest = hashlib.sha256()
    files = sorted(
        entry
        for entry in path.iterdir()
        if entry.is_file()
        and not entry.name.startswith(".")
        and not entry.name.endswith(_TRANSIENT_SUFFIXES)
    )
    for entry in files:
        digest.update(entry.name.encode() + b"\0")
        try:
            with open(entry, "rb") as stream:
                file_digest = hashlib.file_digest(stream, "sha256").digest()
        except OSError as error:
            raise BagReadError(f"{entry}: cannot be read ({error})") from error
        digest.update(file_digest)
    return digest.hexdigest()
