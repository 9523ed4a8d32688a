#!/usr/bin/env bash
# ansible-test only runs from a real path ending in ansible_collections/NAMESPACE/NAME (a
# link is refused), so sanity runs in a copy of the checkout, .git included, under build/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
copy=$ROOT/build/sanity/ansible_collections/rhoim/inference
mkdir -p "$copy"
rsync -a --delete --exclude=/.venv --exclude=/build --exclude=/tests/output "$ROOT/" "$copy/"
cd "$copy"
python=$("$ROOT/.venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ansible-test sanity --venv --python "$python" --requirements --color no "$@"
