#!/usr/bin/env bash
# Makes the checkout resolvable as rhoim.inference: Ansible, Molecule and pytest find it
# through build/collections/ansible_collections/rhoim/inference (a link to the checkout).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
link=$ROOT/build/collections/ansible_collections/rhoim/inference
mkdir -p "$(dirname "$link")"
[ "$(readlink "$link" 2>/dev/null)" = "$ROOT" ] || ln -sfn "$ROOT" "$link"
