"""The README's example runs as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_trains_saves_loads_and_predicts(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    example = re.search(r"## Example.*?```python\n(.*?)```", text, re.DOTALL)
    assert example, "README.md has no python example under '## Example'"
    monkeypatch.chdir(tmp_path)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(example.group(1), str(README), "exec"), {})
    assert output.getvalue().strip() == "torch.Size([1, 16, 2]) torch.Size([1, 8, 2])"
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
