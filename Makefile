# qorch developer entry points. `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
QORCH  := $(BIN)/qorch
PYTEST := $(BIN)/pytest

.DEFAULT_GOAL := help
.PHONY: help venv controlplane helm promql crds lint unit integration e2e test demo down bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with qorch and its dev tools

controlplane: venv ## build (or find) kube-apiserver, etcd and kubectl
	$(QORCH) dev cluster build

helm: ## build (or find) helm from the Go module proxy, for the chart's tests
	hack/helm/build.sh

promql: ## build (or find) the PromQL checker of manifests/monitoring's tests
	hack/promql/build.sh

crds: venv ## regenerate crds/ and the chart's copy from qorch.api
	$(QORCH) crds generate
	$(QORCH) crds generate --output-dir charts/qorch/crds

lint: venv ## ruff, mypy --strict and the layer contract
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: venv ## unit tier: no control plane needed
	$(PYTEST) tests/unit

integration: controlplane helm promql ## integration + e2e tiers against a real control plane
	$(PYTEST) tests/integration $(wildcard tests/e2e/test_*.py)

test: lint unit integration ## everything CI runs

demo: controlplane ## the main job: a local control plane with qorch installed
	$(QORCH) dev up

down: venv ## stop what `make demo` started
	$(QORCH) dev down

clean: ## remove the venv and caches (not the built binaries)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
