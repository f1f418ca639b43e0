# Eval runner: every target creates .venv and installs what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STAGE ?= dev
TENANT ?= acme
USER ?= alice
ROLE ?= admin
export PYTHONPATH := $(CURDIR)

.PHONY: help run test test-fast lint typecheck token package bench import-settings clean browsers

help:
	@echo "make run | test | token TENANT=.. USER=.. ROLE=admin|member | package STAGE=dev|prod | bench | import-settings FILE=.. TENANT=.."

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
	$(VENV)/bin/pytest -m "not e2e and not browser"

# SKIP_BROWSER=1: no Chromium install (no Debian apt needed) and no browser tests; everything else runs.
test: $(STAMP) $(if $(SKIP_BROWSER),,browsers) lint typecheck
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

token: $(STAMP)
	@$(PY) -m devstack.token --tenant "$(TENANT)" --user "$(USER)" --role "$(ROLE)"

import-settings: $(STAMP)
	@test -n "$(FILE)" || (echo "usage: make import-settings FILE=appsettings.json TENANT=acme" && exit 2)
	@$(PY) -m devstack.import_settings "$(FILE)" --tenant "$(TENANT)"

package: $(STAMP)
	@$(PY) -m devstack.package --stage "$(STAGE)"

bench: $(STAMP)
	@$(PY) -m bench.run_all

clean:
	rm -rf build .local .mypy_cache .ruff_cache .pytest_cache
