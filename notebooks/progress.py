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
# # Is sharpness more than training progress?
#
# The protocol stops a model when its epoch loss changes by less than 5 %, so the models of one pool
# stop at different training losses, and the training loss alone ranks their test loss better than any
# flatness measure. Does adaptive sharpness rank test loss only because it tracks how far a model trained?
# Three views (`sharplib.experiments.progress_study`): the study's own pool, with τ given the training loss (Kendall's
# partial τ, read against its null value, and τ within strata of training loss); an *equalized* pool,
# the same seeds trained until their epoch loss reaches a common L*; and τ along training, the same seeds
# checkpointed after several epochs. `make` runs this notebook per architecture after the study.

# %%
from sharplib.core import notebook

notebook.setup()  # no known-warning noise; a cell run too early says which cell to run first

import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from sharplib.paper import progress_report
from sharplib.experiments import progress_study
from sharplib.core.data import load_task
from sharplib.pools.pool import estimate_pool_sharpness, load_model, train_pool
from sharplib.experiments.protocol import spec
from sharplib.experiments.study import provenance, read_results
from sharplib.core.task import resolve_device
from sharplib.experiments.trajectory import epoch_pools, sharpness_along_training, tau_along_training

sns.set_theme(style="whitegrid")

# %% tags=["parameters"]
arch = "fcnn"  # "fcnn" (Abalone), "lenet5" (FashionMNIST) or "gat" (Cora)
profile = "quick"  # make passes its own; "full": the study's 50 seeds; "quick": a few models
n_models = None  # None: the profile's number of the study's seeds in the equalized pool
target_loss = None  # L*, the epoch loss every model trains to; None: the architecture's (progress_study.TARGET_LOSS)
max_epochs = None  # the cap on epochs while training to L*; None: the architecture's
n_resamples = None  # None: the profile's bootstrap resamples
device = "auto"
backend = "auto"  # where the pools train: "auto", "batched", "processes" or "ray"
n_workers = None  # CPU worker processes for the pools (None: one per core)
results_dir = None  # None: <repository root>/build/scratch (git-ignored); make passes results or results-quick

# %%
params = progress_study.ProgressParams.from_namespace(globals())
study, study_models = read_results(params.results_path, params.arch)  # the study's pool; an error if it has not run
equalized_cfg = params.equalized_config(study["train_config"])
sharpness_cfg = params.sharpness_config(study["sharpness_config"])
print(params, equalized_cfg, sharpness_cfg, sep="\n")

# %% [markdown]
# ## The protocol's pool
# The study's models as it recorded them (`models.csv`): nothing is retrained.

# %%
protocol = progress_study.protocol_table(study_models)
display(protocol[["epochs", "train_loss", "test_loss", "sharpness"]].describe().round(3))

# %% [markdown]
# ## The equalized pool
# The study's seeds, each trained until the first epoch whose mean minibatch loss is at most L*
# (at most `max_epochs`); a model that misses L* is named and left out of every τ.

# %%
seconds = {}
task = load_task(spec(params.arch).dataset, root=params.data_root, device=resolve_device(params.device))
seeds = [int(s) for s in study_models["seed"]][: params.n]
start = time.perf_counter()
entries = train_pool(params.arch, task, equalized_cfg, seeds, params.out_dir / "progress_pool", backend=params.backend,
                     n_workers=params.n_workers)
seconds["training"] = time.perf_counter() - start
start = time.perf_counter()
models = [load_model(e.checkpoint, task.device)[0] for e in entries]
sharpness = estimate_pool_sharpness(models, task, sharpness_cfg, backend=params.backend)
seconds["sharpness"] = time.perf_counter() - start
equalized = progress_study.pool_table(entries, sharpness, "equalized")
missed = [int(s) for s in equalized.loc[progress_study.missed_target(equalized["reached_target"]), "seed"]]
print(f"L* = {params.L_star}: {len(entries) - len(missed)} of {len(entries)} models reached it; missed: {missed or 'none'}")
display(equalized[["epochs", "train_loss", "test_loss", "sharpness"]].describe().round(3))

# %% [markdown]
# ## Along training
# The first seeds trained exactly e epochs for each e (`trajectory.epoch_pools`), each checkpoint
# measured with the same batches S.

# %%
start = time.perf_counter()
pools = epoch_pools(params.arch, task, params.trajectory_config(study["train_config"]), seeds[: params.trajectory_models],
                    params.trajectory_epochs, params.out_dir / "progress_trajectory", backend=params.backend, n_workers=params.n_workers)
along = sharpness_along_training({e: [p.checkpoint for p in pool] for e, pool in pools.items()}, task,
                                 params.trajectory_sharpness_config(study["sharpness_config"]))
trajectory = tau_along_training(along, n_resamples=params.resamples, min_per_stratum=progress_study.MIN_PER_STRATUM)
seconds["trajectory"] = time.perf_counter() - start
display(trajectory[["epoch", "n", "median_train_loss", "tau", "partial_tau", "partial_null_tau", "stratified_tau"]].round(3))

# %% [markdown]
# ## τ on each pool, and given the training loss

# %%
start = time.perf_counter()
table = progress_study.with_targets(pd.concat([protocol, equalized, progress_study.trajectory_table(along)], ignore_index=True))
summary = progress_study.summarize(table, trajectory, study_models["epochs"], n_resamples=params.resamples)
seconds["statistics"] = time.perf_counter() - start
display(progress_report.overview({params.arch: summary}).round(3))
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
progress_report.interval_plot(axes[0], {params.arch: summary}, params.arch)
progress_report.trajectory_plot(axes[1], summary, params.arch)
plt.show()
display(Markdown(progress_report.paragraph(params.arch, {**summary, "target_loss": params.L_star})))

# %%
progress_study.write_progress(params.out_dir, table, summary, {**progress_study.params_record(params, study), "seconds": seconds,
                                                               "provenance": provenance(params.device)})
