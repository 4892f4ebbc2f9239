# The two commands of the README: `make demo` (main job) and `make test` (test suite).
.PHONY: setup demo test test-slow lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/workbench demo

test: setup
	.venv/bin/python -m pytest -m "not slow" -q

test-slow: setup
	.venv/bin/python -m pytest -m slow -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

lint: setup
	.venv/bin/ruff check workbench probes saes apps tests bench
	.venv/bin/lint-imports
