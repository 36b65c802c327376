"""Diffusion Policy without ROS: models, noise schedules, normalizer, checkpoints and runtime.

Public API (see README.md):

    PolicyConfig, ObservationSpec, ActionSpec, HorizonConfig, UNetConfig, TransformerConfig,
    VisionConfig, NoiseScheduleConfig, EMAConfig   -- configuration
    DiffusionPolicy, ActionPrediction                -- the model
    PolicyEMA                                        -- EMA of weights
    save_checkpoint, load_checkpoint, read_checkpoint_manifest, CheckpointError
    ObservationHistory, HistorySnapshot, time_chunk, TimedChunk  -- receding-horizon runtime
"""

from dp_policy.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_manifest,
    save_checkpoint,
)
from dp_policy.config import (
    ActionSpec,
    EMAConfig,
    HorizonConfig,
    NoiseScheduleConfig,
    ObservationSpec,
    PolicyConfig,
    TransformerConfig,
    UNetConfig,
    VisionConfig,
)
from dp_policy.ema import PolicyEMA
from dp_policy.policy import ActionPrediction, DiffusionPolicy
from dp_policy.runtime import HistorySnapshot, ObservationHistory, TimedChunk, time_chunk

__all__ = [
    "ActionPrediction",
    "ActionSpec",
    "CheckpointError",
    "DiffusionPolicy",
    "EMAConfig",
    "HistorySnapshot",
    "HorizonConfig",
    "NoiseScheduleConfig",
    "ObservationHistory",
    "ObservationSpec",
    "PolicyConfig",
    "PolicyEMA",
    "TimedChunk",
    "TransformerConfig",
    "UNetConfig",
    "VisionConfig",
    "load_checkpoint",
    "read_checkpoint_manifest",
    "save_checkpoint",
    "time_chunk",
]
