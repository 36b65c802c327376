"""Training: config, data preparation, the loop (AdamW, EMA, AMP, DDP), checkpoints and resume.

The command line is ``dp_policy.train``; this package is its library::

    config = build_config("train_pusht_image.yaml", ["training.max_steps=1000"])
    context = init_distributed(config.training.device)
    data = prepare_data(config, context)
    result = Trainer(config, data, context, Path(config.output_dir)).run()
"""

from dp_policy.training.config import (
    ConfigError,
    DataConfig,
    OptimizerConfig,
    RunConfig,
    TrainConfig,
    ZarrSource,
    build_config,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "OptimizerConfig",
    "RunConfig",
    "TrainConfig",
    "ZarrSource",
    "build_config",
]
