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

SCENARIOS ?= hosts model model_faults vllm_service_image vllm_service
TEST_STAGES := setup lint sanity unit build molecule e2e

.PHONY: help setup lint sanity unit build molecule e2e test demo demo-clean clean

help:
	@echo "make demo        serve the main job on a local systemd host"
	@echo "make test        $(TEST_STAGES) (stops at the first failure)"
	@echo "make setup       install what the other targets need (idempotent)"
	@echo "make molecule SCENARIOS='hosts'   run chosen Molecule scenarios"
	@echo "make demo-clean  remove what make demo made"

setup:
	@tools/setup.sh
	@tools/link-collection.sh

lint: setup
	yamllint -s .
	ruff check .
	shellcheck tools/*.sh tests/support/*.sh tests/support/host-image/*.sh roles/vllm_service/files/rhoim-vllm-serve
	ansible-lint
	antsibull-changelog lint

sanity: setup
	tools/sanity.sh

unit: setup
	pytest -q -p no:cacheprovider tests/unit

build: setup
	tools/build-collection.sh

molecule: setup
	for s in $(SCENARIOS); do molecule test -s "$$s"; done

e2e: setup
	pytest -q -p no:cacheprovider tests/integration/e2e

test:
	@tools/run-stages.sh $(TEST_STAGES)

demo: setup
	tools/demo.sh up

demo-clean:
	tools/demo.sh clean

clean: demo-clean
	rm -rf build tests/output
