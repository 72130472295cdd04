# Two commands: `make run` (local stack + worker) and `make test` (local stack + the whole test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Development-only signing secret for JWTs (HS256 wants at least 32 bytes); set JWT_SECRET (or RS256 keys)
# for anything real.
export JWT_SECRET ?= dev-only-jwt-secret-change-me-0123456789abcdef
# Development-only secret of the workers' internal endpoints; set a random PEER_SECRET for anything real.
export PEER_SECRET ?= dev-only-peer-secret-change-me-0123456789
# Development-only key of the forecaster snapshots (HMAC-SHA256); set SNAPSHOT_SIGNING_KEY for anything real.
export SNAPSHOT_SIGNING_KEY ?= dev-only-snapshot-key-change-me
# Where the installs below keep their output: shown only if they fail.
LOGS := .logs

# $(call logged,NAME,COMMAND): COMMAND's output goes to $(LOGS)/NAME.log, and is printed (with the exit code) only
# when COMMAND fails, so a broken pip or apt install says why instead of failing silently.
logged = mkdir -p $(LOGS) && { $(2); } > $(LOGS)/$(1).log 2>&1 || { code=$$?; \
	echo "failed (exit $$code): $(2)" >&2; echo "--- its output (also in $(LOGS)/$(1).log) ---" >&2; \
	cat $(LOGS)/$(1).log >&2; exit $$code; }

.PHONY: venv lock toolchains browser doctor stack run test lint check down status env clean

venv: $(VENV)/.installed

# requirements.lock pins every dependency (dev extras included) with hashes; regenerate it after changing
# pyproject.toml with `make lock`.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	@echo "installing the locked dependencies into $(VENV) (pip's output in $(LOGS)/pip-*.log)"
	@$(call logged,pip-upgrade,$(PY) -m pip install --upgrade pip)
	@$(call logged,pip-requirements,$(PY) -m pip install --require-hashes -r requirements.lock)
	@$(call logged,pip-project,$(PY) -m pip install --no-deps -e .)
	touch $@

# uv runs from a throwaway venv of its own; --python-platform: the lock is for the Linux x86-64 the service runs on.
lock:
	$(PYTHON) -m venv .lock-tools
	@$(call logged,pip-lock,.lock-tools/bin/pip install 'uv==0.13.9')
	.lock-tools/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu --no-header --annotation-style line -o requirements.lock

# Toolchains the local stack builds its servers with.
toolchains:
	@for tool in java mvn go; do command -v $$tool >/dev/null || { echo "missing $$tool (JDK 17, Maven, Go are needed to build the local stack)" >&2; exit 1; }; done

# The browser the dashboard test drives (only `make test` needs it).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "installing Debian's chromium and chromium-driver for the dashboard test (output in $(LOGS)/apt.log)"; \
		$(call logged,apt,apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver); \
	fi

# Python, both JDKs, Maven, Go, disk and ports, one sentence per problem, before anything long starts.
doctor: venv
	@$(PY) -m devstack doctor

# The whole stack in the foreground: one line per service with its phase (plain lines when not on a terminal).
stack: venv doctor
	$(PY) -m devstack up

# What the worker needs to start (Kafka, Pulsar) in the foreground, the rest of the stack in a background process
# (its progress in DEVSTACK_HOME/up-background.log, default .devstack/), then the worker right away.
run: venv doctor
	$(PY) -m devstack up --core-first
	@eval "$$($(PY) -m devstack env)"; \
	echo "== environment"; $(PY) -m devstack env; \
	echo "export JWT_SECRET=$$JWT_SECRET"; \
	echo "export SNAPSHOT_SIGNING_KEY=$$SNAPSHOT_SIGNING_KEY"; \
	echo "export PEER_SECRET=$$PEER_SECRET"; \
	echo "== URLs"; \
	echo "  API        http://127.0.0.1:6066/api/v1/  (OpenAPI: /api/v1/openapi.json)"; \
	echo "  dashboard  http://127.0.0.1:6066/ui/"; \
	echo "  health     http://127.0.0.1:6066/health  /ready  /metrics"; \
	echo "  Prometheus $$PROMETHEUS_URL   Pulsar admin $$PULSAR_ADMIN_URL"; \
	echo "== development admin token (24 h)"; $(PY) -m pipeline dev-token; \
	exec $(PY) -m pipeline worker

test: venv toolchains browser lint
	$(PY) -m pytest -q -rfE

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy pipeline agents tables web devstack

check: lint test

down: venv
	$(PY) -m devstack down

status: venv
	@$(PY) -m devstack status

env: venv
	@$(PY) -m devstack env

clean: down
	rm -rf .devstack .data $(LOGS)
