"""The package passes the workspace's ruff lint and format rules."""

from pathlib import Path

from dp_testing.lint import assert_ruff_clean


def test_ruff() -> None:
    assert_ruff_clean(Path(__file__).resolve().parents[1])
