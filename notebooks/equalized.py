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
# # The panel at equal training progress
#
# The progress step found that adaptive sharpness ranks test loss mostly through the training loss: the
# protocol's early stop leaves models at different training losses. Here every model is trained to the same
# epoch loss L*, and the whole panel of measures (`sharplib.panel.measures`) is put to two such pools:
# the progress step's equalized pool (the study's seeds, nothing retrained where its checkpoints are at hand)
# and the measures step's learning-rate × batch-size grid, each model trained to the same L*
# (`sharplib.experiments.grid.cell_config`; a slower cell gets a proportionally later cap). For each
# measure and target: τ, the partial τ given the training loss, τ within training-loss strata, and on
# the grid Ψ (`sharplib.experiments.equalized_study`). `make` runs this notebook per architecture after the progress step.

# %%
from sharplib.core import notebook

notebook.setup()  # no known-warning noise; a cell run too early says which cell to run first

import time

import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from sharplib.core.data import load_task
from sharplib.core.task import resolve_device
from sharplib.experiments import equalized_study, grid
from sharplib.experiments.progress_study import read_progress
from sharplib.experiments.protocol import spec
from sharplib.experiments.study import provenance
from sharplib.panel.measures import MEASURES, compute_panel
from sharplib.paper import equalized_report
from sharplib.pools.pool import load_model, train_pool

sns.set_theme(style="whitegrid")

# %% tags=["parameters"]
arch = "fcnn"  # "fcnn" (Abalone), "lenet5" (FashionMNIST) or "gat" (Cora)
profile = "quick"  # make passes its own; "full": the progress step's pool and a 3 × 3 grid; "quick": a 2 × 2 grid
n_seed_models = None  # None: the progress step's whole equalized pool
n_restarts = None  # None: the profile's worst-case restarts
n_resamples = None  # None: the profile's bootstrap resamples
device = "auto"
backend = "auto"  # where the grid's pools train: "auto", "batched", "processes" or "ray"
n_workers = None  # CPU worker processes for the pools (None: one per core)
results_dir = None  # None: <repository root>/build/scratch (git-ignored); make passes results or results-quick

# %%
params = equalized_study.EqualizedParams.from_namespace(globals())
progress, progress_table = read_progress(params.results_path, params.arch)  # the progress step's pool; an error if it has not run
inputs = equalized_study.equalized_inputs(progress, progress_table, params.device, params.n_seed_models)
measures_cfg = params.measures_config()
print(params, inputs, measures_cfg, params.grid, sep="\n")

# %% [markdown]
# ## The two pools at L*
# The seed pool reuses the progress step's checkpoints (`results/<arch>/progress_pool/`) when they are there;
# the grid trains one folder per cell under `results/<arch>/equalized_grid/`. A model that misses L* within
# its cap is named below and left out of every τ.

# %%
seconds = {}
task = load_task(spec(params.arch).dataset, root=params.data_root, device=resolve_device(params.device))
start = time.perf_counter()
seed_entries = train_pool(params.arch, task, inputs.train_config, list(inputs.seeds), params.out_dir / "progress_pool",
                          backend=params.backend, n_workers=params.n_workers)
grid_table = grid.train_grid(params.arch, task, params.grid, params.out_dir / "equalized_grid", base=inputs.train_config,
                             device=params.device, backend=params.backend, n_workers=params.n_workers)
seconds["training"] = time.perf_counter() - start
display(grid_table.groupby(["lr", "batch_size"])[["epochs", "train_loss", "test_loss", "reached_target"]].mean().round(3))

# %% [markdown]
# ## The panel
# Every measure for every model, with the measures step's settings.

# %%
start = time.perf_counter()
seed_panel = compute_panel([load_model(e.checkpoint)[0] for e in seed_entries], task, list(inputs.seeds), measures_cfg,
                           train_rows=[e.result for e in seed_entries])
varied_panel = compute_panel([load_model(p)[0] for p in grid_table["checkpoint"]], task, list(grid_table["seed"]), measures_cfg,
                             train_rows=grid_table)
seconds["measures"] = time.perf_counter() - start
table = equalized_study.equalized_table(seed_panel, [e.result for e in seed_entries], inputs.train_config, varied_panel, grid_table)
display(table.groupby("pool")[list(MEASURES)].median().T)

# %% [markdown]
# ## τ at equal progress

# %%
start = time.perf_counter()
summary = equalized_study.summarize(table, n_resamples=params.resolved("n_resamples"))
seconds["statistics"] = time.perf_counter() - start
display(equalized_report.overview(summary).round(3))
fig, ax = plt.subplots(figsize=(7, 4.5))
equalized_report.forest(ax, summary, f"{spec(params.arch).model_name}: τ with test loss at L* = {inputs.train_config.target_loss:g}")
plt.show()
display(Markdown(equalized_report.paragraph(params.arch, summary)))

# %%
equalized_study.write_equalized(params.out_dir, table, summary, {**equalized_study.params_record(params, inputs), "seconds": seconds,
                                                                 "provenance": provenance(params.device)})
