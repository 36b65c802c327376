"""Noise schedulers from diffusers: DDPM for training, any diffusers scheduler for sampling."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import diffusers
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

if TYPE_CHECKING:
    from dp_policy.config import NoiseScheduleConfig


def check_scheduler_name(name: str) -> type[SchedulerMixin]:
    """Return the diffusers scheduler class called ``name`` or raise ``ValueError``."""
    scheduler_class = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, SchedulerMixin)):
        raise ValueError(
            f"unknown inference scheduler {name!r}: expected the name of a diffusers scheduler "
            "class, e.g. 'DDIMScheduler', 'DDPMScheduler' or 'DPMSolverMultistepScheduler'"
        )
    return scheduler_class


def _schedule_arguments(config: NoiseScheduleConfig) -> dict[str, Any]:
    return {
        "num_train_timesteps": config.num_train_timesteps,
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "beta_schedule": config.beta_schedule,
        "prediction_type": config.prediction_type,
        "clip_sample": config.clip_sample,
        "clip_sample_range": config.clip_sample_range,
        # DDPM: the paper's posterior variance; DDIM: the last step lands on alpha_bar = 1.
        "variance_type": "fixed_small",
        "set_alpha_to_one": True,
        "steps_offset": 0,
    }


def make_training_scheduler(config: NoiseScheduleConfig) -> DDPMScheduler:
    """The DDPM schedule used to noise actions in training; ``(B, Tp, Da)`` agnostic."""
    return make_scheduler("DDPMScheduler", config)  # type: ignore[return-value]


def make_scheduler(name: str, config: NoiseScheduleConfig) -> SchedulerMixin:
    """Build scheduler class ``name`` on the training schedule.

    Only the arguments that the class accepts are passed, so that diffusers does not warn about
    ignored ones (DDIM has no ``variance_type``, DPM-Solver has no ``clip_sample``, ...).
    """
    scheduler_class = check_scheduler_name(name)
    accepted = inspect.signature(scheduler_class.__init__).parameters
    arguments = {k: v for k, v in _schedule_arguments(config).items() if k in accepted}
    return scheduler_class(**arguments)


def step_accepts_generator(scheduler: SchedulerMixin) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters
