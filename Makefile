# sharplib: `make paper` rebuilds the paper (default), `make test` runs the test suite (CI), `make test-fast` all but its slow tests.
#   make paper                 the full study: 3 pools of 50 models, sharpness, Kendall τ, paper/main.pdf
#   make paper PROFILE=quick   small pools, the whole chain in minutes (the PDF says so on every page)
#   make -j3 paper             the three studies side by side (then their three ablations)
#   make paper BACKEND=ray     models and sharpness on Ray: the cluster at $RAY_ADDRESS, else a local one
#   make paper RERUN=1         recompute every step (by default a step's results are reused while its lock holds:
#                              the hash of the code, data and parameters that computed them, and of its files)
#   make status                every step: current, accepted, stale, modified or missing, and what paper would run
#   make accept REASON="..."   accept stale steps whose numbers the new code provably leaves unchanged
#   make measures              beyond the report: a panel of flatness measures on the study's pool and a
#                              learning-rate x batch-size grid (make paper runs it too)
#   make progress              is sharpness more than training progress? the study's pool given its training loss,
#                              a pool trained to a common loss L*, and tau along training (make paper runs it too)
#   make equalized             the panel of measures on pools trained to L*: the progress step's pool and the
#                              learning-rate x batch-size grid (make paper runs it too)
#   make lab                   JupyterLab on the notebooks
#   make handout               the teaching notebook's student and instructor versions, and the wheel (build/handout/)
#   make browser               installs Chromium (apt-get, only when missing) for the browser test
#   make clean                 removes generated files (results/ keeps trained models: make clean-results)
SHELL := /bin/bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := paper

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The shared offline copies where this checkout has them, else the project's own ./data (sharplib.core.data's default).
export SHARPLIB_DATA ?= $(abspath $(if $(wildcard ../shared/data),../shared/data,data))

PROFILE ?= full
ifeq ($(filter $(PROFILE),full quick),)
$(error PROFILE must be 'full' or 'quick', got '$(PROFILE)')
endif
RESULTS := $(if $(filter quick,$(PROFILE)),results-quick,results)
# Where the notebooks train and measure (pool.BACKENDS); "ray" installs the cluster extra first.
BACKEND ?= auto
GENERATED := paper/generated
# sharplib/core/archs.py's list (tests/test_archs.py checks they agree)
ARCHS := fcnn lenet5 gat

# The report's prerequisites are the sharplib modules it imports, transitively, read from the code by
# sharplib/pipeline/deps.py (stdlib only: no venv needed) into an included file that make rewrites, and then
# rereads, whenever a module changes. Nothing is listed by hand. Each make writes its own temporary file
# (two makes at once both succeed) and renames it into place.
DEPS := build/deps.mk
$(DEPS): $(wildcard sharplib/*.py sharplib/*/*.py notebooks/*.py)
	@mkdir -p $(@D)
	$(PYTHON) -m sharplib.pipeline.deps --make REPORT_MODULES=sharplib/paper/report.py MEASURES_REPORT_MODULES=sharplib/paper/measures_report.py \
	  PROGRESS_REPORT_MODULES=sharplib/paper/progress_report.py EQUALIZED_REPORT_MODULES=sharplib/paper/equalized_report.py > $@.$$$$.tmp \
	  && mv -f $@.$$$$.tmp $@
include $(DEPS)

# ---------------------------------------------------------------- setup
# The venv is rebuilt only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# Ray, the optional cluster back end: the tests use it, and the notebooks with BACKEND=ray.
$(VENV)/.cluster: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[cluster]"
	touch $@
CLUSTER := $(if $(filter ray,$(BACKEND)),$(VENV)/.cluster)

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
.PHONY: tex
tex:
	@command -v latexmk >/dev/null || { echo "latexmk not found: installing TeX with apt-get"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q latexmk texlive-latex-recommended texlive-publishers; }

# The browser test drives Debian's Chromium with Playwright (the venv's test extra; no browser download).
.PHONY: browser
browser:
	@command -v chromium >/dev/null || { echo "chromium not found: installing it with apt-get"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

# Results are reused by content, not by file time (a fresh clone's file times say nothing): each step
# (study, ablation, measures, progress, equalized) of each architecture has a lock, results/<arch>/<step>.lock, that make writes
# after the notebook ran: the hash of the code that computes its numbers, its parameters and the data's
# checksums (sharplib/pipeline/stephash.py), and a hash of every file it wrote. The notebook runs again only when
# that no longer holds (`make status` says why). RERUN=1 reruns every step; 0, no or empty reruns nothing.
RERUN ?=
ifneq ($(filter-out 1 0 yes no true false,$(RERUN)),)
$(error RERUN must be 1 (rerun every step) or 0 / empty (reuse what is current), got '$(RERUN)')
endif
FINGERPRINT = $(PYTHON) -m sharplib.pipeline.fingerprint
STEP_ARGS = --profile $(PROFILE) --backend $(BACKEND) --results $(RESULTS)
RERUN_FLAG := $(if $(filter 1 yes true,$(RERUN)),--rerun)
STEPS := study ablation measures progress equalized
# LeNet-5's measures panel, progress pools and panel at equal progress at the full profile take hours on 2 CPU cores:
# make paper leaves them out of a results folder that lacks them (`make measures-lenet5`, `make progress-lenet5`,
# `make equalized-lenet5` add them), and their sections
# say so. The quick chain leaves them out too (its LeNet-5 models stop short of L*, and the suite's quick paper stays
# short); the notebooks' own tests run them.
MEASURES_ARCHS ?= fcnn gat $(if $(wildcard $(RESULTS)/lenet5/measures.lock),lenet5)
PROGRESS_ARCHS ?= fcnn gat $(if $(wildcard $(RESULTS)/lenet5/progress.lock),lenet5)
EQUALIZED_ARCHS ?= fcnn gat $(if $(wildcard $(RESULTS)/lenet5/equalized.lock),lenet5)
IN_PAPER := $(foreach a,$(ARCHS),study:$(a) ablation:$(a)) $(foreach a,$(MEASURES_ARCHS),measures:$(a)) $(foreach a,$(PROGRESS_ARCHS),progress:$(a)) \
  $(foreach a,$(EQUALIZED_ARCHS),equalized:$(a))
UPSTREAM_ablation := study
UPSTREAM_measures := study
UPSTREAM_progress := study
UPSTREAM_equalized := progress
EXECUTED_study := notebook.ipynb
EXECUTED_ablation := ablation.ipynb
EXECUTED_measures := measures.ipynb
EXECUTED_progress := progress.ipynb
EXECUTED_equalized := equalized.ipynb

# ---------------------------------------------------------------- notebooks -> results/<arch>/, one rule for every step
# jupytext turns the percent-format source into a notebook and papermill runs it with the parameters that
# `fingerprint args` prints (the ones the hash covers), unless `fingerprint check` finds the step reusable;
# then `fingerprint lock` checks what the notebook wrote and writes the lock. flock makes a second make
# that wants the same step wait for the first, then find it current.
define step
$(RESULTS)/$(2)/$(1).lock: $(if $(UPSTREAM_$(1)),$(RESULTS)/$(2)/$(UPSTREAM_$(1)).lock) FORCE | $(VENV)/.installed $(CLUSTER)
	@mkdir -p $(RESULTS)/$(2); exec 9> $(RESULTS)/$(2)/.$(1).busy; flock 9; \
	$(FINGERPRINT) check $(1) $(2) $(STEP_ARGS) $(RERUN_FLAG) || { set -ex; \
	  $(VENV)/bin/jupytext --quiet --to ipynb --output $(RESULTS)/$(2)/$(1)-source.ipynb notebooks/$(1).py; \
	  $(VENV)/bin/papermill --kernel python3 --cwd . $(RESULTS)/$(2)/$(1)-source.ipynb $(RESULTS)/$(2)/$(EXECUTED_$(1)) \
	    $$$$($(FINGERPRINT) args $(1) $(2) $(STEP_ARGS)); \
	  $(FINGERPRINT) lock $(1) $(2) $(STEP_ARGS); }
endef
$(foreach s,$(STEPS),$(foreach arch,$(ARCHS),$(eval $(call step,$(s),$(arch)))))
LOCKS = $(foreach arch,$(ARCHS),$(RESULTS)/$(arch)/$(1).lock)
STUDIES := $(call LOCKS,study)
ABLATIONS := $(call LOCKS,ablation)
MEASURES := $(foreach arch,$(MEASURES_ARCHS),$(RESULTS)/$(arch)/measures.lock)
PROGRESS := $(foreach arch,$(PROGRESS_ARCHS),$(RESULTS)/$(arch)/progress.lock)
EQUALIZED := $(foreach arch,$(EQUALIZED_ARCHS),$(RESULTS)/$(arch)/equalized.lock)
.PRECIOUS: $(foreach s,$(STEPS),$(call LOCKS,$(s)))  # tracked: never deleted by an interrupted or failed recipe
$(foreach arch,$(ARCHS),$(eval measures-$(arch): $(RESULTS)/$(arch)/measures.lock))
$(foreach arch,$(ARCHS),$(eval progress-$(arch): $(RESULTS)/$(arch)/progress.lock))
$(foreach arch,$(ARCHS),$(eval equalized-$(arch): $(RESULTS)/$(arch)/equalized.lock))

# Beyond the report: the panel of measures on the study's pool and on a learning-rate x batch-size grid.
$(GENERATED)/measures.tex $(GENERATED)/measures.pdf &: $(MEASURES) $(MEASURES_REPORT_MODULES) $(GENERATED)/profile.txt | $(VENV)/.installed
	$(PY) -m sharplib.paper.measures_report $(RESULTS) $(GENERATED)

# Is sharpness more than training progress? τ given the training loss, a pool trained to L*, τ along training.
$(GENERATED)/progress.tex $(GENERATED)/progress_tau.pdf $(GENERATED)/progress_trajectory.pdf &: \
    $(PROGRESS) $(PROGRESS_REPORT_MODULES) $(GENERATED)/profile.txt | $(VENV)/.installed
	$(PY) -m sharplib.paper.progress_report $(RESULTS) $(GENERATED)

# The panel at equal progress: every measure on the pools trained to L*, against the protocol's pools.
$(GENERATED)/equalized.tex $(GENERATED)/equalized_tau.pdf &: $(EQUALIZED) $(MEASURES) $(EQUALIZED_REPORT_MODULES) $(GENERATED)/profile.txt \
    | $(VENV)/.installed
	$(PY) -m sharplib.paper.equalized_report $(RESULTS) $(GENERATED)

# What make paper would run and why, from the locks; runs nothing.
status:
	@$(FINGERPRINT) status $(STEP_ARGS) --in-paper $(IN_PAPER)

# Stale steps accepted on evidence: the old and the new code run each on a few models on the CPU, and
# every per-model number must agree (sharplib/pipeline/evidence.py). Commit first; say why in REASON.
accept: $(VENV)/.installed  # the venv's Python: the evidence runs papermill and jupytext beside it
	$(VENV)/bin/python -m sharplib.pipeline.fingerprint accept --reason "$(REASON)" $(STEP_ARGS)

# ---------------------------------------------------------------- results -> paper
# A stamp that changes only when the profile does, so switching profiles rebuilds the paper.
$(GENERATED)/profile.txt: FORCE
	@mkdir -p $(@D)
	@echo '$(PROFILE) $(RESULTS)' | cmp -s - $@ || echo '$(PROFILE) $(RESULTS)' > $@

$(GENERATED)/results.tex $(GENERATED)/table1.tex $(GENERATED)/comparison.tex $(GENERATED)/figure1.pdf $(GENERATED)/figure1.png \
$(GENERATED)/ablation.tex $(GENERATED)/rho.pdf $(GENERATED)/rho.png &: \
    $(STUDIES) $(ABLATIONS) $(REPORT_MODULES) $(GENERATED)/profile.txt | $(VENV)/.installed
	$(PY) -m sharplib.paper.report $(RESULTS) $(GENERATED)

paper/main.pdf: paper/main.tex paper/references.bib $(GENERATED)/results.tex $(GENERATED)/table1.tex $(GENERATED)/comparison.tex $(GENERATED)/figure1.pdf \
    $(GENERATED)/ablation.tex $(GENERATED)/rho.pdf $(GENERATED)/measures.tex $(GENERATED)/measures.pdf \
    $(GENERATED)/progress.tex $(GENERATED)/progress_tau.pdf $(GENERATED)/progress_trajectory.pdf \
    $(GENERATED)/equalized.tex $(GENERATED)/equalized_tau.pdf | tex
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error -quiet main.tex

.PHONY: paper results measures progress equalized status accept test test-fast lab clean clean-results venv FORCE \
  $(foreach arch,$(ARCHS),measures-$(arch) progress-$(arch) equalized-$(arch))
paper: paper/main.pdf
results: $(STUDIES) $(ABLATIONS) $(MEASURES) $(PROGRESS) $(EQUALIZED)
measures: $(MEASURES)
progress: $(PROGRESS)
equalized: $(EQUALIZED)
venv: $(VENV)/.installed

# pytest-xdist: PYTEST_WORKERS processes, each given whole test modules (a module's shared fixtures run once);
# PYTEST_WORKERS=0 runs the suite in this process.
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)
test: $(VENV)/.installed $(VENV)/.cluster
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# The suite less the tests marked slow (Ray, notebooks under papermill, make in a copy, LeNet-5 training, the
# browser). No Ray: no test that needs it runs.
test-fast: $(VENV)/.installed
	$(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# Serves notebooks/ on 127.0.0.1. lab/overrides.json (copied into the venv, where JupyterLab reads
# setting overrides) makes a double-click open the percent .py files as notebooks and switches off
# the news pop-up. LAB_ARGS adds server options (tests/test_lab.py passes a port and a token).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.d
LAB_ARGS ?=
# IPYTHONDIR points the kernels at a profile under build/ holding lab/ipython_kernel_config.py, which loads
# sharplib.core.notebook at start-up: a cell run before the cell it needs says, in one line, which cell to run.
LAB_IPYTHON := build/ipython
lab: $(VENV)/.installed
	mkdir -p $(LAB_SETTINGS) $(LAB_IPYTHON)/profile_default
	cp lab/overrides.json $(LAB_SETTINGS)/sharplib.json
	cp lab/ipython_kernel_config.py $(LAB_IPYTHON)/profile_default/
	IPYTHONDIR=$(abspath $(LAB_IPYTHON)) $(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# ---------------------------------------------------------------- teaching: the wheel and the handouts
# `make wheel`: sharplib as a wheel (build/wheel/), for installing it without the repository.
# `make handout`: from notebooks/teaching_sharpness.py (sharplib/paper/handout.py, nbgrader's conventions) the
# student's notebook (no solutions, no hidden tests, no outputs) and the instructor's (executed, with the
# solutions), with the wheel beside them: build/handout/ is what to hand out.
WHEEL_DIR := build/wheel
HANDOUT_DIR := build/handout
.PHONY: wheel handout
wheel: $(VENV)/.installed
	rm -rf $(WHEEL_DIR)
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(WHEEL_DIR) .
handout: wheel
	$(PY) -m sharplib.paper.handout notebooks/teaching_sharpness.py $(HANDOUT_DIR)
	cp $(WHEEL_DIR)/sharplib-*.whl $(HANDOUT_DIR)/

clean:
	rm -rf $(GENERATED) notebooks/*.ipynb build
	-cd paper && latexmk -C -quiet main.tex

# The tracked results (results/<arch>/: results.json, models.csv, ablation.*, rho.csv, the executed
# notebooks) stay; trained models, caches and the quick profile's folder go.
TRACKED_RESULTS := results.json models.csv ablation.json ablation.csv rho.csv notebook.ipynb ablation.ipynb \
  measures.json measures.csv measures.ipynb progress.json progress.csv progress.ipynb equalized.json equalized.csv equalized.ipynb \
  study.lock ablation.lock measures.lock progress.lock equalized.lock
clean-results: clean
	rm -rf results-quick
	find results -mindepth 2 -maxdepth 2 $(foreach name,$(TRACKED_RESULTS),! -name $(name)) -exec rm -rf {} +
