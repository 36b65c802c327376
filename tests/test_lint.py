"""The workspace's own code outside src/ passes the ruff lint and format rules."""

from dp_testing.lint import WORKSPACE_ROOT, assert_ruff_clean


def test_ruff_outside_packages() -> None:
    paths = [WORKSPACE_ROOT / name for name in ("tests", "scripts", "bench", "conftest.py")]
    assert_ruff_clean(*(path for path in paths if path.exists()))
