"""Run an evaluation on any ``dp_sim.tasks`` task: the episodes spread over worker processes,
progress, results.

Worker processes are started with the 'spawn' context (no fork of a process that may hold a
CUDA context or OpenMP threads) and receive the checkpoint *path*: each loads its own copy with
``load_checkpoint`` (JSON and safetensors only). They report steps, finished episodes and their
timings through one queue; the parent draws the progress bar and collects the results.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue as queue_module
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dp_policy.checkpoint import read_checkpoint_manifest
from dp_policy.config import PolicyConfig
from dp_policy.data_spec import DataSpec, data_spec_from_checkpoint
from dp_policy.evaluation.config import EvalConfig, ExecutionPlan, plan_execution
from dp_policy.evaluation.controllers import (
    Controller,
    DiffusionController,
    ExpertController,
    check_policy_matches_spec,
)
from dp_policy.evaluation.rollout import EpisodeResult, RolloutRunner, RolloutSettings
from dp_policy.evaluation.task_binding import TaskBinding, task_factory
from dp_policy.schedulers import check_scheduler_name
from dp_sim.tasks import SimTask


class EvaluationError(RuntimeError):
    """An evaluation that could not finish (a worker failed); the message says where."""


@dataclass
class WorkerTiming:
    """Seconds a worker spent, and how many controller calls it made."""

    load_s: float = 0.0
    controller_s: float = 0.0
    env_s: float = 0.0
    controller_calls: int = 0


@dataclass(frozen=True)
class TaskInfo:
    """What the report needs to know of the task the episodes ran on."""

    name: str
    control_period: float  # s per step
    score_name: str  # what its score measures ("coverage", "score")

    @classmethod
    def of(cls, task: SimTask) -> TaskInfo:
        return cls(task.name, float(task.control_period), task.score_name)


@dataclass
class EvaluationResult:
    config: EvalConfig
    plan: ExecutionPlan
    episodes: list[EpisodeResult]
    wall_time_s: float
    timings: list[WorkerTiming]
    task: TaskInfo
    checkpoint: dict[str, Any] | None = None  # summary of the manifest and sampler settings

    @property
    def mean_score(self) -> float:
        """Mean of the episodes' scores: the highest reward where the task has one (PushT),
        else the highest task score."""
        return sum(e.score for e in self.episodes) / len(self.episodes)

    @property
    def success_rate(self) -> float:
        return sum(e.success for e in self.episodes) / len(self.episodes)


def _checked_binding(spec: DataSpec, task: SimTask, seed: int) -> TaskBinding:
    """The spec bound to ``task``, its conversions tried on the messages of a reset."""
    binding = TaskBinding(spec, task)
    task.reset(seed)
    binding.check_messages()
    return binding


def expert_task_info(config: EvalConfig) -> TaskInfo:
    """The facts of the task the expert runs on (from one instance of it)."""
    task = task_factory(None, config.task, config.max_steps)()
    try:
        return TaskInfo.of(task)
    finally:
        task.close()


def checkpoint_summary(config: EvalConfig) -> tuple[dict[str, Any], TaskInfo]:
    """Check, before any process starts, that the checkpoint can be evaluated on the task.

    Reads the manifest only (no weights): the data spec must map onto the sim (its streams
    read from the messages of a reset), the network must take what the spec gives, the
    scheduler name must exist.
    """
    assert config.checkpoint is not None
    manifest = read_checkpoint_manifest(config.checkpoint)
    spec = data_spec_from_checkpoint(config.checkpoint)
    task = task_factory(spec, config.task, config.max_steps)()
    try:
        binding = _checked_binding(spec, task, config.start_seed)
        info = TaskInfo.of(task)
    finally:
        task.close()
    policy_config = PolicyConfig.from_dict(manifest["policy_config"])
    check_policy_matches_spec(policy_config, binding)
    scheduler = config.scheduler or policy_config.noise.inference_scheduler
    check_scheduler_name(scheduler)
    steps = config.num_inference_steps or policy_config.noise.num_inference_steps
    if steps > policy_config.noise.num_train_timesteps:
        raise ValueError(
            f"num_inference_steps {steps} exceeds the checkpoint's "
            f"{policy_config.noise.num_train_timesteps} training timesteps"
        )
    horizon = policy_config.horizon
    summary = {
        "path": str(config.checkpoint.resolve()),
        "weights": manifest.get("weights"),
        "parameter_count": manifest.get("parameter_count"),
        "backbone": policy_config.backbone,
        "observation_horizon": horizon.observation_horizon,
        "prediction_horizon": horizon.prediction_horizon,
        "action_horizon": config.action_horizon or horizon.action_horizon,
        "trained_action_horizon": horizon.action_horizon,
        "scheduler": scheduler,
        "num_inference_steps": steps,
        "data_spec": spec.to_dict(),
        "extra_metadata_keys": sorted((manifest.get("extra_metadata") or {}).keys()),
    }
    return summary, info


@dataclass(frozen=True)
class WorkerJob:
    """What one worker runs: plain values only (the checkpoint travels as a path)."""

    index: int
    config: EvalConfig
    plan: ExecutionPlan
    seeds: tuple[int, ...]


def _build_controller(
    job: WorkerJob, spec: DataSpec | None, template: SimTask
) -> tuple[Controller, TaskBinding | None]:
    """The job's controller; ``template``, a task of the job's, serves the expert's model of
    the task (the arm's kinematics) and the binding's view of the task's topics."""
    config = job.config
    if spec is None:
        return ExpertController(template.make_expert), None
    from dp_policy.checkpoint import load_checkpoint

    assert config.checkpoint is not None
    binding = TaskBinding(spec, template)
    policy = load_checkpoint(config.checkpoint, device=job.plan.device)
    controller = DiffusionController(
        policy,
        binding,
        num_inference_steps=config.num_inference_steps,
        scheduler=config.scheduler,
        noise_seed=config.noise_seed,
        action_horizon=config.action_horizon,
    )
    return controller, binding


def run_share(
    job: WorkerJob,
    on_steps: Callable[[int], None] | None = None,
    on_episode: Callable[[EpisodeResult], None] | None = None,
) -> tuple[list[EpisodeResult], WorkerTiming]:
    """One worker's episodes, in lockstep groups of the plan's batch size."""
    import torch

    # The plan's thread count; restored afterwards, as this may run in the caller's process.
    threads = torch.get_num_threads()
    torch.set_num_threads(job.plan.threads)
    try:
        return _run_share(job, on_steps, on_episode)
    finally:
        torch.set_num_threads(threads)


def _run_share(
    job: WorkerJob,
    on_steps: Callable[[int], None] | None,
    on_episode: Callable[[EpisodeResult], None] | None,
) -> tuple[list[EpisodeResult], WorkerTiming]:
    config = job.config
    started = time.perf_counter()
    spec = None
    if config.policy == "diffusion":
        assert config.checkpoint is not None
        spec = data_spec_from_checkpoint(config.checkpoint)
    make_task = task_factory(spec, config.task, config.max_steps)
    template = make_task()
    try:
        controller, binding = _build_controller(job, spec, template)
        timing = WorkerTiming(load_s=time.perf_counter() - started)
        settings = RolloutSettings(
            max_steps=config.max_steps,
            latency_steps=config.latency_steps,
            montage_frames=config.montage_frames,
        )
        runner = RolloutRunner(make_task, controller, binding, settings)
        results: list[EpisodeResult] = []
        try:
            size = job.plan.batch_size
            for start in range(0, len(job.seeds), size):
                group = job.seeds[start : start + size]
                results += runner.run(group, config.montage_seeds, on_steps, on_episode)
        finally:
            runner.close()
    finally:
        template.close()
    timing.controller_s = runner.timing.controller_s
    timing.env_s = runner.timing.env_s
    timing.controller_calls = getattr(controller, "predictions", 0)
    return results, timing


def _worker_main(job: WorkerJob, messages: Any) -> None:
    """Entry point of a worker process."""
    try:
        _, timing = run_share(
            job,
            on_steps=lambda n: messages.put(("steps", job.index, n)),
            on_episode=lambda r: messages.put(("episode", job.index, r)),
        )
        messages.put(("done", job.index, timing))
    except BaseException:
        messages.put(("error", job.index, traceback.format_exc()))
        raise SystemExit(1) from None


class _Progress:
    """A tqdm bar over environment steps; an episode that ends early skips its remainder."""

    def __init__(self, config: EvalConfig) -> None:
        self.max_steps = config.max_steps
        self.bar = None
        self.scores: list[float] = []
        if config.progress:
            from tqdm import tqdm

            self.bar = tqdm(
                total=config.episodes * config.max_steps,
                unit="step",
                desc=f"eval {config.name}",
                dynamic_ncols=True,
            )

    def steps(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def episode(self, result: EpisodeResult) -> None:
        self.scores.append(result.score)
        if self.bar is not None:
            self.bar.update(self.max_steps - result.steps)
            mean = sum(self.scores) / len(self.scores)
            self.bar.set_postfix(episodes=len(self.scores), score=f"{mean:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_evaluation(config: EvalConfig, plan: ExecutionPlan | None = None) -> EvaluationResult:
    """Run every episode of ``config`` (spread as ``plan`` says, by default as
    ``plan_execution`` does); raises EvaluationError if a worker fails."""
    plan = plan or plan_execution(config)
    if config.policy == "diffusion":
        summary, task = checkpoint_summary(config)
    else:
        summary, task = None, expert_task_info(config)
    jobs = [
        WorkerJob(index, config, plan, tuple(share))
        for index, share in enumerate(plan.shares(config.seeds))
    ]
    progress = _Progress(config)
    started = time.perf_counter()
    try:
        if len(jobs) == 1:
            episodes, timing = run_share(jobs[0], progress.steps, progress.episode)
            timings = [timing]
        else:
            episodes, timings = _run_workers(jobs, progress)
    finally:
        progress.close()
    wall = time.perf_counter() - started
    order = {seed: i for i, seed in enumerate(config.seeds)}
    episodes.sort(key=lambda e: order[e.seed])
    return EvaluationResult(config, plan, episodes, wall, timings, task, summary)


# A worker's last messages reach the queue before its process ends; a worker that ended this
# long ago without sending its results lost them.
_LOST_RESULTS_S = 30.0


def _check_workers(
    jobs: list[WorkerJob], processes: list[Any], timings: dict[int, WorkerTiming], quiet_s: float
) -> None:
    """Notice workers that ended without reporting (killed for memory, by a signal)."""
    for job, process in zip(jobs, processes, strict=True):
        if job.index in timings or process.exitcode is None:
            continue
        if process.exitcode != 0 or quiet_s >= _LOST_RESULTS_S:
            raise EvaluationError(
                f"evaluation worker {job.index} (seeds {job.seeds[0]}..{job.seeds[-1]}) ended "
                f"with exit code {process.exitcode} without reporting its results"
            )


def _run_workers(
    jobs: list[WorkerJob], progress: _Progress
) -> tuple[list[EpisodeResult], list[WorkerTiming]]:
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    processes = [
        context.Process(target=_worker_main, args=(job, messages), name=f"dp-eval-{job.index}")
        for job in jobs
    ]
    for process in processes:
        process.start()
    episodes: list[EpisodeResult] = []
    timings: dict[int, WorkerTiming] = {}
    quiet_s = 0.0
    try:
        while len(timings) < len(jobs):
            try:
                kind, index, payload = messages.get(timeout=1.0)
                quiet_s = 0.0
            except queue_module.Empty:
                quiet_s += 1.0
                _check_workers(jobs, processes, timings, quiet_s)
                continue
            if kind == "steps":
                progress.steps(payload)
            elif kind == "episode":
                episodes.append(payload)
                progress.episode(payload)
            elif kind == "done":
                timings[index] = payload
            else:
                raise EvaluationError(f"evaluation worker {index} failed:\n{payload}")
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            with contextlib.suppress(Exception):
                process.join(timeout=5)
        messages.close()
    return episodes, [timings[job.index] for job in jobs]
