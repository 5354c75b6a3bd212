# flask-aigateway: every target sets up what it needs, on a fresh machine, from Python 3.11+.
#
#   make run            serve sample_app with gunicorn on http://$(HOST):$(PORT)
#   make test           the test suite on SQLite
#   make test-postgres  the test suite on PostgreSQL + Redis
#   make lint | typecheck | clean
#   make audit          pip-audit of the runtime requirements (setup.cfg, server/postgres/redis)
#   make bench          gateway vs bare upstream (and LiteLLM): bench/README.md, QUICK=1 LITELLM=1
#   make soak           20 minutes of mixed traffic with upstream faults, RSS over time: bench/SOAK.md
#
# Variables: HOST, PORT, THREADS (threads of the gthread worker class, when WORKER_CLASS=gthread),
# PYTHON (interpreter that creates .venv), PYTEST_ARGS (extra pytest arguments),
# TEST_DATABASE_URL, TEST_REDIS_URL. sample_app/gunicorn.conf.py reads the rest (WORKERS,
# WORKER_CLASS, WORKER_CONNECTIONS, …) from the environment.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
THREADS ?= 8
PYTEST_ARGS ?=
TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

# One stamp per extras set: pip runs again only when the packaging metadata changed.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
PACKAGING := setup.cfg pyproject.toml

.DEFAULT_GOAL := help
.PHONY: help run test test-postgres lint format typecheck options-table clean

help:
	@sed -n '1,12p' Makefile | sed 's/^# \{0,1\}//'

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "flask-aigateway needs Python 3.11 or newer; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): $(PACKAGING) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server,postgres,redis]'
	@touch $@

$(DEV_STAMP): $(PACKAGING) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# gevent workers: one process without Redis (in-process rate windows stay exact), one per CPU
# with AIGATEWAY_REDIS_URL (shared windows and counters; sample_app/gunicorn.conf.py decides).
# The schema is created or upgraded first (Flask-Migrate's own command: sample_app's Migrate
# points at the gateway's migrations). gunicorn replaces the recipe's shell (exec), so a SIGTERM
# to make (docker stop with make as PID 1, a supervisor) reaches it: make passes it on to its
# child, which a shell in between would have taken and died of, leaving gunicorn running.
run: $(RUN_STAMP)
	$(BIN)/flask --app sample_app db upgrade
	exec env HOST=$(HOST) PORT=$(PORT) THREADS=$(THREADS) \
		$(BIN)/gunicorn --config sample_app/gunicorn.conf.py

test: $(DEV_STAMP)
	AIGATEWAY_TEST_BACKEND=sqlite $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: $(DEV_STAMP)
	AIGATEWAY_TEST_BACKEND=postgres \
	AIGATEWAY_TEST_DATABASE_URL='$(TEST_DATABASE_URL)' \
	AIGATEWAY_TEST_REDIS_URL='$(TEST_REDIS_URL)' \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

# Rewrites the README's configuration table from flask_aigateway/config.py (OPTIONS).
define OPTIONS_TABLE_SCRIPT
import pathlib
from flask_aigateway.config import options_table
readme = pathlib.Path("README.md")
start, end = "<!-- options-table:start -->\n", "\n<!-- options-table:end -->"
head, rest = readme.read_text(encoding="utf-8").split(start, 1)
tail = rest.split(end, 1)[1]
readme.write_text(head + start + options_table() + end + tail, encoding="utf-8")
print("README.md: configuration table regenerated")
endef
export OPTIONS_TABLE_SCRIPT

options-table: $(DEV_STAMP)
	@$(BIN)/python -c "$$OPTIONS_TABLE_SCRIPT"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +

# The benchmark (bench/README.md): its own venv with the project, gunicorn's gevent worker,
# aiohttp/uvloop for the mock and the load generator, and py-spy. LiteLLM proxy is measured when
# $(LITELLM_VENV) has it; LITELLM=1 installs it there first (a few minutes).
#   make bench                  the full run (12-15 minutes); rewrites bench/RESULTS.md
#   make bench QUICK=1          a 3-4 minute smoke run
#   make bench OPEN_STREAMS=2000 SOAK=600 BENCH_ARGS='--repeats 3'
BENCH_VENV ?= .venv-bench
LITELLM_VENV ?= .venv-litellm
LITELLM_VERSION ?= 1.108.7
BENCH_ARGS ?=
BENCH_STAMP := $(BENCH_VENV)/.installed-bench
LITELLM_STAMP := $(LITELLM_VENV)/.installed-litellm

.PHONY: bench soak

$(BENCH_VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "the benchmark needs Python 3.11 or newer; run: make PYTHON=python3.11 bench")'
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip

$(BENCH_STAMP): bench/requirements.txt $(PACKAGING) | $(BENCH_VENV)/bin/python
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[server,postgres,redis]' -r bench/requirements.txt
	@touch $@

$(LITELLM_STAMP):
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LITELLM_VENV)/bin/python -m pip install --quiet 'litellm[proxy]==$(LITELLM_VERSION)'
	@touch $@

bench: $(BENCH_STAMP) $(if $(filter 1,$(LITELLM)),$(LITELLM_STAMP))
	$(BENCH_VENV)/bin/python -m bench.run_bench --litellm-venv $(LITELLM_VENV) \
		$(if $(filter 1,$(QUICK)),--quick) \
		$(if $(OPEN_STREAMS),--open-streams $(OPEN_STREAMS)) \
		$(if $(SOAK),--soak $(SOAK)) $(BENCH_ARGS)

# The soak (bench/SOAK.md): the gateway as `make run` serves it under mixed traffic with 10 %
# upstream faults, its process tree's RSS sampled throughout; same venv as the benchmark.
#   make soak                          20 minutes on SQLite
#   make soak BACKEND=postgres         on PostgreSQL + Redis (127.0.0.1, throw-away database)
#   make soak MINUTES=2 SOAK_ARGS='--sample-seconds 5'
MINUTES ?= 20
BACKEND ?= sqlite
SOAK_ARGS ?=

soak: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m bench.soak --minutes $(MINUTES) --backend $(BACKEND) $(SOAK_ARGS)

# pip-audit in a venv of its own, on the runtime requirements setup.cfg declares (with the
# server, postgres and redis extras), resolved as a fresh install would resolve them today.
# --strict: a dependency the vulnerability service cannot look up fails the audit instead of
# being skipped silently (pip-audit would otherwise print "No known vulnerabilities found").
AUDIT_VENV ?= .venv-audit
AUDIT_STAMP := $(AUDIT_VENV)/.installed-audit
AUDIT_ARGS ?=

define RUNTIME_REQUIREMENTS_SCRIPT
import configparser
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
lines = cfg["options"]["install_requires"].splitlines()
for extra in ("server", "postgres", "redis"):
    lines += cfg["options.extras_require"][extra].splitlines()
print("\n".join(x.strip() for x in lines if x.strip() and not x.strip().startswith("#")))
endef
export RUNTIME_REQUIREMENTS_SCRIPT

.PHONY: audit

$(AUDIT_STAMP):
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AUDIT_VENV)/bin/python -m pip install --quiet pip-audit
	@touch $@

audit: $(AUDIT_STAMP)
	@$(AUDIT_VENV)/bin/python -c "$$RUNTIME_REQUIREMENTS_SCRIPT" > $(AUDIT_VENV)/runtime-requirements.txt
	$(AUDIT_VENV)/bin/pip-audit --strict --progress-spinner off \
		--requirement $(AUDIT_VENV)/runtime-requirements.txt $(AUDIT_ARGS)
