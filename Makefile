# Pitstop: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# uv comes from the python3 outside the project's .venv: that one has neither uv nor pip, and
# an activated .venv puts its python3 first on PATH ("No module named pip" from make setup).
PATH_WITHOUT_VENV := $(shell tr ':' '\n' <<<"$$PATH" | grep -vx -e '$(CURDIR)/.venv/bin' \
	-e "$${VIRTUAL_ENV:-/-}/bin" | paste -sd: -)
PYTHON ?= $(shell PATH='$(PATH_WITHOUT_VENV)' command -v python3 || echo python3)
UV ?= $(PYTHON) -m uv
RUN := $(UV) run --frozen
CLUSTER_DIR := .cluster

.PHONY: help setup binaries lint test unit demo cluster-up cluster-down bench release clean

help:
	@echo "make demo          a local simulated cluster and a rolling reboot to watch"
	@echo "make test          lint + every test (builds what it needs on first run)"
	@echo "make cluster-up    a local control plane in the background (make cluster-down stops it)"
	@echo "make release REGISTRY=host:port [VERSION=x] [INSECURE=1]   push both images and the chart"

# Python toolchain: uv from PyPI if missing, then the locked environment, its bytecode compiled
# as in the images (a shell with PYTHONDONTWRITEBYTECODE=1 otherwise compiles kubernetes,
# pydantic... at every start: +0.3 s of CPU for each `pitstop` command; ~4 s once, then 0.2 s).
setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --frozen --quiet --compile-bytecode

# Control-plane binaries: $$KUBEBUILDER_ASSETS, $$PATH, or built once into ~/.cache/pitstop.
binaries: setup
	@$(RUN) python -m localcluster build >/dev/null

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports --no-logo

test: lint binaries
	$(RUN) pytest -p no:cacheprovider

unit: setup
	$(RUN) pytest -p no:cacheprovider -m "not cluster and not image"

# Options pass through, e.g. make demo DEMO_ARGS="--nodes 6 --flagged 4" (see --help).
# The demo runs as the terminal's foreground job: Ctrl-C (the way --keep ends) reaches it, not
# make, so the demo stops everything and make exits with the demo's code (0).
demo: binaries
	@$(RUN) python -m localcluster.foreground python -m localcluster.demo $(DEMO_ARGS)

cluster-up: binaries
	@mkdir -p $(CLUSTER_DIR)
	@if [ -f $(CLUSTER_DIR)/pid ] && kill -0 $$(cat $(CLUSTER_DIR)/pid) 2>/dev/null; then \
		echo "already running: export KUBECONFIG=$$(cat $(CLUSTER_DIR)/ready)"; exit 0; fi
	@rm -f $(CLUSTER_DIR)/ready
	@nohup $(RUN) python -m localcluster up --dir $(CLUSTER_DIR) >$(CLUSTER_DIR)/up.log 2>&1 & echo $$! >$(CLUSTER_DIR)/pid
	@for i in $$(seq 1 120); do [ -f $(CLUSTER_DIR)/ready ] && break; \
		kill -0 $$(cat $(CLUSTER_DIR)/pid) 2>/dev/null || { cat $(CLUSTER_DIR)/up.log; exit 1; }; sleep 1; done
	@cat $(CLUSTER_DIR)/up.log | sed -n '/Local cluster is up/,/Component logs/p'
	@echo "make cluster-down stops it."

cluster-down:
	@if [ -f $(CLUSTER_DIR)/pid ]; then kill $$(cat $(CLUSTER_DIR)/pid) 2>/dev/null; \
		for i in $$(seq 1 30); do kill -0 $$(cat $(CLUSTER_DIR)/pid) 2>/dev/null || break; sleep 1; done; fi
	@rm -rf $(CLUSTER_DIR)
	@echo "local cluster stopped"

bench: binaries
	@for script in bench/*.py; do echo "== $$script"; $(RUN) python $$script; done

# Both images (podman) and the chart (helm push) into an OCI registry; VERSION defaults to
# pyproject's and must equal it; INSECURE=1 for a plain-HTTP registry (a local test one).
release: setup
	@test -n "$(REGISTRY)" || { echo "usage: make release REGISTRY=host:port [VERSION=x] [INSECURE=1]"; exit 2; }
	$(RUN) python -m localcluster.release --registry "$(REGISTRY)" $(if $(VERSION),--version "$(VERSION)") $(if $(INSECURE),--insecure)

clean: cluster-down
	rm -rf .venv .mypy_cache .ruff_cache .import_linter_cache
