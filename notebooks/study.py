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
# *The study notebook, one for all three architectures.* `make paper` runs it with papermill once
# per architecture (`-p arch fcnn`, `lenet5` or `gat`) and keeps each run as
# `results/<arch>/notebook.ipynb`. Its title and introduction (the network, the data, the settings
# of this run) are written below from the protocol's table (`sharplib.experiments.protocol`) once the
# parameters are checked. All computation is in `sharplib`; this notebook puts the study together
# and writes `results/<arch>/`.

# %%
from sharplib.core import notebook

notebook.setup()  # no known-warning noise; a cell run too early says which cell to run first

import time

import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from sharplib.pools import cluster
from sharplib.paper import report
from sharplib.experiments import study
from sharplib.core.data import load_task
from sharplib.pools.pool import estimate_pool_sharpness, load_model, train_pool
from sharplib.experiments.protocol import spec
from sharplib.core.stats import finite_pairs, kendall
from sharplib.core.task import resolve_device

sns.set_theme(style="whitegrid")

# %% tags=["parameters"]
arch = "fcnn"  # "fcnn" (Abalone), "lenet5" (FashionMNIST) or "gat" (Cora)
profile = "quick"  # make passes its own; "full": the study (50 models); "quick": a small pool to check the chain
n_models = None  # None: the profile's pool size
n_restarts = None  # None: the profile's number of PGA restarts (the report: 50)
rho = None  # None: Table I's value
device = "auto"
backend = "auto"  # where models train and sharpness runs: "auto", "batched", "processes" or "ray" (RAY_ADDRESS's cluster, else a local one)
n_workers = None  # CPU worker processes for training (None: one per core)
results_dir = None  # None: <repository root>/build/scratch (git-ignored); make passes results or results-quick

# %%
params = study.StudyParams.from_namespace(globals())
train_cfg, sharp_cfg, arch_spec = params.train_config(), params.sharpness_config(), spec(params.arch)

# %%
display(Markdown(study.introduction(params)))
print(params, train_cfg, sharp_cfg, sep="\n")

# %% [markdown]
# ## The pool
# One model per seed, each saved as a checkpoint under `results/<arch>/pool/` together with the
# hash of its configuration; a model whose checkpoint matches is loaded, not trained again, so an
# interrupted run picks up where it stopped. `backend` says where they train (and, below, where
# their sharpness runs): "ray" sends the models to a Ray cluster, whose results are written here.

# %%
seconds = {}
task = load_task(arch_spec.dataset, root=params.data_root, device=resolve_device(params.device)).first_train_rows(
    params.resolved("train_rows")
)
print(study.describe_task(params.arch, task))
start = time.perf_counter()
entries = train_pool(
    params.arch, task, train_cfg, params.seeds, params.out_dir / "pool", backend=params.backend, n_workers=params.n_workers
)
seconds["training"] = time.perf_counter() - start
print(f"{sum(e.reused for e in entries)} of {len(entries)} models reused from earlier runs")

# %% [markdown]
# A look at a few models: the epoch losses the stopping rule saw.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for entry in entries[:8]:
    ax.plot(range(1, entry.result.epochs + 1), entry.result.epoch_losses, marker="o", label=f"seed {entry.seed}")
ax.set(xlabel="epoch", ylabel=f"mean training loss ({arch_spec.loss_name.lower()})", title="Training curves (first 8 seeds)")
ax.legend(fontsize=7, ncol=2)
plt.show()

# %% [markdown]
# ## Sharpness
# The estimator described at the top, on every model of the pool. `frac_below` is the share of
# restarts whose ascent ended below the unperturbed loss.

# %%
models = [load_model(e.checkpoint, task.device)[0] for e in entries]
start = time.perf_counter()
sharpness = estimate_pool_sharpness(models, task, sharp_cfg, backend=params.backend)
seconds["sharpness"] = time.perf_counter() - start
table = study.model_table(entries, sharpness)
display(table.describe().T[["mean", "std", "min", "max"]])
print(f"restarts ending below the unperturbed loss: {100 * table['frac_below'].mean():.1f} % on average")

# %% [markdown]
# ## Sharpness against test loss

# %%
pairs = finite_pairs(table["sharpness"], table["test_loss"])
print(f"{pairs.n_dropped} models dropped (diverged or non-finite)")
tau = kendall(pairs.sharpness, pairs.test_loss, n_resamples=params.resolved("n_resamples"))
summary = {"tau": tau.tau, "tau_ci": list(tau.ci), "p_value": tau.p_value, "n_used": tau.n}
fig, ax = plt.subplots(figsize=(4.5, 4))
report.scatter_panel(ax, table.assign(diverged=~pairs.mask), summary, f"{arch_spec.model_name} on {arch_spec.dataset_name}")
plt.show()
print(f"τ = {tau.tau:.3f}, 95 % CI [{tau.ci_low:.3f}, {tau.ci_high:.3f}] ({tau.ci_method}), p = {tau.p_value:.3g}")
print("In words:", report.finding(summary))

# %%
study.write_results(params, table, tau, seconds)
if params.backend == "ray":
    cluster.disconnect()  # ends the local Ray instance this run started (a cluster stays up)
