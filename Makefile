# Two commands do everything on a fresh machine (see README, Quickstart):
#   make demo   install what is needed, then `dvc repro` the pipeline (mini profile)
#   make test   install what is needed, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Debian packages the default profile reads: the asset stage takes the emoji
# font and Fashion-MNIST from these packages' archives (pinned + sha256).
# chromium: the report test loads the HTML report headless (no network).
DEB_PACKAGES := fonts-noto-color-emoji dataset-fashion-mnist chromium

export PATH := $(CURDIR)/$(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
# Persisted task results (the Prefect task cache) stay in the work tree.
export PREFECT_LOCAL_STORAGE_PATH := $(CURDIR)/.prefect/results
export DO_NOT_TRACK := 1

.PHONY: demo test setup system-deps clean prefect-server prefect-deploy worker gpu-check

# Ends with a summary that fits 120 columns (headline table, stage timings,
# the report's path); `dvc metrics show` prints every metric of every stage.
demo: setup
	dvc repro
	@echo
	@$(BIN)/pmg summary

test: setup
	$(BIN)/pytest

# The whole pipeline on one GPU, 8 users per scenario: the full profile when its
# checkpoints are fetched (HF_HUB_OFFLINE=0 pmg models fetch --profile full), else
# the rehearsal profile at the real sizes. Prints per-stage time, peak GPU memory
# and the headline table (see README, "The full profile").
GPU_CHECK_ARGS ?=
gpu-check: setup
	$(BIN)/python -m pmg.gpu_check $(GPU_CHECK_ARGS)

setup: system-deps $(STAMP)

# The virtual environment is rebuilt when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Prefect (see README, "Scheduled runs with Prefect"). The server and the
# dashboard listen on 127.0.0.1 by default; clients and workers reach it through
# the PREFECT_API_URL of prefect.env, the file people read too
# (`set -a; . ./prefect.env; set +a`), so both talk to the same server.
# `flows.launch` refuses PREFECT_HOST=<a network address> without an auth string
# (PMG_PREFECT_AUTH_STRING), and a worker whose server is on another machine
# without one (README, "GPU workers on other machines").
PREFECT_HOST ?= 127.0.0.1
PREFECT_PORT ?= 4200
PREFECT_ENV := export PMG_PREFECT_PORT=$(PREFECT_PORT) && set -a && . $(CURDIR)/prefect.env && set +a &&
# `make worker WORK_QUEUE=gpu WORKER_LIMIT=1` on each GPU (CUDA_VISIBLE_DEVICES=N);
# no WORK_QUEUE polls every queue of the pool (one machine does everything).
WORK_QUEUE ?=
WORKER_LIMIT ?=
GPU_SLOTS ?= 1
# Where workers get the code (default: this checkout; or a git URL).
DEPLOY_SOURCE ?=

prefect-server: setup
	$(PREFECT_ENV) $(BIN)/python -m flows.launch server --host $(PREFECT_HOST) --port $(PREFECT_PORT)

# Work pool `pmg`, queues, the `gpu` tag limit, the automations (notifications
# through a webhook when PMG_NOTIFY_WEBHOOK_URL is set) and every deployment
# (idempotent).
prefect-deploy: setup
	$(PREFECT_ENV) $(BIN)/python -m flows.deploy all --gpu-slots $(GPU_SLOTS) \
	  $(if $(DEPLOY_SOURCE),--source $(DEPLOY_SOURCE))

# Export the registry's credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)
# before starting a worker: its flow runs inherit its environment.
worker: setup
	$(PREFECT_ENV) $(BIN)/python -m flows.launch worker --pool pmg --type process \
	  $(if $(WORK_QUEUE),--work-queue $(WORK_QUEUE)) $(if $(WORKER_LIMIT),--limit $(WORKER_LIMIT))

clean:
	rm -rf $(VENV) .prefect .pytest_cache
