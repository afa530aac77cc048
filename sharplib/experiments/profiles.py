"""What a profile sets: every notebook's defaults, per profile, step and architecture, in one table.

"full" is the paper's run; "quick" checks the whole chain in minutes on a CPU with small pools and few restarts.
A notebook parameter left at None takes its value from `PROFILES[profile][step][arch]`: read quick's rows against
full's to see what quick changes. The reasons for the full profile's cuts are in docs/ablation-cost.md and
docs/progress.md.
"""
from __future__ import annotations

from typing import Any

from ..core.archs import ARCHS
from .grid import Grid

RHO_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)  # the ablation's ρ grid: two decades around the report's ρ
QUICK_RHO_FACTORS = (0.1, 1.0, 10.0)  # quick's short grid: the report's ρ and a decade each side


def _each(**fields: Any) -> dict[str, dict[str, Any]]:
    return {arch: dict(fields) for arch in ARCHS}


PROFILES: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "full": {
        # train_rows: train on the first that many training rows (None: all of them)
        "study": _each(n_models=50, n_restarts=50, max_epochs=None, n_resamples=9999, train_rows=None),
        # None: the main study's (n_models: its whole pool; n_restarts: its restarts, so the report row is the study's
        # estimate) or run_ablation's (n_workers); variants None: all of `default_variants`. The GAT's train-mode,
        # all-nodes and sweep estimates scale with the restarts over 50 models, and LeNet-5's three retrained pools
        # and two full-set ascents leave room for little else: both are cut to 10.
        "ablation": {
            "fcnn": dict(n_models=None, n_restarts=None, rho_factors=RHO_FACTORS, variants=None, n_resamples=9999, n_workers=2),
            "lenet5": dict(n_models=None, n_restarts=10, rho_factors=RHO_FACTORS, variants=None, n_resamples=9999, n_workers=None),
            "gat": dict(n_models=None, n_restarts=10, rho_factors=RHO_FACTORS, variants=None, n_resamples=9999, n_workers=None),
        },
        # the seed-only pool (the study's first models), the panel's restarts and rows, the varied pool (lr × batch × seeds);
        # estimators: MeasuresConfig's own
        "measures": _each(n_seed_models=50, n_restarts=10, n_resamples=999, subset_rows=1024, estimators={},
                          grid=Grid(lr_factors=(0.5, 1.0, 2.0), batch_sizes=(32, 64, 128), n_seeds=5)),
        # the equalized pool and its cap (twice the epoch where the probe's models reach L*), the trajectory's epochs,
        # its pool (the first seeds) and its restarts (None: the study's): the whole pool, made on a GPU. LeNet-5's, made
        # on 2 CPU cores until a GPU run, keeps all 50 seeds but cuts the trajectory to its first 12 (50 there trains
        # each seed once per epoch count, 33 epochs a seed: about 2 h more)
        "progress": {
            "fcnn": dict(n_models=50, max_epochs=10, n_resamples=999, trajectory_epochs=(1, 2, 3, 4, 5, 6, 8, 10),
                         trajectory_models=50, trajectory_restarts=None),
            "lenet5": dict(n_models=50, max_epochs=12, n_resamples=999, trajectory_epochs=(1, 2, 4, 6, 8, 12),
                           trajectory_models=12, trajectory_restarts=None),
            "gat": dict(n_models=50, max_epochs=24, n_resamples=999, trajectory_epochs=(2, 4, 6, 8, 10, 12, 16, 24),
                        trajectory_models=50, trajectory_restarts=None),
        },
        # the panel on the progress step's equalized pool (n_seed_models None: all of it) and on the measures step's grid
        # trained to the same L* (each cell's cap scaled by its slowness, grid.target_cap); the panel's settings as the
        # measures step's
        "equalized": {
            arch: dict(n_seed_models=None, n_restarts=10, n_resamples=999, subset_rows=1024, estimators={},
                       grid=Grid(lr_factors=(0.5, 1.0, 2.0), batch_sizes=(32, 64, 128), n_seeds=5))
            for arch in ARCHS
        },
    },
    "quick": {
        # LeNet-5: 4 models, the fewest that still leave models to resume after an interrupt, 1 epoch on 6000 images
        "study": {
            "fcnn": dict(n_models=10, n_restarts=10, max_epochs=None, n_resamples=999, train_rows=None),
            "lenet5": dict(n_models=4, n_restarts=10, max_epochs=1, n_resamples=999, train_rows=6000),
            "gat": dict(n_models=10, n_restarts=10, max_epochs=None, n_resamples=999, train_rows=None),
        },
        # per arch a training switch and cheap sharpness switches, in this process (a worker pool costs more to
        # start than these few models take to run)
        "ablation": {
            "fcnn": dict(n_models=None, n_restarts=5, rho_factors=QUICK_RHO_FACTORS,
                         variants=("report", "elu_all_layers", "notebook_lr", "swapped_bounds"), n_resamples=999, n_workers=1),
            "lenet5": dict(n_models=3, n_restarts=2, rho_factors=QUICK_RHO_FACTORS,
                           variants=("report", "drifting_anchor", "train_mode"), n_resamples=999, n_workers=1),
            "gat": dict(n_models=5, n_restarts=5, rho_factors=QUICK_RHO_FACTORS,
                        variants=("report", "row_normalized_features", "five_restarts", "collapse_duplicates"), n_resamples=999,
                        n_workers=1),
        },
        # n_seed_models None: the whole quick study pool; the grid keeps two values of each hyperparameter (Ψ needs
        # sub-pools in which one of them varies); the estimators are cut to check the chain
        "measures": {
            arch: dict(n_seed_models=None, n_restarts=2, n_resamples=199, subset_rows=128,
                       estimators=dict(n_gaussian_draws=4, hessian_iters=6, n_hutchinson_probes=4, pac_bayes_steps=6),
                       grid=Grid(lr_factors=(0.5, 2.0), batch_sizes=(64, 128), n_seeds=2, max_epochs=1) if arch == "lenet5"
                       else Grid(lr_factors=(0.5, 2.0), batch_sizes=(32, 128), n_seeds=2))
            for arch in ARCHS
        },
        "progress": {
            "fcnn": dict(n_models=10, max_epochs=10, n_resamples=199, trajectory_epochs=(1, 3), trajectory_models=10,
                         trajectory_restarts=None),
            "lenet5": dict(n_models=3, max_epochs=2, n_resamples=199, trajectory_epochs=(1,), trajectory_models=3,
                           trajectory_restarts=None),
            "gat": dict(n_models=10, max_epochs=24, n_resamples=199, trajectory_epochs=(2, 10), trajectory_models=10,
                        trajectory_restarts=None),
        },
        # the measures step's quick panel and grid; LeNet-5's grid is one seed a cell at the faster learning rates
        "equalized": {
            arch: dict(n_seed_models=None, n_restarts=2, n_resamples=199, subset_rows=128,
                       estimators=dict(n_gaussian_draws=4, hessian_iters=6, n_hutchinson_probes=4, pac_bayes_steps=6),
                       grid=Grid(lr_factors=(1.0, 2.0), batch_sizes=(64, 128), n_seeds=1) if arch == "lenet5"
                       else Grid(lr_factors=(0.5, 2.0), batch_sizes=(32, 128), n_seeds=2))
            for arch in ARCHS
        },
    },
}


def profile_default(profile: str, step: str, arch: str, field: str) -> Any:
    """The value `field` of `step`'s notebook takes for `arch` under `profile` when the notebook leaves it at None."""
    return PROFILES[profile][step][arch][field]
