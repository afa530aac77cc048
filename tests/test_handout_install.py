"""The student's handout outside the repository: a fresh virtual environment in a folder of its own, the
handout and the wheel `make wheel` builds, and a local HTTP server standing in for the internet.

The notebook's first cell must install sharplib from the wheel beside it, and the data loader must
download Abalone (checksummed) into an empty data folder. To spare a 5 GB install of torch, the fresh
venv sees this venv's packages through a .pth file (its packages, not its sharplib: an editable
install's own .pth is not read from a folder a .pth adds), and pip may not reach an index.
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from sharplib.paper import handout
from tests.notebook_runner import NOTEBOOKS, printed
from tests.test_data import serve

REPO = Path(__file__).resolve().parents[1]


def fresh_venv(folder: Path) -> Path:
    """A new venv at `folder` whose site-packages also reads this interpreter's (through a .pth); its python."""
    # --without-pip: pip and setuptools come from this venv too (torch needs a newer setuptools than ensurepip brings)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    Path(own, "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.mark.slow
def test_the_handout_installs_sharplib_and_downloads_its_data(tmp_path: Path, data_root: Path) -> None:
    classroom = tmp_path / "classroom"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(classroom), str(REPO)], check=True, capture_output=True)
    student, _ = handout.build(NOTEBOOKS / "teaching_sharpness.py", classroom, execute=False)
    python = fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SHARPLIB_MIRROR", "SHARPLIB_DOWNLOAD", "VIRTUAL_ENV")}
    probe = subprocess.run([str(python), "-c", "import sharplib"], cwd=classroom, env=env, capture_output=True)
    assert probe.returncode != 0, "sharplib is importable before the handout installs it: nothing would be tested"

    empty = tmp_path / "data"
    with serve(data_root) as (mirror, requested):
        env.update(SHARPLIB_DATA=str(empty), SHARPLIB_MIRROR=mirror, PIP_NO_INDEX="1", JUPYTER_PREFER_ENV_PATH="1", OMP_NUM_THREADS="1")
        run = subprocess.run([str(python), "-m", "papermill", "--kernel", "python3", "--cwd", str(classroom), str(student),
                              str(classroom / "done.ipynb"), "-p", "n_restarts", "4", "-y", "rho_grid: [0.001, 0.003]"],
                             env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = printed(nbformat.read(classroom / "done.ipynb", as_version=4))
    assert "installing sharplib from" in out and "sharplib-0.1.0-py3-none-any.whl" in out
    assert any(p.startswith("/abalone/") for p in requested), requested
    assert any(p.is_file() for p in (empty / "abalone").iterdir()), "the download kept nothing"
    assert out.strip().endswith("0 of 5 exercises done; unanswered: 1, 2, 3, 4, 5")
    installed = subprocess.run([str(python), "-c", "import sharplib; print(sharplib.__file__)"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / "venv") in installed, installed
