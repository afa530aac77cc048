"""`make lab` serves the jupytext notebooks as notebooks, and they survive being saved.

Every notebook source survives a jupytext round trip byte for byte: JupyterLab saves an open .py
notebook that way, so a header jupytext would rewrite dirties `git status` on mere opening.

Starts the real JupyterLab server with the command line of the Makefile's `lab` target (on a free
local port, with a token), and asks its contents API for the teaching notebook: the jupytext
contents manager (enabled by jupytext's server extension, installed in the venv) must turn the
percent-format .py into a notebook that keeps its papermill `parameters` cell.
"""
from __future__ import annotations

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
JUPYTER = Path(sys.executable).parent / "jupyter"  # .venv/bin/jupyter
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))

# Keep in sync with the Makefile's `lab` target (port and token are added per run).
LAB_ARGS = ["lab", "--ip=127.0.0.1", "--no-browser", "--ServerApp.root_dir=notebooks"]
if hasattr(os, "geteuid") and os.geteuid() == 0:
    LAB_ARGS.append("--allow-root")  # containers and CI often run as root; Jupyter refuses that otherwise


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


@pytest.fixture
def lab(tmp_path):
    """A running JupyterLab server: (base url, token); stopped afterwards, also when the test fails."""
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        # Runtime files, user config and Lab state go to tmp, so the test neither reads nor litters ~/.jupyter.
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(
        [str(JUPYTER), *LAB_ARGS, f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {server.returncode}:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
            try:
                get(f"{base}/api/status", token, timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within 90 s:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()  # SIGTERM: the server shuts down its kernels and exits
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_lab_serves_the_teaching_notebook_as_a_notebook(lab):
    base, token = lab
    model = get(f"{base}/api/contents/teaching_sharpness.py?type=notebook&content=1", token)
    assert model["type"] == "notebook" and model["format"] == "json", {k: model[k] for k in ("type", "format")}
    cells = model["content"]["cells"]
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code"
    assert any(c["cell_type"] == "markdown" for c in cells)
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"
    kernels = get(f"{base}/api/kernelspecs", token)["kernelspecs"]
    assert "python3" in kernels, sorted(kernels)
