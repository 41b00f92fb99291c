# jetson-llm-fleet developer entry points. Run `make help`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
JETSIM    := $(PY) tests/jetsim/jetsim
HOSTS     ?= 3
INVENTORY ?= inventory/hosts.yml
PYTEST_ARGS ?=
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv system-deps lint docs test test-pending test-fast demo jetsim-up jetsim-down jetsim-status verify benchmark bench-converge status clean

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed ## Create .venv with the pinned Python dependencies

system-deps: ## Install Docker engine, debootstrap, iptables, ssh client, docker-registry, htpasswd, promtool (Debian/Ubuntu, root) if missing
	@missing=""; for tool in dockerd:docker.io debootstrap:debootstrap iptables:iptables ssh:openssh-client docker-registry:docker-registry htpasswd:apache2-utils promtool:prometheus; do \
	  command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

lint: venv ## yamllint --strict, ansible-lint (production), syntax-check, ruff, mypy, ansible-test sanity, promtool
	$(PY) -m pytest -q tests/unit/test_lint.py tests/unit/test_monitoring_rules.py $(PYTEST_ARGS)

docs: venv ## Rewrite the variable tables of README.md and roles/*/README.md from meta/argument_specs.yml
	$(PY) tests/tools/role_docs.py

test-fast: venv ## Fast tier: unit, lint, templates, parsers (seconds, no fleet)
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

test: venv system-deps ## All tests: fast tier, then end-to-end on a 3-host jetsim fleet
	$(PY) -m pytest -m "not pending" tests/unit tests/integration $(PYTEST_ARGS)

test-pending: venv system-deps ## End-to-end tests that failed or never ran on jetsim (marker pending; not in test)
	$(PY) -m pytest -m pending tests/integration $(PYTEST_ARGS)

test-cuda: venv system-deps ## CUDA build tier, no GPU: the role's CUDA build for sm_87 checked (long cold; not in test)
	$(PY) -m pytest -v -s -p no:cacheprovider tests/cuda $(PYTEST_ARGS)

jetsim-up: venv system-deps ## Start an emulated fleet of HOSTS hosts (default 3) and print its inventory
	$(JETSIM) up --hosts $(HOSTS)

jetsim-down: venv ## Remove the emulated fleet and stop the dockerd jetsim started
	$(JETSIM) down

jetsim-status: venv ## Show the emulated fleet
	$(JETSIM) status

demo: venv system-deps ## Start a 3-host jetsim fleet and run site.yml against it
	@inventory=$$($(JETSIM) up --hosts $(HOSTS)) && \
	  echo "inventory: $$inventory" && \
	  ansible-playbook -i "$$inventory" site.yml && \
	  echo && $(JETSIM) status && \
	  echo "Next: make verify INVENTORY=$$inventory   |   make jetsim-down"

verify: venv ## testinfra checks against INVENTORY (default inventory/hosts.yml)
	$(PY) -m pytest tests/verify --hosts=ansible://jetsons --ansible-inventory=$(INVENTORY) --force-ansible $(PYTEST_ARGS)

benchmark: venv ## Benchmark the fleet of INVENTORY: reports/<UTC time>/<host>.json, fleet.md, fleet.html
	ansible-playbook -i $(INVENTORY) playbooks/benchmark.yml

BENCH_HOSTS ?= 1 3
bench-converge: venv system-deps ## Converge benchmark on jetsim (BENCH_HOSTS="1 3 6"): table, reports/bench-converge/
	$(PY) bench/converge.py --hosts $(BENCH_HOSTS) $(BENCH_ARGS)

status: venv ## The fleet of INVENTORY at a glance (jetson-fleet status)
	$(PY) -m jetson_fleet -i $(INVENTORY) status

clean: ## Remove the venv and caches in the work tree (not the jetsim cache in ~/.cache)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
