# sharplib: `make paper` rebuilds the paper (default), `make test` runs the test suite.
#   make paper                 the full study: 3 pools of 50 models, sharpness, Kendall τ, paper/main.pdf
#   make paper PROFILE=quick   small pools, the whole chain in minutes (the PDF says so on every page)
#   make -j3 paper             the three studies side by side (then their three ablations)
#   make paper BACKEND=ray     models and sharpness on Ray: the cluster at $RAY_ADDRESS, else a local one
#   make paper RERUN=1         recompute every study and ablation (by default a results file is reused while the
#                              hash of the code, data and parameters that made it is unchanged)
#   make measures              beyond the report: a panel of flatness measures on the study's pool and a
#                              learning-rate x batch-size grid (then `make paper` adds its section)
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
# The shared offline copies where this checkout has them, else the project's own ./data (sharplib.data's default).
export SHARPLIB_DATA ?= $(abspath $(if $(wildcard ../shared/data),../shared/data,data))

PROFILE ?= full
ifeq ($(filter $(PROFILE),full quick),)
$(error PROFILE must be 'full' or 'quick', got '$(PROFILE)')
endif
RESULTS := $(if $(filter quick,$(PROFILE)),results-quick,results)
# Where the notebooks train and measure (pool.BACKENDS); "ray" installs the cluster extra first.
BACKEND ?= auto
GENERATED := paper/generated
ARCHS := fcnn lenet5 gat

# The report's prerequisites are the sharplib modules it imports, transitively, read from the code by
# sharplib/deps.py (stdlib only: no venv needed) into an included file that make rewrites, and then
# rereads, whenever a module changes. Nothing is listed by hand.
DEPS := build/deps.mk
$(DEPS): $(wildcard sharplib/*.py sharplib/*/*.py notebooks/*.py)
	@mkdir -p $(@D)
	$(PYTHON) -m sharplib.deps --make REPORT_MODULES=sharplib/report.py MEASURES_REPORT_MODULES=sharplib/measures_report.py > $@.tmp
	mv $@.tmp $@
include $(DEPS)

# Results are reused by content, not by file time (a fresh clone's file times say nothing): a notebook
# runs only when the hash of its inputs (its source, the modules it imports, its parameters, the data's
# checksums: sharplib/fingerprint.py) differs from the one its results file records. RERUN=1 reruns all.
RERUN ?=
CHECK = $(PYTHON) -m sharplib.fingerprint check --profile $(PROFILE) --backend $(BACKEND) --results $(RESULTS)
FRESH = $(CHECK) $(if $(RERUN),--rerun)

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

# ---------------------------------------------------------------- notebooks/study.py -> results/<arch>/
# One notebook for the three architectures: jupytext turns the percent-format source into a notebook,
# papermill runs it with the architecture and the profile, unless $(FRESH) finds its results current.
# After a run $(CHECK) must pass: a notebook that wrote no results, or results of other inputs, fails the build.
define study
$(RESULTS)/$(1)/results.json: FORCE | $(VENV)/.installed $(CLUSTER)
	@$(FRESH) study $(1) || { set -ex; mkdir -p $(RESULTS)/$(1); \
	  $(VENV)/bin/jupytext --quiet --to ipynb --output $(RESULTS)/$(1)/source.ipynb notebooks/study.py; \
	  $(VENV)/bin/papermill --kernel python3 --cwd . $(RESULTS)/$(1)/source.ipynb $(RESULTS)/$(1)/notebook.ipynb \
	    -p arch $(1) -p profile $(PROFILE) -p results_dir $(RESULTS) -p backend $(BACKEND); \
	  $(CHECK) study $(1); }
endef
$(foreach arch,$(ARCHS),$(eval $(call study,$(arch))))
STUDIES := $(foreach arch,$(ARCHS),$(RESULTS)/$(arch)/results.json)

# ---------------------------------------------------------------- the ablation -> results/<arch>/ablation.json
# Why our τ differs from the report's: the reference notebooks' choices one at a time, and τ across ρ.
# It reuses the study's pool (hence the results.json prerequisite; its hash includes the study's); its size
# per profile is set in sharplib/ablation.py (ABLATION_PROFILES), and cached sharpness values make a rerun cheap.
define ablation
$(RESULTS)/$(1)/ablation.json: $(RESULTS)/$(1)/results.json FORCE | $(VENV)/.installed $(CLUSTER)
	@$(FRESH) ablation $(1) || { set -ex; \
	  $(VENV)/bin/jupytext --quiet --to ipynb --output $(RESULTS)/$(1)/ablation-source.ipynb notebooks/ablation.py; \
	  $(VENV)/bin/papermill --kernel python3 --cwd . $(RESULTS)/$(1)/ablation-source.ipynb $(RESULTS)/$(1)/ablation.ipynb \
	    -p arch $(1) -p profile $(PROFILE) -p results_dir $(RESULTS) -p backend $(BACKEND); \
	  $(CHECK) ablation $(1); }
endef
$(foreach arch,$(ARCHS),$(eval $(call ablation,$(arch))))
ABLATIONS := $(foreach arch,$(ARCHS),$(RESULTS)/$(arch)/ablation.json)

# ---------------------------------------------------------------- beyond the report: notebooks/measures.py -> results/<arch>/measures.json
# The panel of measures on the study's pool and on a grid that varies the learning rate and batch size.
# `make measures` runs it for the three architectures, every time it is asked (it is not yet under the content
# hash, and file times would rerun it after any edit of a module it imports: 25 minutes for the GAT on 2 cores);
# `make paper` never runs it, but shows its section whenever measures.json files are there.
define measures
.PHONY: measures-$(1)
measures-$(1): $(RESULTS)/$(1)/results.json | $(VENV)/.installed $(CLUSTER)
	$(VENV)/bin/jupytext --quiet --to ipynb --output $(RESULTS)/$(1)/measures-source.ipynb notebooks/measures.py
	$(VENV)/bin/papermill --kernel python3 --cwd . $(RESULTS)/$(1)/measures-source.ipynb $(RESULTS)/$(1)/measures.ipynb \
	  -p arch $(1) -p profile $(PROFILE) -p results_dir $(RESULTS) -p backend $(BACKEND)
	test -f $(RESULTS)/$(1)/measures.json
endef
$(foreach arch,$(ARCHS),$(eval $(call measures,$(arch))))
MEASURES_DONE := $(wildcard $(foreach arch,$(ARCHS),$(RESULTS)/$(arch)/measures.json))
MEASURES_GENERATED := $(if $(MEASURES_DONE),$(GENERATED)/measures.tex $(GENERATED)/measures.pdf)

$(GENERATED)/measures.tex $(GENERATED)/measures.pdf &: $(MEASURES_DONE) $(MEASURES_REPORT_MODULES) $(GENERATED)/profile.txt | $(VENV)/.installed
	$(PY) -m sharplib.measures_report $(RESULTS) $(GENERATED)

# ---------------------------------------------------------------- results -> paper
# A stamp that changes only when the profile does, so switching profiles rebuilds the paper.
$(GENERATED)/profile.txt: FORCE
	@mkdir -p $(@D)
	@echo '$(PROFILE) $(RESULTS)' | cmp -s - $@ || echo '$(PROFILE) $(RESULTS)' > $@

$(GENERATED)/results.tex $(GENERATED)/table1.tex $(GENERATED)/comparison.tex $(GENERATED)/figure1.pdf $(GENERATED)/figure1.png \
$(GENERATED)/ablation.tex $(GENERATED)/rho.pdf $(GENERATED)/rho.png &: \
    $(STUDIES) $(ABLATIONS) $(REPORT_MODULES) $(GENERATED)/profile.txt | $(VENV)/.installed
	$(PY) -m sharplib.report $(RESULTS) $(GENERATED)

paper/main.pdf: paper/main.tex paper/references.bib $(GENERATED)/results.tex $(GENERATED)/table1.tex $(GENERATED)/comparison.tex $(GENERATED)/figure1.pdf \
    $(GENERATED)/ablation.tex $(GENERATED)/rho.pdf $(MEASURES_GENERATED) | tex
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error -quiet main.tex

.PHONY: paper results measures test lab clean clean-results venv FORCE
paper: paper/main.pdf
results: $(STUDIES) $(ABLATIONS)
measures: $(foreach arch,$(ARCHS),measures-$(arch))
venv: $(VENV)/.installed

test: $(VENV)/.installed $(VENV)/.cluster
	$(PY) -m pytest $(PYTEST_ARGS)

# Serves notebooks/ on 127.0.0.1. lab/overrides.json (copied into the venv, where JupyterLab reads
# setting overrides) makes a double-click open the percent .py files as notebooks and switches off
# the news pop-up. LAB_ARGS adds server options (tests/test_lab.py passes a port and a token).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.d
LAB_ARGS ?=
# IPYTHONDIR points the kernels at a profile under build/ holding lab/ipython_kernel_config.py, which loads
# sharplib.notebook at start-up: a cell run before the cell it needs says, in one line, which cell to run.
LAB_IPYTHON := build/ipython
lab: $(VENV)/.installed
	mkdir -p $(LAB_SETTINGS) $(LAB_IPYTHON)/profile_default
	cp lab/overrides.json $(LAB_SETTINGS)/sharplib.json
	cp lab/ipython_kernel_config.py $(LAB_IPYTHON)/profile_default/
	IPYTHONDIR=$(abspath $(LAB_IPYTHON)) $(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# ---------------------------------------------------------------- teaching: the wheel and the handouts
# `make wheel`: sharplib as a wheel (build/wheel/), for installing it without the repository.
# `make handout`: from notebooks/teaching_sharpness.py (sharplib/handout.py, nbgrader's conventions) the
# student's notebook (no solutions, no hidden tests, no outputs) and the instructor's (executed, with the
# solutions), with the wheel beside them: build/handout/ is what to hand out.
WHEEL_DIR := build/wheel
HANDOUT_DIR := build/handout
.PHONY: wheel handout
wheel: $(VENV)/.installed
	rm -rf $(WHEEL_DIR)
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(WHEEL_DIR) .
handout: wheel
	$(PY) -m sharplib.handout notebooks/teaching_sharpness.py $(HANDOUT_DIR)
	cp $(WHEEL_DIR)/sharplib-*.whl $(HANDOUT_DIR)/

clean:
	rm -rf $(GENERATED) notebooks/*.ipynb build
	-cd paper && latexmk -C -quiet main.tex

# The tracked results (results/<arch>/: results.json, models.csv, ablation.*, rho.csv, the executed
# notebooks) stay; trained models, caches and the quick profile's folder go.
TRACKED_RESULTS := results.json models.csv ablation.json ablation.csv rho.csv notebook.ipynb ablation.ipynb
clean-results: clean
	rm -rf results-quick
	find results -mindepth 2 -maxdepth 2 $(foreach name,$(TRACKED_RESULTS),! -name $(name)) -exec rm -rf {} +
