# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Beyond the report: which flatness measure predicts test loss?
#
# The study's pool varies only the seed, so its τ asks whether adaptive sharpness ranks models that
# differ by chance. Here the same architecture is also trained on a grid that varies the learning rate
# and the batch size (`sharplib.experiments.grid`), and a panel of measures (`sharplib.panel.measures`: worst-case and
# average-case sharpness, the Hessian's top eigenvalue and trace, PAC-Bayes flatness, norms, controls)
# is computed for every model of both pools. For each measure: Kendall's τ with test loss on each pool,
# and on the varied pool the granulated τ Ψ of Jiang et al. (2020): the mean, over the hyperparameters,
# of the mean τ over the sub-pools in which only that hyperparameter varies. A measure that only detects
# the learning rate gets a high plain τ on the varied pool but no credit from Ψ for the batch-size axis.
# `make` runs this notebook per architecture after the study, whose pool it reuses.

# %%
from sharplib.core import notebook

notebook.setup()  # no known-warning noise; a cell run too early says which cell to run first

import time

import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from sharplib.experiments import grid
from sharplib.paper import measures_report
from sharplib.experiments import measures_study
from sharplib.experiments.ablation import study_inputs
from sharplib.core.data import load_task
from sharplib.panel.measures import MEASURES, compute_panel
from sharplib.pools.pool import load_model, train_pool
from sharplib.experiments.protocol import spec, train_config
from sharplib.experiments.study import provenance
from sharplib.core.task import resolve_device

sns.set_theme(style="whitegrid")

# %% tags=["parameters"]
arch = "fcnn"  # "fcnn" (Abalone), "lenet5" (FashionMNIST) or "gat" (Cora)
profile = "quick"  # make passes its own; "full": the 3 × 3 grid, 5 seeds a cell, the study's 50 models; "quick": a 2 × 2 grid
n_seed_models = None  # None: the profile's number of the study's models (the seed-only pool)
n_restarts = None  # None: the profile's worst-case restarts
n_resamples = None  # None: the profile's bootstrap resamples
device = "auto"
backend = "auto"  # where the grid's pools train: "auto", "batched", "processes" or "ray"
results_dir = None  # None: <repository root>/build/scratch (git-ignored); make passes results or results-quick

# %%
params = measures_study.MeasuresParams.from_namespace(globals())
measures_cfg = params.measures_config()
inputs = study_inputs(params.results_path, params.arch)  # the study's pool and settings; an error if it has not run
print(params, measures_cfg, params.grid, sep="\n")

# %% [markdown]
# ## The two pools
# The seed-only pool is the study's (its checkpoints in `results/<arch>/pool/` are reused when they are
# there); the varied pool is the grid, one checkpoint folder per cell under `results/<arch>/grid/`.

# %%
seconds = {}
task = load_task(spec(params.arch).dataset, root=params.data_root, device=resolve_device(params.device)).first_train_rows(inputs.train_rows)
seeds = list(inputs.seeds[: params.resolved("n_seed_models") or len(inputs.seeds)])
start = time.perf_counter()
study_cfg = train_config(params.arch, **inputs.train_overrides)
seed_entries = train_pool(params.arch, task, study_cfg, seeds, params.out_dir / "pool", backend=params.backend)
grid_table = grid.train_grid(params.arch, task, params.grid, params.out_dir / "grid", device=params.device, backend=params.backend)
seconds["training"] = time.perf_counter() - start
display(grid_table.groupby(["lr", "batch_size"])[["test_loss", "epochs"]].mean())

# %% [markdown]
# ## The panel
# Every measure for every model, each pool in batched calls.

# %%
start = time.perf_counter()
seed_panel = compute_panel(
    [load_model(e.checkpoint)[0] for e in seed_entries], task, seeds, measures_cfg, train_rows=[e.result for e in seed_entries]
)
varied_panel = compute_panel(
    [load_model(p)[0] for p in grid_table["checkpoint"]], task, list(grid_table["seed"]), measures_cfg, train_rows=grid_table
)
seconds["measures"] = time.perf_counter() - start
table = measures_study.measures_table(seed_panel, [e.result for e in seed_entries], study_cfg, varied_panel, grid_table)
display(table.groupby("pool")[list(MEASURES)].median().T)

# %% [markdown]
# ## τ, Ψ and τ within a learning rate

# %%
summary = measures_study.summarize(table, n_resamples=params.resolved("n_resamples"))
overview = measures_report.overview(summary)
display(overview.round(3))
fig, ax = plt.subplots(figsize=(7, 4.5))
measures_report.heatmap(ax, overview, f"{spec(params.arch).model_name}: Kendall τ with test loss")
plt.show()
display(Markdown(measures_report.paragraph(params.arch, summary)))

# %%
measures_study.write_measures(params.out_dir, table, summary, {**measures_study.params_record(params), "seconds": seconds,
                                                                  "provenance": provenance(params.device)})
