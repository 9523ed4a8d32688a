# rhoim.inference: one entry point for users, developers and CI.
#   make demo   serve the main job on a local systemd host
#   make test   set up what is missing, then lint, sanity, unit, build, Molecule and end to end
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
VENV ?= $(ROOT)/.venv
export PATH := $(VENV)/bin:$(PATH)
# Ansible resolves rhoim.inference from the checkout through build/collections.
export ANSIBLE_COLLECTIONS_PATH := $(ROOT)/build/collections
export MOLECULE_GLOB := molecule/*/molecule.yml
export PYTHONDONTWRITEBYTECODE := 1

SCENARIOS ?= hosts python_floor model model_faults vllm_service_image bootc_image upgrade disk_image vllm_service_upgrade vllm_service
TEST_STAGES := setup lint sanity unit build molecule e2e

.PHONY: help setup setup-controller setup-hosts lint sanity unit build molecule e2e test demo demo-clean clean

help:
	@echo "make demo        serve the main job on a local systemd host"
	@echo "make test        $(TEST_STAGES) (stops at the first failure, keeps to a time budget)"
	@echo "make setup       install what the other targets need (idempotent)"
	@echo "make molecule SCENARIOS='hosts'   run chosen Molecule scenarios"
	@echo "make demo-clean  remove what make demo made"

# lint, sanity, unit and build need the controller only; Molecule, e2e and the demo need hosts too.
setup: setup-hosts

setup-controller:
	@tools/setup.sh controller
	@tools/link-collection.sh

setup-hosts: setup-controller
	@tools/setup.sh hosts

lint: setup-controller
	yamllint -s .
	ruff check .
	shellcheck tools/*.sh tools/hardening/*.sh tests/support/host-image/*.sh roles/vllm_service/files/rhoim-vllm-serve roles/vllm_service/files/rhoim-vllm-keygen \
	  images/inference/build/ansible-step images/inference/build/check-kernel-modules images/inference/build/install-accelerator images/inference/build/selinux-contexts images/inference/usr/lib/greenboot/check/required.d/*.sh
	ansible-lint
	antsibull-changelog lint
	promtool check config --syntax-only docs/monitoring/prometheus-scrape.yml
	promtool check rules docs/monitoring/rhoim-vllm-alerts.yml

sanity: setup-controller
	tools/sanity.sh

unit: setup-controller
	pytest -q -p no:cacheprovider tests/unit

build: setup-controller
	tools/build-collection.sh

molecule: setup-hosts
	tools/run-scenarios.sh $(SCENARIOS)

e2e: setup-hosts
	pytest -q -p no:cacheprovider --durations=5 -s tests/integration/e2e

# The stages run one by one (python3 is Debian's or the venv's: setup makes the venv).
test:
	@python3 tools/run_stages.py $(TEST_STAGES)

demo: setup-hosts
	tools/demo.sh up

demo-clean:
	tools/demo.sh clean

clean: demo-clean
	rm -rf build tests/output
