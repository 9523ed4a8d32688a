#!/usr/bin/env bash
# make demo: the main job on its embedded default, on a local systemd host.
#   demo.sh up      bring the host up and run site.yml against it (a second run changes nothing)
#   demo.sh clean   remove what `up` made
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOST=rhoim-demo
STATE=$ROOT/build/demo

case ${1:-up} in
  up)
    "$ROOT/tests/support/local_host.sh" up "$HOST"
    mkdir -p "$STATE"
    cat >"$STATE/inventory.yml" <<INV
inference:
  hosts:
    $HOST:
      ansible_connection: containers.podman.podman
      ansible_python_interpreter: /usr/bin/python3
INV
    ansible-playbook -i "$STATE/inventory.yml" "$ROOT/site.yml"
    cat <<MSG

Demo host '$HOST' is up: a podman container running systemd, checked by site.yml.
  shell on it:  podman exec -it $HOST bash
  inventory:    $STATE/inventory.yml
Serving a model (vLLM with an API key) comes with the vllm_service role, which extends this demo.
Remove it with: make demo-clean
MSG
    ;;
  clean)
    "$ROOT/tests/support/local_host.sh" down "$HOST"
    rm -rf "$STATE"
    ;;
  *) echo "usage: demo.sh up|clean" >&2; exit 2 ;;
esac
