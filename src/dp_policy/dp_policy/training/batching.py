"""Batches of window indices: shuffled per epoch from the seed, sharded over ranks, resumable.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` alone (like
``DistributedSampler``), so a run resumed at (epoch, batch) sees exactly the batches the
uninterrupted run would have seen, and no sampler state needs saving.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Yields lists of ``batch_size`` dataset indices for this rank, epoch by epoch."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        pad: bool = True,
    ) -> None:
        """``pad``: wrap the data so every rank gets as many indices (training, where ranks
        step together); validation leaves it off, so no window is counted twice."""
        if size < 1:
            raise ValueError("EpochBatchSampler: the dataset is empty")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.pad = pad
        self.epoch = 0
        self.start_batch = 0

    @property
    def per_rank(self) -> int:
        """Indices of this rank in an epoch."""
        if self.pad:
            return -(-self.size // self.world_size)
        return len(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        """Batches per epoch (a dataset smaller than one batch still gives one)."""
        if self.drop_last and self.per_rank >= self.batch_size:
            return self.per_rank // self.batch_size
        return -(-self.per_rank // self.batch_size) if self.per_rank else 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The epoch to draw next, and how many of its batches were done already."""
        self.epoch = epoch
        self.start_batch = start_batch

    def _rank_indices(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        if not self.pad:
            return order[self.rank :: self.world_size]
        total = self.per_rank * self.world_size
        if total > self.size:
            order = torch.cat([order, order[: total - self.size]])
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        indices = self._rank_indices().tolist()
        for batch in range(self.start_batch, len(self)):
            chunk = indices[batch * self.batch_size : (batch + 1) * self.batch_size]
            if chunk:
                yield chunk
