"""The pipeline's command line: which steps make reruns, their locks, and accepts on evidence.

    python -m sharplib.pipeline.fingerprint status                 every step: current, accepted, stale, modified, missing
    python -m sharplib.pipeline.fingerprint check STEP ARCH        exit 0 when make may reuse the step's results
    python -m sharplib.pipeline.fingerprint args STEP ARCH         the notebook's papermill parameters, as make passes them
    python -m sharplib.pipeline.fingerprint lock STEP ARCH         after a run: write the step's lock (its files first name the
                                                                   checkout's folders relative to it: no machine's paths in results)
    python -m sharplib.pipeline.fingerprint accept --reason "..."  accept stale steps whose evidence agrees (evidence.py)

Make calls it for every step; notebooks never do. Standard library only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import evidence, lockfile
from ..core.archs import ARCHS
from .stephash import PLACEMENT, REPO, STEPS, fingerprint, make_parameters, notebook_defaults


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}.fingerprint", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["status", "check", "args", "lock", "accept", "show"])
    parser.add_argument("step", nargs="?", choices=sorted(STEPS))
    parser.add_argument("arch", nargs="?", choices=ARCHS)
    parser.add_argument("--profile", default="full")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--results", default="results", help="the results folder (results/<arch>/ holds the files)")
    parser.add_argument("--in-paper", nargs="*", default=None, metavar="STEP:ARCH",
                        help="status: the steps make paper runs (default: all); the others are only listed")
    parser.add_argument("--rerun", action="store_true", help="check: report the step as to be rerun whatever its lock says")
    parser.add_argument("--reason", default="", help="accept: why the change leaves the numbers alone")
    parser.add_argument("--only", nargs="*", default=[], help="accept: only these steps or architectures (study, gat, ...)")
    parser.add_argument("--root", type=Path, default=REPO, help="lock: the source tree that computed the results")
    parser.add_argument("--commit", help="lock: the commit that computed them (default: the results' provenance)")
    parser.add_argument("--device", help="lock: the device that computed them (default: the results' provenance)")
    return parser


def recorded_parameters_problem(step: str, arch: str, profile: str, backend: str, results_dir: str, root: Path) -> str | None:
    """None when the step's summary records the parameters make passes (the rest at the notebook's defaults)."""
    summary_path = Path(results_dir) / arch / STEPS[step].summary
    try:
        summary = json.loads(summary_path.read_text())
        recorded = summary["params"]
        assert isinstance(recorded, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
        return f"{summary_path} is not a readable results file ({type(err).__name__}: {err})"
    expected = {**notebook_defaults(step, root), **make_parameters(step, arch, profile, backend)}
    wrong = [f"{name}={recorded[name]!r} (make passes {expected[name]!r})" for name in sorted(set(expected) & set(recorded))
             if name not in PLACEMENT and json.dumps(recorded[name]) != json.dumps(expected[name])]
    return f"{summary_path} was made with other parameters: {', '.join(wrong)}" if wrong else None


def relative_paths(folder: Path, names: tuple[str, ...], root: Path) -> None:
    """Rewrite the checkout's absolute path (`root`/) out of the text files `names` in `folder` (an executed notebook
    prints where it wrote). Numbers are untouched: only that prefix is removed."""
    prefix = f"{root.resolve()}/"
    for name in names:
        path = folder / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if prefix in text:
            lockfile.write_text_atomic(path, text.replace(prefix, ""))


def _computed(args: argparse.Namespace) -> dict[str, Any]:
    """Who computed the results: the summary's provenance, else the checkout; --commit and --device override."""
    summary = json.loads((Path(args.results) / args.arch / STEPS[args.step].summary).read_text())
    origin = summary.get("provenance") or {}
    commit, dirty = lockfile.git_commit(args.root)
    computed = {"commit": origin.get("git_commit") or commit, "dirty": bool(origin.get("git_dirty", dirty)),
                "device": origin.get("device_name") or "unknown", "torch": origin.get("torch"), "date": lockfile.now()}
    if args.commit:
        computed.update(commit=args.commit, dirty=False)
    if args.device:
        computed["device"] = args.device
    if computed["commit"] is None:
        computed.update(commit="unknown", dirty=True)
    return computed


def status_lines(profile: str, backend: str, results_dir: str, in_paper: list[str] | None = None,
                 root: Path = REPO) -> tuple[list[str], list[str]]:
    """(one line per step, the steps `make paper` would run); a rerun study takes its ablation and measures along."""
    lines, reruns = [], []
    for arch in ARCHS:
        for step in STEPS:
            found = lockfile.state(step, arch, profile, backend, results_dir, root)
            upstream = STEPS[step].upstream
            outside = in_paper is not None and f"{step}:{arch}" not in in_paper
            rerun = not found.reusable or (upstream is not None and f"{upstream} {arch}" in reruns)
            if rerun and not outside:
                reruns.append(f"{step} {arch}")
            note = f" (not part of make paper: make {step}-{arch} runs it)" if outside and not found.reusable else ""
            lines.append(f"{step:<9} {arch:<7} {found.state:<9} {found.detail}{note}")
    return lines, reruns


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("check", "args", "lock", "show") and not (args.step and args.arch):
        _parser().error(f"{args.command} needs STEP and ARCH")
    if args.command == "status":
        lines, reruns = status_lines(args.profile, args.backend, args.results, args.in_paper)
        print("\n".join(lines))
        print(f"make paper{' PROFILE=' + args.profile if args.profile != 'full' else ''} would run: {', '.join(reruns) or 'no notebook'}")
        return 0
    if args.command == "accept":
        archs = tuple(a for a in ARCHS if a in args.only) or ARCHS
        steps = tuple(s for s in STEPS if s in args.only) or tuple(STEPS)
        return evidence.accept(args.reason, args.results, args.profile, args.backend, archs, steps)
    if args.command == "show":
        print(json.dumps(fingerprint(args.step, args.arch, args.profile, args.backend), indent=1))
        return 0
    if args.command == "args":
        parameters = {**make_parameters(args.step, args.arch, args.profile, args.backend), "results_dir": args.results}
        print(" ".join(f"-p {name} {value}" for name, value in parameters.items()))
        return 0
    if args.command == "lock":
        problem = recorded_parameters_problem(args.step, args.arch, args.profile, args.backend, args.results, args.root)
        if problem:
            print(f"no lock written: {problem}", file=sys.stderr)
            return 1
        relative_paths(Path(args.results) / args.arch, STEPS[args.step].outputs, Path(args.root))
        record = lockfile.new_lock(args.step, args.arch, args.profile, args.backend, args.results, _computed(args), args.root)
        missing = [name for name, sha in record["outputs"].items() if sha is None]
        if missing:
            print(f"no lock written: {args.step} {args.arch} did not write {', '.join(missing)}", file=sys.stderr)
            return 1
        lockfile.write_lock(lockfile.lock_path(args.results, args.arch, args.step), record)
        print(f"{lockfile.lock_path(args.results, args.arch, args.step)}: written (inputs {record['hash'][:12]})")
        return 0
    found = lockfile.state(args.step, args.arch, args.profile, args.backend, args.results)
    where = Path(args.results) / args.arch
    if found.reusable and not args.rerun:
        print(f"{where}: {args.step} {found.state} ({found.detail}), not rerun")
        return 0
    print(
        f"{where}: running {STEPS[args.step].notebook} for {args.arch}: "
        f"{'RERUN was asked for' if args.rerun else found.state + ': ' + found.detail}"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
