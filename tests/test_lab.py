"""`make lab` as a student meets it.

- Every notebook source survives a jupytext round trip byte for byte: JupyterLab saves an open .py
  notebook that way, so a header jupytext would rewrite dirties `git status` on mere opening.
- The real server, started by `make lab` (on a free local port, with a token), serves the teaching
  notebook as a notebook that keeps its papermill `parameters` cell.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jupytext
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_source_survives_a_round_trip(source: Path) -> None:
    # As JupyterLab saves it: jupytext reads the .py, the notebook travels as .ipynb JSON (nbformat
    # sorts the keys), the running kernel adds language_info, and jupytext writes the .py back.
    text = source.read_text()
    notebook = nbformat.reads(nbformat.writes(jupytext.reads(text, fmt="py:percent")), as_version=4)
    assert "formats" not in notebook.metadata.get("jupytext", {}), "a paired notebook: saving it writes an .ipynb beside the source"
    notebook.metadata["language_info"] = {"name": "python", "version": sys.version.split()[0]}
    back = jupytext.writes(notebook, fmt="py:percent")
    assert back == text, "".join(difflib.unified_diff(text.splitlines(True), back.splitlines(True), "source", "round trip"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str, timeout: float = 10) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


@contextlib.contextmanager
def make_lab(project: Path, tmp: Path, data_root: Path, user_settings: dict | None = None):
    """`make lab` in `project`, on a free port with a token: yields (base url, token); stopped afterwards.

    `user_settings` ({"plugin id": {...}}) go to a temporary user-settings folder, as a student's own
    settings would; runtime files, config and workspaces go to `tmp` too, so nothing reads or litters ~/.jupyter.
    """
    port, token = free_port(), secrets.token_hex(16)
    for plugin, values in (user_settings or {}).items():
        package, name = plugin.split(":")
        path = tmp / "settings" / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {
        **os.environ, "SHARPLIB_DATA": str(data_root),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
    }
    # VENV: this interpreter's venv; -o: make must not rebuild it (its stamp may be older than a pyproject.toml being edited).
    lab_args = f"--port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    log_path = tmp / "lab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(["make", "-o", f"{VENV}/.installed", "lab", f"VENV={VENV}", f"LAB_ARGS={lab_args}"],
                                  cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                if server.poll() is not None:
                    pytest.fail(f"make lab exited with code {server.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    get(f"{base}/api/status", token, timeout=2)
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if time.monotonic() > deadline:
                        pytest.fail(f"jupyter lab did not answer within 90 s:\n{log_path.read_text()[-3000:]}")
                    time.sleep(0.5)
            yield base, token
        finally:
            server.terminate()  # SIGTERM to make, which passes it on to jupyter and waits; the server shuts its kernels down
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def test_lab_serves_the_teaching_notebook_as_a_notebook(tmp_path, data_root):
    with make_lab(REPO, tmp_path, data_root) as (base, token):
        model = get(f"{base}/api/contents/teaching_sharpness.py?type=notebook&content=1", token)
        kernels = get(f"{base}/api/kernelspecs", token)["kernelspecs"]
    assert model["type"] == "notebook" and model["format"] == "json", {k: model[k] for k in ("type", "format")}
    cells = model["content"]["cells"]
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code"
    assert any(c["cell_type"] == "markdown" for c in cells)
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"
    assert "python3" in kernels, sorted(kernels)
