# Maestro-FL: every target sets up what it needs (virtual env, CPU torch, the data package).
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch goes in first; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
FMNIST_DIR := /usr/share/datasets/fashion-mnist

DEMO_NODES ?= 20

.PHONY: install data demo centralized test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,sim]"
	touch $@

# Real Fashion-MNIST from Debian's package when we are root with apt; else MAESTRO_DATA_DIR or the hub.
data:
	@if [ -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ] || [ -n "$$MAESTRO_DATA_DIR" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "note: $(FMNIST_DIR) missing and not root: set MAESTRO_DATA_DIR or run 'sudo apt-get install dataset-fashion-mnist'"; fi

# The default experiment through the harness (Flower simulation engine, live progress, report).
demo: install data
	rm -rf runs/demo
	$(BIN)/python -m simulations.run --conf simulations/conf/demo.toml --methods maestro \
		--supernodes $(DEMO_NODES) --out runs/demo

centralized: install data
	$(BIN)/python -m maestro_common.centralized --model cnn --methods dense,maestro --epochs 2 \
		--out runs/centralized-demo

test: install data
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
