"""The README's Python examples, and the one moved from it to docs/library.md, run as printed (so the documented
API cannot drift from the code), and its result table is the tracked results' (so the numbers it shows cannot drift
from the run)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
LIBRARY = README.parent / "docs" / "library.md"  # the README's pool example moved there; it runs here all the same
BLOCKS = [(path, block) for path in (README, LIBRARY) for block in re.findall(r"```python\n(.*?)```", path.read_text(), re.S)]


def test_readme_has_examples() -> None:
    """The README keeps its own-model example, docs/library.md the pool example: two at least, as before the move."""
    assert len(BLOCKS) >= 2
    assert [path for path, _ in BLOCKS].count(README) >= 1 and [path for path, _ in BLOCKS].count(LIBRARY) >= 1


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{path.name}-{i + 1}" for i, (path, _) in enumerate(BLOCKS)])
def test_readme_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # examples write their checkpoints into the working directory
    monkeypatch.setenv("SHARPLIB_DATA", str(data_root))
    path, block = BLOCKS[index]
    exec(compile(block, f"{path.name} example {index + 1}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "an example should print its result"


def _signed(value: float) -> str:
    return f"{value:+.3f}".replace("-", "−")


def test_result_table_is_the_tracked_results() -> None:
    rows = re.findall(r"^\| (FCNN|LeNet-5|GAT) \| [^|]+ \| ([^|]+) \| \[([^,]+), ([^\]]+)\] \| ([^|]+) \|", README.read_text(), re.M)
    assert [r[0] for r in rows] == ["FCNN", "LeNet-5", "GAT"], "the README's result table lost a row"
    for (model, tau, low, high, p_value), arch in zip(rows, ("fcnn", "lenet5", "gat")):
        results = json.loads((README.parent / "results" / arch / "results.json").read_text())
        assert results["profile"] == "full" and results["n_used"] == 50
        assert (tau.strip(), low.strip(), high.strip()) == (_signed(results["tau"]), *map(_signed, results["tau_ci"])), model
        p = results["p_value"]
        assert p_value.strip() == ("< 0.001" if p < 0.001 else f"{p:.2g}"), model


def test_provenance_line_is_the_locks() -> None:
    """The README says what computed the tracked results in the words the paper's byline uses, from the locks."""
    from sharplib.paper.report import provenance_sentence

    expected = provenance_sentence(README.parent / "results")
    assert f"\n> {expected}\n" in README.read_text(), f"README's provenance line should read:\n> {expected}"


def _interval(result: dict) -> str:
    signed = lambda v: f"{v:+.2f}".replace("-", "−")  # noqa: E731
    return f"{signed(result['tau'])} [{signed(result['ci_low'])}, {signed(result['ci_high'])}]"


@pytest.mark.parametrize("arch, pool, kind", [("fcnn", "protocol", "partial"), ("fcnn", "equalized", "partial"),
                                              ("lenet5", "protocol", "partial"), ("lenet5", "equalized", "partial"),
                                              ("lenet5", "equalized", "tau"), ("gat", "protocol", "partial"),
                                              ("gat", "equalized", "partial"), ("gat", "equalized", "tau")])
def test_progress_paragraph_is_the_tracked_results(arch: str, pool: str, kind: str) -> None:
    """The README's paragraph on training progress quotes the tracked progress.json, not a number typed by hand."""
    taus = json.loads((README.parent / "results" / arch / "progress.json").read_text())["pools"][pool]["taus"]["test_loss"]
    text = " ".join(README.read_text().split())  # a line break inside an interval counts as a space
    assert _interval(taus[kind]) in text, f"{arch} {pool} {kind}: {_interval(taus[kind])} not in the README"


def test_progress_paragraph_names_the_panels_measures_that_clear_their_null_value() -> None:
    """The README names, per architecture, the measures whose partial τ given the training loss clears its null value on
    the seed-only pool (the paper's table); a rerun that changes them fails here until the paragraph follows."""
    from sharplib.experiments.measures_study import read_measures
    from sharplib.paper.measures_report import LABELS, given_training_loss

    beyond = {}
    for arch in ("fcnn", "lenet5", "gat"):
        record, models = read_measures(README.parent / "results", arch)
        given = given_training_loss(models[models["pool"] == "seed"], n_resamples=999)
        beyond[arch] = [LABELS[m] for m in given.loc[given["beyond"], "measure"]]
    assert beyond == {"fcnn": ["Fisher–Rao norm"], "lenet5": [], "gat": ["adaptive worst-case sharpness"]}
    text = " ".join(README.read_text().split())
    assert ("only the Fisher–Rao norm (FCNN) and adaptive sharpness (GAT) clear their null value on a seed-only pool, and no"
            " measure of LeNet-5's does") in text


@pytest.mark.parametrize("arch", ["fcnn", "lenet5", "gat"])
def test_equalized_paragraph_is_the_tracked_results(arch: str) -> None:
    """The README's paragraph on the panel at L* quotes the tracked equalized.json: adaptive sharpness's partial τ on both
    pools with its null value, and its Ψ on the grid."""
    record = json.loads((README.parent / "results" / arch / "equalized.json").read_text())
    adaptive = record["measures"]["sharpness_adaptive"]
    text = " ".join(README.read_text().split())
    for pool in ("seed", "varied"):
        partial = adaptive[pool]["test_loss"]["partial"]
        null = f"{partial['null_tau']:+.2f}".replace("-", "−")
        assert f"{_interval(partial)} against {null}" in text, f"{arch} {pool}: {_interval(partial)} against {null} not in the README"
    g = adaptive["granulated"]["test_loss"]
    assert _interval({"tau": g["psi"], "ci_low": g["ci_low"], "ci_high": g["ci_high"]}) in text, f"{arch}: Ψ at L*"


def test_equalized_paragraph_names_the_measures_that_clear_their_null_value() -> None:
    from sharplib.paper.equalized_report import CONTROLS, cleared

    found = {}
    for arch in ("fcnn", "lenet5", "gat"):
        record = json.loads((README.parent / "results" / arch / "equalized.json").read_text())
        found[arch] = [m for m in record["measures"] if m not in CONTROLS and cleared(record, m)]
    assert found == {"fcnn": ["sharpness_average", "pac_bayes_mag_flatness", "fisher_rao_norm"], "lenet5": [], "gat": []}
    text = " ".join(README.read_text().split())
    assert "stays within reach of its null value on both pools for all three" in text
    assert ("only three of the FCNN's clear their null value: average-case sharpness, PAC-Bayes flatness and the Fisher–Rao"
            " norm") in text
