"""Accept on evidence: stale results carried to new code only where old and new code compute the same numbers.

For a stale step, the commit its lock names and HEAD each get a git worktree, in which the step's own
notebooks run (the upstream study first) through papermill on the CPU with the small settings of
EVIDENCE. Every number the step writes per model (its CSV files, the ablation's per-model cache, the
summary's figures; timings left out) must agree bit for bit. Then the lock takes HEAD's hash, with the
commits, what was compared, a digest of the numbers and the reason; else nothing changes and the first
differences are printed.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .lockfile import git_commit, hash_at_commit, now, state, write_lock
from .stephash import ARCHS, REPO, STEPS, fingerprint, make_parameters

# The small inputs both sides run: a few models per pool, on the CPU; everything else as the step's profile.
EVIDENCE: dict[str, dict[str, Any]] = {
    "study": {"n_models": 3, "device": "cpu", "n_resamples": 99},
    "ablation": {"n_models": 3, "device": "cpu", "n_resamples": 99},
    "measures": {"n_seed_models": 3, "device": "cpu", "n_resamples": 99},
}
# LeNet-5 on 60000 images: 3 models to the protocol's stop take about 10 min a side on 2 busy cores; 2 epochs
# (the ablation's pools follow the study's) keep every code path but the later epochs' stopping test,
# which the FCNN and the GAT run in full.
EVIDENCE_BY_ARCH: dict[tuple[str, str], dict[str, Any]] = {("study", "lenet5"): {"max_epochs": 2}}


def evidence_settings(step: str, arch: str) -> dict[str, Any]:
    """The notebook parameters (beyond make's) with which both sides run `step` for `arch`."""
    return {**EVIDENCE[step], **EVIDENCE_BY_ARCH.get((step, arch), {})}
# Per step, the files of per-model numbers compared (globs under results/<arch>/), besides the summary JSON.
COMPARED: dict[str, tuple[str, ...]] = {
    "study": ("models.csv",),
    "ablation": ("ablation.csv", "rho.csv", "ablation_cache/*.json"),
    "measures": ("measures.csv",),
}
RESULTS = "evidence-results"  # relative to each worktree, so both sides write the same paths into their tables
UNTIMED = ("seconds", "provenance", "made_from", "params")  # keys and columns that are not computed numbers


class EvidenceError(RuntimeError):
    """The evidence could not be gathered (a notebook failed, a commit is unknown)."""


def _untimed(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not any(word in k for word in UNTIMED)}


def numbers(results: Path, arch: str, step: str) -> dict[str, Any]:
    """Per compared file, its rows (CSV) or content (JSON), timings left out, every value as written (exact)."""
    folder = results / arch
    found: dict[str, Any] = {STEPS[step].summary: _untimed(json.loads((folder / STEPS[step].summary).read_text()))}
    for pattern in COMPARED[step]:
        for path in sorted(folder.glob(pattern)):
            name = str(path.relative_to(folder))
            if path.suffix == ".csv":
                with path.open(newline="") as handle:
                    found[name] = [_untimed(row) for row in csv.DictReader(handle)]
            else:
                found[name] = _untimed(json.loads(path.read_text()))
    return found


def digest(found: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()


def differences(old: dict[str, Any], new: dict[str, Any], limit: int = 5) -> list[str]:
    """The first `limit` places where two `numbers` records differ, in words."""
    found: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            found.append(f"{name}: only at {'HEAD' if a is None else 'the old commit'}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) != len(b):
            found.append(f"{name}: {len(a)} rows, then {len(b)}")
        elif isinstance(a, list):
            found += [f"{name} row {i}, {key}: {ra.get(key)} then {rb.get(key)}" for i, (ra, rb) in enumerate(zip(a, b))
                      for key in sorted(set(ra) | set(rb)) if ra.get(key) != rb.get(key)]
        else:
            found += [f"{name}, {key}: {a.get(key)} then {b.get(key)}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
        if len(found) >= limit:
            break
    return found[:limit]


class Side:
    """One commit checked out in a worktree, its notebooks run on demand (each step once)."""

    def __init__(self, commit: str, folder: Path, profile: str, backend: str, log: Path, root: Path = REPO) -> None:
        self.commit, self.folder, self.profile, self.backend, self.log, self.root = commit, folder, profile, backend, log, root
        self.done: set[tuple[str, str]] = set()
        run = subprocess.run(["git", "worktree", "add", "--detach", "--force", str(folder), commit], cwd=root, capture_output=True, text=True)
        if run.returncode != 0:
            raise EvidenceError(f"git worktree add {commit}: {run.stderr.strip()}")

    def run(self, step: str, arch: str) -> dict[str, Any]:
        """Run `step` (after its upstream) for `arch` at this commit, once; its per-model numbers."""
        upstream = STEPS[step].upstream
        if upstream is not None:
            self.run(upstream, arch)
        if (step, arch) not in self.done:
            self._papermill(step, arch)
            self.done.add((step, arch))
        return numbers(self.folder / RESULTS, arch, step)

    def _papermill(self, step: str, arch: str) -> None:
        tools = Path(sys.executable).parent
        source = self.folder / "build" / f"evidence-{step}-{arch}.ipynb"
        source.parent.mkdir(parents=True, exist_ok=True)
        settings = evidence_settings(step, arch)
        parameters = {**make_parameters(step, arch, self.profile, self.backend), "results_dir": RESULTS, **settings}
        flags = [item for name, value in parameters.items() for item in ("-p", name, str(value))]
        env = {**os.environ, "PYTHONPATH": str(self.folder)}  # this commit's sharplib, not the installed one
        print(f"  {self.commit[:10]}: {step} {arch} ({', '.join(f'{k}={v}' for k, v in settings.items())})", flush=True)
        with self.log.open("a") as log:
            for command in ([tools / "jupytext", "--quiet", "--to", "ipynb", "--output", source, self.folder / STEPS[step].notebook],
                            [tools / "papermill", "--kernel", "python3", "--cwd", self.folder, source, source.with_suffix(".out.ipynb"), *flags]):
                if subprocess.run([str(c) for c in command], cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                    raise EvidenceError(f"{step} {arch} failed at {self.commit[:10]}; its log: {self.log}")

    def close(self) -> None:
        subprocess.run(["git", "worktree", "remove", "--force", str(self.folder)], cwd=self.root, capture_output=True)


def accept(reason: str, results_dir: str | Path, profile: str, backend: str, archs: tuple[str, ...] = ARCHS,
           steps: tuple[str, ...] = tuple(STEPS), root: Path = REPO, work: Path | None = None) -> int:
    """Accept every stale step whose evidence agrees; 0 when all stale steps were accepted, 1 when one was refused."""
    if not reason.strip():
        raise ValueError("--reason is required: say why the change leaves the numbers alone")
    head, dirty = git_commit(root)
    if head is None or dirty:
        print("accept: commit your changes first (sharplib/ and notebooks/ must be as HEAD has them): "
              "the accept records the commit whose code it checked")
        return 1
    work = Path(work or tempfile.mkdtemp(prefix="sharplib-evidence-"))
    sides: dict[str, Side] = {}
    refused = 0

    def side(commit: str) -> Side:
        if commit not in sides:
            sides[commit] = Side(commit, work / commit[:12], profile, backend, work / f"{commit[:12]}.log", root)
        return sides[commit]

    try:
        for arch in archs:
            for step in (s for s in STEPS if s in steps):  # the study first: the others' hashes include it
                found = state(step, arch, profile, backend, results_dir, root)
                if found.state != "stale":
                    print(f"{step} {arch}: {found.state}, nothing to accept" + (f" ({found.detail})" if not found.reusable else ""))
                    refused += found.state in ("modified", "invalid", "missing")
                    continue
                lock = found.lock
                assert lock is not None
                if lock["hash"] == fingerprint(step, arch, profile, backend, root)["hash"]:
                    print(f"{step} {arch}: refused: {found.detail}; its code is unchanged, so rerun it (make paper)")
                    refused += 1
                    continue
                if hash_at_commit(step, arch, profile, backend, lock["commit"], root) != lock["hash"]:
                    print(f"{step} {arch}: refused: its lock's hash is not that of commit {lock['commit'][:10]}'s code (rerun it)")
                    refused += 1
                    continue
                print(f"{step} {arch}: {found.detail}; running the evidence", flush=True)
                old, new = side(lock["commit"]).run(step, arch), side(head).run(step, arch)
                if old != new:
                    print(f"{step} {arch}: refused: the numbers differ between {lock['commit'][:10]} and {head[:10]}:")
                    print("\n".join(f"    {line}" for line in differences(old, new)))
                    refused += 1
                    continue
                current = fingerprint(step, arch, profile, backend, root)
                n_models = len(new.get(COMPARED[step][0], [])) if step != "ablation" else EVIDENCE["ablation"]["n_models"]
                entry = {"from_commit": lock["commit"], "to_commit": head, "from_hash": lock["hash"], "to_hash": current["hash"],
                         "compared": sorted(new), "settings": {s: evidence_settings(s, arch) for s in (STEPS[step].upstream, step) if s},
                         "n_models": n_models, "device": "cpu",
                         "digest": digest(new), "reason": reason, "date": now()}
                write_lock(Path(results_dir) / arch / f"{step}.lock",
                           {**lock, **current, "commit": head, "accepted": [*lock["accepted"], entry]})
                print(f"{step} {arch}: accepted ({len(new)} files of numbers equal bit for bit, digest {entry['digest'][:12]})")
    finally:
        for s in sides.values():
            s.close()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if refused else 0
