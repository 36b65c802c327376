"""The torch Dataset of training windows, fetched a whole batch at a time.

``__getitems__`` gathers a batch with one fancy index per key (rows from
``SequenceSampler.frame_indices``) instead of stacking samples one by one, which is what makes
the data side cheap next to the model; DataLoader uses it when given a batch sampler and
``collate_batch`` as its collate function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dp_policy.data_spec import DataSpec
from dp_policy.datasets.replay_store import ReplayData
from dp_policy.datasets.sampler import SequenceSampler

Batch = dict[str, Any]


def _actions(replay: ReplayData, keys: Sequence[str], rows: np.ndarray) -> np.ndarray:
    """The action vector at ``rows``: the action streams' values side by side, in spec order."""
    if len(keys) == 1:
        return replay.arrays[keys[0]][rows]
    return np.concatenate([np.asarray(replay.arrays[key][rows]) for key in keys], axis=-1)


def collate_batch(batch: Batch) -> Batch:
    """The DataLoader collate function for SequenceDataset: the batch is collated already."""
    return batch


class SequenceDataset(Dataset):
    """Training windows: ``{"obs": {key: (B, To, ...)}, "action": (B, Tp, Da)}``.

    Images come as uint8 ``(B, To, C, H, W)`` (the policy scales them; a quarter of the bytes
    to move to the GPU), low-dim observations and actions as float32 in their own units.
    """

    def __init__(self, replay: ReplayData, sampler: SequenceSampler, spec: DataSpec) -> None:
        self.replay = replay
        self.sampler = sampler
        self.observation_keys = tuple(stream.key for stream in spec.observations)
        self.action_keys = spec.action_keys
        self.horizons = sampler.horizons

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        windows = np.asarray(indices, dtype=np.int64)
        rows = self.sampler.frame_indices(windows)
        observation_rows = rows[:, : self.horizons.observation]
        observations = {
            key: torch.from_numpy(np.ascontiguousarray(self.replay.arrays[key][observation_rows]))
            for key in self.observation_keys
        }
        action = _actions(self.replay, self.action_keys, rows)
        return {
            "obs": observations,
            "action": torch.from_numpy(np.ascontiguousarray(action, dtype=np.float32)),
        }

    def __getitem__(self, index: int) -> Batch:
        batch = self.__getitems__([index])
        return {
            "obs": {key: value[0] for key, value in batch["obs"].items()},
            "action": batch["action"][0],
        }


def normalizer_statistics_data(
    replay: ReplayData, spec: DataSpec, episodes: Sequence[int]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every action ``(N, Da)`` and low-dim observation ``{key: (N, D)}`` of ``episodes``.

    Min-max statistics of all frames equal those of all padded windows (padding repeats
    frames), so the normalizer is fitted on frames directly.
    """
    rows = np.concatenate([np.arange(*replay.episode_bounds(e)) for e in episodes])
    actions = np.asarray(_actions(replay, spec.action_keys, rows), dtype=np.float64)
    low_dim = {
        stream.key: np.asarray(replay.arrays[stream.key][rows], dtype=np.float64)
        for stream in spec.observations
        if stream.kind != "image"
    }
    return actions, low_dim
