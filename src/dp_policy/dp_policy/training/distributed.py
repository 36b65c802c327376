"""One process or many: the device, the rank and the collectives training needs.

``torchrun --nproc_per_node N -m dp_policy.train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK;
then every process joins a process group (NCCL on GPUs, gloo on CPUs), takes the GPU of its
local rank, and trains on its share of each epoch. Without torchrun, the same code runs as a
world of one, so nothing changes for a single-GPU user.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from dp_policy.training.config import ConfigError


@dataclass
class DistributedContext:
    """This process's place in the job and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and the dataset cache."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks of a float64 tensor (returned on the CPU)."""
        if not self.distributed:
            return values
        reduced = values.to(self._collective_device())
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced.cpu()

    def all_gather_bytes(self, payload: torch.Tensor) -> list[torch.Tensor]:
        """A uint8 tensor of the same length from every rank (for RNG states), on the CPU."""
        if not self.distributed:
            return [payload]
        local = payload.to(self._collective_device())
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        return [tensor.cpu() for tensor in gathered]

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (an error on rank 0 stops the others too)."""
        if not self.distributed:
            return flag
        value = torch.tensor(
            [1 if flag else 0], dtype=torch.int64, device=self._collective_device()
        )
        dist.broadcast(value, src=0)
        return bool(value.item())

    def _collective_device(self) -> torch.device:
        # NCCL moves CUDA tensors only; gloo moves CPU tensors.
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU."""
    if name == "auto":
        return (
            torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        )
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"training.device {name!r}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str) -> DistributedContext:
    """Join the torchrun job if there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            # A rank that dies mid-step must not leave the others waiting for ever.
            timeout=datetime.timedelta(minutes=30),
        )
    return DistributedContext(rank, world_size, local_rank, device)
