#!/usr/bin/env bash
# Measures the hardening settings the vllm_service README says must stay off: adds each one alone
# (as a drop-in) to a running rhoim-vllm@<name>.service, restarts it, and prints whether the server
# answered /health and a completion, the systemd-analyze score, and the journal when it did not.
# Run it as root on a host that serves a model, for example the demo host:
#   make demo
#   podman cp tools/hardening/try-settings.sh rhoim-demo:/root/ && podman exec rhoim-demo bash /root/try-settings.sh tiny 8000
# The unit is restored (drop-in removed, restarted) at the end.
set -uo pipefail
NAME=${1:-tiny}
PORT=${2:-8000}
U=rhoim-vllm@$NAME.service
D=/etc/systemd/system/$U.d
KEY=$(cat "/etc/rhoim/credentials/$NAME.api_key")

try() {
  local label=$1 i since ok=no completion=""
  shift
  printf '%s\n' "[Service]" "$@" >"$D/99-try.conf"
  systemctl daemon-reload
  systemctl reset-failed "$U" 2>/dev/null
  since=$(date '+%F %T')
  systemctl restart "$U"
  for i in $(seq 150); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/health"; then ok=health; break; fi
    systemctl is-failed -q "$U" && break
    sleep 1
  done
  if [ $ok = health ]; then
    # The key goes through a header file on stdin, never argv.
    completion=$(printf 'Authorization: Bearer %s\n' "$KEY" | curl -s -H @- -H 'Content-Type: application/json' \
      -d "{\"model\":\"$NAME\",\"prompt\":\"def hello(\",\"max_tokens\":8,\"temperature\":0}" \
      "http://127.0.0.1:$PORT/v1/completions" | head -c 120)
    sleep 3
  fi
  echo "=== $label: $(systemctl is-active "$U"), /health: $ok after ${i} s; $(systemd-analyze security "$U" 2>/dev/null | tail -1)"
  echo "    completion: $completion"
  # What went wrong, and oneDNN's fallback warning, which a working server still logs.
  journalctl -u "$U" --since "$since" --no-pager -o cat |
    grep -E -i 'error|not permitted|fallback|failed|217/USER|6/ABRT' | grep -v -i 'errors-' | tail -n 6 | sed 's/^/    | /'
}

try "as shipped"
try "MemoryDenyWriteExecute=yes" "MemoryDenyWriteExecute=yes"
try "SystemCallFilter=~@resources" "SystemCallFilter=~@resources"
try "no AF_NETLINK" "RestrictAddressFamilies=" "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"
try "ProcSubset=pid" "ProcSubset=pid"
try "ProtectProc=invisible" "ProtectProc=invisible"
try "ProtectProc=invisible without PrivateUsers=" "ProtectProc=invisible" "PrivateUsers=no"

rm -f "$D/99-try.conf"
systemctl daemon-reload
systemctl restart "$U"
