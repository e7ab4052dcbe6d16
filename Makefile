# gpuops.fleet — entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= $(CURDIR)/.venv
LAB_SUITE ?= bookworm
export VENV LAB_SUITE
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export LAB_IMAGE ?= gpuops-lab:$(LAB_SUITE)
# Molecule scenarios to run (default: all of them).
# How many scenarios run at once (each in its own container); their logs go to .cache/molecule-logs/.
MOLECULE_JOBS ?= 2
export MOLECULE_JOBS
SCENARIOS ?= $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))

.PHONY: help setup docker image lint unit molecule test build bench ee docs gameday gameday-run clean constraints lab lab-down lab-test rules-test

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: ## Create/refresh the virtualenv with the pinned requirements (seconds when nothing changed)
	@scripts/setup-venv.sh
	@scripts/lab-ssh-key.sh

docker: ## Make sure a Docker engine answers (installs and starts docker.io as root on Debian)
	@scripts/ensure-docker.sh

image: docker ## Build the lab host image (LAB_SUITE=bookworm|trixie), cached by recipe hash
	@scripts/build-image.sh >/dev/null

lint: setup ## yamllint, ansible-lint (production profile), ruff, mypy, argument_specs and role README checks
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	ruff format --check .
	mypy
	python scripts/check_argument_specs.py
	python scripts/role_docs.py --check
	python scripts/gen_prometheusrule.py --check

# Unit test workers (pytest-xdist): one per core by default; UNIT_JOBS=0 runs them in this process.
UNIT_JOBS ?= auto

unit: setup ## Unit tests (no Docker needed; UNIT_JOBS=N workers, default one per core)
	pytest -n $(UNIT_JOBS) tests/unit

molecule: setup image ## Every Molecule scenario (SCENARIOS="a b" for a subset, MOLECULE_JOBS=N at once)
	@scripts/molecule-run.sh $(SCENARIOS)

rules-test: setup ## promtool check + unit tests of the alert rules (promtool unpacked into .cache/tools, not installed)
	@scripts/ensure-promtool.sh
	.cache/tools/promtool check rules roles/monitoring/files/rules/*.yml
	.cache/tools/promtool test rules tests/rules/*.yml

test: lint unit rules-test molecule ## Everything CI runs: lint, unit tests, every Molecule scenario
	@echo "make test: all checks passed"

build: setup ## Build the collection tarball into build/
	ansible-galaxy collection build --force --output-path build .

bench: setup ## Benchmarks (bench/, issue #10) into reports/bench/<name>.json, then one table (BENCH="injection" for some)
	@python bench/run.py $(BENCH)

ee: setup ## Execution environment build context for AWX / AAP in build/ee (execution-environment.yml, docs/awx.md)
	@scripts/build-ee.sh

docs: setup ## Regenerate the variables section of every role README from meta/argument_specs.yml
	python scripts/role_docs.py

constraints: setup ## Re-pin every transitive package from the current virtualenv
	@{ echo '# Every package of the development virtualenv, exact versions (regenerate: make constraints).'; \
	   pip freeze --exclude-editable; } > constraints.txt

LAB_INVENTORY ?= inventories/lab
LAB_LOGS := .cache/lab/logs
# Extra ansible-playbook arguments for `make lab`, e.g. LAB_ANSIBLE_ARGS="--tags hardening" or "-v".
LAB_ANSIBLE_ARGS ?=

lab: setup image ## Bring up the lab fleet (playbooks/lab_up.yml) and converge it with playbooks/site.yml over SSH
	@mkdir -p $(LAB_LOGS)
	ansible-playbook -i $(LAB_INVENTORY) playbooks/lab_up.yml $(LAB_ANSIBLE_ARGS) | tee $(LAB_LOGS)/lab_up.log
	ansible-playbook -i $(LAB_INVENTORY) playbooks/site.yml $(LAB_ANSIBLE_ARGS) | tee $(LAB_LOGS)/site.log
	@echo; echo "=== make lab: recap"
	@for p in lab_up site; do echo "--- $$p.yml"; sed -n '/^PLAY RECAP/,/^$$/{/^PLAY RECAP/d;/^$$/d;p}' $(LAB_LOGS)/$$p.log; done
	@docker ps --filter label=gpuops.lab=true --format 'table {{.Names}}\t{{.Status}}\t{{.Ports}}'
	@echo "Log in: ssh -i .cache/lab/ssh/id_ed25519 -p <port> operator@127.0.0.1   (ports: $(LAB_INVENTORY)/hosts.yml)"

gameday: lab ## The main job: setup, lab image, lab up + site.yml, then the game day (experiments/lab) into reports/<run>/
	@LAB_INVENTORY=$(LAB_INVENTORY) scripts/gameday.sh

gameday-run: setup ## Only the game day, against the lab as it is (GAMEDAY_ONLY="01,11" for a subset)
	@LAB_INVENTORY=$(LAB_INVENTORY) scripts/gameday.sh

lab-down: setup ## Remove the lab: its containers, their volumes, the lab network (keeps the image and the lab key)
	ansible-playbook -i $(LAB_INVENTORY) playbooks/lab_down.yml

lab-test: setup ## Integration tests against the running lab, in phases of parallel lanes (skipped when the lab is down)
	@scripts/lab-test.sh

clean: ## Remove build output and Molecule instances (keeps the virtualenv and the lab image)
	-for s in $(SCENARIOS); do molecule destroy -s $$s >/dev/null 2>&1; done
	rm -rf build .pytest_cache .ruff_cache .mypy_cache
