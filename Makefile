# The two README commands are `make demo` and `make test`; everything else is a building block of those.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MGLL := $(VENV)/bin/mgll
PREFECT := $(VENV)/bin/prefect
STAMP := $(VENV)/.mgll-installed
# Every recipe line that talks to the stack first loads the environment `mgll up` exported.
STACK_ENV = eval "$$($(MGLL) status --env)"

.PHONY: help install up down status deploy demo test bench clean

help:
	@echo "make demo    install, start Prefect + MLflow, deploy, run build-dataset/demo and pretrain-mgll/demo"
	@echo "make test    install dev dependencies and run the whole test suite (what .ci/run calls)"
	@echo "make install | up | down | status | deploy | bench | clean"

install: $(STAMP)

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

up: install
	$(MGLL) up

down:
	@if [ -x $(MGLL) ]; then $(MGLL) down; else echo "no $(VENV): nothing to stop"; fi

status: install
	$(MGLL) status --runs

deploy: up
	$(STACK_ENV) && $(PREFECT) --no-prompt deploy --all

demo: deploy
	$(STACK_ENV) && $(PREFECT) deployment run build-dataset/demo --watch
	$(STACK_ENV) && $(PREFECT) deployment run pretrain-mgll/demo --watch
	$(MGLL) status --runs
	@echo "Services stay up for browsing; stop them with: make down"

# pytest exits 5 when it collected nothing: that is a failure here, not a green build.
test: install
	@rc=0; OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest -q || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Every bench/*.py prints what it measured; *_tune.py are tuning helpers, gpu_*.py need CUDA.
bench: install
	@ls bench/*.py >/dev/null 2>&1 || { echo "no benchmarks in bench/" >&2; exit 1; }
	@cuda=$$($(PY) -c "import torch; print(int(torch.cuda.is_available()))"); \
	for script in bench/*.py; do \
	  case $$script in \
	    *_tune.py) echo "== $$script: tuning helper, not a benchmark (skipped)"; continue;; \
	    bench/gpu_*) if [ "$$cuda" != 1 ]; then echo "== $$script: no CUDA device (skipped)"; continue; fi;; \
	  esac; \
	  echo "== $$script"; OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) $$script || exit 1; \
	done

clean: down
	rm -rf .mgll build dist .pytest_cache *.egg-info
