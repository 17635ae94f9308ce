# The README's two commands: `make demo` and `make test`. Both set up what is missing first.
PY := .venv/bin/python
PYTEST := .venv/bin/pytest

.PHONY: setup test unit integration e2e-test-full demo up lint bench

setup:
	@./scripts/setup.sh

test: setup
	@.venv/bin/ruff check src tests bench
	@$(PYTEST) -q --durations=25 tests

unit: setup
	@$(PYTEST) -q -m unit tests

integration: setup
	@$(PYTEST) -q -m integration tests

e2e-test-full: setup
	@$(PYTEST) -v -s tests/e2e/test_full_pipeline.py

demo: setup
	@.venv/bin/livedub demo

up: setup
	@.venv/bin/livedub up

lint: setup
	@.venv/bin/ruff check src tests bench
	@.venv/bin/ruff format --check src tests bench

bench: setup
	@$(PY) bench/sts_bench.py
	@$(PY) bench/media_bench.py
