#!/usr/bin/env bash
# make demo: the main job on its embedded default, on a local systemd host.
#   demo.sh up      serve a tiny model made here: a loopback Hub stand-in serves it, site.yml lays
#                   it down with the model role and serves it with vllm_service (a second run
#                   changes nothing)
#   demo.sh clean   remove what `up` made
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOST=rhoim-demo
STATE=$ROOT/build/demo
HUB_PORT=${RHOIM_DEMO_HUB_PORT:-18080}
API_PORT=${RHOIM_DEMO_API_PORT:-18000}
REPO=rhoim-demo/tiny-llama
LOCAL_HOST=$ROOT/tests/support/local_host.py

start_hub() {
  # The model is made here (deterministic, 2.3 MB): nothing is downloaded from a hub.
  local repo_dir=$STATE/hub/$REPO/refs/main
  [ -f "$repo_dir/model.safetensors" ] || python "$ROOT/tests/support/make_tiny_model.py" "$repo_dir" >/dev/null
  rm -f "$STATE/hub.port"
  # It listens on the controller's address on the hosts' network only (host.containers.internal
  # for the hosts), never on every address of the machine.
  setsid python "$ROOT/tests/support/hub_server.py" --root "$STATE/hub" --host "$(python "$LOCAL_HOST" gateway)" --port "$HUB_PORT" \
    --cdn-port $((HUB_PORT + 1)) --cdn-host host.containers.internal --port-file "$STATE/hub.port" \
    >"$STATE/hub.log" 2>&1 &
  echo $! >"$STATE/hub.pid"
  for _ in $(seq 50); do [ -s "$STATE/hub.port" ] && return 0; sleep 0.2; done
  echo "the Hub stand-in did not start; see $STATE/hub.log" >&2
  exit 1
}

stop_hub() {
  if [ -f "$STATE/hub.pid" ]; then kill "$(cat "$STATE/hub.pid")" 2>/dev/null || true; fi
  rm -f "$STATE/hub.pid"
}

case ${1:-up} in
  up)
    mkdir -p "$STATE"
    # A systemd host reached over SSH, its API port published on the controller's loopback only.
    python "$LOCAL_HOST" up "$HOST" --image localhost/rhoim-test-host-vllm -- -p "127.0.0.1:$API_PORT:8000"
    ssh_config=$(python "$LOCAL_HOST" config)
    start_hub
    trap stop_hub EXIT
    cat >"$STATE/inventory.yml" <<INV
inference:
  hosts:
    $HOST:
      ansible_user: root
      ansible_ssh_common_args: $(python "$LOCAL_HOST" ssh-args)
      ansible_ssh_pipelining: true
      ansible_python_interpreter: /usr/bin/python3
  vars:
    model_hub_endpoint: http://host.containers.internal:$HUB_PORT
    model_pip_find_links: /var/cache/rhoim/wheelhouse
    model_pip_extra_args: --no-index
    model_models:
      - name: tiny
        repo_id: $REPO
        revision: main
    # The host is booted from the inference image (tests/support/host-image/vllm-image.yml): vLLM and the
    # unit come from the image; the role writes the settings, the key and the drop-ins in /etc.
    vllm_service_models:
      - name: tiny
        served_model_name: tiny
        dtype: float32
        max_model_len: 256
        cpu_kvcache_space: 1
        # The demo host has no C++ compiler for torch.compile.
        extra:
          enforce-eager: true
INV
    ansible-playbook -i "$STATE/inventory.yml" "$ROOT/site.yml"
    stop_hub
    # The key stays in files readable by root only; curl reads the header from a file, so the key
    # never appears in a process list.
    umask 077
    ssh -F "$ssh_config" "$HOST" cat /etc/rhoim/credentials/tiny.api_key | sed -n '1s/^/Authorization: Bearer /p' >"$STATE/auth-header"
    completion=$(curl -sS --fail --max-time 60 -H @"$STATE/auth-header" -H 'Content-Type: application/json' \
      -d '{"model": "tiny", "prompt": "def hello(", "max_tokens": 16, "temperature": 0}' \
      "http://127.0.0.1:$API_PORT/v1/completions")
    cat <<MSG

The demo host '$HOST' serves the tiny model with vLLM (CPU build), as the unit rhoim-vllm@tiny.service.
  endpoint:   http://127.0.0.1:$API_PORT/v1  (OpenAI-compatible; /health and /metrics need no key)
  API key:    /etc/rhoim/credentials/tiny.api_key on the host (root only); the header is in
              $STATE/auth-header (mode 0600) for curl -H @$STATE/auth-header
  completion: $(printf '%s' "$completion" | python -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["choices"][0]["text"]))')
  try:        curl -H @$STATE/auth-header -H 'Content-Type: application/json' \\
                -d '{"model": "tiny", "prompt": "def hello(", "max_tokens": 16}' http://127.0.0.1:$API_PORT/v1/completions
  shell:      ssh -F $ssh_config $HOST
Remove it with: make demo-clean
MSG
    ;;
  clean)
    stop_hub
    python "$LOCAL_HOST" down "$HOST"
    rm -rf "$STATE"
    ;;
  *) echo "usage: demo.sh up|clean" >&2; exit 2 ;;
esac
