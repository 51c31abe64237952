# One entry point for every job. `make test` is what the README and CI run.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
JAEGER_VERSION ?= v1.76.0
export JAEGER_VERSION
# Every package source file: the strict editable install links files one by one, so a new module needs a re-install.
SOURCES := $(shell find meshtrace integrations proxy -name '*.py' 2>/dev/null) pyproject.toml

.PHONY: test check lint typecheck pytest jaeger demo bench bench-deps clean

test: $(VENV)/.installed jaeger
	MESHTRACE_JAEGER_BIN="$$(tests/e2e/build_jaeger.sh)" $(BIN)/pytest
	$(BIN)/mypy
	$(BIN)/ruff check .

# Fast loop while editing: no Jaeger build, e2e tests skip locally with a reason.
check: $(VENV)/.installed
	$(BIN)/pytest -q
	$(BIN)/mypy
	$(BIN)/ruff check .

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python $(SOURCES)
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=strict
	touch $@

jaeger:
	@tests/e2e/build_jaeger.sh >/dev/null

demo: $(VENV)/.installed jaeger
	MESHTRACE_JAEGER_BIN="$$(tests/e2e/build_jaeger.sh)" $(BIN)/meshtrace demo

bench-deps:
	@command -v nginx >/dev/null && command -v haproxy >/dev/null && command -v wrk >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq nginx haproxy wrk >/dev/null)

# Every tests/bench/bench_*.py in turn; `make bench BENCH_ARGS="--only export"` runs one.
bench: $(VENV)/.installed bench-deps
	$(BIN)/python tests/bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
	find meshtrace integrations proxy -name "*.so" -delete
