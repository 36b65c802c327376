"""ruff as a test: lint and format checks over a directory, with ruff's report on failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WORKSPACE_ROOT = Path(__file__).resolve().parents[2]


def assert_ruff_clean(*paths: Path) -> None:
    """Fail with ruff's own report unless ``paths`` pass ``ruff check`` and ``ruff format``."""
    targets = [str(path) for path in paths]
    config = ["--config", str(WORKSPACE_ROOT / "ruff.toml")]
    for command in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, *config, *targets],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"ruff {command[0]} failed:\n{result.stdout}{result.stderr}"
