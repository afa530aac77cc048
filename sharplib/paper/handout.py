"""A student's and an instructor's notebook from one percent-format source, by nbgrader's conventions.

    python -m sharplib.paper.handout notebooks/teaching_sharpness.py build/handout

The source marks answers as nbgrader does (`### BEGIN SOLUTION` ... `### END SOLUTION`; `### BEGIN HIDDEN TESTS`
... `### END HIDDEN TESTS` in a cell tagged `tests`), so the same file works with nbgrader too. `build` writes
`<name>-student.ipynb` (solutions stubbed, no hidden tests, no outputs) and `<name>-instructor.ipynb` (the source
executed by papermill with `grading=True`, so that a solution failing its own check fails the build).
"""
from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Any

import jupytext
import nbformat

from ..core.notebook import scratch_dir

SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_TESTS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
STUBS = {"code": "# YOUR CODE HERE", "markdown": "YOUR ANSWER HERE"}


def strip_region(source: str, markers: tuple[str, str], stub: str | None) -> str:
    """`source` with each region from `markers[0]` to `markers[1]` (marker lines included) replaced by `stub`,
    indented as the opening marker, or removed when `stub` is None."""
    begin, end = map(re.escape, markers)

    def replace(match: re.Match) -> str:
        return "" if stub is None else f"{match.group(1)}{stub}\n"

    text = re.sub(rf"^([ \t]*){begin}[^\n]*\n.*?^[ \t]*{end}[^\n]*(\n|\Z)", replace, source + "\n", flags=re.M | re.S)
    return text[:-1] if text.endswith("\n") else text


def nbgrader_metadata(cell: Any, index: int) -> dict[str, Any] | None:
    """nbgrader's cell metadata for a cell tagged `solution` or `tests` (schema 3), else None."""
    tags = set(cell.metadata.get("tags", []))
    solution, grade = "solution" in tags, "tests" in tags
    if not (solution or grade):
        return None
    meta = {"grade": grade, "solution": solution, "locked": grade, "grade_id": f"cell-{index}", "schema_version": 3}
    return {**meta, "points": 1} if grade else meta


def student_version(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Solutions replaced by stubs, hidden tests removed, outputs cleared."""
    nb = copy.deepcopy(notebook)
    for index, cell in enumerate(nb.cells):
        cell.source = strip_region(strip_region(cell.source, HIDDEN_TESTS, None), SOLUTION, STUBS.get(cell.cell_type, ""))
        _mark(cell, index)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def instructor_source(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The source with nbgrader's metadata, ready to execute."""
    nb = copy.deepcopy(notebook)
    for index, cell in enumerate(nb.cells):
        _mark(cell, index)
    return nb


def _mark(cell: Any, index: int) -> None:
    meta = nbgrader_metadata(cell, index)
    if meta is not None:
        cell.metadata["nbgrader"] = meta


def leaks(student: nbformat.NotebookNode) -> list[str]:
    """Markers that survived into the student's version (must be none)."""
    markers = [*SOLUTION, *HIDDEN_TESTS]
    return [m for cell in student.cells for m in markers if m in cell.source]


def build(source: Path, out_dir: Path, execute: bool = True, **parameters: Any) -> tuple[Path, Path]:
    """Write `<name>-student.ipynb` and `<name>-instructor.ipynb` (executed unless `execute` is False) to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    notebook = jupytext.read(source)
    name = source.stem
    student, instructor = out_dir / f"{name}-student.ipynb", out_dir / f"{name}-instructor.ipynb"
    student_nb = student_version(notebook)
    if leaks(student_nb):
        raise ValueError(f"{source}: unbalanced solution or hidden-test markers: {leaks(student_nb)}")
    nbformat.write(student_nb, student)
    nbformat.write(instructor_source(notebook), instructor)
    if execute:
        import papermill

        papermill.execute_notebook(str(instructor), str(instructor), parameters={"grading": True, **parameters},
                                   kernel_name="python3", cwd=str(out_dir), progress_bar=False)
    return student, instructor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Student and instructor notebooks from one source.")
    parser.add_argument("source", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--no-execute", action="store_true", help="write the instructor's version without running it")
    args = parser.parse_args(argv)
    # The instructor's run writes its invariance.csv to the git-ignored scratch folder, not among the handouts.
    results = {"results_dir": str(scratch_dir() / "handout")}
    for path in build(args.source, args.out_dir, execute=not args.no_execute, **results):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
