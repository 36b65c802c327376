"""Bags -> aligned episodes -> a replay buffer: the dataset builder.

For each bag (in content order, so a build depends only on what the bags hold): read the
spec's streams (pass 1), cut episodes by EpisodeEvent, skip the ones the selection rejects,
align every kept episode on the dt grid (gaps reported and their frames dropped; a gap splits
the episode into fragments), decode the picked images (pass 2) and append each fragment to
the replay buffer as one episode.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dp_policy.data_spec import DataSpec
from dp_policy.datasets.alignment import (
    FrameReport,
    latest_at_or_before,
    reference_grid,
    valid_runs,
)
from dp_policy.datasets.bag_files import BagFile
from dp_policy.datasets.bag_streams import EPISODE_TOPIC, BagContents, BagStreamReader, StreamData
from dp_policy.datasets.episodes import EpisodeSegment, EpisodeSelection, cut_episodes
from dp_policy.datasets.errors import EmptyDatasetError
from dp_policy.datasets.replay_store import ReplayWriter
from dp_policy.datasets.trajectory import evaluate_commands

LOGGER = logging.getLogger("dp_policy.datasets")


@dataclass
class EpisodeReport:
    """One episode of a bag: used or skipped, and what alignment did to it."""

    bag: str
    name: str
    outcome: str
    task: str
    skipped: str | None = None
    frames: int = 0
    fragments: int = 0
    alignment: FrameReport | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "bag": self.bag,
            "name": self.name,
            "outcome": self.outcome,
            "task": self.task,
            "frames": self.frames,
            "fragments": self.fragments,
        }
        if self.skipped:
            data["skipped"] = self.skipped
        if self.alignment is not None:
            data["alignment"] = self.alignment.to_dict()
        return data


@dataclass
class BuildReport:
    """Everything a build used, skipped and dropped."""

    bags: int = 0
    frames: int = 0
    episodes: list[EpisodeReport] = field(default_factory=list)
    skipped_messages: dict[str, int] = field(default_factory=dict)
    time_sources: dict[str, str] = field(default_factory=dict)

    @property
    def used(self) -> list[EpisodeReport]:
        return [episode for episode in self.episodes if not episode.skipped]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bags": self.bags,
            "frames": self.frames,
            "episodes_used": len(self.used),
            "episodes_skipped": len(self.episodes) - len(self.used),
            "skipped_messages": dict(self.skipped_messages),
            "time_sources": dict(self.time_sources),
            "episodes": [episode.to_dict() for episode in self.episodes],
        }

    def summary(self) -> str:
        dropped = sum(e.alignment.dropped for e in self.used if e.alignment)
        gaps = sum(len(e.alignment.gaps) for e in self.used if e.alignment)
        return (
            f"{self.bags} bag(s), {len(self.used)} episode(s) used, "
            f"{len(self.episodes) - len(self.used)} skipped, {self.frames} frames "
            f"({dropped} dropped by alignment, {gaps} gap(s))"
        )


class DatasetBuilder:
    """Turns bags into a replay buffer following a data spec and an episode selection."""

    def __init__(
        self,
        spec: DataSpec,
        selection: EpisodeSelection | None = None,
        episode_topic: str = EPISODE_TOPIC,
    ) -> None:
        self.spec = spec
        self.selection = selection or EpisodeSelection()
        self.episode_topic = episode_topic
        self.dt_ns = round(spec.dt * 1e9)

    def array_layout(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Frame shape and dtype of each ``data/`` array of the buffer."""
        layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for stream in self.spec.streams:
            if stream.kind == "image":
                layout[stream.key] = (tuple(stream.shape), np.dtype(np.uint8))
            else:
                layout[stream.key] = ((stream.size,), np.dtype(np.float64))
        return layout

    def build(
        self,
        bags: Sequence[BagFile],
        output: str | os.PathLike,
        progress: Callable[[BagFile], None] | None = None,
    ) -> BuildReport:
        """Write the buffer at ``output``; raises DatasetError subclasses on bad input."""
        report = BuildReport(bags=len(bags))
        writer = ReplayWriter(output, self.array_layout())
        for bag in bags:
            self._add_bag(bag, writer, report)
            if progress is not None:
                progress(bag)
        if writer.frames == 0:
            raise EmptyDatasetError(self._empty_message(report))
        report.frames = writer.frames
        writer.close(
            {
                "data_spec": self.spec.to_dict(),
                "selection": self.selection.to_dict(),
                "episodes": self._episode_descriptions(report),
                "report": report.to_dict(),
            }
        )
        return report

    def _empty_message(self, report: BuildReport) -> str:
        if not report.episodes:
            return "the bags hold no episode"
        reasons = sorted({e.skipped or "no frame left after alignment" for e in report.episodes})
        return (
            f"no frame to train on: all {len(report.episodes)} episode(s) of {report.bags} "
            f"bag(s) were skipped or lost every frame to alignment ({'; '.join(reasons)})"
        )

    def _episode_descriptions(self, report: BuildReport) -> list[dict[str, Any]]:
        described = []
        for episode in report.used:
            for fragment in range(episode.fragments):
                described.append(
                    {
                        "name": episode.name,
                        "bag": episode.bag,
                        "fragment": fragment,
                        "fragments": episode.fragments,
                        "outcome": episode.outcome,
                        "task": episode.task,
                    }
                )
        return described

    def _add_bag(self, bag: BagFile, writer: ReplayWriter, report: BuildReport) -> None:
        with BagStreamReader(bag, self.spec, self.episode_topic) as reader:
            contents = reader.read_index()
            for key, count in contents.skipped_messages.items():
                report.skipped_messages[key] = report.skipped_messages.get(key, 0) + count
                LOGGER.warning("%s: %d unusable message(s) on %s skipped", bag.path, count, key)
            for key, data in contents.streams.items():
                if data.time_source == "receive" and data.spec.kind != "joint_trajectory":
                    report.time_sources[key] = "receive"
            pending: list[tuple[EpisodeReport, list[dict[str, np.ndarray]]]] = []
            for segment in cut_episodes(contents.events, bag.custom_data, bag.name):
                episode = EpisodeReport(bag.name, segment.name, segment.outcome, segment.task)
                report.episodes.append(episode)
                episode.skipped = self.selection.rejects(segment)
                if episode.skipped:
                    LOGGER.info(
                        "%s: episode %s skipped: %s", bag.path, segment.name, episode.skipped
                    )
                    continue
                fragments = self._align(contents, segment, episode)
                pending.append((episode, fragments))
            self._decode_images(reader, contents, pending)
        for _, fragments in pending:
            for fragment in fragments:
                times = fragment.pop("__time__")
                writer.add_episode(times, fragment)

    def _align(
        self, contents: BagContents, segment: EpisodeSegment, episode: EpisodeReport
    ) -> list[dict[str, np.ndarray]]:
        """Fragments of one episode: frame times and, per key, values or image ordinals."""
        reference = contents.streams[self.spec.reference]
        inside = _inside(reference.times_ns, segment)
        frame_ns, _, reference_ok = reference_grid(reference.times_ns[inside], self.dt_ns)
        validity = {self.spec.reference: reference_ok}
        picked: dict[str, np.ndarray] = {}
        for key, data in contents.streams.items():
            max_age_ns = round(self.spec.max_age_of(data.spec) * 1e9)
            if data.spec.kind == "joint_trajectory":
                values, valid = evaluate_commands(
                    data.commands or [], frame_ns, max_age_ns, data.spec.size
                )
                picked[key] = values
            elif data.times_ns.size == 0:
                valid = np.zeros(frame_ns.size, dtype=bool)
                picked[key] = _placeholder(data, frame_ns.size)
            else:
                # Messages from before the episode's start count too: a joint state read 5 ms
                # before the first image is still the state at that image.
                index, valid = latest_at_or_before(data.times_ns, frame_ns, max_age_ns)
                if data.spec.kind == "image":
                    assert data.ordinals is not None
                    picked[key] = data.ordinals[index]
                else:
                    assert data.values is not None
                    picked[key] = data.values[index]
            if key == self.spec.reference:
                valid = valid & reference_ok
            validity[key] = valid
        runs, alignment = valid_runs(frame_ns, validity)
        episode.alignment = alignment
        for gap in alignment.gaps:
            LOGGER.warning(
                "%s: episode %s: gap of %d frame(s) at %.3f s (stale: %s); the episode is split",
                contents.bag.path,
                episode.name,
                gap.frames,
                gap.time_ns * 1e-9,
                ", ".join(gap.streams),
            )
        fragments = []
        for start, stop in runs:
            fragment = {key: values[start:stop] for key, values in picked.items()}
            fragment["__time__"] = frame_ns[start:stop]
            fragments.append(fragment)
        episode.frames = sum(stop - start for start, stop in runs)
        episode.fragments = len(runs)
        if not runs:
            episode.skipped = (
                f"no frame where every stream is fresh ({alignment.grid_frames} grid frames)"
            )
            LOGGER.warning("%s: episode %s: %s", contents.bag.path, episode.name, episode.skipped)
        return fragments

    def _decode_images(
        self,
        reader: BagStreamReader,
        contents: BagContents,
        pending: list[tuple[EpisodeReport, list[dict[str, np.ndarray]]]],
    ) -> None:
        """Replace image ordinals by the decoded images ``(T, C, H, W)``, one read per topic."""
        for key, data in contents.streams.items():
            if data.spec.kind != "image":
                continue
            ordinals = [f[key] for _, fragments in pending for f in fragments]
            if not ordinals:
                continue
            images = reader.decode_images(data.spec, np.concatenate(ordinals))
            for _, fragments in pending:
                for fragment in fragments:
                    fragment[key] = np.stack([images[int(o)] for o in fragment[key]])


def _placeholder(data: StreamData, frames: int) -> np.ndarray:
    if data.spec.kind == "image":
        return np.zeros(frames, dtype=np.int64)
    return np.full((frames, data.spec.size), np.nan)


def _inside(times_ns: np.ndarray, segment: EpisodeSegment) -> np.ndarray:
    mask = np.ones(times_ns.shape, dtype=bool)
    if segment.start_ns is not None:
        mask &= times_ns >= segment.start_ns
    if segment.end_ns is not None:
        mask &= times_ns <= segment.end_ns
    return mask


__all__ = ["BuildReport", "DatasetBuilder", "EpisodeReport"]
