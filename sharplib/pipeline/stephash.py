"""What computes a step's numbers, as one hash H (the pipeline's command line is `python -m sharplib.pipeline.fingerprint`).

For a step (study, ablation, measures, progress or equalized) of one architecture,

    H = SHA-256( the step's notebook, the code of every sharplib module it runs that computes numbers,
                 the parameters make passes it, the checksums of the data its task reads, the upstream step's H )

A file's code is its syntax tree without docstrings, comments or layout (`code_digest`): editing prose leaves
every step current. Make writes H into a lock file beside the results (`lockfile.py`), never the notebook.
"""
from __future__ import annotations

# Standard library only: make asks this before any virtual environment exists.
import ast
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core import checksums
from . import deps

REPO = Path(__file__).resolve().parents[2]
# arch -> the folder of the data root its task reads
DATA_FOLDERS: dict[str, str] = {"fcnn": "abalone/", "lenet5": "fashion-mnist/", "gat": "cora/"}
# Left out of H, with whatever only they import: modules that only render results (figures, tables, sentences)
# and the build's own tooling. Editing the paper's words reruns no notebook.
# Each names a module by its flat name (commits before the layers, still hashed with this code) and by its layer's.
RENDERING = frozenset({"sharplib.report", "sharplib.measures_report", "sharplib.progress_report",
                       "sharplib.paper.report", "sharplib.paper.measures_report", "sharplib.paper.progress_report",
                       "sharplib.paper.equalized_report"})
TOOLING = frozenset({"sharplib.fingerprint", "sharplib.stephash", "sharplib.lockfile", "sharplib.evidence", "sharplib.deps",
                     "sharplib.pipeline.fingerprint", "sharplib.pipeline.stephash", "sharplib.pipeline.lockfile",
                     "sharplib.pipeline.evidence", "sharplib.pipeline.deps"})
# Notebook parameters that say where files go, not what is computed: left out of H and of the lock's check.
PLACEMENT = frozenset({"results_dir", "data_root", "n_workers"})


@dataclass(frozen=True)
class Step:
    """One notebook run per architecture: its source, the files it writes (the summary JSON last), the step it reuses."""

    name: str
    notebook: str
    outputs: tuple[str, ...]
    upstream: str | None = None

    @property
    def summary(self) -> str:
        return self.outputs[0]


STEPS: dict[str, Step] = {
    "study": Step("study", "notebooks/study.py", ("results.json", "models.csv", "notebook.ipynb")),
    "ablation": Step("ablation", "notebooks/ablation.py", ("ablation.json", "ablation.csv", "rho.csv", "ablation.ipynb"), "study"),
    "measures": Step("measures", "notebooks/measures.py", ("measures.json", "measures.csv", "measures.ipynb"), "study"),
    "progress": Step("progress", "notebooks/progress.py", ("progress.json", "progress.csv", "progress.ipynb"), "study"),
    "equalized": Step("equalized", "notebooks/equalized.py", ("equalized.json", "equalized.csv", "equalized.ipynb"), "progress"),
}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_digest(path: Path) -> str:
    """SHA-256 of what a Python file computes: its syntax tree, without docstrings, comments, layout or line numbers."""
    try:
        return _source_digest(path.read_text(encoding="utf-8"))
    except SyntaxError as error:
        raise _not_python(path, error) from None


# `make status` digests the same files once per step and once more per lock's commit: once a text in a process
@functools.lru_cache(maxsize=None)
def _source_digest(source: str) -> str:
    return hashlib.sha256(_canonical(ast.parse(source)).encode()).hexdigest()


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise _not_python(path, error) from None


def _not_python(path: Path, error: SyntaxError) -> ValueError:
    return ValueError(f"{path}: not valid Python, so its step's hash cannot be taken ({error.msg}, line {error.lineno})")


def _canonical(node: Any) -> str:
    """A syntax tree as text. Empty and None fields are left out, so the Python versions that add a field (as
    3.12 added `type_params`) or print defaults differently write the same text for the same code."""
    if isinstance(node, list):
        return "[" + ",".join(_canonical(item) for item in node) + "]"
    if not isinstance(node, ast.AST):
        return repr(node)
    fields = []
    for name in node._fields:
        value = getattr(node, name, None)
        if name == "body" and _has_docstring(node):
            value = value[1:]
        if value is None or (isinstance(value, list) and not value):
            continue
        fields.append(f"{name}={_canonical(value)}")
    return f"{type(node).__name__}({','.join(fields)})"


def _has_docstring(node: ast.AST) -> bool:
    body = getattr(node, "body", None)
    return (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and bool(body)
            and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str))


class _Relocated(ast.NodeTransformer):
    """A syntax tree as it reads wherever its module lies: sharplib's own imports name the imported module by its
    basename (a package by nothing), one name a statement, and `Path(__file__)...parents[k]`, the repository root,
    is one name whatever k."""

    def __init__(self, package: str | None, package_root: Path) -> None:
        self.package, self.package_root = package, package_root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | list[ast.AST]:
        target = deps.import_base(node, self.package)
        if target is None or not (target == deps.PACKAGE or target.startswith(deps.PACKAGE + ".")):
            return node
        found = deps.module_file(target, self.package_root)
        module = target.rpartition(".")[2] if found is not None and found.name != "__init__.py" else None
        # one statement per name: `from sharplib import a, b` split when a and b move to different folders
        return [ast.ImportFrom(module=module, names=[name], level=0) for name in node.names]

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        value = node.value
        if isinstance(value, ast.Attribute) and value.attr == "parents" and any(
                isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(value)):
            return ast.Name(id="__repository_root__", ctx=ast.Load())
        return self.generic_visit(node)


def relocatable_digest(path: Path, root: Path = REPO) -> str | None:
    """`code_digest` up to where the modules lie (`_Relocated`): equal before and after a change that only moves
    modules between folders, keeping their names. None for an empty module (a package's `__init__.py`)."""
    tree = _parse(path)
    if not (tree.body[1:] if _has_docstring(tree) else tree.body):
        return None
    package_root = root / deps.PACKAGE
    relocated = _Relocated(deps.package_of(path, package_root), package_root).visit(tree)
    return hashlib.sha256(_canonical(relocated).encode()).hexdigest()


def relocatable_fingerprint(step: str, arch: str, profile: str, backend: str, root: Path = REPO) -> str:
    """H up to where modules lie: the code of the step's modules as a sorted list of `relocatable_digest`s."""
    record: dict[str, Any] = {
        "code": sorted(d for p in compute_files(step, root) if (d := relocatable_digest(p, root)) is not None),
        "parameters": make_parameters(step, arch, profile, backend),
        "data": data_checksums(arch),
    }
    upstream = STEPS[step].upstream
    if upstream is not None:
        record["upstream"] = relocatable_fingerprint(upstream, arch, profile, backend, root)
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def compute_files(step: str, root: Path = REPO) -> list[Path]:
    """The notebook of `step` and the sharplib modules it runs that compute (rendering and tooling left out)."""
    notebook = root / STEPS[step].notebook
    return sorted({notebook, *deps.module_files([notebook], root / "sharplib", skip=RENDERING | TOOLING)})


def make_parameters(step: str, arch: str, profile: str, backend: str) -> dict[str, Any]:
    """The parameters make passes the notebook (`-p NAME VALUE`), results_dir aside: the ones H covers."""
    return {"arch": arch, "profile": profile, "backend": backend}


def data_checksums(arch: str) -> dict[str, str]:
    """The SHA-256 of every data file the task of `arch` reads."""
    return {name: sha for table in (checksums.RAW, checksums.IDX) for name, sha in sorted(table.items())
            if name.startswith(DATA_FOLDERS[arch])}


def inputs(step: str, arch: str, profile: str, backend: str, root: Path = REPO,
           file_digest: Callable[[Path], str] = code_digest) -> dict[str, Any]:
    """Everything H covers, each part named: files (path: code_digest), parameters, data (file: sha256), upstream H."""
    if step not in STEPS:
        raise ValueError(f"step must be one of {sorted(STEPS)}, got {step!r}")
    if arch not in DATA_FOLDERS:
        raise ValueError(f"arch must be one of {sorted(DATA_FOLDERS)}, got {arch!r}")
    record: dict[str, Any] = {
        "files": {str(p.relative_to(root)): file_digest(p) for p in compute_files(step, root)},
        "parameters": make_parameters(step, arch, profile, backend),
        "data": data_checksums(arch),
    }
    upstream = STEPS[step].upstream
    if upstream is not None:
        record["upstream"] = {upstream: fingerprint(upstream, arch, profile, backend, root, file_digest)["hash"]}
    return record


def fingerprint(step: str, arch: str, profile: str, backend: str, root: Path = REPO,
                file_digest: Callable[[Path], str] = code_digest) -> dict[str, Any]:
    """{"hash": H, **inputs}. `file_digest=sha256_file` gives H as locks written before 3d731f4 took it (over bytes)."""
    record = inputs(step, arch, profile, backend, root, file_digest)
    # H = SHA-256 of the inputs, serialized canonically (sorted keys)
    return {"hash": hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest(), **record}


def changed_inputs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The names of the inputs that differ between two `inputs` records (files, parameters, data, upstream steps)."""
    changed = []
    for part in ("files", "parameters", "data", "upstream"):
        a, b = old.get(part) or {}, new.get(part) or {}
        changed += [f"{part}:{key}" if part != "files" else key for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
    return changed


def notebook_defaults(step: str, root: Path = REPO) -> dict[str, Any]:
    """The literal values the notebook's `parameters` cell assigns (papermill's defaults)."""
    source = (root / STEPS[step].notebook).read_text()
    cell = source.split('# %% tags=["parameters"]', 1)[1].split("# %%", 1)[0]
    defaults: dict[str, Any] = {}
    for node in ast.parse(cell).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            defaults[node.targets[0].id] = ast.literal_eval(node.value)
    return defaults
