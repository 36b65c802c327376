"""From the config's data section to training and validation datasets.

Bags go through the dataset cache (built by rank 0 alone; the other ranks wait for it and then
find it); a zarr replay buffer is read directly. Episodes are split into training and
validation by a seeded random choice, and each side gets its windows and its Dataset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dp_policy.config import PolicyConfig
from dp_policy.data_spec import DataSpec
from dp_policy.datasets.errors import DatasetError, EmptyDatasetError
from dp_policy.datasets.replay_store import ReplayData, identity_mappings, open_replay
from dp_policy.datasets.sampler import Horizons, SequenceSampler, split_episodes
from dp_policy.datasets.torch_dataset import SequenceDataset, normalizer_statistics_data
from dp_policy.training.config import TrainConfig
from dp_policy.training.distributed import DistributedContext

LOGGER = logging.getLogger("dp_policy.train")


@dataclass
class TrainingData:
    """The datasets of a run and where they came from."""

    spec: DataSpec
    replay: ReplayData
    train: SequenceDataset
    val: SequenceDataset | None
    train_episodes: list[int]
    val_episodes: list[int]
    source: dict[str, Any] = field(default_factory=dict)

    def normalizer_data(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Actions ``(N, Da)`` and low-dim observations ``{key: (N, D)}`` of training frames."""
        return normalizer_statistics_data(self.replay, self.spec, self.train_episodes)

    def describe(self) -> dict[str, Any]:
        names = [str(e.get("name", i)) for i, e in enumerate(self.replay.episodes)]
        return {
            **self.source,
            "frames": self.replay.num_frames,
            "episodes": self.replay.num_episodes,
            "train_episodes": [names[i] for i in self.train_episodes],
            "val_episodes": [names[i] for i in self.val_episodes],
            "train_windows": len(self.train),
            "val_windows": len(self.val) if self.val is not None else 0,
        }


def horizons_of(policy: PolicyConfig) -> Horizons:
    horizon = policy.horizon
    return Horizons(
        observation=horizon.observation_horizon,
        prediction=horizon.prediction_horizon,
        action=horizon.action_horizon,
    )


def load_replay(
    config: TrainConfig, spec: DataSpec, context: DistributedContext, show_progress: bool
) -> tuple[ReplayData, dict[str, Any]]:
    """The replay data of the config's source and a description of where it came from."""
    data = config.data
    if data.zarr is not None:
        replay = open_replay(data.zarr.path, spec, data.zarr.keys, in_memory=data.in_memory)
        return replay, {"kind": "zarr", "path": data.zarr.path}
    # Imported here: rosbags is needed for bags only.
    from dp_policy.datasets.cache import DatasetCache

    cache = DatasetCache(data.cache_dir)
    selection = data.selection()

    def build() -> Any:
        return cache.get_or_build(
            data.bags,
            spec,
            selection,
            data.episode_topic,
            show_progress=show_progress and context.is_main,
        )

    if context.is_main:
        try:
            cached = build()
        except BaseException:
            context.broadcast_flag(False)
            raise
        context.broadcast_flag(True)
    else:
        if not context.broadcast_flag(False):
            raise DatasetError("rank 0 could not build the dataset (its error is above)")
        cached = build()
    replay = open_replay(cached.path, spec, identity_mappings(spec), in_memory=data.in_memory)
    source = {
        "kind": "bags",
        "bags": [str(bag.path) for bag in cached.bags],
        "cache": str(cached.path),
        "cache_key": cached.key,
        "cache_hit": cached.hit,
        "hash_seconds": round(cached.hash_seconds, 3),
        "build_seconds": round(cached.build_seconds, 3),
    }
    return replay, source


def prepare_data(
    config: TrainConfig, context: DistributedContext, show_progress: bool = True
) -> TrainingData:
    """Datasets for training and validation; raises DatasetError subclasses on bad input."""
    spec = config.data.load_spec()
    policy = config.policy_config(spec)
    replay, source = load_replay(config, spec, context, show_progress)
    train_episodes, val_episodes = split_episodes(
        replay.num_episodes,
        config.data.val_ratio,
        config.training.seed,
        config.data.max_val_episodes,
    )
    horizons = horizons_of(policy)
    names = [str(e.get("name", f"episode {i}")) for i, e in enumerate(replay.episodes)]
    # Short fragments that a gap cut off were reported when the dataset was built.
    fragments = [i for i, e in enumerate(replay.episodes) if int(e.get("fragments", 1)) > 1]
    train_sampler = SequenceSampler(
        replay.episode_ends,
        horizons,
        train_episodes,
        names,
        skip_short=config.data.skip_short_episodes,
        tolerated_short=fragments,
    )
    for episode, length in train_sampler.skipped:
        LOGGER.warning("episode %s has only %d frame(s): not used", names[episode], length)
    used = {i for i in train_episodes} - {e for e, _ in train_sampler.skipped}
    train_episodes = [i for i in train_episodes if i in used]
    val = None
    if val_episodes:
        try:
            val_sampler = SequenceSampler(
                replay.episode_ends,
                horizons,
                val_episodes,
                names,
                skip_short=config.data.skip_short_episodes,
                tolerated_short=fragments,
            )
            val = SequenceDataset(replay, val_sampler, spec)
        except EmptyDatasetError:
            LOGGER.warning("the validation episodes are all too short: no validation loss")
    return TrainingData(
        spec=spec,
        replay=replay,
        train=SequenceDataset(replay, train_sampler, spec),
        val=val,
        train_episodes=train_episodes,
        val_episodes=val_episodes,
        source=source,
    )
