"""Fixtures shared by the dp_policy tests.

The workspace runs pytest in importlib mode, where test directories are not on ``sys.path``;
the tiny-policy factories are registered here under a name no other package uses.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

_FACTORIES = "dp_policy_test_factories"
if _FACTORIES not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _FACTORIES, Path(__file__).with_name("factories.py")
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_FACTORIES] = _module
    _spec.loader.exec_module(_module)


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Run each test on one CPU thread, restoring the setting afterwards.

    The models here are tiny: a second OpenMP thread gains little, and on a shared CI machine
    waiting for a descheduled worker at every parallel region made tests ten times slower.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["unet", "transformer"])
def backbone(request) -> str:
    return request.param
