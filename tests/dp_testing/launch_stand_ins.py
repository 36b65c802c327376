"""Run a launch file's own logic here, where launch and launch_ros are not installed.

Every class or function a launch file imports from ``launch``, ``launch_ros`` (and their
submodules) is replaced by a stand-in that keeps the arguments it was built with, so a test can
read back which nodes, parameters, arguments and lifecycle events the file would create. What
the real launch packages do with them is theirs to test; what the file asks for is ours.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

LAUNCH_MODULES = (
    "launch",
    "launch.actions",
    "launch.conditions",
    "launch.events",
    "launch.launch_description_sources",
    "launch.substitutions",
    "launch_ros",
    "launch_ros.actions",
    "launch_ros.event_handlers",
    "launch_ros.events",
    "launch_ros.events.lifecycle",
    "launch_ros.substitutions",
)


class Recorded:
    """Stands in for a launch class or function: keeps what it was called with."""

    kind = "Recorded"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"{self.kind}({self.args}, {self.kwargs})"


class RecordedLaunchConfiguration(Recorded):
    """``LaunchConfiguration(name)``: ``perform`` reads the value from a dict context."""

    kind = "LaunchConfiguration"

    def perform(self, context: dict[str, str]) -> str:
        return context[self.args[0]]


def _stand_in_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def make(attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        if attribute == "LaunchConfiguration":
            return RecordedLaunchConfiguration
        return type(attribute, (Recorded,), {"kind": attribute})

    module.__getattr__ = make  # type: ignore[attr-defined]
    return module


def load_launch_file(path: Path, monkeypatch) -> types.ModuleType:
    """Import ``path`` with stand-ins for the launch packages (undone after the test)."""
    for name in LAUNCH_MODULES:
        monkeypatch.setitem(sys.modules, name, _stand_in_module(name))
    spec = importlib.util.spec_from_file_location(f"launch_under_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch_actions(path: Path, monkeypatch) -> list[Recorded]:
    """The actions of the file's ``generate_launch_description()``."""
    description = load_launch_file(path, monkeypatch).generate_launch_description()
    return list(description.args[0])


def declared_arguments(actions: list[Recorded]) -> dict[str, dict[str, Any]]:
    """Launch argument name -> the keyword arguments it was declared with."""
    return {
        action.args[0]: action.kwargs
        for action in actions
        if action.kind == "DeclareLaunchArgument"
    }


def of_kind(actions: list[Recorded], kind: str) -> list[Recorded]:
    return [action for action in actions if action.kind == kind]
