# tagstream developer entry points. `make` lists them.
PY      := .venv/bin/python
PROFILE ?= dev
export TAGSTREAM_PROFILE := $(PROFILE)

.DEFAULT_GOAL := help
.PHONY: help setup up down status test test-unit lint dq demo segments-apply segments-backfill lookup-serve bench bench-knobs clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: ## Create .venv, fetch the stack's jars, install redis-server (cached; fast when done)
	@bash tools/setup.sh

up: ## Start the local stack (PROFILE=dev|test) and create topics and tables
	@$(PY) -m tools.stack up

down: ## Stop the local stack and the demo's generator and lookup service (PROFILE=dev|test)
	@$(PY) -m tools.demo --stop-generator
	@$(PY) -m tools.stack down

status: ## Show the local stack's services (PROFILE=dev|test)
	@$(PY) -m tools.stack status

test: setup ## Run all tests (e2e tests start and stop the `test` stack themselves)
	$(PY) -m pytest tests

test-unit: setup ## Run the tests that need no Flink cluster and no stack
	$(PY) -m pytest tests -m "not pipeline and not e2e"

chaos: setup ## Chaos scenarios (kills, outages, restarts, rescale, hostile input) on the `test` stack
	$(PY) -m tools.chaos --profile test

bench: setup ## Benchmark on the `bench` stack (<= 20 min; BENCH_QUICK=1 for a few minutes): bench/results + README
	$(PY) -m tools.bench $(if $(filter 1,$(BENCH_QUICK)),--quick,)

bench-knobs: setup ## Benchmark's tuning variants (thread/process, bundles, buffer timeout, parallelism, heap/RocksDB, DynamoDB, Redis batching)
	$(PY) -m tools.bench --knobs --readme

lint: setup ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m mypy

dq: setup ## Data-quality report of a file: make dq FILE=path
	$(PY) -m tools.dq $(FILE)

demo: setup ## Start the dev stack, submit the jobs, generate events
	$(PY) -m tools.demo

segments-apply: setup ## Validate segments/examples/*.yaml and publish them to the stack's definitions (PROFILE=dev|test)
	$(PY) -m tools.segments_cli --profile $(PROFILE) apply segments/examples/*.yaml

segments-backfill: setup ## Warm Redis + DynamoDB of PROFILE (dev) from Parquet history: make segments-backfill FILES="a.parquet ..." [AS_OF=epoch-ms|RFC3339]
	@[ -n "$(FILES)" ] || { echo 'usage: make segments-backfill FILES="history/*.parquet" [AS_OF=...]'; exit 2; }
	$(PY) -m tools.flink_jobs backfill --profile $(PROFILE) $(if $(AS_OF),--as-of $(AS_OF)) $(FILES)

lookup-serve: setup ## Run the segments lookup service on the stack of PROFILE (dev): http://127.0.0.1:8090 (PORT=...)
	$(PY) -m service --profile $(PROFILE) --port $(or $(PORT),8090)

clean: ## Stop the stacks of every profile and delete their data (.run/)
	-@[ ! -x $(PY) ] || for p in $$(ls .run 2>/dev/null); do $(PY) -m tools.stack down --profile $$p; done
	rm -rf .run
