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
# # Does adaptive sharpness predict test loss? FCNN on Abalone
#
# We train a pool of fully connected networks (10-64-64-1, ReLU) on the Abalone regression task,
# each from its own seed, with the report's protocol (plain SGD, batch 64, learning rate 0.014,
# stop when the epoch loss changes by less than 5 %). For each model we estimate its adaptive
# worst-case m-sharpness
#
# $$S(w) = \mathbb{E}_{S \sim P^m} \max_{\|\delta \oslash |w|\|_\infty \le \rho} L_S(w + \delta) - L_S(w)$$
#
# and ask, with Kendall's τ over the pool, whether sharper models have higher test loss.
# All computation is in `sharplib`; this notebook puts the study together and writes
# `results/fcnn/`. Parameters below are filled in by papermill (`make paper`).

# %%
import time

import matplotlib.pyplot as plt
import seaborn as sns
import torch
from IPython.display import display

from sharplib import report, study
from sharplib.data import load_task
from sharplib.pool import load_model, train_pool
from sharplib.protocol import spec
from sharplib.sharpness import estimate_pool_sharpness
from sharplib.stats import finite_pairs, kendall
from sharplib.task import resolve_device

sns.set_theme(style="whitegrid")
_before = set(globals())

# %% tags=["parameters"]
profile = "full"  # "full": the study (50 models); "quick": a small pool to check the chain
n_models = None  # None: the profile's pool size
n_restarts = None  # None: the profile's number of PGA restarts (the report: 50)
rho = None  # None: Table I's value
device = "auto"
n_workers = None  # CPU worker processes for training (None: one per core)
results_dir = "results"

# %%
params = study.StudyParams.from_namespace(globals(), _before, arch="fcnn")
train_cfg, sharp_cfg = params.train_config(), params.sharpness_config()
print(params, train_cfg, sharp_cfg, sep="\n")

# %% [markdown]
# ## The data and the pool
# Abalone: 4177 rows, Sex one-hot plus seven measurements, target Rings; inputs and target are
# standardized with the training split's statistics (80/20 seeded split).

# %%
seconds = {}
task = load_task(spec("fcnn").dataset, root=params.data_root, device=resolve_device(params.device))
print(f"{task.n_train} training rows, {len(task.x_test)} test rows, inputs {tuple(task.x_train.shape[1:])}")
start = time.perf_counter()
entries = train_pool("fcnn", task, train_cfg, params.seeds, params.out_dir / "pool", n_workers=params.n_workers)
seconds["training"] = time.perf_counter() - start
print(f"{sum(e.reused for e in entries)} of {len(entries)} models reused from earlier runs")

# %% [markdown]
# A look at a few models: the epoch losses the stopping rule saw.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for entry in entries[:8]:
    ax.plot(range(1, entry.result.epochs + 1), entry.result.epoch_losses, marker="o", label=f"seed {entry.seed}")
ax.set(xlabel="epoch", ylabel="mean training loss (MSE)", title="Training curves (first 8 seeds)")
ax.legend(fontsize=7, ncol=2)
plt.show()

# %% [markdown]
# ## Sharpness
# Projected gradient ascent, 5 steps of size η = the training learning rate, `n_restarts`
# restarts on fresh batches of m = 64 training samples, in eval mode.

# %%
models = [load_model(e.checkpoint)[0].to(task.device) for e in entries]
start = time.perf_counter()
sharpness = estimate_pool_sharpness(models, task, sharp_cfg)
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
report.scatter_panel(ax, table.assign(diverged=~pairs.mask), summary, "FCNN on Abalone")
plt.show()
print(f"τ = {tau.tau:.3f}, 95 % CI [{tau.ci_low:.3f}, {tau.ci_high:.3f}] ({tau.ci_method}), p = {tau.p_value:.3g}")
print("In words:", report.finding(summary))

# %%
study.write_results(params, table, tau, seconds)
