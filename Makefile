# crescend-jax: the README's two commands are `make demo` and `make test`.
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done
PYTEST ?= -n 2

.PHONY: setup demo test bench clean clean-stores

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/crescend-jax demo --config configs/demo.py --workdir runs/demo

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST) tests

BENCH_ARGS ?=

bench: setup  # results in bench/tmp/; BENCH_ARGS=--publish writes bench/, BENCH_ARGS=--quick the short versions
	HF_HUB_OFFLINE=1 bash scripts/bench.sh $(BENCH_ARGS)

.PHONY: bench-gpu
bench-gpu: setup  # one accelerator, at most 8 minutes: bench/tmp/gpu.md (BENCH_ARGS=--publish: bench/gpu.md)
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/bench_gpu.py $(BENCH_ARGS)

clean:  # runs, render cache, outputs; never the embedding stores (a MuQ extraction costs hours)
	rm -rf runs cache out

clean-stores:  # the embedding stores themselves
	rm -rf stores
