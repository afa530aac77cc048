"""Accept on evidence: stale results carried to new code only where old and new code compute the same numbers.

For a stale step, the commit its lock names and HEAD each get a git worktree, in which the step's notebooks
run (the upstream study first) through papermill on the CPU with the small settings of EVIDENCE. Every number
the step writes per model (timings left out) must agree bit for bit: then the lock takes HEAD's hash, with a
record of what was compared and why; else nothing changes and the first differences are printed. A step stale
only because its upstream study was rerun is accepted without a run when the study's new files hold the
numbers it read (`upstream_reproduced`) and its own code is unchanged; one whose code only moved between
folders (`stephash.relocatable_fingerprint` equal at both commits) is accepted without a run too.

The evidence runs its own small settings, so it cannot vouch for the profile's: a step whose row in the profile
(`profiles.PROFILES[profile][step][arch]`: pool sizes, epochs, restarts) differs between the two commits is refused
before anything runs (`Side.profile_row`, `profile_row_changes`), and make reruns it.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .lockfile import git_commit, hashes_at_commit, now, output_hashes, relocatable_at_commit, state, write_lock
from ..core.archs import ARCHS
from .stephash import REPO, STEPS, fingerprint, make_parameters, relocatable_fingerprint

# The small inputs both sides run: a few models per pool, on the CPU; everything else as the step's profile.
EVIDENCE: dict[str, dict[str, Any]] = {
    "study": {"n_models": 3, "device": "cpu", "n_resamples": 99},
    "ablation": {"n_models": 3, "device": "cpu", "n_resamples": 99},
    "measures": {"n_seed_models": 3, "device": "cpu", "n_resamples": 99},
    "progress": {"n_models": 3, "device": "cpu", "n_resamples": 99},
    # the quick grid (8 models, 4 for LeNet-5) trained to L*: every code path, the full grid's cells but fewer
    "equalized": {"n_seed_models": 3, "device": "cpu", "n_resamples": 99, "profile": "quick"},
}
# LeNet-5 on 60000 images: 3 models to the protocol's stop take about 10 min a side on 2 busy cores; 2 epochs
# (the ablation's pools follow the study's) keep every code path but the later epochs' stopping test,
# which the FCNN and the GAT run in full. Its two rows that ascend over the whole training set (full-set
# ascent, and the reference code that includes it) take over 10 min a side more: the FCNN's ablation runs that path.
# Its measures panel trains a 45-model grid to the protocol's stop (30-40 min a side); the quick profile's grid (8
# models, 1 epoch each) and estimators keep every code path, and the FCNN's and GAT's panels run the full grid.
EVIDENCE_BY_ARCH: dict[tuple[str, str], dict[str, Any]] = {
    ("study", "lenet5"): {"max_epochs": 2},
    ("ablation", "lenet5"): {"variants": ["report", "default_init", "eval_after_first_epoch", "drifting_anchor", "train_mode"]},
    ("measures", "lenet5"): {"profile": "quick"},
}


def evidence_settings(step: str, arch: str) -> dict[str, Any]:
    """The notebook parameters (beyond make's) with which both sides run `step` for `arch`."""
    return {**EVIDENCE[step], **EVIDENCE_BY_ARCH.get((step, arch), {})}


def chain_settings(step: str, arch: str) -> dict[str, dict[str, Any]]:
    """The evidence settings of `step` and of every step it is built on (the equalized step: the progress step and the study)."""
    settings = {}
    while step is not None:
        settings[step] = evidence_settings(step, arch)
        step = STEPS[step].upstream
    return settings
# Per step, the files of per-model numbers compared (globs under results/<arch>/), besides the summary JSON.
COMPARED: dict[str, tuple[str, ...]] = {
    "study": ("models.csv",),
    "ablation": ("ablation.csv", "rho.csv", "ablation_cache/*.json"),
    "measures": ("measures.csv",),
    "progress": ("progress.csv",),
    "equalized": ("equalized.csv",),
}
RESULTS = "evidence-results"  # relative to each worktree, so both sides write the same paths into their tables
# keys and columns that are not computed numbers: timings, records of the run, where a file lay
UNTIMED = ("seconds", "provenance", "made_from", "params", "checkpoint")


class EvidenceError(RuntimeError):
    """The evidence could not be gathered (a notebook failed, a commit is unknown)."""


# One profile's rows ({step: {arch: row}}), as JSON, from the code of the folder it runs in (argv: the profile).
# Before the layers, profiles.py lay at the package's top.
_READ_PROFILE = """
import json, sys
try:
    from sharplib.experiments.profiles import PROFILES
except ImportError:
    from sharplib.profiles import PROFILES
print(json.dumps(PROFILES.get(sys.argv[1], {}), sort_keys=True, default=repr))
"""


def profile_rows(folder: Path, profile: str) -> dict[str, dict[str, dict[str, Any]]]:
    """`PROFILES[profile]` as the code checked out in `folder` has it ({step: {arch: row}}; values as JSON writes them,
    a dataclass such as the grid as its repr; {} where that code has no such profile)."""
    done = subprocess.run([sys.executable, "-c", _READ_PROFILE, profile], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(folder)})
    if done.returncode != 0:
        raise EvidenceError(f"cannot read the {profile} profile in {folder}:\n{_tail(done.stderr)}")
    return json.loads(done.stdout)


def profile_row_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """The settings of a profile row that differ between two commits, in words ("n_models 24 -> 50"); none: the same row."""
    old, new = old or {}, new or {}
    return [f"{key} {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}" for key in sorted(set(old) | set(new))
            if not _same(old.get(key), new.get(key))]


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _untimed(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not any(word in k for word in UNTIMED)}


def _numeric_leaves(record: Any, prefix: str = "") -> dict[str, Any]:
    """A summary's numbers (and switches), flattened to dotted keys; settings that are None or text are not numbers."""
    if isinstance(record, dict):
        return {key: value for k, v in _untimed(record).items() for key, value in _numeric_leaves(v, f"{prefix}{k}.").items()}
    if isinstance(record, list) and all(isinstance(v, (int, float)) for v in record):
        return {prefix[:-1]: record} if record else {}
    return {prefix[:-1]: record} if isinstance(record, (int, float)) else {}


def numbers(results: Path, arch: str, step: str) -> dict[str, Any]:
    """Per compared file, its rows (CSV), its numbers (the summary JSON), or, for a cache of JSON files, their
    records sorted (the file names are keys, not numbers); timings left out, every value as written (exact)."""
    folder = results / arch
    found: dict[str, Any] = {STEPS[step].summary: _numeric_leaves(json.loads((folder / STEPS[step].summary).read_text()))}
    for pattern in COMPARED[step]:
        paths = sorted(folder.glob(pattern))
        if pattern.endswith(".json"):
            records = [_untimed(json.loads(path.read_text())) for path in paths]
            found[pattern] = sorted(records, key=lambda r: json.dumps(r, sort_keys=True))
            continue
        for path in paths:
            with path.open(newline="") as handle:
                found[str(path.relative_to(folder))] = [_untimed(row) for row in csv.DictReader(handle)]
    return found


def digest(found: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _row_differences(where: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Values that differ; a field on one side only counts when it holds something (a new, empty column does not)."""
    return [f"{where}{key}: {a.get(key)} then {b.get(key)}" for key in sorted(set(a) | set(b))
            if not _same(a.get(key), b.get(key)) and not (key not in a and _blank(b[key])) and not (key not in b and _blank(a[key]))]


def _same(a: Any, b: Any) -> bool:
    """Equal to the last bit, an undefined value (NaN) equal to itself: compared as JSON writes them."""
    return json.dumps(a) == json.dumps(b)


def differences(old: dict[str, Any], new: dict[str, Any], limit: int = 5) -> list[str]:
    """The first `limit` places where two `numbers` records differ, in words; none means the evidence agrees."""
    found: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            found.append(f"{name}: only at {'HEAD' if a is None else 'the old commit'}")
        elif isinstance(a, list) and len(a) != len(b):
            found.append(f"{name}: {len(a)} rows, then {len(b)}")
        elif isinstance(a, list):
            found += [line for i, (ra, rb) in enumerate(zip(a, b)) for line in _row_differences(f"{name} row {i}, ", ra, rb)]
        else:
            found += _row_differences(f"{name}, ", a, b)
        if len(found) >= limit:
            break
    return found[:limit]


def upstream_reproduced(
    results_dir: str | Path, arch: str, step: str, lock: dict[str, Any], root: Path, into: Path
) -> dict[str, Any] | str:
    """Whether the upstream step's files now hold the numbers `lock` read: the record of the check, or why not.

    The files the step read are found in git by the SHA-256s its lock recorded; timings are left out of the comparison.
    """
    upstream = STEPS[step].upstream
    try:
        folder = Path(results_dir).resolve().relative_to(root.resolve()) / arch
    except ValueError:
        return f"{results_dir} is not in the repository, so git cannot show the {upstream}'s results this step read"
    recorded = lock.get("upstream_outputs") or {}
    log = subprocess.run(["git", "log", "--format=%H", "--", (folder / STEPS[upstream].summary).as_posix()],
                         cwd=root, capture_output=True, text=True)
    for commit in log.stdout.split():
        shown = {name: subprocess.run(["git", "show", f"{commit}:{(folder / name).as_posix()}"], cwd=root, capture_output=True).stdout
                 for name, sha in recorded.items() if sha is not None}
        if all(hashlib.sha256(shown[name]).hexdigest() == sha for name, sha in recorded.items() if sha is not None):
            (into / arch).mkdir(parents=True, exist_ok=True)
            for name, data in shown.items():
                (into / arch / name).write_bytes(data)
            before, now_read = numbers(into, arch, upstream), numbers(Path(results_dir), arch, upstream)
            differing = differences(before, now_read)
            if differing:
                return f"the {upstream}'s numbers changed since {commit[:10]}: " + "; ".join(differing)
            return {"step": upstream, "read_at_commit": commit, "compared": sorted(now_read), "digest": digest(now_read)}
    return f"no commit holds the {upstream}'s results this step read (the SHA-256s its lock recorded)"


def evidence_key(commit: str, step: str, arch: str, profile: str, backend: str) -> str:
    """What a commit's evidence for one step depends on: the code (its commit), the settings both sides run with (the
    step's and those of the steps it is built on), and the Python and torch that ran them. The name of its numbers in the cache."""
    record = {"commit": commit, "step": step, "arch": arch, "profile": profile, "backend": backend,
              "settings": chain_settings(step, arch),
              "python": sys.version, "torch": _version("torch"), "machine": platform.machine()}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


class Side:
    """One commit checked out in a worktree, its notebooks run on demand (each step once), their numbers kept in `cache`
    (a commit's numbers do not change: a second accept, after a refused one or a later commit, reuses them)."""

    def __init__(self, commit: str, folder: Path, profile: str, backend: str, log: Path, root: Path = REPO,
                 cache: Path | None = None) -> None:
        self.commit, self.folder, self.profile, self.backend, self.log, self.root = commit, folder, profile, backend, log, root
        self.cache = cache
        self.done: set[tuple[str, str]] = set()
        self._rows: dict[str, dict[str, dict[str, Any]]] | None = None  # the profile's rows at this commit, read once
        run = subprocess.run(
            ["git", "worktree", "add", "--detach", "--force", str(folder), commit], cwd=root, capture_output=True, text=True
        )
        if run.returncode != 0:
            raise EvidenceError(f"git worktree add {commit}: {run.stderr.strip()}")

    def profile_row(self, step: str, arch: str) -> dict[str, Any] | None:
        """This commit's row of the profile for `step` and `arch` (None where it has none)."""
        if self._rows is None:
            self._rows = profile_rows(self.folder, self.profile)
        return self._rows.get(step, {}).get(arch)

    def run(self, step: str, arch: str) -> dict[str, Any]:
        """Run `step` (after its upstream) for `arch` at this commit, once; its per-model numbers."""
        kept = self.cache / f"{evidence_key(self.commit, step, arch, self.profile, self.backend)}.json" if self.cache else None
        if kept is not None and kept.is_file():
            try:
                found = json.loads(kept.read_text())
                print(f"  {self.commit[:10]}: {step} {arch}: the numbers of an earlier run ({kept})", flush=True)
                return found
            except ValueError:  # not what this code wrote (an edit by hand): run it again
                pass
        self._ran(step, arch)
        found = numbers(self.folder / RESULTS, arch, step)
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            partial = kept.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(found))
            partial.replace(kept)  # atomic: an interrupted write leaves no half a record
        return found

    def _ran(self, step: str, arch: str) -> None:
        """Run `step`'s notebook in this worktree, its upstream's first, unless already done here. The upstream runs
        even when the cache holds its numbers: the step reads the upstream's files, which the cache does not keep."""
        if (step, arch) in self.done:
            return
        upstream = STEPS[step].upstream
        if upstream is not None:
            self._ran(upstream, arch)
        self._papermill(step, arch)
        self.done.add((step, arch))

    def _papermill(self, step: str, arch: str) -> None:
        tools = Path(sys.executable).parent
        source = self.folder / "build" / f"evidence-{step}-{arch}.ipynb"
        source.parent.mkdir(parents=True, exist_ok=True)
        settings = evidence_settings(step, arch)
        parameters = {**make_parameters(step, arch, self.profile, self.backend), "results_dir": RESULTS, **settings}
        # a list goes as YAML (-y), as papermill's -p would pass its text
        flags = [item for name, value in parameters.items()
                 for item in (("-y", f"{name}: {json.dumps(value)}") if isinstance(value, list) else ("-p", name, str(value)))]
        env = {**os.environ, "PYTHONPATH": str(self.folder)}  # this commit's sharplib, not the installed one
        print(f"  {self.commit[:10]}: {step} {arch} ({', '.join(f'{k}={v}' for k, v in settings.items())})", flush=True)
        with self.log.open("a") as log:
            for command in (
                [tools / "jupytext", "--quiet", "--to", "ipynb", "--output", source, self.folder / STEPS[step].notebook],
                [tools / "papermill", "--kernel", "python3", "--cwd", self.folder, source, source.with_suffix(".out.ipynb"), *flags],
            ):
                process = subprocess.Popen([str(c) for c in command], cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT)
                try:
                    returncode = process.wait()
                finally:  # stopped (Ctrl-C, SIGTERM): the notebook stops too
                    if process.poll() is None:
                        process.terminate()
                        process.wait()
                if returncode != 0:  # the log goes with the worktrees: its end goes into the error
                    raise EvidenceError(f"{step} {arch} failed at {self.commit[:10]}; the end of its log ({self.log}):\n"
                                        f"{_tail(self.log.read_text(errors='replace'))}")

    def close(self) -> None:
        subprocess.run(["git", "worktree", "remove", "--force", str(self.folder)], cwd=self.root, capture_output=True)


def record_accept(path: Path, lock: dict[str, Any], current: dict[str, Any], head: str, reason: str,
                  reproduced: dict[str, Any] | None, **how: Any) -> dict[str, Any]:
    """Write `lock` carried to HEAD's hash `current`, with one more accept: the commits and hashes, `how` it was
    shown (evidence, a move, or only the upstream check), the upstream check if one ran, and the reason."""
    entry = {"from_commit": lock["commit"], "to_commit": head, "from_hash": lock["hash"], "to_hash": current["hash"],
             **how, "reason": reason, "date": now(), **({"upstream_reproduced": reproduced} if reproduced else {})}
    write_lock(path, {**lock, **current, "commit": head, "accepted": [*lock["accepted"], entry]})
    return entry


def accept(reason: str, results_dir: str | Path, profile: str, backend: str, archs: tuple[str, ...] = ARCHS,
           steps: tuple[str, ...] = tuple(STEPS), root: Path = REPO, work: Path | None = None, cache: Path | None = None) -> int:
    """Accept every stale step whose evidence agrees; 0 when all stale steps were accepted, 1 when one was refused.

    The worktrees go in `work` (a temporary folder), each commit's numbers in `cache` (default root/build/evidence)."""
    if not reason.strip():
        raise ValueError("--reason is required: say why the change leaves the numbers alone")
    head, dirty = git_commit(root)
    if head is None or dirty:
        print("accept: commit your changes first (sharplib/ and notebooks/ must be as HEAD has them): "
              "the accept records the commit whose code it checked")
        return 1
    work = Path(work or tempfile.mkdtemp(prefix="sharplib-evidence-"))
    # SIGTERM as Ctrl-C: the worktrees are removed on the way out, whichever ends the run
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sides: dict[str, Side] = {}
    refused = 0

    def side(commit: str) -> Side:
        if commit not in sides:
            sides[commit] = Side(commit, work / commit[:12], profile, backend, work / f"{commit[:12]}.log", root,
                                 cache if cache is not None else root / "build" / "evidence")
        return sides[commit]

    try:
        tree = side(head).folder  # hashes come from HEAD's files, whatever the working tree does meanwhile
        for arch in archs:
            for step in (s for s in STEPS if s in steps):  # the study first: the others' hashes include it
                found = state(step, arch, profile, backend, results_dir, tree)
                if found.state != "stale":
                    print(f"{step} {arch}: {found.state}, nothing to accept" + (f" ({found.detail})" if not found.reusable else ""))
                    refused += found.state in ("modified", "invalid")  # missing: nothing to carry over, make runs it
                    continue
                lock = found.lock
                assert lock is not None
                upstream, reproduced = STEPS[step].upstream, None
                if upstream and lock.get("upstream_outputs") != output_hashes(results_dir, arch, upstream):
                    reproduced = upstream_reproduced(results_dir, arch, step, lock, root, work / f"{step}-{arch}-read")
                    if isinstance(reproduced, str):
                        print(f"{step} {arch}: refused: {reproduced}; rerun it (make paper)")
                        refused += 1
                        continue
                    lock = {**lock, "upstream_outputs": output_hashes(results_dir, arch, upstream)}
                current = fingerprint(step, arch, profile, backend, tree)
                path = Path(results_dir) / arch / f"{step}.lock"
                if lock["hash"] == current["hash"]:
                    if reproduced is None:
                        print(f"{step} {arch}: refused: {found.detail}; its code is unchanged, so rerun it (make paper)")
                        refused += 1
                        continue
                    record_accept(path, lock, current, head, reason, reproduced)
                    print(f"{step} {arch}: accepted (the {upstream}'s numbers are the ones it read, digest {reproduced['digest'][:12]})")
                    continue
                if lock["hash"] not in (hashes_at_commit(step, arch, profile, backend, lock["commit"], root) or set()):
                    print(f"{step} {arch}: refused: its lock's hash is not that of commit {lock['commit'][:10]}'s code (rerun it)")
                    refused += 1
                    continue
                relocated = relocatable_at_commit(step, arch, profile, backend, lock["commit"], root)
                if relocated is not None and relocated == relocatable_fingerprint(step, arch, profile, backend, tree):
                    # only modules moved: the same code, its imports naming other folders (stephash._Relocated)
                    record_accept(path, lock, current, head, reason, reproduced, moved=relocated)
                    print(f"{step} {arch}: accepted (only modules moved: the code is the same wherever it lies; nothing run)")
                    continue
                changed = profile_row_changes(side(lock["commit"]).profile_row(step, arch), side(head).profile_row(step, arch))
                if changed:
                    print(f"{step} {arch}: refused: the {profile} profile's settings for it changed ({', '.join(changed)}); "
                          "the evidence runs smaller ones and cannot vouch for these: rerun it (make paper)")
                    refused += 1
                    continue
                print(f"{step} {arch}: {found.detail}; running the evidence", flush=True)
                old, new = side(lock["commit"]).run(step, arch), side(head).run(step, arch)
                differing = differences(old, new)
                if differing:
                    print(f"{step} {arch}: refused: the numbers differ between {lock['commit'][:10]} and {head[:10]}:")
                    print("\n".join(f"    {line}" for line in differing))
                    refused += 1
                    continue
                settings = evidence_settings(step, arch)
                n_models = settings.get("n_models", settings.get("n_seed_models"))  # the seed pool's; a grid stays whole
                entry = record_accept(path, lock, current, head, reason, reproduced, compared=sorted(new),
                                      settings=chain_settings(step, arch),
                                      n_models=n_models, device="cpu", digest=digest(new))
                print(f"{step} {arch}: accepted ({len(new)} files of numbers equal bit for bit, digest {entry['digest'][:12]})")
    finally:
        for s in sides.values():
            s.close()
        shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    return 1 if refused else 0
