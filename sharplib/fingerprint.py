"""What produced a results file, as one hash: `make paper` reuses results by content, never by file time.

For a step (the study or the ablation notebook) of one architecture,

    H = SHA-256( the notebook's source, the source of every sharplib module it imports (transitively),
                 its parameters (arch, profile, backend), the checksums of the data files its task reads,
                 and for the ablation the study's H, whose pool it reuses )

The notebook records H, with what went into it, under "made_from" in the file it writes last
(results.json, ablation.json). `python -m sharplib.fingerprint check STEP ARCH ...` compares that
record with the checkout as it is now, so make reruns a notebook exactly when its H changed: a fresh
clone (whose file times say nothing) with unchanged code reruns none, and an edit of sharpness.py
reruns every study and ablation, as all of them import it. Standard library only: make asks this
before any virtual environment exists.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from . import checksums, deps

REPO = Path(__file__).resolve().parents[1]
# step -> (its notebook, the results file it writes last)
STEPS: dict[str, tuple[str, str]] = {"study": ("notebooks/study.py", "results.json"), "ablation": ("notebooks/ablation.py", "ablation.json")}
# arch -> the folder of the data root its task reads (protocol.TABLE1's dataset; tests/test_fingerprint.py checks they agree)
DATA_FOLDERS: dict[str, str] = {"fcnn": "abalone/", "lenet5": "fashion-mnist/", "gat": "cora/"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs(step: str, arch: str, profile: str, backend: str, root: Path = REPO) -> dict[str, Any]:
    """Everything H covers, each part named: {"files": {path: sha256}, "parameters": ..., "data": ..., ["study": H]}."""
    if step not in STEPS:
        raise ValueError(f"step must be one of {sorted(STEPS)}, got {step!r}")
    if arch not in DATA_FOLDERS:
        raise ValueError(f"arch must be one of {sorted(DATA_FOLDERS)}, got {arch!r}")
    notebook = root / STEPS[step][0]
    sources = [notebook, *deps.module_files([notebook], root / "sharplib")]
    record: dict[str, Any] = {
        "files": {str(p.relative_to(root)): _sha256(p) for p in sorted(set(sources))},
        "parameters": {"arch": arch, "profile": profile, "backend": backend},
        "data": {name: sha for table in (checksums.RAW, checksums.IDX) for name, sha in sorted(table.items()) if name.startswith(DATA_FOLDERS[arch])},
    }
    if step == "ablation":
        record["study"] = fingerprint("study", arch, profile, backend, root)["hash"]
    return record


def fingerprint(step: str, arch: str, profile: str, backend: str, root: Path = REPO) -> dict[str, Any]:
    """{"hash": H, **inputs}: what a notebook stores under "made_from" in the file it writes last."""
    record = inputs(step, arch, profile, backend, root)
    # H = SHA-256 of the inputs, serialized canonically (sorted keys)
    return {"hash": hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest(), **record}


def stale_reason(results_file: Path, current: dict[str, Any]) -> str | None:
    """None when `results_file` records the hash `current` has; else why it does not, in words."""
    if not results_file.exists():
        return f"{results_file} does not exist"
    try:
        recorded = json.loads(results_file.read_text()).get("made_from") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        return f"{results_file} is not a readable results file ({err})"
    if recorded.get("hash") == current["hash"]:
        return None
    if "hash" not in recorded:
        return f"{results_file} records no input hash (made before content-hash reuse)"
    changed = [name for part in ("files", "parameters", "data") for name in _changed(recorded.get(part, {}), current[part])]
    if recorded.get("study") != current.get("study"):
        changed.append("the study's inputs")
    return f"{results_file} was made from other inputs: {', '.join(changed) or 'the hash itself'} changed"


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def main(argv: list[str]) -> int:
    """`check STEP ARCH`: exit 0 when the step's results file is up to date, 1 (saying why) when it must be remade."""
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}.fingerprint", description="Is a results file up to date with the code and data?")
    parser.add_argument("command", choices=["check", "show"])
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("arch", choices=sorted(DATA_FOLDERS))
    parser.add_argument("--profile", default="full")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--results", default="results", help="the results folder (results/<arch>/ holds the files)")
    parser.add_argument("--rerun", action="store_true", help="report the file as stale whatever it records (make paper RERUN=1)")
    args = parser.parse_args(argv)
    current = fingerprint(args.step, args.arch, args.profile, args.backend)
    if args.command == "show":
        print(json.dumps(current, indent=1))
        return 0
    results_file = Path(args.results) / args.arch / STEPS[args.step][1]
    reason = "RERUN was asked for" if args.rerun else stale_reason(results_file, current)
    if reason is None:
        print(f"{results_file}: up to date (inputs {current['hash'][:12]}), not rerun")
        return 0
    print(f"{results_file}: rerunning notebooks/{args.step}.py for {args.arch}: {reason}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
