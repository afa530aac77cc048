"""The paper's panel at equal progress: its table, sentences and figure follow the numbers of equalized.json."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from sharplib.experiments import equalized_study  # noqa: E402
from sharplib.experiments.equalized_study import EqualizedParams, summarize  # noqa: E402
from sharplib.experiments.protocol import train_config  # noqa: E402
from sharplib.paper import equalized_report  # noqa: E402
from tests.test_equalized_study import synthetic_pools  # noqa: E402


@pytest.fixture(scope="module")
def summary() -> dict:
    table = synthetic_pools()
    missed = (table["pool"] == "varied") & (table["lr"] == 0.007) & (table["batch_size"] == 128) & (table["seed"] == 0)
    table.loc[missed, "reached_target"] = False
    return summarize(table, n_resamples=99)


def write_results(results: Path, summary: dict) -> None:
    params = EqualizedParams("fcnn")
    seed_cfg = train_config("fcnn", target_loss=0.51, max_epochs=10, min_epochs=1)
    record = {"arch": "fcnn", "profile": "full", "grid": dataclasses.asdict(params.grid), "target_loss": 0.51,
              "seed_train_config": dataclasses.asdict(seed_cfg), "seeds": list(range(40)),
              "measures_config": dataclasses.asdict(params.measures_config())}
    equalized_study.write_equalized(results / "fcnn", synthetic_pools().head(3), summary, record)


def test_the_sentences_follow_the_numbers(summary: dict) -> None:
    text = equalized_report.paragraph("fcnn", summary)
    assert "40 of the 40 models of the seed-only pool reached L*" in text
    assert "44 of the 45 models of the varied pool reached L* (lr 0.007, batch 128, seed 0)" in text
    assert "excludes its null value for 1 of 10 measures: Fisher–Rao norm" in text, "only the measure that reads test loss clears it"
    assert "Adaptive sharpness has τ = +" in text


def test_the_table_has_every_measure_and_stars_only_what_clears_its_null(summary: dict) -> None:
    tex = equalized_report.table_tex({"fcnn": summary})
    rows = [line for line in tex.splitlines() if line.endswith("\\\\") and " & " in line and "multicolumn" not in line][1:]
    assert len(rows) == len(summary["measures"]) == 10
    starred = [row.split(" & ")[0] for row in rows if "$^{*}$" in row]
    assert starred == ["Fisher–Rao norm"]


def test_build_writes_the_macros_and_the_figure(tmp_path: Path, summary: dict) -> None:
    results, generated = tmp_path / "results", tmp_path / "generated"
    assert equalized_report.build(results, generated) == [], "no results: nothing written"
    write_results(results, summary)
    written = equalized_report.build(results, generated)
    assert {p.name for p in written} == {"equalized.tex", "equalized_tau.pdf", "equalized_tau.png"}
    tex = (generated / "equalized.tex").read_text()
    for macro in ("EqualizedTable", "EqualizedText", "EqualizedProvenance", "EqualizedSettings"):
        assert f"\\newcommand{{\\{macro}}}" in tex
    assert "make equalized-lenet5, make equalized-gat" in tex and "outside make" in tex
    assert "FCNN: $L^*$ = 0.51, 40 seeds within 10 epochs, and a grid of learning rates 0.5, 1 and 2 times Table I's" in tex


def test_the_forest_shows_both_stops_when_the_protocols_pools_are_given(summary: dict) -> None:
    measures = {m: {"tau_seed": {"tau": 0.1, "ci_low": 0.0, "ci_high": 0.2}, "tau_varied": {"tau": -0.1, "ci_low": -0.2, "ci_high": 0.0}}
                for m in summary["measures"]}
    fig, ax = plt.subplots()
    equalized_report.forest(ax, summary, "FCNN", measures)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(equalized_report.SERIES)
    assert ax.get_yticklabels()[0].get_text() == "adaptive worst-case sharpness", "the first measure on top"
    plt.close(fig)
    only = equalized_report.intervals(summary, None)
    assert set(only["series"]) == {"seed-only pool at L*", "varied pool at L*"}


def test_the_conclusion_names_where_a_partial_tau_clears_its_null_value(summary: dict) -> None:
    text = equalized_report.conclusion({"fcnn": summary, "gat": summary})
    assert text.startswith("Trained to a common loss, adaptive sharpness's partial τ given the training loss stays within reach")
    assert "Of the panel's other measures, Fisher–Rao norm for FCNN; Fisher–Rao norm for GAT clear it" in text
    flipped = {**summary, "measures": {**summary["measures"], "sharpness_adaptive": summary["measures"]["fisher_rao_norm"],
                                       "fisher_rao_norm": summary["measures"]["weight_norm"]}}
    text = equalized_report.conclusion({"fcnn": flipped, "gat": summary})
    assert "clears its null value for FCNN (seed-only pool and varied pool) only" in text
    assert "Fisher–Rao norm for GAT clear it on at least one pool, and none for FCNN" in text


def test_the_other_targets_are_read_the_same_way(summary: dict) -> None:
    """The synthetic models are a regression (no test error): the generalization gap is the other target, and the measure
    built from it clears its null value there on both pools while the one that follows the training loss does not."""
    text = equalized_report.other_targets(summary)
    assert text.startswith(" Taking the generalization gap as the target instead, the partial τ at L* excludes")
    assert "Fisher–Rao norm (generalization gap, seed-only pool and varied pool)" in text
    assert "adaptive worst-case sharpness" not in text
    assert text in equalized_report.paragraph("fcnn", summary)


def test_the_forest_draws_an_interval_that_misses_its_estimate_or_is_undefined(summary: dict) -> None:
    """A small pool's percentile interval may not hold τ (the quick profile's), and an undefined one is NaN: both draw."""
    odd = copy.deepcopy(summary)
    for entry in odd["measures"].values():
        entry["seed"]["test_loss"]["tau"] = {"tau": 0.5, "ci_low": 0.6, "ci_high": 0.9}
    odd["measures"]["weight_norm"]["varied"]["test_loss"]["tau"] = {"tau": 0.1, "ci_low": float("nan"), "ci_high": float("nan")}
    fig, ax = plt.subplots()
    equalized_report.forest(ax, odd, "FCNN")
    assert len(ax.get_lines()) >= 2 and ax.collections, "dots and interval lines drawn"
    plt.close(fig)
