# Set-up and test entry points; each target installs what it needs itself.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PKGS := docker-registry skopeo umoci xfsprogs curl time

.PHONY: demo test lint unit bench deps venv clean

demo: venv
	$(BIN)/python examples/demo.py

# The suite under coverage, CLI subprocesses included; the report ends with the total
# (statements and branches).
test: deps venv lint
	rm -f .coverage .coverage.* .pytest.log
	set -o pipefail; COVERAGE_FILE=$(CURDIR)/.coverage \
	  $(BIN)/coverage run -m pytest -q -p no:cacheprovider | tee .pytest.log
	$(BIN)/coverage combine -q
	$(BIN)/coverage report
	@tail -n 1 .pytest.log  # the suite's result line again, last, after the coverage table

# The suite alone, without coverage (faster while iterating).
unit: venv
	$(BIN)/pytest -q -p no:cacheprovider

lint: venv
	$(BIN)/ruff check hybridstore tests examples benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

bench: deps venv
	$(BIN)/pip install -q -e '.[test,dev,bench]'
	$(BIN)/python benchmarks/run.py

# Debian packages for the real peers the tests talk to (only when root and missing).
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (tests needing them will be skipped)"; fi; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $@

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache
