# The two commands a newcomer needs: `make run` and `make test`. Everything else is set up by them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
MODELS_STAMP := model_store/.built-stamp

.PHONY: setup models run test fuzz test-docker test-compose docker-engine lint typecheck protos bench loadtest prometheus nginx clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,dev,compare]'
	@touch $@

# Example models are built from code with fixed seeds; a second run skips what exists.
models: $(MODELS_STAMP)

$(MODELS_STAMP): $(STAMP) $(wildcard deploy/examples/*.py)
	$(PY) deploy/examples/build_models.py --store model_store
	@touch $@

run: setup models
	$(PY) deploy/localstack.py run

# Prometheus (Debian's package) for the tests that run a real Prometheus server and promtool.
prometheus:
	@bash deploy/prometheus/install.sh

test: setup models prometheus docker-engine nginx
	$(PY) -m pytest

# Debian's docker.io and debootstrap for the compose tests (tests/compose); see the script.
docker-engine:
	@bash deploy/docker/lookalike/install.sh

# The compose stack on a real Docker engine: starts dockerd if none runs (and stops it after),
# builds the local look-alike images (cached), `docker compose up`, end-to-end checks through the
# gateway on 127.0.0.1 (docs/deployment.md, "Compose on a real engine").
test-compose: setup models docker-engine
	$(PY) -m pytest tests/compose

# The fuzz tests with fresh random examples on every run, ten times as many as `make test` replays
# (its fixed, derandomized set): a failure prints the @reproduce_failure blob that replays it.
fuzz: setup
	GATEWAY_FUZZ=random $(PY) -m pytest tests/fuzz -q

# The same end-to-end suite against the official TorchServe and TF Serving images (needs a Docker
# engine; without one the e2e tests say they are skipped).
test-docker: setup models
	GATEWAY_E2E_BACKENDS=docker $(PY) -m pytest tests/e2e

# The scripts start the local stack (deploy/localstack.py) and measure with loadgen/ from this checkout.
LOADGEN_PATH := PYTHONPATH=$(CURDIR):$(CURDIR)/deploy

# nginx and wrk (Debian's packages) for the benchmark's nginx hop and its workers phase's load (the
# benchmark writes its own nginx configuration); `make test` runs loadgen.wrk's tests with the real wrk.
nginx:
	@bash deploy/nginx/install.sh

bench: setup models nginx
	$(LOADGEN_PATH) $(PY) scripts/bench_dataplane.py

# Holds the gateway at 0.9x its measured capacity for 60 s; fails on any error, on more than 1% of
# the schedule missed, or on memory growth (see docs/benchmarks.md).
loadtest: setup models
	$(LOADGEN_PATH) $(PY) scripts/load_test.py

lint: setup
	$(VENV)/bin/ruff check gateway loadgen scripts tests deploy
	$(VENV)/bin/ruff format --check gateway loadgen scripts tests deploy
	$(VENV)/bin/lint-imports --no-logo  # the layer contract: pyproject.toml, [tool.importlinter]

typecheck: setup
	$(VENV)/bin/mypy

protos: setup
	$(PY) scripts/gen_protos.py

clean:
	rm -rf $(VENV) model_store/*/ $(MODELS_STAMP) .local
