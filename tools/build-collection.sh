#!/usr/bin/env bash
# Builds the collection tarball and proves it installs into a fresh collections path.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
out=$ROOT/build/dist
rm -rf "$out" "$ROOT/build/install-check"
ansible-galaxy collection build --force --output-path "$out" "$ROOT"
tarball=$(ls "$out"/rhoim-inference-*.tar.gz)
# Dependencies come with the `ansible` package (no Galaxy here), hence --no-deps.
# The checkout itself is on ANSIBLE_COLLECTIONS_PATH; hide it so the tarball is what installs.
export ANSIBLE_COLLECTIONS_PATH=$ROOT/build/install-check
ansible-galaxy collection install --no-deps -p "$ANSIBLE_COLLECTIONS_PATH" "$tarball"
installed=$ANSIBLE_COLLECTIONS_PATH/ansible_collections/rhoim/inference
if [ ! -f "$installed/MANIFEST.json" ] || [ -L "$installed" ]; then
  echo "the tarball did not install into $installed" >&2
  exit 1
fi
# bootc_image builds with the installed collection as its context.
for f in images/inference/Containerfile .containerignore roles/vllm_service/defaults/main/install.yml; do
  [ -f "$installed/$f" ] || { echo "the installed collection lacks $f" >&2; exit 1; }
done
ansible-doc rhoim.inference.hf_model >/dev/null
echo "built and installed $(basename "$tarball")"
