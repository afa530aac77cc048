"""A lock per step, beside its results (`results/<arch>/<step>.lock`): what computed them, and where the files stand.

Make writes it after a notebook ran (`python -m sharplib.pipeline.fingerprint lock`), as DVC writes dvc.lock: the
step's hash H and its inputs, the commit and device that computed the numbers, a SHA-256 of every output
file, and the accepts (`evidence.py`) that carried the results to later code. A seal (the SHA-256 of the
rest) shows a lock edited by hand. `state` says where one step stands: current, accepted, stale, modified,
missing or invalid.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .stephash import REPO, STEPS, changed_inputs, code_digest, fingerprint, relocatable_fingerprint, sha256_file

FORMAT = 1


@dataclass(frozen=True)
class StepState:
    step: str
    arch: str
    state: str  # current, accepted, stale, modified, missing, invalid
    detail: str
    lock: dict[str, Any] | None = None

    @property
    def reusable(self) -> bool:
        return self.state in ("current", "accepted")


def lock_path(results_dir: str | Path, arch: str, step: str) -> Path:
    return Path(results_dir) / arch / f"{step}.lock"


def seal(record: dict[str, Any]) -> str:
    """SHA-256 of the lock without its seal, serialized canonically."""
    body = {key: value for key, value in record.items() if key != "seal"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def output_hashes(results_dir: str | Path, arch: str, step: str) -> dict[str, str | None]:
    """Per output file of the step, its SHA-256 (None where the file is missing)."""
    folder = Path(results_dir) / arch
    return {name: sha256_file(folder / name) if (folder / name).is_file() else None for name in STEPS[step].outputs}


def read_lock(path: Path) -> dict[str, Any]:
    """The lock at `path`; ValueError naming the file when it is not a readable, sealed lock."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable lock file ({err})") from err
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a lock file of format {FORMAT}")
    if record.get("seal") != seal(record):
        raise ValueError(f"{path} was edited by hand: its seal does not match its content")
    inputs = {key: record.get(key) for key in ("files", "parameters", "data", "upstream") if record.get(key) is not None}
    if record.get("hash") != hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest():
        raise ValueError(f"{path} was edited by hand: its hash is not the hash of the inputs it lists")
    return record


def write_lock(path: Path, record: dict[str, Any]) -> None:
    """Seal and write (`write_text_atomic`)."""
    record = {**record, "format": FORMAT}
    record["seal"] = seal(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` whole, through a temporary name of this process's own (two makes never share one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def new_lock(step: str, arch: str, profile: str, backend: str, results_dir: str | Path, computed: dict[str, Any],
             root: Path = REPO) -> dict[str, Any]:
    """The lock of results just computed at `computed["commit"]`: no accepts yet."""
    current = fingerprint(step, arch, profile, backend, root)
    if computed.get("dirty"):  # dirty: the code that computes is not the commit's (results written meanwhile do not count)
        at_commit = hashes_at_commit(step, arch, profile, backend, computed["commit"], root) or set()
        computed = {**computed, "dirty": current["hash"] not in at_commit}
    upstream = STEPS[step].upstream
    return {**current, "step": step, "arch": arch, "profile": profile, "backend": backend, "commit": computed["commit"],
            "outputs": output_hashes(results_dir, arch, step), "computed": {**computed, "hash": current["hash"]}, "accepted": [],
            # the upstream results this step read (the study's pool): a rerun study makes this step stale too
            "upstream_outputs": output_hashes(results_dir, arch, upstream) if upstream else {}}


def device_words(device: str) -> str:
    """A lock's device in words: a GPU by its name, a CPU (the provenance records its architecture) as "the CPU (x86_64)"."""
    return f"the CPU ({device})" if device in ("x86_64", "aarch64", "arm64", "AMD64", "i386", "") else device


def computed_where(results_dir: str | Path, step: str, archs: list[str]) -> dict[str, list[str]]:
    """The architectures grouped by where their `step` results were computed, as their locks say ("on D at commit C");
    results without a lock are grouped as made outside make."""
    origins: dict[str, list[str]] = {}
    for arch in archs:
        path = lock_path(results_dir, arch, step)
        if path.exists():
            computed = json.loads(path.read_text())["computed"]
            origin = f"on {device_words(computed['device'])} at commit {computed['commit'][:7]}"
        else:
            origin = "outside make (no lock records where)"
        origins.setdefault(origin, []).append(arch)
    return origins


def git_commit(root: Path = REPO) -> tuple[str | None, bool]:
    """(HEAD's commit, whether the step-relevant tree differs from it); (None, True) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "sharplib", "notebooks"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None, True
    return commit, bool(dirty)


@contextlib.contextmanager
def tree_at(commit: str, root: Path = REPO) -> Iterator[Path | None]:
    """sharplib/ and notebooks/ as `commit` has them, in a temporary folder (read from git, nothing checked out);
    None when git cannot show them."""
    with tempfile.TemporaryDirectory(prefix="sharplib-commit-") as tmp:
        archive = Path(tmp) / "tree.tar"
        done = subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), commit, "sharplib", "notebooks"],
                              cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            yield None
            return
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def hashes_at_commit(step: str, arch: str, profile: str, backend: str, commit: str, root: Path = REPO) -> set[str] | None:
    """H of the code at `commit`, taken over code and, for locks written before 3d731f4, over bytes; None when git
    cannot show it."""
    with tree_at(commit, root) as tree:
        if tree is None:
            return None
        try:
            return {fingerprint(step, arch, profile, backend, tree, file_digest)["hash"] for file_digest in (code_digest, sha256_file)}
        except (OSError, ValueError, SyntaxError):
            return None


def relocatable_at_commit(step: str, arch: str, profile: str, backend: str, commit: str, root: Path = REPO) -> str | None:
    """`stephash.relocatable_fingerprint` of the code at `commit`; None when git cannot show it."""
    with tree_at(commit, root) as tree:
        if tree is None:
            return None
        try:
            return relocatable_fingerprint(step, arch, profile, backend, tree)
        except (OSError, ValueError, SyntaxError):
            return None


def state(step: str, arch: str, profile: str, backend: str, results_dir: str | Path, root: Path = REPO,
          verify_commit: bool = True) -> StepState:
    """Where one step's results stand against the checkout; runs nothing but git.

    Returns:
        StepState whose state is one of
            current   the lock's H is the checkout's, its outputs are the files on disk
            accepted  as current, through one or more accepts on evidence
            stale     the checkout's H differs (the changed inputs are named): make reruns it, or `make accept`
            modified  an output differs from the lock (edited, deleted): make reruns it
            missing   no lock, or no outputs: make runs it
            invalid   the lock is unreadable, sealed wrongly, or its hash is not its commit's code: make reruns it
    """
    path = lock_path(results_dir, arch, step)
    outputs = output_hashes(results_dir, arch, step)
    if not path.exists():
        made = "" if all(v is None for v in outputs.values()) else " (its files were not made by make: no lock)"
        return StepState(step, arch, "missing", f"{path} does not exist{made}")
    try:
        lock = read_lock(path)
    except ValueError as err:
        return StepState(step, arch, "invalid", str(err))
    for name, sha in outputs.items():
        if lock["outputs"].get(name) != sha:
            what = "is missing" if sha is None else "differs from the one its lock records"
            return StepState(step, arch, "modified", f"{Path(results_dir) / arch / name} {what}", lock)
    upstream = STEPS[step].upstream
    if upstream and lock.get("upstream_outputs") != output_hashes(results_dir, arch, upstream):
        return StepState(step, arch, "stale", f"the {upstream}'s results changed since this step read them", lock)
    current = fingerprint(step, arch, profile, backend, root)
    if lock["hash"] != current["hash"]:
        changed = changed_inputs(lock, current)
        return StepState(step, arch, "stale", f"changed since {lock['commit'][:10]}: {', '.join(changed) or 'the hash'}", lock)
    if (
        verify_commit
        and not lock.get("computed", {}).get("dirty")
        and lock["hash"] not in (hashes_at_commit(step, arch, profile, backend, lock["commit"], root) or {lock["hash"]})
    ):
        return StepState(step, arch, "invalid", f"{path}: its hash is not that of commit {lock['commit'][:10]}'s code", lock)
    origin = f"computed at {lock['computed']['commit'][:10]} on {lock['computed'].get('device', '?')}"
    if lock["accepted"]:
        last = lock["accepted"][-1]
        return StepState(step, arch, "accepted", f"{origin}; accepted unchanged through {last['to_commit'][:10]} "
                         f"({len(lock['accepted'])} accept{'s' * (len(lock['accepted']) > 1)})", lock)
    return StepState(step, arch, "current", origin, lock)
