# The two commands of the README: `make demo` (main job) and `make test` (test suite).
.PHONY: setup demo test test-slow test-seeds lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/workbench demo

test: setup
	bash scripts/tests.sh fast

test-slow: setup
	bash scripts/tests.sh slow

# The science tests (those reading the toy world) on the toy worlds of two more seeds.
test-seeds: setup
	.venv/bin/python bench/toy_seeds.py --seeds 1 2

lint: setup
	.venv/bin/ruff check workbench probes saes apps tests bench
	.venv/bin/lint-imports
