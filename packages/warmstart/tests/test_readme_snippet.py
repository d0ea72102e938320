"""The README's "use the core from your project" snippet runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


@pytest.mark.slow
def test_core_readme_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = re.search(
        r"## Use the core from your project.*?```python\n(.*?)```", README.read_text(), re.S
    ).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 25
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the snippet is ours
    summary = namespace["summary"]
    assert summary.steps == 20
    assert (tmp_path / "runs" / "my-model" / "checkpoints" / "step-20" / "model.safetensors").exists()
    old, new, model = namespace["old"], namespace["new"], namespace["model"]
    assert model.get_input_embeddings().weight.shape[0] >= len(new) > len(old)
