"""Offline evaluation on a simulated task (``dp_sim.tasks``: PushT, Lift, Can), as the ROS
simulation would run it (see EVALUATION.md). The loop knows no task.

    task_binding    data spec streams <-> a task's messages and set points (``TaskBinding``)
    controllers     a checkpoint (batched, a noise generator per episode) or the task's expert
    rollout         lockstep episodes of any task with the served receding-horizon timing
    config          the protocol and the execution plan (device, processes, batches)
    runner          worker processes, progress, results
    report          eval.json, the montage PNG and the score (coverage) plot
    task_eval       the arm tasks' protocol and report (eval.json, outcomes.png)

Needs dp_sim (the simulated tasks) besides dp_policy.
"""

from dp_policy.evaluation.config import EvalConfig, ExecutionPlan, plan_execution
from dp_policy.evaluation.report import write_outputs
from dp_policy.evaluation.rollout import EpisodeResult, RolloutRunner, RolloutSettings
from dp_policy.evaluation.runner import EvaluationError, EvaluationResult, run_evaluation
from dp_policy.evaluation.task_binding import TaskBinding, UnmappableSpecError, task_factory

__all__ = [
    "EpisodeResult",
    "EvalConfig",
    "EvaluationError",
    "EvaluationResult",
    "ExecutionPlan",
    "RolloutRunner",
    "RolloutSettings",
    "TaskBinding",
    "UnmappableSpecError",
    "plan_execution",
    "run_evaluation",
    "task_factory",
    "write_outputs",
]
