"""What an evaluation runs (the protocol) and how (device, processes, batches)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from dp_sim.tasks import TASK_NAMES

POLICY_KINDS = ("diffusion", "expert")
DEVICES = ("auto", "cpu", "cuda")
# The Diffusion Policy paper's PushT protocol.
PAPER_EPISODES = 50
PAPER_START_SEED = 100000
PAPER_MAX_STEPS = 300
# gym-pusht's own threshold: success, and a reward of 1, above this coverage of the goal.
SUCCESS_THRESHOLD = 0.95


def _positive(name: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _non_negative(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


@dataclass(frozen=True)
class EvalConfig:
    """An evaluation run. ``None`` for workers, batch size and threads means automatic."""

    checkpoint: Path | None = None
    policy: str = "diffusion"
    task: str = "pusht"  # the dp_sim.tasks task the episodes run on
    episodes: int = PAPER_EPISODES
    start_seed: int = PAPER_START_SEED
    max_steps: int = PAPER_MAX_STEPS
    latency_steps: int = 0
    action_horizon: int | None = None  # None: the checkpoint's Ta
    num_inference_steps: int | None = None  # None: the checkpoint's (DDIM 10 by default)
    scheduler: str | None = None  # None: the checkpoint's inference scheduler
    noise_seed: int = 0
    device: str = "auto"
    workers: int | None = None
    batch_size: int | None = None
    threads: int | None = None  # torch CPU threads per process
    montage_episodes: int = 6
    montage_frames: int = 6
    progress: bool = True

    def __post_init__(self) -> None:
        if self.policy not in POLICY_KINDS:
            raise ValueError(f"policy must be one of {POLICY_KINDS}, got {self.policy!r}")
        if self.task not in TASK_NAMES:
            raise ValueError(f"task must be one of {TASK_NAMES}, got {self.task!r}")
        if self.policy == "diffusion" and self.checkpoint is None:
            raise ValueError("a diffusion policy evaluation needs a checkpoint directory")
        if self.policy == "expert" and self.checkpoint is not None:
            raise ValueError("the expert takes no checkpoint (leave --checkpoint out)")
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        _positive("episodes", self.episodes)
        _non_negative("start_seed", self.start_seed)
        _positive("max_steps", self.max_steps)
        _non_negative("latency_steps", self.latency_steps)
        _positive("action_horizon", self.action_horizon, allow_none=True)
        _positive("num_inference_steps", self.num_inference_steps, allow_none=True)
        _non_negative("noise_seed", self.noise_seed)
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        _positive("workers", self.workers, allow_none=True)
        _positive("batch_size", self.batch_size, allow_none=True)
        _positive("threads", self.threads, allow_none=True)
        _non_negative("montage_episodes", self.montage_episodes)
        _positive("montage_frames", self.montage_frames)

    @property
    def name(self) -> str:
        """What is evaluated, for titles and directory names."""
        if self.checkpoint is None:
            return "expert"
        return self.checkpoint.resolve().name

    @property
    def seeds(self) -> list[int]:
        return list(range(self.start_seed, self.start_seed + self.episodes))

    @property
    def montage_seeds(self) -> frozenset[int]:
        return frozenset(self.seeds[: self.montage_episodes])


@dataclass(frozen=True)
class ExecutionPlan:
    """How the episodes are spread: ``workers`` processes, each running its share of the
    episodes in lockstep groups of ``batch_size`` with ``threads`` torch CPU threads."""

    device: str
    workers: int
    batch_size: int
    threads: int

    def shares(self, seeds: list[int]) -> list[list[int]]:
        """Contiguous, nearly equal shares of the seeds, one per worker."""
        size, extra = divmod(len(seeds), self.workers)
        shares, start = [], 0
        for index in range(self.workers):
            end = start + size + (1 if index < extra else 0)
            shares.append(seeds[start:end])
            start = end
        return [share for share in shares if share]


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested, but torch sees no CUDA device")
    return requested


# Each worker holds a model copy (about 1 GB for the paper's image network): bound the count.
MAX_AUTO_WORKERS = 8


def plan_execution(config: EvalConfig, cpu_count: int | None = None) -> ExecutionPlan:
    """Fill in the automatic settings (EVALUATION.md, "Parallelism", has the measurements).

    One worker process per core (at most MAX_AUTO_WORKERS), each owning its environments and a
    model copy, each running its share of the episodes in lockstep so that one batched call
    samples all their chunks: batching shares every read of the weights, which bounds a
    U-Net's speed on a CPU (a batch of 50 costs about 8 times less per episode than one at a
    time), and one process per core also spreads the physics and rendering, which bound the
    expert and, on a GPU, the policy too. One torch thread per process: OpenMP threads that
    wait for each other at every operation lose to separate processes, badly so on a machine
    that is busy with anything else.
    """
    cpus = cpu_count or os.cpu_count() or 1
    device = "cpu" if config.policy == "expert" else resolve_device(config.device)
    workers = config.workers or min(cpus, MAX_AUTO_WORKERS)
    workers = min(workers, config.episodes)
    per_worker = math.ceil(config.episodes / workers)
    batch_size = min(config.batch_size or per_worker, per_worker)
    threads = config.threads or max(1, cpus // workers)
    return ExecutionPlan(device=device, workers=workers, batch_size=batch_size, threads=threads)
