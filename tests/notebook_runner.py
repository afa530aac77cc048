"""Run a jupytext percent-format notebook with papermill, as `make paper` does, for the tests.

The source is converted to a temporary .ipynb and executed on the "python3" kernel. That
kernelspec comes with ipykernel inside the venv, and jupyter_client starts it with the
interpreter running the tests, so the kernel imports the same (editable) sharplib.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jupytext
import nbformat
import papermill
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, tmp: Path, data_root: Path, **parameters: Any) -> nbformat.NotebookNode:
    """Execute notebooks/<name>.py with `parameters` (cwd `tmp`) and return the executed notebook."""
    source = tmp / f"{name}.ipynb"
    jupytext.write(jupytext.read(NOTEBOOKS / f"{name}.py"), source, fmt="ipynb")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHARPLIB_DATA", str(data_root))  # the kernel inherits this process's environment
        env.setenv("JUPYTER_PREFER_ENV_PATH", "1")  # the venv's kernelspec wins over a user-level "python3"
        env.setenv("OMP_NUM_THREADS", "1")  # small tensors on 2 shared cores: one thread per kernel is faster
        papermill.execute_notebook(str(source), str(tmp / f"{name}.executed.ipynb"), parameters=parameters,
                                   kernel_name="python3", cwd=str(tmp), progress_bar=False, execution_timeout=600)
    return nbformat.read(tmp / f"{name}.executed.ipynb", as_version=4)


def printed(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook's code cells printed."""
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "stream")


def parameters_cell(name: str) -> str:
    """The source of the one code cell tagged `parameters`; fails unless it holds literals only."""
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", f"{name}: expected one code cell tagged 'parameters'"
    for line in tagged[0].source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            _, _, value = line.partition("=")
            eval(compile(value.split("  #")[0].strip(), "<parameter>", "eval"), {"__builtins__": {}})  # literals only
    return tagged[0].source


def check_parameters(name: str, setup: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Run notebooks/<name>.py's parameters cell, then `overrides` (as papermill injects them), then the
    cell after it (the notebook's parameter check), in this process, without a kernel.

    `setup` stands in for the cell before the parameters (the imports); None runs that cell itself.
    `In` is the input history an IPython kernel would hold, which the check reads the parameters' names from.
    """
    cells = [c for c in jupytext.read(NOTEBOOKS / f"{name}.py").cells if c.cell_type == "code"]
    at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    namespace = dict(setup) if setup is not None else {}
    if setup is None:
        exec(cells[at - 1].source, namespace)
    exec(cells[at].source, namespace)
    injected = "# Parameters\n" + "".join(f"{key} = {value!r}\n" for key, value in overrides.items())
    namespace["In"] = ["", cells[at - 1].source, cells[at].source, injected, cells[at + 1].source]
    namespace.update(overrides)
    exec(cells[at + 1].source, namespace)
    return namespace
