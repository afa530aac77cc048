"""The README's Python examples run as printed (so the documented API cannot drift from the code)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # examples write their checkpoints into the working directory
    monkeypatch.setenv("SHARPLIB_DATA", str(data_root))
    exec(compile(BLOCKS[index], f"README.md example {index + 1}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "an example should print its result"
