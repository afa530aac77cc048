"""What a notebook of this project needs from its kernel, so that it behaves in a classroom.

`setup()` is the first call of every notebook's first cell (and runs when `make lab`'s kernel starts, as an
IPython extension): it silences known harmless warnings and turns an out-of-order error into one line that
names the cell to run. `repository_root()` and `scratch_dir()` place files by the package's location, never
by the kernel's working folder (JupyterLab starts a kernel in the notebook's folder, papermill in --cwd).
"""
from __future__ import annotations

import ast
import os
import sys
import warnings
from pathlib import Path
from typing import Any

with warnings.catch_warnings():  # tqdm.auto warns "IProgress not found" at import in a kernel without ipywidgets
    warnings.filterwarnings("ignore", message="IProgress not found")
    from tqdm.auto import tqdm as _auto_tqdm

KNOWN_WARNINGS = (  # (message regex, why it is harmless)
    ("IProgress not found", "tqdm falls back to a text bar when ipywidgets is missing"),
    (r".*torch\.jit\.script.*", "torch_geometric still decorates a few functions with it at import"),
    (r".*torch\.jit\.script_method.*", "as above"),
)


# A text bar in a kernel redraws at most this often (seconds): every redraw is one more output kept in the
# notebook, and a panel's inner bars at tqdm's default 0.1 s made LeNet-5's equalized run a 1.5 MB file.
TEXT_MININTERVAL = 5.0


class tqdm(_auto_tqdm):  # noqa: N801 (a drop-in for tqdm.auto.tqdm)
    """tqdm.auto's progress bar; where it falls back to text (a kernel without ipywidgets, as under papermill) it
    writes to stdout, not to stderr, which JupyterLab shows as red error output, and redraws at most every
    TEXT_MININTERVAL seconds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        widgets = any(c.__module__ == "tqdm.notebook" for c in _auto_tqdm.__mro__)
        if _shell() is not None and not widgets:
            kwargs.setdefault("file", sys.stdout)
            kwargs.setdefault("mininterval", TEXT_MININTERVAL)
        super().__init__(*args, **kwargs)


class RunEarlierCell(Exception):
    """A cell ran before the one it needs; the message says which one (shown as one line in a notebook)."""


def setup() -> None:
    """Quiet the known warnings and, inside IPython, show out-of-order errors as one line. Idempotent.

    The warnings (KNOWN_WARNINGS) are tqdm's "IProgress not found" and torch's `torch.jit.script` deprecation
    raised while torch_geometric loads. A `NameError` (a cell run before the one that defines what it needs)
    or a `RunEarlierCell` prints one line naming the cell to run, instead of a traceback.
    """
    for message, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    shell = _shell()
    if shell is not None:
        shell.set_custom_exc((NameError, RunEarlierCell), _one_line)


def load_ipython_extension(shell: Any) -> None:
    """`%load_ext sharplib.core.notebook`, or the kernel config's `extensions` (lab/ipython_kernel_config.py)."""
    setup()


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _one_line(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython's custom exception handler: the error as one line, without a traceback."""
    if isinstance(value, NameError) and getattr(value, "name", None):
        text = missing_name_message(value.name, shell.user_ns.get("__session__"))
    else:
        text = str(value)
    line = [f"{etype.__name__}: {text}"]
    shell._showtraceback(etype, value, line)  # IPython shows nothing of its own for a custom exception
    return line


def missing_name_message(name: str, notebook: str | os.PathLike | None) -> str:
    """What to run so that `name` exists: the cell of `notebook` that defines it, when the path is known."""
    cells = _code_cells(notebook)
    for heading, source in cells:
        if name in bound_names(source):
            first = next((line.strip() for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
            short = heading if len(heading) <= 50 else heading[:49] + "…"  # one line, even under a long title
            where = f' under "{short}"' if heading else ""
            return f"`{name}` is not defined yet: run the cell{where} that starts `{first[:60]}` first (or Run → Run All Cells)"
    if cells:
        return f"`{name}` is not defined and no cell of this notebook defines it: a typo?"
    return f"`{name}` is not defined yet: run the cells above this one first (Run → Run All Above Selected Cell)"


def bound_names(source: str) -> set[str]:
    """The names a cell's code assigns, imports or defines at its top level (loops and `with` included)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _code_cells(notebook: str | os.PathLike | None) -> list[tuple[str, str]]:
    """(the last Markdown heading above it, source) for each code cell of the notebook at `notebook`."""
    if not notebook or not Path(notebook).is_file():
        return []
    try:
        import jupytext

        cells = jupytext.read(notebook).cells
    except Exception:  # an unreadable notebook only costs the precise hint
        return []
    heading, found = "", []
    for cell in cells:
        if cell.cell_type == "markdown":
            titles = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            heading = titles[-1] if titles else heading
        elif cell.cell_type == "code":
            found.append((heading, cell.source))
    return found


def repository_root() -> Path | None:
    """The checkout this sharplib was imported from (the folder with pyproject.toml above the package), else None
    (an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "sharplib").is_dir() else None


def scratch_dir() -> Path:
    """Where a notebook run interactively writes: <repository root>/build/scratch (git-ignored), or, outside a
    checkout, build/scratch in the working folder."""
    return (repository_root() or Path.cwd()) / "build" / "scratch"


def results_path(results_dir: str | None) -> Path:
    """`results_dir` as a path: None is `scratch_dir()`; a relative one is taken from the repository root
    (the working folder outside a checkout), whatever folder the kernel runs in."""
    if results_dir is None:
        return scratch_dir()
    path = Path(results_dir)
    return path if path.is_absolute() else (repository_root() or Path.cwd()) / path
