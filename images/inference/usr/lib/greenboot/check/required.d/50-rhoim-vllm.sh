#!/bin/sh
# greenboot required check of the inference image: every vLLM model this host is set up to serve
# (its settings, API key and model folder are in place) must be active and answer /health within
# RHOIM_GREENBOOT_WAIT seconds (default 600: a CPU start takes minutes). A model that is not set up
# yet (a first boot, before the model and serve stages ran) is not checked, so a fresh host passes.
# Exit 0: healthy or nothing to check; 1: a model that should serve does not (greenboot then counts
# a failed boot and, past its limit, rolls the host back).
set -u
config_dir=${RHOIM_VLLM_CONFIG_DIR:-/etc/rhoim/vllm}
credentials_dir=${RHOIM_VLLM_CREDENTIALS_DIR:-/etc/rhoim/credentials}
wait_seconds=${RHOIM_GREENBOOT_WAIT:-600}

# The value of a top-level "key: value" line of a vLLM config, without quotes.
setting() {
    sed -n "s/^$1:[[:space:]]*//p" "$2" | head -n 1 | sed "s/^[\"']//; s/[\"'][[:space:]]*\$//"
}

healthy() {
    systemctl is-active -q "rhoim-vllm@$1.service" || return 1
    curl -ksf -o /dev/null --max-time 5 "$2"
}

status=0
for config in "$config_dir"/*.yaml; do
    [ -e "$config" ] || break
    name=$(basename "$config" .yaml)
    model=$(setting model "$config")
    port=$(setting port "$config")
    if [ ! -f "$config_dir/$name.env" ] || [ ! -f "$credentials_dir/$name.api_key" ] || [ ! -f "$model/config.json" ]; then
        echo "rhoim-vllm: $name is not set up yet (settings, API key or model missing): not checked"
        continue
    fi
    scheme=http
    [ -n "$(setting ssl-certfile "$config")" ] && scheme=https
    address=$(setting host "$config")
    case "$address" in ''|0.0.0.0|::) address=127.0.0.1 ;; *:*) address="[$address]" ;; esac
    url="$scheme://$address:${port:-8000}/health"
    deadline=$(( $(date +%s) + wait_seconds ))
    until healthy "$name" "$url"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "rhoim-vllm: $name is not healthy after ${wait_seconds} s ($(systemctl is-active "rhoim-vllm@$name.service"))" >&2
            status=1
            continue 2
        fi
        sleep 5
    done
    echo "rhoim-vllm: $name is healthy ($url)"
done
exit "$status"
