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
