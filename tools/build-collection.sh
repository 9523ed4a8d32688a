#!/usr/bin/env bash
# Builds the collection tarball and proves it installs into a fresh collections path.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
out=$ROOT/build/dist
rm -rf "$out" "$ROOT/build/install-check"
ansible-galaxy collection build --force --output-path "$out" "$ROOT"
tarball=$(ls "$out"/rhoim-inference-*.tar.gz)
# Dependencies come with the `ansible` package (no Galaxy here), hence --no-deps.
ansible-galaxy collection install --no-deps -p "$ROOT/build/install-check" "$tarball"
ANSIBLE_COLLECTIONS_PATH=$ROOT/build/install-check ansible-galaxy collection list rhoim.inference \
  -p "$ROOT/build/install-check" | grep -q '^rhoim.inference '
echo "built and installed $(basename "$tarball")"
