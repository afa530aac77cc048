"""sharplib/core/notebook.py: the progress bar a notebook prints (the kernel session tests cover setup())."""
from __future__ import annotations

import io
import sys

import pytest

from sharplib.core import notebook


@pytest.mark.parametrize("in_kernel", [True, False])
def test_a_text_bar_in_a_kernel_writes_to_stdout_and_redraws_rarely(monkeypatch: pytest.MonkeyPatch, in_kernel: bool) -> None:
    monkeypatch.setattr(notebook, "_shell", lambda: object() if in_kernel else None)
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stdout", captured)
    bar = notebook.tqdm(total=1000, desc="panel")
    for _ in range(1000):
        bar.update()
    bar.close()
    if in_kernel:
        assert bar.mininterval == notebook.TEXT_MININTERVAL
        # the first draw and the last, not one per update (tqdm's own default redraws every 0.1 s)
        assert 1 <= captured.getvalue().count("\r") <= 3, captured.getvalue()
    else:  # in a terminal: tqdm's own defaults (stderr, 0.1 s)
        assert bar.mininterval == 0.1 and captured.getvalue() == ""


def test_a_caller_keeps_its_own_file_and_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notebook, "_shell", lambda: object())
    own = io.StringIO()
    bar = notebook.tqdm(total=2, file=own, mininterval=0.5)
    bar.update(2)
    bar.close()
    assert bar.mininterval == 0.5 and "2/2" in own.getvalue()
