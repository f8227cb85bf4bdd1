# User entry points. `make test` and `make install` set everything up on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
APT_PACKAGES := libopenmpi-dev openmpi-bin dataset-fashion-mnist
NP ?= 2
CONFIG ?= experiments/smoke.toml
PROFILE ?= mini
SWEEP ?= experiments/$(PROFILE).toml
# the paper's study the report maps a profile onto; auto: plots/report.py decides (the runs' data set if it is
# one of the paper's, else cifar100 when the profile's name contains "cifar", else imagenet), as the CLI does
PAPER_DATASET ?= auto
# report --against: a profile's claims beside another's at the same batches (mini_90: mini's 13-39-step budgets;
# a folder not run yet is named in one warning line and in claims.md, never an error)
AGAINST_mini_90 = mini
# mini keeps the paper's untuned protocol; its claims.md sets the fair search's verdict beside it when it has run
AGAINST_mini = mini_search
AGAINST_mini_search = mini
AGAINST_mini_90_search = mini_90 mini_search
AGAINST_mini_ablation = mini
AGAINST ?= $(AGAINST_$(PROFILE))
# WORKERS / PACK: Horovod workers per run / runs at once; unset, the sweep file's [launch] table decides.
WORKERS ?=
PACK ?=
LAUNCH = $(if $(WORKERS),--workers $(WORKERS)) $(if $(PACK),--pack $(PACK))
JOBS ?= 2
TASKS ?= $(shell echo $$(( $(or $(WORKERS),2) * $(or $(PACK),1) )))

# Open MPI refuses to run as root unless told; containers and CI run as root.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install apt test test-fast lint smoke bench sweep report reproduce-figures clean help tensorboard \
	install-slurm slurm-sweep

help:
	@echo "make install     apt packages, .venv, TensorFlow, Horovod (built from source), this project"
	@echo "make test        install + install-slurm + the whole test suite"
	@echo "make smoke       install + the smoke run on $(NP) Horovod workers (CONFIG=$(CONFIG))"
	@echo "make bench       install + results/bench/bench.json: speed ratios measured in one run (~9 min)"
	@echo "make sweep       install + every pending run of SWEEP=$(SWEEP) [WORKERS=w PACK=k, else the file's [launch]]"
	@echo "make reproduce-figures  install + sweep PROFILE=$(PROFILE) + figures and claims in figures/$(PROFILE)/"
	@echo "make report      figures and claims.md from results/$(PROFILE) (no training)"
	@echo "make tensorboard PROFILE=$(PROFILE)  TensorBoard over results/$(PROFILE)/tensorboard"
	@echo "make lint        ruff check"
	@echo "make install-slurm  slurm-wlm + munge from Debian (for tests/test_slurm.py's one-node cluster)"
	@echo "make slurm-sweep SWEEP=... JOBS=$(JOBS) TASKS=$(TASKS) [PACK=k]  sbatch a JOBS-job array sharing the sweep"

install: apt $(VENV)/.stamp-project

# Debian packages: Open MPI (runtime + headers for Horovod's build) and the Fashion-MNIST files.
apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# TensorFlow first: Horovod's build imports it. cmake<4: Horovod 0.28.1's bundled third-party
# CMakeLists declare cmake_minimum_required versions that CMake 4 rejects.
$(VENV)/.stamp-tf: | $(VENV)/bin/python
	$(PIP) install --upgrade pip
	$(PIP) install tensorflow-cpu==2.18.1 keras==3.15.1 "cmake<4" wheel setuptools packaging
	touch $@

# Horovod 0.28.1 from source with TensorFlow, Gloo and MPI (about 3-4 minutes on 2 cores).
$(VENV)/.stamp-horovod: $(VENV)/.stamp-tf
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
	  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
	  $(PIP) install --no-build-isolation --no-cache-dir horovod==0.28.1
	$(PY) -c "import horovod.tensorflow as hvd; hvd.init(); assert hvd.mpi_built() and hvd.gloo_built()"
	touch $@

# The worked plug-in (README "Bring your own") installed beside the project: its entry points are what
# tests/test_plugins.py and `python -m bench list` find (offline: setuptools is already in the venv).
$(VENV)/.stamp-project: $(VENV)/.stamp-horovod pyproject.toml examples/plugin/pyproject.toml
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-build-isolation --no-deps -e examples/plugin
	touch $@

# Two pytest workers (pytest-xdist; worksteal evens out the long mpirun tests): 2 cores kept busy while one
# test waits on process start-up. TEST_WORKERS=0 runs them one after another.
TEST_WORKERS ?= 2
test: install install-slurm install-chromium
	$(PY) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal) --durations=15

# The quick subset (no mpirun, no end-to-end runs).
test-fast: install
	$(PY) -m pytest -q -m "not mpi and not slow"

# ruff's linter (pyproject.toml [tool.ruff]); the code is laid out by hand at 120 columns, not by ruff format
lint: install
	$(VENV)/bin/ruff check .

smoke: install
	mpirun -np $(NP) --oversubscribe --bind-to none $(PY) -m bench train --config $(CONFIG)

# Speed, as ratios measured in one run (bench/perf/): results/bench/bench.json, printed as a table
# (~9 min here; BENCH_ARGS=--quick ~2 min). It launches its own mpirun children.
BENCH_ARGS ?=
bench: install
	$(PY) -m bench perf --json results/bench/bench.json $(BENCH_ARGS)

# A sweep file's pending runs, each on WORKERS Horovod workers, PACK runs at once (mpirun -np WORKERS*PACK).
sweep: install
	$(PY) -m bench sweep $(SWEEP) $(LAUNCH)

# The whole chain: the profile's sweep (resumable: finished runs are skipped), then its figures.
# PROFILE=mini (default, <30 min on 2 cores) | mini_28 (2 h) | mini_tuned | mini_invariance | cifar100_resnet32 (GPUs;
# CIFAR_DIR) | imagenet_resnet50 (cluster).
reproduce-figures: install
	$(PY) -m bench sweep experiments/$(PROFILE).toml $(LAUNCH)
	$(MAKE) --no-print-directory report

# TensorBoard over one profile's runs (every attempt's events: bench/tensorboard.py); Ctrl-C ends it
tensorboard: install
	$(VENV)/bin/tensorboard --logdir results/$(PROFILE)/tensorboard --bind_all

report: install
	$(PY) -m bench report results/$(PROFILE) --out figures --paper-dataset $(PAPER_DATASET) $(foreach a,$(AGAINST),--against results/$(a))

# Slurm from Debian (22.05): kept out of `make install`; `make test` installs it, so tests/test_slurm.py always runs
# on a real one-node cluster (it fails, never skips, when the cluster cannot start).
install-slurm:
	@if ! dpkg -s slurm-wlm munge >/dev/null 2>&1; then \
	  echo "installing Debian packages: slurm-wlm munge"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; \
	fi

# Debian's Chromium, headless: kept out of `make install`; `make test` installs it, so tests/test_site.py always
# opens the report's index.html in a real browser (it fails, never skips, when chromium is missing).
.PHONY: install-chromium
install-chromium:
	@if ! dpkg -s chromium >/dev/null 2>&1; then \
	  echo "installing Debian packages: chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# A JOBS-job array on one sweep file, TASKS tasks each (= workers per run x PACK); the jobs share its runs.
slurm-sweep:
	@job=$$(sbatch --parsable --array=0-$$(( $(JOBS) - 1 )) -n $(TASKS) experiments/slurm/sweep.sbatch \
	  $(SWEEP) $(if $(PACK),--pack $(PACK))) && job=$${job%%;*} && \
	echo "submitted job array $$job: $(JOBS) job(s) x $(TASKS) task(s) on $(SWEEP) $(if $(PACK),--pack $(PACK),(pack: the file's [launch]))" && \
	echo "  queue:   squeue -j $$job" && \
	echo "  logs:    tail -f slurm-bench-sweep-$${job}_*.out" && \
	pack=$(if $(PACK),$(PACK),$$($(PY) -c "import sys; from bench.grid import load; print(load(sys.argv[1]).launch.get('pack', 1))" $(SWEEP) 2>/dev/null)) && \
	echo "  runs:    $(PY) -m bench sweep $(SWEEP) --workers $$(( $(TASKS) / $${pack:-1} )) --pack $${pack:-1} --dry-run" && \
	echo "  cancel:  scancel $$job"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
