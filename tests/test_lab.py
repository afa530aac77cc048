"""`make lab` as a student meets it.

- Every notebook source survives a jupytext round trip byte for byte: JupyterLab saves an open .py
  notebook that way, so a header jupytext would rewrite dirties `git status` on mere opening.
- The real server, started by `make lab` (on a free local port, with a token), serves the teaching
  notebook as a notebook that keeps its papermill `parameters` cell.
- (slow) Debian's Chromium, driven by Playwright, opens the teaching notebook from the file browser
  in a git copy of the project, runs all cells, and waits for the autosave: notebooks/ must be as
  git has it, with no paired .ipynb beside the sources.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import secrets
import shutil
import signal
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

from tests.test_make import fresh_copy, processes_in

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))
AUTOSAVE_S = 3  # the browser test's autosave interval (JupyterLab's default, kept by `make lab`, is 120 s)


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


@pytest.mark.e2e
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


def git_copy(dest: Path) -> Path:
    """The project's files (as this checkout has them) in a fresh git repository, all committed.

    The browser saves into the copy, so a failing run cannot rewrite this checkout's notebooks, and
    `git status` there tells what JupyterLab changed, whatever this checkout has uncommitted.
    """
    fresh_copy(dest)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "as checked out"]):
        subprocess.run([*git, *command], cwd=dest, check=True)
    return dest


# Done when every code cell's prompt shows an execution count above `after` (the last count of an earlier
# Run All), or on the first error.
RAN_OR_FAILED = """([expected, after]) => {
  const outputs = [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')].map(o => o.textContent);
  const counted = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
    .map(p => /^\\[(\\d+)\\]/.exec(p.textContent.trim())).filter(m => m && Number(m[1]) > after);
  return counted.length === expected || outputs.some(text => /Traceback|^\\w+(Error|Exception)\\b/m.test(text));
}"""
# For the screenshot: the first plot at the bottom of the window, its table above it. Cells come into
# view at an estimated height and then take their real one, so scroll until the plot stays put (10 frames).
PLOT_IN_VIEW = """img => {
  const r = img.getBoundingClientRect();
  const shown = img.complete && r.height > 0 && document.elementFromPoint(r.left + r.width / 2, r.bottom - 2) === img;
  const frames = shown && r.top === Number(img.dataset.top) ? Number(img.dataset.frames) + 1 : 0;
  Object.assign(img.dataset, {top: r.top, frames});
  if (!shown) img.scrollIntoView({block: 'end'});
  return frames >= 10;
}"""
# The same for any element, centred: for the screenshot of an exercise's feedback.
CENTRED_IN_VIEW = """el => {
  const r = el.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + 5, r.top + r.height / 2);
  const shown = r.height > 0 && hit !== null && el.contains(hit);
  const frames = shown && r.top === Number(el.dataset.top) ? Number(el.dataset.frames) + 1 : 0;
  Object.assign(el.dataset, {top: r.top, frames});
  if (!shown) el.scrollIntoView({block: 'center'});
  return frames >= 10;
}"""
ERROR = re.compile(r"Traceback|^\w+(Error|Exception)\b", re.M)  # an exception; warnings on stderr are fine


def run_all(page, n_cells: int, after: int) -> int:
    """Run → Run All Cells, wait until every code cell ran (or one failed); the highest execution count."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
    page.wait_for_function(RAN_OR_FAILED, arg=[n_cells, after])
    outputs = page.locator(".jp-NotebookPanel .jp-OutputArea-output")
    errors = [t for t in outputs.evaluate_all("els => els.map(e => e.textContent)") if ERROR.search(t)]
    assert not errors, f"error output in the notebook:\n{errors[0][-3000:]}"
    prompts = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").all_text_contents()
    counts = [int(m.group(1)) for p in prompts if (m := re.match(r"\[(\d+)\]", p.strip()))]
    assert counts == list(range(after + 1, after + n_cells + 1)), f"execution counts {counts}: not every cell ran once, in order"
    return counts[-1]


def set_cell(page, starts_with: str, source: str) -> None:
    """Replace the text of the code cell whose source starts with `starts_with`, as a student types it."""
    cell = page.locator(".jp-NotebookPanel .jp-CodeCell", has=page.locator(".cm-line", has_text=starts_with).first).first
    editor = cell.locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(source)
    page.keyboard.press("Escape")
    shown = editor.evaluate("e => e.cmView ? e.cmView.view.state.doc.toString() : e.innerText")
    assert shown.strip() == source.strip(), f"the cell reads {shown!r}"


def printed_text(page) -> str:
    return " ".join(page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']").all_text_contents())


@pytest.mark.browser
@pytest.mark.slow
def test_student_runs_edits_reruns_and_answers_in_the_lab(tmp_path, data_root):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing: run `make browser` (.ci/run does) before the tests")
    project = git_copy(tmp_path / "project")
    notebooks = project / "notebooks"
    source = notebooks / "teaching_sharpness.py"
    cells = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    parameters = next(c.source for c in cells if "parameters" in c.metadata.get("tags", []))
    answer_1 = next(c.source for c in cells if c.source.startswith("answer_1 = None"))
    written = source.stat().st_mtime_ns
    short_autosave = {"@jupyterlab/docmanager-extension:plugin": {"autosaveInterval": AUTOSAVE_S}}
    shots = {}

    def git_status() -> str:
        return subprocess.run(
            ["git", "status", "--porcelain", "notebooks/"], cwd=project, capture_output=True, text=True, check=True
        ).stdout

    with make_lab(project, tmp_path, data_root, short_autosave) as (base, token), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium)  # Debian's Chromium: Playwright downloads none
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(180_000)  # a loaded 2-core CI machine: generous, and every wait is on a condition
            page.goto(f"{base}/lab?token={token}")
            page.locator(".jp-DirListing-item", has_text="teaching_sharpness.py").dblclick()
            page.locator(".jp-NotebookPanel").wait_for()
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()  # the status bar: the kernel is up
            last = run_all(page, len(cells), 0)
            page.locator(".lm-TabBar-tab.jp-mod-dirty").wait_for(state="detached")  # the autosave after the last output
            page.wait_for_function(PLOT_IN_VIEW, arg=page.locator(".jp-NotebookPanel .jp-RenderedImage img").first.element_handle())
            page.screenshot(path=tmp_path / "lab.png")
            shots["lab.png"] = tmp_path / "lab.png"
            # Four figures: invariance over r, the ascent traces, the restart spread, sharpness over ρ.
            assert page.locator(".jp-NotebookPanel .jp-RenderedImage img").count() == 4
            assert "5 of 5 exercises done" in printed_text(page)  # the source is the instructor's version
            news = [t for t in page.locator(".Toastify__toast").all_text_contents() if "news" in t.lower()]
            assert not news, f"the news pop-up is shown: {news}"
            page.keyboard.press("Control+s")  # saving without edits
            page.locator(".lm-TabBar-tab.jp-mod-dirty").wait_for(state="detached")
            status = git_status()
            assert status == "", f"opening and saving changed notebooks/:\n{status}" + subprocess.run(
                ["git", "diff", "notebooks/"], cwd=project, capture_output=True, text=True).stdout[:3000]
            assert source.stat().st_mtime_ns != written, "the autosave never wrote the notebook: nothing was tested"

            # A student edits a parameter and a wrong answer, then runs all, twice, without a restart.
            set_cell(page, "seed = ", parameters.replace("factors = [0.1, 0.3, 1.0, 3.0, 10.0]", "factors = [1.0, 2.0, 4.0]"))
            set_cell(page, "answer_1 = None", answer_1.replace("answer_1 = 0.025 * abs(-0.4)", "answer_1 = 0.025"))
            for _ in range(2):
                last = run_all(page, len(cells), last)
                table = page.locator(".jp-OutputArea-output", has_text="sharpness of each rescaled copy").first
                factors = table.evaluate("t => [...t.querySelectorAll('tbody tr th')].map(th => Number(th.textContent))")
                assert factors == [1.0, 2.0, 4.0], f"the table shows the factors {factors}, not the edited ones"
                printed = printed_text(page)
                assert "Exercise 1: not yet (0.025). Hint: the adaptive box is" in " ".join(printed.split()), printed[-2000:]
                assert "4 of 5 exercises done; not yet right: 1" in printed  # the last code cell ran
            feedback = page.locator(".jp-OutputArea-output", has_text="Exercise 1: not yet").first
            page.wait_for_function(CENTRED_IN_VIEW, arg=feedback.element_handle())
            page.screenshot(path=tmp_path / "lab-exercise.png")
            shots["lab-exercise.png"] = tmp_path / "lab-exercise.png"
        finally:
            browser.close()

    if os.environ.get("SHARPLIB_SCREENSHOT") == "1":  # refreshes the README's pictures
        for name, path in shots.items():
            shutil.copyfile(path, REPO / "docs" / name)
    for pid in processes_in(project):  # a kernel the server failed to stop must not outlive the test
        os.kill(pid, signal.SIGKILL)
    assert not list(notebooks.glob("*.ipynb")), "JupyterLab wrote a paired .ipynb beside the source"
