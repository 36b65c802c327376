"""Fixtures of the dp_policy_node tests.

The workspace runs pytest in importlib mode, where test directories are not on ``sys.path``;
the shared helpers (``support.py``) are registered under a name no other package uses.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

_SUPPORT = "dp_policy_node_test_support"
if _SUPPORT not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_SUPPORT, Path(__file__).with_name("support.py"))
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_SUPPORT] = _module
    _spec.loader.exec_module(_module)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints, made once per session: camera + joints, other joints, NaN output."""
    support = sys.modules[_SUPPORT]
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "camera": support.make_checkpoint(root / "camera"),
        "low_dim": support.make_checkpoint(root / "low_dim", camera=False),
        "other_joints": support.make_checkpoint(
            root / "other_joints", joints=("shoulder_joint", "elbow_joint")
        ),
        "nan": support.make_checkpoint(root / "nan", nan_output=True),
    }


@pytest.fixture(scope="session")
def sampler_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints for the sampler backends (made only when a test asks): chunks that
    depend on the pixels (72x72 images), DDPM sampling (per-step noise), a transformer
    backbone, and a scheduler the fast path does not implement."""
    from dp_policy import NoiseScheduleConfig

    support = sys.modules[_SUPPORT]
    root = tmp_path_factory.mktemp("sampler_checkpoints")
    return {
        "pixels": support.make_checkpoint(root / "pixels", image_shape=(3, 72, 72)),
        "ddpm": support.make_checkpoint(
            root / "ddpm",
            camera=False,
            noise=NoiseScheduleConfig(inference_scheduler="DDPMScheduler", num_inference_steps=5),
        ),
        "transformer": support.make_checkpoint(
            root / "transformer", backbone="transformer", image_shape=(3, 72, 72)
        ),
        "dpm_solver": support.make_checkpoint(
            root / "dpm_solver",
            camera=False,
            noise=NoiseScheduleConfig(
                inference_scheduler="DPMSolverMultistepScheduler", num_inference_steps=3
            ),
        ),
    }


@pytest.fixture(scope="session")
def two_stream_checkpoint(tmp_path_factory) -> Path:
    """A low-dim checkpoint whose action spans two controllers: ``arm`` (the two pusher
    joints) and ``gripper`` (one finger joint on a topic of its own)."""
    support = sys.modules[_SUPPORT]
    root = tmp_path_factory.mktemp("two_stream_checkpoint")
    return support.make_checkpoint(root / "two_streams", camera=False, gripper=True)
