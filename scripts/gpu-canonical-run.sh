#!/usr/bin/env bash
# How the tracked results/ were made: the full profile on one GPU machine without internet, whose
# Python already has torch, torchvision, torch_geometric, pandas, seaborn and pytest. It brings
# papermill, jupytext, ipykernel and pooch as wheels (.whl/), the data as .device-data/ (a copy of
# ../shared/data) and, optionally, a copy of .git as .gitcopy/ so the results name their commit.
#   OUT=/some/folder BUDGET_S=560 bash scripts/gpu-canonical-run.sh     (RERUN=0: only the steps not current)
# It writes results.tgz (the files git tracks under results/, the steps' locks among them, and paper/generated/),
# the make log, the CUDA tests' log and the CUDA-graph benchmark into $OUT. Each phase gets at most what is
# left of BUDGET_S, the canonical run first. LeNet-5's progress step is tracked from a CPU run whose along-training
# pool is cut to 12 seeds: set trajectory_models in its progress row in sharplib/experiments/profiles.py back to 50
# (and commit) first, so make reruns it (and the equalized step built on it).
set -uo pipefail
OUT=${OUT:-build/canonical-run}
BUDGET_S=${BUDGET_S:-560}
DEADLINE=$(( $(date +%s) + BUDGET_S ))
left() { local s=$(( DEADLINE - $(date +%s) )); (( s < $1 )) && echo $s || echo $1; }  # seconds for a phase
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SHARPLIB_DATA=$PWD/.device-data
if [ -d .gitcopy ]; then export GIT_DIR=$PWD/.gitcopy GIT_WORK_TREE=$PWD; fi
stamp() { echo "== $(date -u +%T) $*"; }

stamp "setup"
# The machine's python3 is itself a venv (a venv on top would hide its packages): the wheels go to a
# folder on PYTHONPATH, and .venv/bin holds the names the Makefile calls.
SITE=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl || exit 1
export PYTHONPATH=$SITE:$PWD
rm -rf .venv && mkdir -p .venv/bin
printf '#!/bin/sh\nexec python3 "$@"\n' > .venv/bin/python  # a script, not a link: a link would make python look for a venv here
for tool in jupytext papermill; do printf '#!/bin/sh\nexec python3 -m %s "$@"\n' $tool > .venv/bin/$tool; done
chmod +x .venv/bin/*
touch .venv/.installed .venv/.cluster  # make must not pip-install: the machine has no registry
.venv/bin/python -c "import torch, sharplib; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
git rev-parse HEAD && git status --porcelain --untracked-files=no | head

stamp "the CUDA graph against the eager step (gate for the canonical run)"
timeout "$(left 90)" .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "${GATE_TESTS:-cuda_graph}" 2>&1 | tail -5
if [ "${PIPESTATUS[0]}" != 0 ]; then echo "graph check failed: no canonical run"; GATE=failed; else GATE=ok; fi

if [ "$GATE" = ok ]; then
  stamp "make results + report, full profile, every step of every architecture"
  start=$(date +%s)
  timeout "$(left ${MAKE_S:-450})" make -j${JOBS:-6} results paper/generated/results.tex PROFILE=full RERUN=${RERUN:-1} \
    MEASURES_ARCHS="fcnn lenet5 gat" PROGRESS_ARCHS="fcnn lenet5 gat" EQUALIZED_ARCHS="fcnn lenet5 gat" > "$OUT/make-full.log" 2>&1
  echo "make exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/make-full.log"
  tail -5 "$OUT/make-full.log"
  tar czf "$OUT/results.tgz" $(git ls-files -co --exclude-standard results) paper/generated  # results, locks, notebooks
  for nb in results/*/*.ipynb; do
    python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['metadata'].get('papermill',{}); print(sys.argv[1], m.get('duration'))" "$nb"
  done 2>/dev/null | tee "$OUT/durations.txt"
fi

stamp "CUDA tests"
timeout "$(left 150)" .venv/bin/python -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_train.py 2>&1 | tee "$OUT/cuda-tests.log" | tail -8

if (( $(left 999) > 60 )); then
  stamp "benchmark: the measures panel of 50 LeNet-5 models, batched against one model at a time"
  timeout "$(left 150)" .venv/bin/python benchmarks/measures.py --device cuda --alone 10 --panel-only 2>&1 | grep -v Warning | tee "$OUT/measures_bench.txt" | tail -15
fi
if (( $(left 999) > 60 )); then
  stamp "benchmark: LeNet-5 pool, eager vs CUDA graph"
  timeout "$(left 150)" .venv/bin/python benchmarks/cuda_graph.py 2>&1 | grep -v Warning | tee "$OUT/cuda_graph.txt" | tail -25
fi
stamp "done"
