"""The dataset cache: built once per (bags' content, data spec, selection), reused after.

Each built dataset is a zarr v3 replay buffer (chunked, zstd-compressed) in
``<cache_dir>/<key>.zarr``. The key is a SHA-256 over the format version, the spec, the
episode selection and every bag's content digest (sorted, so folder names and order do not
matter), and the bags are built in digest order, so a key names exactly one content.

A build is written into a temporary directory beside the target and renamed onto it at the
end, so a cache entry either exists complete or not at all: an error, Ctrl-C or a crash leaves
nothing behind that a later run could mistake for a dataset. Two processes building the same
key both succeed; the first rename wins and the other discards its copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dp_policy.data_spec import DataSpec
from dp_policy.datasets.bag_files import BagFile, find_bags, read_bag_file
from dp_policy.datasets.bag_streams import EPISODE_TOPIC
from dp_policy.datasets.builder import BuildReport, DatasetBuilder
from dp_policy.datasets.episodes import EpisodeSelection
from dp_policy.datasets.replay_store import CACHE_FORMAT, CACHE_FORMAT_VERSION

LOGGER = logging.getLogger("dp_policy.datasets")


def default_cache_dir() -> Path:
    """``$DP_POLICY_CACHE`` or ``$XDG_CACHE_HOME/dp_policy/datasets`` (``~/.cache/...``)."""
    if os.environ.get("DP_POLICY_CACHE"):
        return Path(os.environ["DP_POLICY_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dp_policy" / "datasets"


@dataclass(frozen=True)
class CachedDataset:
    """A dataset in the cache: where it is, whether it was there already, what went in."""

    path: Path
    key: str
    hit: bool
    bags: tuple[BagFile, ...]
    report: dict[str, Any]
    hash_seconds: float
    build_seconds: float


def cache_key(
    bags: Sequence[BagFile], spec: DataSpec, selection: EpisodeSelection, episode_topic: str
) -> str:
    """The content key of a dataset (hex SHA-256, see the module docstring)."""
    description = {
        "format": CACHE_FORMAT,
        "format_version": CACHE_FORMAT_VERSION,
        "data_spec": spec.to_dict(),
        "selection": selection.to_dict(),
        "episode_topic": episode_topic,
        "bags": sorted(bag.digest for bag in bags),
    }
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class DatasetCache:
    """Finds or builds the dataset of some bags under ``root``."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def entry(self, key: str) -> Path:
        return self.root / f"{key[:32]}.zarr"

    def get_or_build(
        self,
        bag_paths: Sequence[str | os.PathLike],
        spec: DataSpec,
        selection: EpisodeSelection | None = None,
        episode_topic: str = EPISODE_TOPIC,
        show_progress: bool = True,
    ) -> CachedDataset:
        """The cached dataset of the bags in ``bag_paths``, built first if needed."""
        selection = selection or EpisodeSelection()
        started = time.perf_counter()
        paths = find_bags(bag_paths)
        # hashlib releases the GIL while hashing: bags are fingerprinted on several cores.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            bags = list(pool.map(read_bag_file, paths))
        bags.sort(key=lambda bag: bag.digest)
        hash_seconds = time.perf_counter() - started
        key = cache_key(bags, spec, selection, episode_topic)
        target = self.entry(key)
        if target.is_dir():
            LOGGER.info("dataset cache hit: %s", target)
            report = _read_report(target)
            return CachedDataset(target, key, True, tuple(bags), report, hash_seconds, 0.0)
        LOGGER.info("building the dataset of %d bag(s) into %s", len(bags), target)
        started = time.perf_counter()
        report = self._build(bags, spec, selection, episode_topic, target, key, show_progress)
        return CachedDataset(
            target,
            key,
            False,
            tuple(bags),
            report.to_dict(),
            hash_seconds,
            time.perf_counter() - started,
        )

    def _build(
        self,
        bags: list[BagFile],
        spec: DataSpec,
        selection: EpisodeSelection,
        episode_topic: str,
        target: Path,
        key: str,
        show_progress: bool,
    ) -> BuildReport:
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        builder = DatasetBuilder(spec, selection, episode_topic)
        bar = _progress_bar(len(bags), show_progress)
        try:
            report = builder.build(bags, temporary, progress=lambda _: bar.update(1))
            _write_manifest(temporary, key, bags)
            try:
                os.rename(temporary, target)
            except OSError:
                if not target.is_dir():
                    raise
                LOGGER.info("another process built %s first; using its copy", target)
        finally:
            bar.close()
            shutil.rmtree(temporary, ignore_errors=True)
        LOGGER.info("dataset built: %s", report.summary())
        return report


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="building dataset", unit="bag", disable=not enabled)


def _write_manifest(path: Path, key: str, bags: Sequence[BagFile]) -> None:
    """A readable list of what went into the dataset, beside the zarr metadata."""
    manifest = {
        "key": key,
        "bags": [{"path": str(bag.path), "digest": bag.digest} for bag in bags],
    }
    (path / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _read_report(path: Path) -> dict[str, Any]:
    from dp_policy.datasets.replay_store import _zarr

    try:
        return dict(_zarr().open_group(str(path), mode="r").attrs.get("report") or {})
    except Exception:  # the report is informational; the data is checked when it is opened
        return {}
