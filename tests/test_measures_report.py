"""The paper's measures section: the panel's τ given the training loss (a table and a sentence per architecture)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sharplib.core.conditional import partial_kendall
from sharplib.panel.measures import MEASURES
from sharplib.paper import measures_report


def progress_table(n: int = 80, seed: int = 0) -> pd.DataFrame:
    """Two pools where test loss y is the training loss z plus noise e: `hessian_trace` reads e (it knows y beyond z),
    `weight_norm` reads z (progress only), every other measure is noise."""
    rng = np.random.default_rng(seed)
    pools = []
    for pool in ("seed", "varied"):
        z = rng.uniform(0, 1, n)
        e = rng.normal(0, 0.1, n)
        table = pd.DataFrame({name: rng.normal(size=n) for name in MEASURES})
        pools.append(table.assign(pool=pool, train_loss=z, test_loss=z + e, hessian_trace=e + rng.normal(0, 0.02, n),
                                  weight_norm=z + rng.normal(0, 0.1, n)))
    return pd.concat(pools, ignore_index=True)


def test_a_measure_of_progress_alone_stays_at_its_null_value_and_one_beyond_it_does_not() -> None:
    table = progress_table()
    given = measures_report.given_training_loss(table, n_resamples=299).set_index(["pool", "measure"])
    assert set(given.index.get_level_values("measure")) == set(MEASURES) - set(measures_report.CONTROLS)
    for pool in ("seed", "varied"):
        progress_only, beyond = given.loc[(pool, "weight_norm")], given.loc[(pool, "hessian_trace")]
        assert progress_only["tau"] > 0.5, "its plain τ says much"
        assert progress_only["partial_low"] <= progress_only["null"] <= progress_only["partial_high"] and not progress_only["beyond"]
        assert beyond["beyond"] and beyond["partial"] > 0.2
        part = table[table["pool"] == pool]
        expected = partial_kendall(part["hessian_trace"], part["test_loss"], part["train_loss"], n_resamples=299)
        assert (beyond["partial"], beyond["null"]) == pytest.approx((expected.tau, expected.null_tau))


def test_a_pool_too_small_for_a_tau_is_undefined_not_an_error() -> None:
    table = progress_table(n=2)
    given = measures_report.given_training_loss(table, n_resamples=99)
    assert given["tau"].isna().all() and given["partial"].isna().all() and not given["beyond"].any()
    assert "---" in measures_report.given_training_loss_tex({"fcnn": given})


def test_table_and_sentence_follow_the_numbers() -> None:
    given = measures_report.given_training_loss(progress_table(), n_resamples=99)
    table = measures_report.given_training_loss_tex({"fcnn": given, "gat": given})
    n_measures = len(MEASURES) - len(measures_report.CONTROLS)
    assert table.count("\\\\") == 2 + 2 * (1 + n_measures) and "\\textit{FCNN}" in table and "\\textit{GAT}" in table
    assert table.count("$^{*}$") == 2 * int(given["beyond"].sum())
    sentence = measures_report.given_training_loss_sentence("fcnn", given)
    seed_part = sentence.split("on the seed-only pool ")[1].split(", and")[0]
    assert seed_part.startswith(f"{int(given[given['pool'] == 'seed']['beyond'].sum())} of {n_measures} measures")
    assert "Hessian trace" in seed_part and "weight norm" not in seed_part
