"""pyproject.toml and environment.yml pin the same packages at the same versions."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$")


def _pins(lines: list[str], source: str) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = PIN.match(line.strip())
        assert match, f"{source}: {line!r} is not an exact pin (name==version)"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return _pins(lines, "pyproject.toml")


def environment_pins() -> dict[str, str]:
    # The file is flat enough to read without a YAML parser: the pip: block's "- name==version" lines.
    text = (REPO / "environment.yml").read_text()
    block = text.split("- pip:", 1)[1]
    lines = [line.strip()[2:] for line in block.splitlines() if line.strip().startswith("- ") and "==" in line]
    return _pins(lines, "environment.yml")


def test_same_packages_and_versions() -> None:
    assert environment_pins() == pyproject_pins()


def test_torch_pair_is_pinned_together() -> None:
    pins = pyproject_pins()
    assert {"torch", "torchvision", "torch-geometric", "scipy", "seaborn", "pandas", "tqdm", "papermill", "jupytext", "jupyterlab"} <= set(
        pins
    )


def test_python_version_agrees() -> None:
    conda_python = re.search(r"- python=(\d+\.\d+)", (REPO / "environment.yml").read_text()).group(1)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.search(r">=\s*(\d+)\.(\d+)", requires).groups()
    assert tuple(map(int, conda_python.split("."))) >= tuple(map(int, low))
