"""The training loop: AdamW, warm-up + cosine schedule, clipping, EMA, AMP, DDP, checkpoints.

One ``Trainer`` per process. Every rank computes the loss of its share of the batch; DDP
averages the gradients; each rank applies the same update, so weights stay identical. Rank 0
alone logs (progress bar, TensorBoard, metrics.jsonl) and writes checkpoints:

    <output_dir>/checkpoints/step_<N>/   served checkpoint (EMA weights, spec) + training_state/
    <output_dir>/checkpoints/latest      symbolic link to the newest step_<N>
    <output_dir>/checkpoints/best/       served checkpoint of the lowest validation loss

Each checkpoint is written into a temporary directory and renamed, so none is ever half
written. Validation uses the EMA weights (what is served), with a fixed noise seed so that
its losses compare across the run and it does not disturb the training RNG.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dp_policy.checkpoint import save_checkpoint
from dp_policy.data_spec import data_spec_metadata
from dp_policy.datasets.torch_dataset import SequenceDataset, collate_batch
from dp_policy.ema import PolicyEMA
from dp_policy.policy import DiffusionPolicy
from dp_policy.training.batching import EpochBatchSampler
from dp_policy.training.budget import TrainingBudget, budget_lr_lambda, format_duration
from dp_policy.training.config import OptimizerConfig, TrainConfig
from dp_policy.training.data import TrainingData
from dp_policy.training.distributed import DistributedContext
from dp_policy.training.metrics import LOSS_CURVE_FILE, MetricsLog, plot_loss_curve
from dp_policy.training.state import (
    Progress,
    TrainingStateError,
    has_training_state,
    load_training_state,
    rng_state,
    save_training_state,
    set_rng_state,
)

LOGGER = logging.getLogger("dp_policy.train")
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
BEST = "best"
# Validation draws its noise from this seed (offset from the run's), the same every time.
_VALIDATION_SEED_OFFSET = 1_000_003


@dataclass
class TrainResult:
    """What a run produced: its checkpoints and the loss of every step it trained."""

    step: int
    latest_checkpoint: Path | None
    best_checkpoint: Path | None
    losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    samples_per_second: float = 0.0


class LossModule(nn.Module):
    """``forward(batch) -> loss``: what DDP wraps, so its gradient hooks see every step."""

    def __init__(self, policy: DiffusionPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.policy.compute_loss(batch)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {
        "obs": {k: v.to(device, non_blocking=non_blocking) for k, v in batch["obs"].items()},
        "action": batch["action"].to(device, non_blocking=non_blocking),
    }


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: ``auto`` is bf16 on a GPU that has it, full precision elsewhere."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


# The step count of a run limited by its time budget alone.
UNLIMITED_STEPS = 2**62


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The step limit; ``UNLIMITED_STEPS`` when only ``max_time`` limits the run."""
    run = config.training
    limits = []
    if run.max_steps is not None:
        limits.append(run.max_steps)
    if run.num_epochs is not None:
        limits.append(run.num_epochs * steps_per_epoch)
    return min(limits) if limits else UNLIMITED_STEPS


def make_optimizer(policy: nn.Module, config: OptimizerConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        policy.parameters(),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    config: OptimizerConfig,
    steps: int,
    budget_fraction: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero at ``steps`` (or constant).

    With ``budget_fraction`` (the share of a time budget used, in [0, 1]) the cosine follows
    whichever ends first, the steps or the budget.
    """
    from diffusers.optimization import get_scheduler

    if budget_fraction is not None:
        limited = steps < UNLIMITED_STEPS
        schedule = {"step": 0}

        def fraction() -> float:
            by_steps = schedule["step"] / steps if limited else 0.0
            return max(by_steps, budget_fraction())

        factor = budget_lr_lambda(config.warmup_steps, config.lr_schedule, fraction)

        def lr_lambda(step: int) -> float:
            schedule["step"] = step
            return factor(step)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    name = "cosine" if config.lr_schedule == "cosine" else "constant_with_warmup"
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=min(config.warmup_steps, steps),
        num_training_steps=steps,
    )


class OptimizationStep:
    """One training step: loss under autocast, backward, clipping, AdamW, schedule, EMA.

    Shared by the Trainer and ``bench/train_throughput.py``, so the benchmark times exactly
    what training runs.
    """

    def __init__(
        self,
        policy: DiffusionPolicy,
        loss_module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        ema: PolicyEMA,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        grad_clip_norm: float | None,
    ) -> None:
        self.policy = policy
        self.loss_module = loss_module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.ema = ema
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.grad_clip_norm = grad_clip_norm
        # fp16 needs loss scaling; bf16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def __call__(self, batch: dict[str, Any]) -> torch.Tensor:
        """Train on ``batch`` (host or device tensors); returns the loss, not synchronised."""
        batch = _to_device(batch, self.device)
        with self.autocast():
            loss = self.loss_module(batch)
        self.optimizer.zero_grad(set_to_none=True)
        clip = self.grad_clip_norm
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            if clip is not None:
                nn.utils.clip_grad_norm_(self.policy.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(self.policy.parameters(), clip)
            self.optimizer.step()
        self.scheduler.step()
        self.ema.step(self.policy)
        return loss


class Trainer:
    """Trains one policy on ``data`` as configured; ``run`` does it all."""

    def __init__(
        self,
        config: TrainConfig,
        data: TrainingData,
        context: DistributedContext,
        output_dir: Path,
        started_at: float | None = None,
    ) -> None:
        """``started_at``: ``time.monotonic()`` when the run began (the train command's start,
        so that a time budget counts dataset building); now by default."""
        self.config = config
        self.started_at = time.monotonic() if started_at is None else started_at
        # Wall clock spent by earlier processes of this run (set on resume).
        self.clock_before = 0.0
        self.data = data
        self.context = context
        self.output_dir = output_dir
        self.device = context.device
        run = config.training
        self._configure_backends(run.deterministic)
        seed_everything(run.seed)
        self.policy_config = config.policy_config(data.spec)
        # Same initial weights on every rank (DDP also broadcasts rank 0's at wrapping).
        self.policy = DiffusionPolicy(self.policy_config)
        actions, low_dim = data.normalizer_data()
        self.policy.fit_normalizer(actions, low_dim)
        self.policy.to(self.device)
        self.ema = PolicyEMA(self.policy)
        self.optimizer = make_optimizer(self.policy, config.optimizer)
        self.train_sampler = EpochBatchSampler(
            len(data.train),
            run.batch_size,
            seed=run.seed,
            rank=context.rank,
            world_size=context.world_size,
        )
        self.steps_per_epoch = len(self.train_sampler)
        self.total_steps = total_steps(config, self.steps_per_epoch)
        self.budget: TrainingBudget | None = None
        # Rank 0's share of the budget used, the same on every rank (the LR depends on it).
        self._budget_fraction = 0.0
        if run.max_time_s is not None:
            self.budget = TrainingBudget(run.max_time_s, start=self.started_at)
        self.scheduler = make_scheduler(
            self.optimizer,
            config.optimizer,
            self.total_steps,
            None if self.budget is None else (lambda: self._budget_fraction),
        )
        self.loss_module: nn.Module = LossModule(self.policy)
        if context.distributed:
            self.loss_module = DistributedDataParallel(
                self.loss_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.step = OptimizationStep(
            self.policy,
            self.loss_module,
            self.optimizer,
            self.scheduler,
            self.ema,
            self.device,
            resolve_precision(run.mixed_precision, self.device),
            config.optimizer.grad_clip_norm,
        )
        self.progress = Progress(total_steps=self.total_steps)
        self.checkpoint_root = output_dir / CHECKPOINT_DIR
        self._timings: dict[str, float] = {}
        self._last_time_checkpoint = time.monotonic()

    # -- set-up ----------------------------------------------------------------------------

    def _configure_backends(self, deterministic: bool) -> None:
        # CPU kernels are repeatable as they are; this asks the same of GPU kernels (slower).
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = not deterministic
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _loader(self, dataset: SequenceDataset, sampler: EpochBatchSampler) -> DataLoader:
        workers = self.config.training.num_workers
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_batch,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            # A generator of its own: otherwise every new iterator draws its worker seed from
            # the global RNG, and a resumed run would drift from an uninterrupted one.
            generator=torch.Generator().manual_seed(self.config.training.seed),
        )

    # -- resume ----------------------------------------------------------------------------

    def resume_from(self, checkpoint: Path) -> None:
        """Continue from a periodic checkpoint: weights, optimiser, schedule, EMA, RNG, data."""
        if not has_training_state(checkpoint):
            raise TrainingStateError(
                f"{checkpoint}: no training state (only periodic checkpoints step_<N> can be "
                "resumed from; 'best' holds the served weights only)"
            )
        from dp_policy.checkpoint import read_checkpoint_manifest

        manifest = read_checkpoint_manifest(checkpoint)
        if manifest["policy_config"] != self.policy_config.to_dict():
            raise TrainingStateError(
                f"{checkpoint}: was trained with another policy configuration (architecture, "
                "horizons or data spec); resume with the config it was trained with"
            )
        progress, rng_states = load_training_state(
            checkpoint, self.policy, self.optimizer, self.scheduler, self.ema, self.device
        )
        if progress.total_steps != self.total_steps:
            LOGGER.warning(
                "resuming a run of %d steps as a run of %d: the learning-rate schedule changes",
                progress.total_steps,
                self.total_steps,
            )
            progress.total_steps = self.total_steps
        self.progress = progress
        self.clock_before = float(progress.extra.get("wall_clock_s", 0.0))
        if self.budget is not None:
            self.budget = TrainingBudget(
                self.budget.seconds, start=self.started_at, used_before=self.clock_before
            )
        if len(rng_states) == self.context.world_size:
            set_rng_state(rng_states[self.context.rank], self.device)
        else:
            LOGGER.warning(
                "the checkpoint was written by %d process(es), this run has %d: random numbers "
                "are reseeded, so the run is not a bit-exact continuation",
                len(rng_states),
                self.context.world_size,
            )
            seed_everything(self.config.training.seed + progress.step + self.context.rank)
        LOGGER.info(
            "resumed from %s at step %d (epoch %d)", checkpoint, progress.step, progress.epoch
        )

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train to ``total_steps``; returns the result (rank 0's view)."""
        context, run = self.context, self.config.training
        if self.progress.step == 0:
            # Ranks draw different noise and crops from here on.
            torch.manual_seed(run.seed + 7919 * context.rank)
        resumed_at = self.progress.step if self.progress.step > 0 else None
        writer = metrics = bar = None
        if context.is_main:
            from torch.utils.tensorboard import SummaryWriter
            from tqdm import tqdm

            writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=resumed_at)
            metrics = MetricsLog(self.output_dir, resumed_at)
            bar = tqdm(
                total=self.total_steps if self.total_steps < UNLIMITED_STEPS else None,
                initial=self.progress.step,
                desc="training",
                unit="step",
                disable=not run.progress_bar,
                dynamic_ncols=True,
            )
        loader = self._loader(self.data.train, self.train_sampler)
        result = TrainResult(step=self.progress.step, latest_checkpoint=None, best_checkpoint=None)
        interval_losses: list[torch.Tensor] = []
        interval_start = time.perf_counter()
        interval_steps = 0
        run_start, run_start_step = time.perf_counter(), self.progress.step
        last_validated = -1
        out_of_time = False
        if self.budget is not None:
            self.budget.start_loop()
            if context.is_main:
                LOGGER.info(
                    "time budget %s: %s used before the first step (dataset, set-up)",
                    format_duration(self.budget.seconds),
                    format_duration(self.budget.used()),
                )
        self._last_time_checkpoint = time.monotonic()
        self.loss_module.train()
        try:
            while self.progress.step < self.total_steps and not out_of_time:
                self.train_sampler.set_epoch(self.progress.epoch, self.progress.batch_in_epoch)
                for batch in loader:
                    step_started = time.monotonic()
                    loss = self.step(batch)
                    interval_losses.append(loss.detach())
                    interval_steps += 1
                    self.progress.step += 1
                    self.progress.batch_in_epoch += 1
                    step = self.progress.step
                    if bar is not None:
                        bar.update(1)
                    if step % run.log_every_steps == 0 or step == self.total_steps:
                        elapsed = time.perf_counter() - interval_start
                        self._log_interval(
                            interval_losses, interval_steps, elapsed, writer, metrics, bar, result
                        )
                        interval_losses, interval_steps = [], 0
                        interval_start = time.perf_counter()
                    if run.val_every_steps is not None and step % run.val_every_steps == 0:
                        self._validate_and_keep_best(writer, metrics, result)
                        last_validated = step
                    out_of_time, checkpoint_due = self._clock_decisions(
                        time.monotonic() - step_started
                    )
                    finishing = step >= self.total_steps or out_of_time
                    if not finishing and (step % run.checkpoint_every_steps == 0 or checkpoint_due):
                        result.latest_checkpoint = self._save_periodic()
                    if finishing:
                        break
                else:
                    self.progress.epoch += 1
                    self.progress.batch_in_epoch = 0
                    if run.val_every_steps is None:
                        self._validate_and_keep_best(writer, metrics, result)
                        last_validated = self.progress.step
            if out_of_time and context.is_main:
                LOGGER.info(
                    "time budget used (%s) at step %d: validating and writing the last checkpoint",
                    format_duration(self.budget.used()),
                    self.progress.step,
                )
            if interval_losses:
                elapsed = time.perf_counter() - interval_start
                self._log_interval(
                    interval_losses, interval_steps, elapsed, writer, metrics, bar, result
                )
            if last_validated != self.progress.step:
                self._validate_and_keep_best(writer, metrics, result)
            result.latest_checkpoint = self._save_periodic()
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        elapsed = time.perf_counter() - run_start
        trained = self.progress.step - run_start_step
        result.step = self.progress.step
        result.samples_per_second = (
            trained * run.batch_size * context.world_size / elapsed if elapsed > 0 else 0.0
        )
        if context.is_main:
            best = self.checkpoint_root / BEST
            result.best_checkpoint = best if best.is_dir() else None
            plot_loss_curve(self.output_dir / "metrics.jsonl", self.output_dir / LOSS_CURVE_FILE)
        return result

    def wall_clock(self) -> float:
        """Seconds this run has used: earlier processes (resume) and this one since its start."""
        return self.clock_before + time.monotonic() - self.started_at

    def _clock_decisions(self, step_seconds: float) -> tuple[bool, bool]:
        """(stop for the budget, write a timed checkpoint), decided by rank 0 for every rank.

        Also shares rank 0's budget fraction, which the learning rate follows: ranks must
        apply the same update.
        """
        run = self.config.training
        every = run.checkpoint_every_s
        if self.budget is None and every is None:
            return False, False
        values = torch.zeros(3, dtype=torch.float64)
        if self.context.is_main:
            now = time.monotonic()
            if self.budget is not None:
                # Keep one more step, the final validation and the last checkpoint in hand.
                # The end validates, may save "best", and saves the last step_<N>.
                self.budget.keep_in_hand(
                    self._timings.get("validate", 0.0) + 2.0 * self._timings.get("save", 0.0)
                )
                values[0] = self.budget.fraction()
                values[1] = float(self.budget.exhausted(step_seconds))
            if every is not None and now - self._last_time_checkpoint >= every:
                values[2] = 1.0
        values = self.context.all_reduce_sum(values)
        self._budget_fraction = float(values[0])
        due = bool(values[2] > 0)
        if due:
            self._last_time_checkpoint = time.monotonic()
        return bool(values[1] > 0), due

    def _timed(self, what: str, action: Callable[[], Any]) -> Any:
        """Runs ``action``, keeping the longest time it took (for the budget's reserve)."""
        started = time.monotonic()
        try:
            return action()
        finally:
            elapsed = time.monotonic() - started
            self._timings[what] = max(self._timings.get(what, 0.0), elapsed)

    def _log_interval(
        self,
        losses: list[torch.Tensor],
        steps: int,
        elapsed: float,
        writer: Any,
        metrics: MetricsLog | None,
        bar: Any,
        result: TrainResult,
    ) -> None:
        # One device sync per interval, not per step; the loss is averaged over ranks.
        local = torch.stack(losses).float().cpu().double()
        result.losses.extend(local.tolist())
        summed = self.context.all_reduce_sum(
            torch.tensor([local.sum().item(), float(local.numel())], dtype=torch.float64)
        )
        loss = float(summed[0] / summed[1])
        if not self.context.is_main:
            return
        samples = steps * self.config.training.batch_size * self.context.world_size
        speed = samples / elapsed if elapsed > 0 else 0.0
        lr = self.scheduler.get_last_lr()[0]
        step = self.progress.step
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/lr", lr, step)
        writer.add_scalar("train/samples_per_s", speed, step)
        if self.ema.decay is not None:
            writer.add_scalar("train/ema_decay", self.ema.decay, step)
        metrics.write(
            {
                "step": step,
                "loss": loss,
                "lr": lr,
                "samples_per_s": speed,
                "wall_clock_s": round(self.wall_clock(), 3),
            }
        )
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{speed:.1f}", refresh=False)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"the training loss is {loss} at step {step}: lower optimizer.lr, keep "
                "optimizer.grad_clip_norm, or check the data for extreme values"
            )

    # -- validation ------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean denoising loss of the EMA weights on the validation windows (all ranks)."""
        if self.data.val is None:
            return None
        sampler = EpochBatchSampler(
            len(self.data.val),
            self.config.training.batch_size,
            rank=self.context.rank,
            world_size=self.context.world_size,
            shuffle=False,
            drop_last=False,
            pad=False,
        )
        averaged = self.ema.averaged_policy(self.policy)
        devices = [self.device] if self.device.type == "cuda" else []
        total = torch.zeros(2, dtype=torch.float64)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(
                self.config.training.seed + _VALIDATION_SEED_OFFSET + self.context.rank
            )
            for batch in self._loader(self.data.val, sampler):
                batch = _to_device(batch, self.device)
                with self.step.autocast():
                    loss = averaged.compute_loss(batch)
                count = batch["action"].shape[0]
                total += torch.tensor([float(loss) * count, count], dtype=torch.float64)
        del averaged
        total = self.context.all_reduce_sum(total)
        return float(total[0] / total[1]) if total[1] > 0 else None

    def _validate_and_keep_best(
        self, writer: Any, metrics: MetricsLog | None, result: TrainResult
    ) -> None:
        val_loss = self._timed("validate", self.validate)
        if val_loss is None:
            return
        step = self.progress.step
        result.val_losses.append((step, val_loss))
        if not self.context.is_main:
            return
        writer.add_scalar("val/loss", val_loss, step)
        metrics.write({"step": step, "val_loss": val_loss})
        best = self.progress.best_val_loss
        if best is None or val_loss < best:
            self.progress.best_val_loss = val_loss
            self._timed("save", lambda: self._save_best(val_loss))

    # -- checkpoints -----------------------------------------------------------------------

    def _metadata(self, val_loss: float | None = None) -> dict[str, Any]:
        training = {
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "total_steps": self.total_steps,
            "seed": self.config.training.seed,
            "world_size": self.context.world_size,
            # Since the train command started (dataset building included), resumes summed.
            "wall_clock_s": round(self.wall_clock(), 3),
            "dataset": {
                k: v
                for k, v in self.data.source.items()
                if k in ("kind", "path", "cache", "cache_key")
            },
        }
        if val_loss is not None:
            training["val_loss"] = val_loss
        return {**data_spec_metadata(self.data.spec), "training": training}

    def _save_periodic(self) -> Path | None:
        """Write ``step_<N>`` with the training state (collective: every rank calls it)."""
        return self._timed("save", self._write_periodic)

    def _write_periodic(self) -> Path | None:
        self.progress.extra["wall_clock_s"] = round(self.wall_clock(), 3)
        states = self.context.all_gather_bytes(rng_state(self.device))
        path = None
        if self.context.is_main:
            self.checkpoint_root.mkdir(parents=True, exist_ok=True)
            path = self.checkpoint_root / f"step_{self.progress.step:08d}"
            temporary = self._temporary(path)
            try:
                save_checkpoint(self.policy, temporary, self._metadata(), ema=self.ema)
                save_training_state(
                    temporary,
                    self.policy,
                    self.optimizer,
                    self.scheduler,
                    self.ema,
                    self.progress,
                    states,
                )
                _replace_directory(temporary, path)
            finally:
                shutil.rmtree(temporary, ignore_errors=True)
            _point_link(self.checkpoint_root / LATEST, path.name)
            self._prune()
        self.context.barrier()
        return path

    def _save_best(self, val_loss: float) -> None:
        path = self.checkpoint_root / BEST
        self.checkpoint_root.mkdir(parents=True, exist_ok=True)
        temporary = self._temporary(path)
        try:
            save_checkpoint(self.policy, temporary, self._metadata(val_loss), ema=self.ema)
            _replace_directory(temporary, path)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)

    def _temporary(self, path: Path) -> Path:
        temporary = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        return temporary

    def _prune(self) -> None:
        periodic = sorted(self.checkpoint_root.glob("step_*"))
        for old in periodic[: -self.config.training.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)


def _replace_directory(source: Path, target: Path) -> None:
    """Move ``source`` onto ``target``; an existing target is swapped out, never half-replaced."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
        os.rename(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(source, target)


def _point_link(link: Path, target_name: str) -> None:
    """Make ``link`` a relative symbolic link to ``target_name``, atomically."""
    temporary = link.with_name(f".{link.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(target_name, temporary)
    os.replace(temporary, link)


def find_latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest periodic checkpoint of a run, or None."""
    root = output_dir / CHECKPOINT_DIR
    link = root / LATEST
    if link.exists() and has_training_state(link):
        return link.resolve()
    periodic = [p for p in sorted(root.glob("step_*")) if has_training_state(p)]
    return periodic[-1] if periodic else None
