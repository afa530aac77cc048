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
# # Sharpness, rescaling, and why "adaptive" matters
#
# A popular idea says that networks sitting in *flat* regions of the loss landscape generalize
# better than networks sitting in *sharp* ones. To test it we need a number that says how sharp
# a trained network is. This lesson builds the intuition for the one used in this project,
# **adaptive sharpness**, and shows why the plain version is not good enough.
#
# **Learning objectives.** After this lesson you can
#
# 1. explain why rescaling the layers of a ReLU network changes its weights but not its function;
# 2. say why plain (standard) sharpness is therefore not a property of the function, and why
#    adaptive sharpness ($c = |w|$) is;
# 3. tell the *measure* from its *estimator*: an invariant box searched by a step rule that may not be;
# 4. read how sharpness grows with the size ρ of the neighbourhood, and what that says about the minimum.
#
# **Prerequisites.** Gradient descent and a loss function; what a ReLU network computes; reading
# Python and pandas. No PyTorch is needed beyond calling the functions shown.
#
# **Time.** About 45 minutes: 5 for Run All (the notebook itself computes in about 20 s on a laptop
# CPU), 20 to read the explanations and plots, 20 for the five exercises. A discussion section and
# references close the lesson.
#
# **How to work.** Run the cells from top to bottom (*Run → Run All Cells* works too, as often as
# you like: every cell may be rerun). Change a parameter, then Run All again. Each exercise has an
# answer cell and a check cell below it that prints one line: *correct*, *not yet* with a hint, or
# *no answer yet*. A wrong answer never stops the notebook.
#
# Everything is computed by the `sharplib` library; the notebook only calls it and plots.

# %%
# Installs sharplib when it is missing (a handout opened outside the project): from $SHARPLIB_WHEEL (a wheel's
# path or URL, or a pip requirement such as a git URL), else from the sharplib-*.whl handed out with this notebook.
import importlib.util
import os
import pathlib
import subprocess
import sys

if importlib.util.find_spec("sharplib") is None:
    wheels = sorted(pathlib.Path.cwd().glob("sharplib-*.whl"))
    source = os.environ.get("SHARPLIB_WHEEL") or (str(wheels[-1]) if wheels else None)
    if source is None:
        raise SystemExit("sharplib is not installed: put the sharplib-*.whl you were given next to this notebook, then rerun")
    print(f"installing sharplib from {source} (once) ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source], check=True)
    importlib.invalidate_caches()

# %%
from sharplib.core import notebook

notebook.setup()  # no known-warning noise; a cell run too early says which cell to run first

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import display

from sharplib.core.data import load_task
from sharplib.pools.pool import init_model
from sharplib.experiments.protocol import sharpness_config, train_config
from sharplib.core.reparam import rescale
from sharplib.core.sharpness import estimate_sharpness
from sharplib.core.task import resolve_device
from sharplib.experiments.teaching import Exercises, TeachingParams
from sharplib.core.train import train_model

sns.set_theme(style="whitegrid", context="notebook")
torch.set_num_threads(1)  # the network is tiny: one thread is the fastest

# %% [markdown]
# ## Parameters
#
# Change these to experiment, then Run All. Papermill (and the tests) override them from outside.

# %% tags=["parameters"]
seed = 0  # drives the initialization, the data order and the sharpness batches
max_epochs = 10  # training stops earlier when the epoch loss settles (the report's rule)
n_restarts = 50  # restarts of the sharpness estimator (the report uses 50)
rho = 0.025  # size of the neighbourhood (the report's value for the FCNN)
factors = [0.1, 0.3, 1.0, 3.0, 10.0]  # rescaling factors r tried in part 2 (must contain 1)
rescale_layer = 1  # which hidden layer is rescaled (1 or 2)
rho_grid = [0.001, 0.003, 0.01, 0.025, 0.05, 0.1]  # neighbourhood sizes for part 4
grading = False  # True: an exercise that is not correct stops the run (the instructor's handout build)
results_dir = "results/teaching"  # where invariance.csv is written (relative: to the repository root)
device = "cpu"  # "cpu", "cuda", "cuda:N" or "auto"

# %%
# Check the parameters before spending any time on them: a misspelt name or a wrong value stops here.
params = TeachingParams.from_namespace(globals())
factors, rho_grid = params.factors, params.rho_grid  # sorted, without repeats
RESULTS, DATA_ROOT, DEVICE = params.results_path, params.data_root, str(resolve_device(device))
exercises = Exercises(grading=params.grading)
print(f"parameters OK; device {DEVICE}; results go to {RESULTS}")

# %% [markdown]
# ## 1. Train a small network
#
# The network maps the 10 Abalone features (sex, one-hot, and 7 shell measurements) to the
# number of rings: 10 → 64 → 64 → 1, with ReLU after each hidden layer. It is trained the way the
# report trains it: plain SGD with batches of 64 and learning rate 0.014, from Xavier-initialized
# weights, stopping once the mean training loss of an epoch changes by less than 5 %.
# Inputs and target are standardized, so a mean squared error of 1 means "no better than
# predicting the average".

# %%
task = load_task("abalone", root=DATA_ROOT, device=DEVICE, download=True)  # fetched and checksummed when missing
train_cfg = train_config("fcnn", seed=seed, max_epochs=max_epochs, device=DEVICE)
model, trained = train_model(init_model("fcnn", train_cfg), task, train_cfg)
print(f"{task.n_train} training rows, {len(task.x_test)} test rows")
print(f"trained for {trained.epochs} epochs in {trained.seconds:.1f} s: "
      f"train MSE {trained.train_loss:.3f}, test MSE {trained.test_loss:.3f}")

# %% [markdown]
# ## 2. Same function, different weights
#
# ### The symmetry
#
# ReLU is *positively homogeneous*: for any $r > 0$, $\mathrm{ReLU}(r z) = r\,\mathrm{ReLU}(z)$.
# So if we multiply the incoming weights and the bias of one hidden unit by $r$ and divide its
# outgoing weights by $r$, the unit's output is $r$ times larger and the next layer undoes it:
# **the network computes exactly the same function**. Written for the whole weight vector,
# $w \mapsto w \odot r$ (element-wise product, with $r$ holding $r$, $1/r$ or $1$ at the right places).
#
# Two weight vectors that compute the same function are, for generalization, the same network.
# A flatness measure that gives them different values is measuring the parametrization, not the function.
#
# ### Standard sharpness is not invariant
#
# *Standard* (worst-case) sharpness asks how much the training loss can rise inside a box of
# half-width ρ around the weights:
#
# $$S_{\text{std}}(w) = \max_{\|\delta\|_\infty \le \rho} L(w + \delta) - L(w).$$
#
# Every weight may move by ρ, whatever its size. After rescaling a layer by $r = 10$ its weights
# are ten times larger, so ρ is a tiny nudge for them; but the next layer's weights are ten times
# smaller, and the same ρ is now a huge push for those. The maximum changes.
#
# ### Adaptive sharpness is
#
# *Adaptive* sharpness measures each weight's move relative to the weight itself,
# with $c = |w|$ and element-wise division $\oslash$:
#
# $$S(w) = \max_{\|\delta \oslash c\|_\infty \le \rho} L(w + \delta) - L(w), \qquad c = |w|,$$
#
# i.e. $|\delta_i| \le \rho\,|w_i|$ for every weight. (In the project the loss $L$ is taken on a random
# batch of $m = 64$ training samples and averaged over batches, which changes nothing below.)
# If $w' = w \odot r$ then $c' = c \odot r$, and $\delta$ is allowed at $w$ exactly when
# $\delta' = \delta \odot r$ is allowed at $w'$. Because $w' + \delta' = (w + \delta) \odot r$ computes the same
# function as $w + \delta$, the two maxima run over the same losses: $S(w') = S(w)$.
#
# ### ... but the estimator must be too
#
# Nobody can compute the maximum exactly. `sharplib` approximates it by **projected gradient ascent**
# (a few steps uphill, each followed by clipping δ back into the box). The box is invariant, but is
# the path? It depends on the step rule:
#
# * `step="gradient"` (the report's rule): $\delta \leftarrow \mathrm{clip}(\delta + \eta\,\nabla L(w+\delta))$,
#   with η the training learning rate.
#   After rescaling, $\nabla L(w') = \nabla L(w) \oslash r$: the step is $r$ times *smaller* for weights that
#   became $r$ times *larger*, i.e. $r^2$ times smaller relative to their box. The path changes, and
#   since a few small steps do not reach the edge of the box, so does the estimate.
# * `step="steepest"`: a step of fixed length in the rescaled coordinates $u = \delta \oslash c$,
#   $\delta \leftarrow \mathrm{clip}(\delta + \alpha\rho\, c \odot \mathrm{sign}(\nabla L))$. Both $c$ and
#   $\mathrm{sign}(\nabla L)$ transform the right way ($c \odot r$ and unchanged), so every iterate maps onto
#   $\delta \odot r$: **exactly invariant**.
#
# Let's check all of this numerically. First, the function really does not change:

# %%
weights_norm = lambda net: torch.sqrt(sum((p.detach() ** 2).sum() for p in net.parameters())).item()
rescaled = {r: rescale(model, r, layer=rescale_layer) for r in factors}
with torch.no_grad():
    reference_out = model(task.x_train)
    function_check = pd.DataFrame([
        {"factor r": r,
         "max |f_r(x) - f(x)| on the training set": (net(task.x_train) - reference_out).abs().max().item(),
         "‖w_r‖₂": weights_norm(net),
         "train MSE": task.loss_fn(net(task.x_train), task.y_train).item()}
        for r, net in rescaled.items()
    ])
display(function_check)

# %% [markdown]
# The outputs agree up to float32 rounding (about $10^{-7}$), while the weights themselves are very
# different. Now the sharpness of each rescaled copy, measured four ways: standard ($c = 1$) or
# adaptive ($c = |w|$), each with the report's gradient rule and with the steepest rule.
# Every estimate uses the same random batches, so differences come only from the weights.

# %%
VARIANTS = {  # name -> SharpnessConfig fields
    "standard, gradient": dict(adaptive=False, step="gradient"),
    "standard, steepest": dict(adaptive=False, step="steepest"),
    "adaptive, gradient (report)": dict(adaptive=True, step="gradient"),
    "adaptive, steepest": dict(adaptive=True, step="steepest"),
}


def sharpness_cfg(**fields):
    """The report's FCNN settings (ρ, η = 0.014, m = 64, 5 steps), with this notebook's parameters."""
    return sharpness_config("fcnn", **{"rho": rho, "n_restarts": n_restarts, "seed": seed, "device": DEVICE, **fields})


estimates = {(name, r): estimate_sharpness(net, task, sharpness_cfg(**fields))
             for name, fields in VARIANTS.items() for r, net in rescaled.items()}
invariance = pd.DataFrame([
    {"factor": r, "layer": rescale_layer, "variant": name, "adaptive": VARIANTS[name]["adaptive"], "step": VARIANTS[name]["step"],
     "rho": rho, "n_restarts": n_restarts, "seed": seed, "sharpness": res.mean, "frac_below": res.frac_below}
    for (name, r), res in estimates.items()
])
at_one = invariance[invariance.factor == 1.0].set_index("variant").sharpness
invariance["ratio_vs_factor_1"] = invariance.sharpness / invariance.variant.map(at_one)
invariance["rel_change_vs_factor_1"] = (invariance.ratio_vs_factor_1 - 1).abs()
invariance["max_output_change"] = invariance.factor.map(function_check.set_index("factor r").iloc[:, 0])
RESULTS.mkdir(parents=True, exist_ok=True)
invariance.to_csv(RESULTS / "invariance.csv", index=False)
display(invariance.pivot(index="factor", columns="variant", values="sharpness").style.format("{:.4g}")
        .set_caption("sharpness of each rescaled copy"))

# %%
ax = sns.lineplot(data=invariance, x="factor", y="ratio_vs_factor_1", hue="variant", style="variant", markers=True, dashes=False)
ax.set(xscale="log", yscale="log", xlabel=f"rescaling factor r of hidden layer {rescale_layer}",
       ylabel="sharpness(r) / sharpness(1)", title="Same function, different weights")
ax.axhline(1, color="grey", lw=1, ls=":")
plt.show()

worst = invariance.loc[invariance.groupby("variant").rel_change_vs_factor_1.idxmax()]
for _, row in worst.iterrows():
    print(f"{row.variant:28s} largest change: x{row.ratio_vs_factor_1:.3g} at r = {row.factor:g} "
          f"(relative change {row.rel_change_vs_factor_1:.1e})")

# %% [markdown]
# Read the plot from the middle ($r = 1$) outwards:
#
# * **Standard sharpness** (both rules) moves by orders of magnitude: it mostly measures how the
#   weights happen to be scaled. Comparing it across networks is comparing parametrizations.
# * **Adaptive, steepest** stays on the dotted line: its relative change is at the level of float32
#   rounding. The theory's invariance survives the estimator.
# * **Adaptive, gradient** (the report's estimator) is in between: its box is invariant but its
#   ascent path is not, so it moves by a modest fraction while the standard versions explode.
#   It is only *approximately* invariant, and how approximately depends on how far the few
#   small steps get before they are stopped.
#
# The table was written to `invariance.csv` (one row per factor and variant, with the relative
# change against $r = 1$); the test suite checks the same two facts from it.

# %% [markdown]
# ## 3. Inside the estimator
#
# For each of `n_restarts` restarts the estimator
#
# 1. draws a batch $S$ of $m = 64$ training rows, with replacement;
# 2. starts at $\delta_0 = 0$ and takes 5 ascent steps, clipping back into the box
#    $|\delta_i| \le \rho c_i$ after each;
# 3. keeps the highest loss among $\delta_1, \dots, \delta_5$ and subtracts $L_S(w)$.
#
# The estimate is the mean over restarts. The start $\delta_0$ is *not* among the candidates, so a
# restart whose steps all go downhill contributes a negative value; `frac_below` counts how often.
#
# `SharpnessResult.trace` holds, per restart, the loss at $\delta_0, \dots, \delta_5$. Here is the rise
# of the loss above $L_S(w)$ along the ascent for the first restarts, for both step rules
# (adaptive, original weights):

# %%
RULES = {"gradient (report)": "adaptive, gradient (report)", "steepest": "adaptive, steepest"}
steps = pd.DataFrame([
    {"rule": rule, "restart": i, "step t": t, "L_S(w + δ_t) - L_S(w)": loss - res.unperturbed[i]}
    for rule, name in RULES.items()
    for res in [estimates[(name, 1.0)]]
    for i, trace in enumerate(res.trace[:12])
    for t, loss in enumerate(trace)
])
grid = sns.relplot(data=steps, kind="line", x="step t", y="L_S(w + δ_t) - L_S(w)", col="rule", units="restart",
                   estimator=None, hue="restart", palette="crest", legend=False, height=3.4, aspect=1.2)
grid.set_titles("{col_name} rule")
grid.figure.suptitle(f"12 of {n_restarts} restarts, ρ = {rho}", y=1.04)
plt.show()

# %% [markdown]
# Each line is one restart (one random batch). Two things to notice:
#
# * Different batches give quite different rises: that spread is why the estimator averages many restarts.
# * The steepest rule moves every weight by $\alpha\rho\,|w_i| = 0.2\,\rho\,|w_i|$ per step, so 5 steps in a steady
#   direction reach the corner of the box; the gradient rule's steps are $\eta \nabla L$, set by the size of
#   the gradient, and may stop well short of the edge. The two rules then estimate different things: the steepest rule
#   the height of the box, the gradient rule how far 5 learning-rate-sized steps climb.
#
# Now the distribution over all restarts. For contrast we add `kind="average"`, which replaces the
# ascent by random points in the box (average-case sharpness): that is what a failed ascent looks like.

# %%
average = estimate_sharpness(model, task, sharpness_cfg(kind="average"))
per_rule = {**{rule: estimates[(name, 1.0)] for rule, name in RULES.items()}, "random points (kind='average')": average}
restarts = pd.DataFrame([{"rule": rule, "value": v} for rule, res in per_rule.items() for v in res.values])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [2, 1]})
for ax, rules, title in [
    (axes[0], list(RULES), "ascent (worst case)"),
    (axes[1], ["random points (kind='average')"], "random points (note the scale)"),
]:
    subset = restarts[restarts.rule.isin(rules)]
    sns.boxplot(data=subset, x="value", y="rule", hue="rule", ax=ax, showfliers=False, boxprops={"alpha": 0.3})
    sns.stripplot(data=subset, x="value", y="rule", hue="rule", ax=ax, size=4, alpha=0.7)
    ax.axvline(0, color="black", lw=1)
    ax.set(title=title, xlabel="one value per restart", ylabel="")
axes[1].set_yticklabels([])
fig.suptitle("max_t L_S(w + δ_t) - L_S(w) over restarts", y=1.03)
plt.show()
display(pd.DataFrame([
    {"rule": rule, "estimate (mean)": res.mean, "std over restarts": float(np.std(res.values)),
     "min": min(res.values), "frac_below (value < 0)": res.frac_below, "seconds": res.seconds}
    for rule, res in per_rule.items()
]).style.format({"estimate (mean)": "{:.4f}", "std over restarts": "{:.4f}", "min": "{:.4f}",
                 "frac_below (value < 0)": "{:.0%}", "seconds": "{:.2f}"}))

# %% [markdown]
# For this smooth, small network the ascent practically never ends below the start: the first step
# already goes uphill. Random points, on the other hand, land below $L_S(w)$ a good part of the
# time, and their mean is far smaller: a *worst case* needs a search. On other networks (dropout
# left on, large steps in a curved landscape) ascents can fail too; the project keeps those
# negative values rather than clipping them, and reports `frac_below`.

# %% [markdown]
# ## 4. How big a neighbourhood?
#
# ρ sets the size of the box. For a small box a first-order Taylor expansion gives the answer in
# closed form: with $\delta = c \odot u$, $\|u\|_\infty \le \rho$,
#
# $$\max_{\|u\|_\infty \le \rho} \nabla L \cdot (c \odot u) = \rho \,\| c \odot \nabla L \|_1,$$
#
# so sharpness grows **linearly** in ρ, unless the gradient vanishes (an exact minimum), where the
# curvature term takes over and it grows like $\rho^2$. On a log-log plot that is a slope of 1 or 2.

# %%
sweep = pd.DataFrame([
    {"rho": r, "variant": name, "sharpness": estimate_sharpness(model, task, sharpness_cfg(rho=r, **fields)).mean}
    for r in rho_grid for name, fields in VARIANTS.items()
])
ax = sns.lineplot(data=sweep, x="rho", y="sharpness", hue="variant", style="variant", markers=True, dashes=False)
ax.set(xscale="log", yscale="log", xlabel="ρ", ylabel="sharpness", title="Sharpness against the size of the box")
ax.axvline(rho, color="grey", lw=1, ls=":")
plt.show()
display(sweep.pivot(index="rho", columns="variant", values="sharpness").style.format("{:.4g}"))

# %% [markdown]
# What to take away:
#
# * The standard box has the same half-width ρ for every weight, which for ρ near the size of
#   typical weights is an enormous perturbation: standard sharpness explodes.
# * Adaptive sharpness with the steepest rule follows the Taylor picture: close to linear for
#   small ρ, curving upwards as ρ grows.
# * Both gradient-rule curves flatten out for large ρ: their 5 steps of size $\eta\nabla L$ no longer
#   reach the edge of the box, so making the box bigger changes little. There they measure how far
#   the learning-rate-sized steps climb more than the neighbourhood itself.
# * The dotted line marks the report's ρ for this network.

# %% [markdown]
# ## 5. Exercises
#
# Each exercise has an answer cell: replace `None` (or the empty text) with your answer, then run it
# and the check cell below it. The check prints **correct**, **not yet** with a hint, or **no answer
# yet**; it never stops the notebook. The last cell sums up which exercises are still open.

# %% [markdown]
# ### Exercise 1 (pen and paper)
#
# A weight has the value $w_i = -0.4$ and $\rho = 0.025$. By how much, at most, may the adaptive
# perturbation move it, i.e. what is the largest allowed $|\delta_i|$?

# %% tags=["solution"]
answer_1 = None  # a number
### BEGIN SOLUTION
answer_1 = 0.025 * abs(-0.4)  # |δ_i| <= ρ |w_i|; the standard box would allow 0.025
### END SOLUTION

# %% tags=["tests"]
exercises.box_radius(answer_1)
### BEGIN HIDDEN TESTS
exercises.require(1)
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 2 (code): a rescaled network of your own
#
# The symmetry does not need the same $r$ for every unit: each hidden unit may get its own factor.
# `rescale(model, r, layer=2)` accepts a tensor `r` with one positive factor per unit (64 of them).
#
# 1. Choose your own factors (for example `torch.exp(torch.randn(64, generator=torch.Generator().manual_seed(1)))`,
#    between about 0.05 and 20) and rescale one hidden layer of `model`: call the result `my_network`.
# 2. Check that its outputs on `task.x_train` are those of `model`.
# 3. Compute the relative change $|S(w \odot r) - S(w)| / S(w)$ of **standard, steepest** and of
#    **adaptive, steepest** sharpness, with `estimate_sharpness(net, task, sharpness_cfg(**VARIANTS[name])).mean`.
#
# Set `answer_2 = (standard_change, adaptive_change)`. The check measures your network itself.

# %% tags=["solution"]
my_network = None  # your rescaled copy of `model`
answer_2 = None  # (relative change of standard sharpness, relative change of adaptive sharpness)
### BEGIN SOLUTION
r = torch.exp(torch.randn(64, generator=torch.Generator().manual_seed(1)))
my_network = rescale(model, r.to(DEVICE), layer=2)
with torch.no_grad():
    print("largest output change:", (my_network(task.x_train) - model(task.x_train)).abs().max().item())
changes = []
for name in ("standard, steepest", "adaptive, steepest"):
    before = estimate_sharpness(model, task, sharpness_cfg(**VARIANTS[name])).mean
    after = estimate_sharpness(my_network, task, sharpness_cfg(**VARIANTS[name])).mean
    changes.append(abs(after - before) / before)
    print(f"{name}: {before:.4g} -> {after:.4g}")
answer_2 = tuple(changes)
### END SOLUTION

# %% tags=["tests"]
exercises.rescaled(answer_2, my_network, model, task.x_train,
                   lambda net, name: estimate_sharpness(net, task, sharpness_cfg(**VARIANTS[name])).mean)
### BEGIN HIDDEN TESTS
exercises.require(2)
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 3 (code): read the slope
#
# From the ρ sweep of part 4 (the DataFrame `sweep`), compute the log-log slope of
# **adaptive, steepest** sharpness between the two smallest values of ρ in `rho_grid`:
# $\log(S_2/S_1) / \log(\rho_2/\rho_1)$. Is it closer to 1 or to 2, and what does that tell you
# about where SGD stopped? (The second half is for the discussion.)

# %% tags=["solution"]
answer_3 = None  # the slope, a number
### BEGIN SOLUTION
small = sweep[sweep.variant == "adaptive, steepest"].sort_values("rho").head(2)
(rho_1, rho_2), (s_1, s_2) = small.rho.to_numpy(), small.sharpness.to_numpy()
answer_3 = math.log(s_2 / s_1) / math.log(rho_2 / rho_1)
print(f"slope {answer_3:.2f}: close to 1, the first-order term ρ‖c ⊙ ∇L‖₁ dominates; the batch gradient is not zero,"
      " SGD stopped near, not at, a minimum.")
### END SOLUTION

# %% tags=["tests"]
exercises.slope(answer_3, sweep)
### BEGIN HIDDEN TESTS
exercises.require(3)
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 4 (in words): why invariance matters for prediction
#
# A study trains 50 networks, measures a flatness number for each and asks whether the number ranks
# them by test loss (Kendall's τ). Explain, in two or three sentences, why a measure that changes
# under the rescaling of part 2 can make such a ranking meaningless, even if every network was trained
# the same way.

# %% tags=["solution"]
answer_4 = ""  # write your answer between the quotes
### BEGIN SOLUTION
answer_4 = """Model answer: rescaling gives the same function, hence the same test loss, with any standard sharpness
we like (part 2: orders of magnitude). So standard sharpness can be made to rank the 50 networks in any order
without changing one prediction: its τ with test loss then reflects how the training happened to scale the
layers (initialization, learning rate, weight decay), not a property of the functions. An invariant measure
cannot be moved this way; that is necessary for it to say something about generalization, not sufficient."""
### END SOLUTION

# %% tags=["tests"]
exercises.written(4, answer_4)
### BEGIN HIDDEN TESTS
exercises.require(4)
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 5 (in words): the measure and its estimator
#
# Adaptive sharpness is invariant by construction, yet the report's estimate ("adaptive, gradient") moved
# when the layer was rescaled. Say why, and name one change to the estimator that restores the invariance
# and what it costs.

# %% tags=["solution"]
answer_5 = ""  # write your answer between the quotes
### BEGIN SOLUTION
answer_5 = """Model answer: the box |δ_i| <= ρ|w_i| is invariant, but the search inside it is not: a gradient step
η∇L shrinks by r for weights that grew by r (∇L(w ⊙ r) = ∇L(w) ⊘ r), so in units of the box it is r² smaller,
and 5 such steps stop at a different place. Steps of fixed size in the rescaled coordinates, αρ c ⊙ sign(∇L)
(the steepest rule), map onto each other exactly. The cost: the step no longer follows the training learning
rate, and with α = 0.2 five steps run to the corner of the box, so it estimates the box's height, a larger
and more ρ-sensitive number than the report's."""
### END SOLUTION

# %% tags=["tests"]
exercises.written(5, answer_5)
### BEGIN HIDDEN TESTS
exercises.require(5)
### END HIDDEN TESTS

# %%
exercises.summary()

# %% [markdown]
# ## Summary
#
# * Rescaling a ReLU layer changes the weights but not the function. Standard sharpness changes
#   with it, by orders of magnitude; adaptive sharpness ($c = |w|$) does not, by construction.
# * An *estimate* is only as invariant as its ascent: the steepest rule keeps the invariance exactly,
#   the report's gradient rule only approximately.
# * The estimator averages restarts over random batches; their spread is large, and ascents that end
#   below the start (`frac_below`) are kept, not clipped.
# * For small ρ sharpness grows about linearly, a sign that trained networks are not at exact minima.
#
# Whether adaptive sharpness *predicts* the test loss of a pool of trained networks is the question
# the rest of the project answers.
#
# ## Discussion questions
#
# 1. Adaptive sharpness removes one symmetry (per-unit rescaling). Which other changes of the weights leave a
#    ReLU network's function unchanged, and does $c = |w|$ remove them too? (Think of permuting hidden units.)
# 2. If a measure is invariant, is it then a good predictor of generalization? What else would you need to see?
# 3. The report uses one ρ per architecture. How would you choose ρ, and how would you check that a conclusion
#    does not hang on that choice?
# 4. Sharpness is measured on training batches. What would change if it were measured on test data?
#
# ## References
#
# * L. Dinh, R. Pascanu, S. Bengio, Y. Bengio. *Sharp Minima Can Generalize For Deep Nets.* ICML 2017.
#   The rescaling argument of part 2.
# * J. Kwon, J. Kim, H. Park, I. K. Choi. *ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
#   Learning of Deep Neural Networks.* ICML 2021. Adaptive sharpness, $c = |w|$.
# * M. Andriushchenko, F. Croce, M. Müller, M. Hein, N. Flammarion. *A Modern Look at the Relationship between
#   Sharpness and Generalization.* ICML 2023. Adaptive worst-case sharpness and how well it predicts.
# * H. Hammoud, O. Liossatos, L. Nicollier. *Adaptive Sharpness and Generalization.* Student project report,
#   CS-439, EPFL, 2023. The study this project repeats (see `paper/` for ours).
