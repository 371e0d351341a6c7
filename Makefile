# The study's two commands. Each builds the pinned environment in .venv first (Python 3.11,
# every package pinned by requirements.lock), so a fresh clone needs nothing else.
#   make repro              regenerate every report at the default (2-core CPU) scale
#   make repro SCALE=paper  the papers' settings (params-paper.yaml copied onto params.yaml)
#   make test               the test suite (pytest: library tests + every notebook through nbval)
#   make campaign           the long training campaign (params-campaign.yaml; hours, resumable) and its report
#   make report             reports/site/index.html: every report as a static site that opens offline
#   make bench-peers        the speed benchmark's optional peers (learn2learn, higher) into the venv
#   make bench-gpu          on a machine with a CUDA GPU: the benchmark's GPU rows (commit what it writes)
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
SCALE ?= default
export PATH := $(BIN):$(PATH)
# glibc backs PyTorch's large CPU tensors with transparent huge pages instead of faulting in 4 KB pages on
# every allocation (glibc >= 2.35; ignored elsewhere). Measured on the ANIL MiniImageNet campaign run (2
# ranks): 166k -> 6k page faults per second and 1.65 -> 1.29 s per iteration; the numbers are unchanged
# (tests/test_numerics.py's fingerprints identical with and without it)
export GLIBC_TUNABLES := glibc.malloc.hugetlb=1

.PHONY: repro test env sync bench-peers bench-gpu campaign report

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

# `dvc plots show` reads its page template from here (.dvc/config: plots.html_template): Vega inlined
# from the pinned vl-convert-python, so the plots open offline (git-ignored; made from the package)
.dvc/plots.html: $(VENV)/.installed
	$(BIN)/python -m metalearn.site --plots-template $@

env: $(VENV)/.installed .dvc/plots.html

repro: env
ifeq ($(SCALE),paper)
	cp params-paper.yaml params.yaml
	@echo "params.yaml now holds the papers' settings (git checkout params.yaml restores the default)"
else ifneq ($(SCALE),default)
	$(error SCALE must be 'default' or 'paper', got '$(SCALE)')
endif
	dvc repro summarize
	dvc metrics show
	$(BIN)/python -m metalearn.site

# The campaign's stages are not upstream of summarize: `make repro` never starts them. While the campaign
# trains (DVC holds its lock), `python -m metalearn.run report_campaign` shows where each run stands.
# freeze_campaign analyses the finished models; report_campaign judges the claims on them.
campaign: env
	dvc repro campaign_miniimagenet campaign_omniglot campaign_seeds_omniglot
	dvc repro -s freeze_campaign similarity_campaign shift_campaign report_seeds_campaign
	dvc repro -s report_campaign

report: env
	$(BIN)/python -m metalearn.site

test: env
	$(BIN)/python -m pytest

# after editing a notebook in JupyterLab (or its .py twin), bring the pair back in step
sync: env
	jupytext --sync notebooks/*.ipynb

# The speed benchmark's pinned peers (pyproject.toml's `bench` extra), with only the packages their imports
# need. learn2learn 0.2.0's shipped C sources predate Python 3.11 (longintrepr.h): its sdist's Cython sources
# are compiled again with Cython 3.3.1 first. PIP_TARGET=<folder> installs into a folder instead of the venv.
bench-peers: env
	$(BIN)/python -m pip install --quiet --no-deps higher==0.2.1 gym==0.26.2 gym-notices==0.1.0 cloudpickle==3.1.2
	rm -rf build/bench-peers && mkdir -p build/bench-peers
	$(BIN)/python -m pip install --quiet --no-deps --target build/bench-peers/cython cython==3.3.1
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation -d build/bench-peers \
	  learn2learn==0.2.0
	cd build/bench-peers && tar xzf learn2learn-0.2.0.tar.gz && cd learn2learn-0.2.0 && rm learn2learn/data/*.c \
	  && PYTHONPATH=$(CURDIR)/build/bench-peers/cython $(BIN)/python setup.py --quiet build_ext --inplace
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation build/bench-peers/learn2learn-0.2.0

# The benchmark's GPU rows (issue 15's GPU targets): params.yaml's benchmark gpu_settings timed on a CUDA device,
# MAML training on the loop, batched and CUDA-graph paths among them, written to data/analyses/benchmark_gpu/timings.json
# (commit it; `dvc repro benchmark` then reports them). Needs only a python with torch, numpy, pandas, scipy, PyYAML,
# psutil, tqdm and Pillow (no venv: a GPU machine's own python). Try it on the CPU first:
#   make bench-gpu BENCH_DEVICE=cpu BENCH_OUT=reports/.scratch/gpu_timings.json BENCH_PARAMS=<a file with smaller gpu_settings>
GPU_PYTHON ?= python3
BENCH_DEVICE ?= cuda
BENCH_OUT ?= data/analyses/benchmark_gpu/timings.json
BENCH_PARAMS ?= params.yaml
bench-gpu:
	PYTHONPATH=$(CURDIR)/lib $(GPU_PYTHON) -m metalearn.benchmark --device $(BENCH_DEVICE) --out $(BENCH_OUT) \
	  --params $(BENCH_PARAMS)
