# Eval runner: every target creates .venv and installs what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STAGE ?= dev
CHECKOV_VENV := .local/checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
TENANT ?= acme
USER ?= alice
ROLE ?= admin
export PYTHONPATH := $(CURDIR)

.PHONY: help run test test-fast lint typecheck token routes package deploy infra deploy-rehearsal bench import-settings clean browsers judge-sandbox

help:
	@echo "make run | test | token TENANT=.. USER=.. ROLE=admin|member | routes | package STAGE=dev|prod | deploy STAGE=.. ARTIFACT_BUCKET=.. PARAMS=.. | infra STAGE=.. PARAMS=.. | deploy-rehearsal STAGE=.. | bench | import-settings FILE=.. TENANT=.."

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2>&1 | grep -v "is ignored" || true
	@$(PY) -c "import chalice, moto, pytest, anthropic, openai" 
	@touch $(STAMP)

run: $(STAMP)
	@$(PY) -m devstack.run

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test-fast: $(STAMP)
	$(VENV)/bin/pytest -m "not e2e and not browser and not deploy"

# SKIP_BROWSER=1: no Chromium or bubblewrap install (no Debian apt needed) and no browser tests; everything
# else runs (the daemon's sandbox tests then skip, saying bubblewrap is missing).
test: $(STAMP) $(if $(SKIP_BROWSER),,browsers judge-sandbox) $(CHECKOV) lint typecheck
	$(VENV)/bin/pytest $(if $(SKIP_BROWSER),-m "not browser")

# Debian's Chromium for the browser tests (tests/browser): Playwright drives /usr/bin/chromium and
# never downloads a browser. Idempotent: does nothing when chromium is already installed.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browsers:
	@test -x /usr/bin/chromium || { \
	  echo "installing Debian chromium for the browser tests (apt-get)..."; \
	  mkdir -p .local; \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium ) \
	    > .local/apt-chromium.log 2>&1 || { tail -20 .local/apt-chromium.log >&2; exit 1; }; }

# bubblewrap (`bwrap`): the reference daemon runs each judge CLI inside it, seeing only the job's own
# directory (README "Daemon runner"). Idempotent; without it the daemon warns and runs judges unsandboxed.
judge-sandbox:
	@command -v bwrap >/dev/null || { \
	  echo "installing Debian bubblewrap for the daemon's judge sandbox (apt-get)..."; \
	  mkdir -p .local; \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq bubblewrap ) \
	    > .local/apt-bubblewrap.log 2>&1 || { tail -20 .local/apt-bubblewrap.log >&2; exit 1; }; }

token: $(STAMP)
	@$(PY) -m devstack.token --tenant "$(TENANT)" --user "$(USER)" --role "$(ROLE)"

# After adding, removing or changing an HTTP route: regenerate chalicelib/api/route_table.py and commit it.
routes: $(STAMP)
	@$(PY) -m devstack.routes

import-settings: $(STAMP)
	@test -n "$(FILE)" || (echo "usage: make import-settings FILE=appsettings.json TENANT=acme" && exit 2)
	@$(PY) -m devstack.import_settings "$(FILE)" --tenant "$(TENANT)"

package: $(STAMP)
	@$(PY) -m devstack.package --stage "$(STAGE)"

# make deploy STAGE=prod ARTIFACT_BUCKET=my-artifacts PARAMS="JwksUrl=… JwtIssuer=… JwtAudience=…"
# Runs exactly the README's command sequence (devstack/deploy.py prints it with --dry-run).
deploy: $(STAMP)
	@$(PY) -m devstack.deploy --stage "$(STAGE)" --artifact-bucket "$(ARTIFACT_BUCKET)" $(if $(STACK),--stack-name "$(STACK)") $(PARAMS)

# make infra STAGE=prod PARAMS="JwksUrl=… JwtIssuer=… JwtAudience=…": the data stack for `chalice deploy`.
infra: $(STAMP)
	@$(PY) -m devstack.infra --stage "$(STAGE)" $(PARAMS)

# checkov pins its own boto3/botocore (older than ours): it lives in a venv of its own.
$(CHECKOV):
	@mkdir -p .local && $(PYTHON) -m venv $(CHECKOV_VENV)
	@$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check 'checkov>=3.2,<4' 2>&1 | grep -v "is ignored" || true
	@test -x $(CHECKOV)

# The deploy rehearsed offline on moto: build/$(STAGE)/rehearsal.json (devstack/rehearsal.py).
deploy-rehearsal: $(STAMP) $(CHECKOV)
	@CHECKOV=$(CURDIR)/$(CHECKOV) $(PY) -m devstack.rehearsal --stage "$(STAGE)"

bench: $(STAMP)
	@$(PY) -m bench.run_all

clean:
	rm -rf build .local .mypy_cache .ruff_cache .pytest_cache
