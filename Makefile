# Two commands do everything on a fresh machine: `make plan` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ENV ?= dev
OUT ?= plan

.PHONY: plan test venv postgres schema lint-workflows bench clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

plan: $(STAMP)
	$(BIN)/tenancy validate
	$(BIN)/tenancy plan --env $(ENV) --out $(OUT)

postgres:
	@bash scripts/ensure-postgres.sh

test: $(STAMP) postgres
	PULUMI_ERROR_OUTPUT_STRING=1 $(BIN)/python -m pytest -n 2 -q

schema: $(STAMP)
	$(BIN)/tenancy schema --out schemas/tenants.schema.json

bench: $(STAMP) postgres
	$(BIN)/python bench/plan_bench.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
