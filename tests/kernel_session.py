"""A notebook session as a student has one in JupyterLab: one live kernel, cells run in any order, edited, rerun.

papermill runs a notebook once, top to bottom, in a fresh kernel; the classroom problems (a second
Run All, a cell rerun, a cell run before the cell it needs) only show in a kernel that lives on.
`Session` drives a real "python3" kernel through jupyter_client and records what each cell showed.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import jupytext
from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parents[1]
KERNEL_CONFIG = REPO / "lab" / "ipython_kernel_config.py"


@dataclass
class Shown:
    """What one cell showed: its printed text and, if it failed, the error output's lines."""

    source: str
    stdout: str = ""
    stderr: str = ""
    error: list[str] = field(default_factory=list)
    images: int = 0  # figures displayed (image/png)

    @property
    def ok(self) -> bool:
        return not self.error


def code_cells(name: str) -> list[str]:
    """The sources of notebooks/<name>.py's code cells, in order."""
    return [c.source for c in jupytext.read(REPO / "notebooks" / f"{name}.py").cells if c.cell_type == "code"]


def edit(cells: list[str], **values: object) -> list[str]:
    """`cells` with the parameters cell's `name = ...` lines set to `values` (as a student types them)."""
    def set_line(source: str) -> str:
        for name, value in values.items():
            source, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", source, flags=re.M)
            assert n <= 1
        return source
    return [set_line(c) for c in cells]


class Session:
    """A live kernel in `cwd`; `run` executes one cell, `run_all` runs cells in order and stops at the first error."""

    def __init__(self, kc) -> None:
        self.kc = kc

    def run(self, source: str, timeout: float = 600) -> Shown:
        shown = Shown(source)

        def hook(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                setattr(shown, content["name"], getattr(shown, content["name"]) + content["text"])
            elif kind in ("display_data", "execute_result") and "image/png" in content.get("data", {}):
                shown.images += 1
            elif kind == "error":
                shown.error = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in content["traceback"]] or [
                    f"{content['ename']}: {content['evalue']}"
                ]

        self.kc.execute_interactive(source, output_hook=hook, timeout=timeout)
        return shown

    def run_all(self, cells: list[str]) -> list[Shown]:
        shown = []
        for source in cells:
            shown.append(self.run(source))
            if not shown[-1].ok:
                break
        return shown


@contextlib.contextmanager
def session(cwd: Path, data_root: Path, notebook: str | None = None, kernel_config: bool = True) -> Iterator[Session]:
    """A kernel started as `make lab` starts one: with lab/ipython_kernel_config.py (through IPYTHONDIR) when
    `kernel_config`, and knowing its notebook's path (`__session__`, as JupyterLab sets it) when `notebook` is given."""
    env = {**os.environ, "SHARPLIB_DATA": str(data_root), "JUPYTER_PREFER_ENV_PATH": "1", "OMP_NUM_THREADS": "1"}
    if kernel_config:
        profile = cwd / "ipython" / "profile_default"
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "ipython_kernel_config.py").write_text(KERNEL_CONFIG.read_text())
        env["IPYTHONDIR"] = str(cwd / "ipython")
    if notebook:
        env["JPY_SESSION_NAME"] = str(REPO / "notebooks" / f"{notebook}.py")
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(cwd), env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        yield Session(kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
