"""Offline evaluation on the PushT task, as the ROS simulation would run it (see EVALUATION.md).

    pusht_adapter   data spec streams <-> the simulated robot's messages and set points
    controllers     a checkpoint (batched, a noise generator per episode) or the scripted expert
    rollout         lockstep episodes with the served receding-horizon timing
    config          the protocol and the execution plan (device, processes, batches)
    runner          worker processes, progress, results
    report          eval.json, the montage PNG and the coverage plot

Needs dp_sim (the PushT simulation) besides dp_policy.
"""

from dp_policy.evaluation.config import EvalConfig, ExecutionPlan, plan_execution
from dp_policy.evaluation.pusht_adapter import PushTAdapter, UnmappableSpecError, sim_messages
from dp_policy.evaluation.report import write_outputs
from dp_policy.evaluation.rollout import EpisodeResult, RolloutRunner, RolloutSettings
from dp_policy.evaluation.runner import EvaluationError, EvaluationResult, run_evaluation

__all__ = [
    "EpisodeResult",
    "EvalConfig",
    "EvaluationError",
    "EvaluationResult",
    "ExecutionPlan",
    "PushTAdapter",
    "RolloutRunner",
    "RolloutSettings",
    "UnmappableSpecError",
    "plan_execution",
    "run_evaluation",
    "sim_messages",
    "write_outputs",
]
