#!/usr/bin/env bash
# Runs at the probe VM's boot (tools/hardening/vm-probe.sh): starts rhoim-vllm@tiny.service with
# ExecStart replaced by a /proc reader, as shipped and with ProtectProc=invisible, prints each
# outcome on the serial console and powers off.
exec >/dev/ttyS0 2>&1
U=rhoim-vllm@tiny.service
D=/etc/systemd/system/$U.d
echo "PROBE $(systemctl --version | head -1), virtualization: $(systemd-detect-virt), kernel $(uname -r)"
try() {
  local label=$1
  shift
  {
    printf '%s\n' "[Service]" "Type=oneshot" "Restart=no" "ExecStart="
    # The unit's shell runs these command substitutions.
    cat <<'UNIT'
ExecStart=/bin/sh -c "echo uid=$(id -u) processes_seen=$(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)"
UNIT
    printf '%s\n' "$@"
  } >"$D/99-try.conf"
  systemctl daemon-reload
  systemctl start "$U"
  echo "PROBE $label: start rc=$? result=$(systemctl show -P Result "$U") status=$(systemctl show -P ExecMainStatus "$U")"
  journalctl -u "$U" -o cat --no-pager -n 3 | sed 's/^/PROBE   | /'
  echo "PROBE $label: $(systemd-analyze security "$U" 2>/dev/null | tail -1)"
}
try "as rendered"
try "ProtectProc=invisible" "ProtectProc=invisible"
echo "PROBE processes on the host: $(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)"
systemctl poweroff
