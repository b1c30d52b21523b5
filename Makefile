.DEFAULT_GOAL := help
KAZI := .venv/bin/kazi

demo: ## Set everything up, start the local stack and run a whole work order end to end
	@scripts/bootstrap.sh
	@.venv/bin/python -m simulation.demo

test: ## Set everything up and run the test suite against the real local stack
	@scripts/bootstrap.sh --browser
	@.venv/bin/pytest

lint: ## ruff (lint + format check) and mypy
	@scripts/bootstrap.sh
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

fmt: ## Format and autofix
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .

bench: ## Run the benchmarks (see bench/README.md)
	@scripts/bootstrap.sh --bench
	@.venv/bin/python -m bench $(ARGS)

stack-up: ## Start the local stack (reuses what runs)
	@scripts/bootstrap.sh
	@$(KAZI) stack up

stack-down: ## Stop the local stack
	@$(KAZI) stack down

help: ## This list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

.PHONY: demo test lint fmt bench stack-up stack-down help
