#!/usr/bin/env bash
# Prepares this machine for `make test` and `make demo`; every step checks first and does
# nothing when its result is already in place, so a second run is quick.
#
#   setup.sh controller   what lint, sanity, unit and build need: Debian packages, the controller
#                         virtualenv, ansible-test's offline pip bootstrap
#   setup.sh hosts        what Molecule, the end-to-end run and the demo add: Debian packages, podman
#                         configuration (only on hosts that need it), the controller's SSH key and
#                         client configuration, the systemd test-host images, the wheelhouse test
#                         hosts install vLLM from, and a check of the whole test ground
#   setup.sh all          both (make setup)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
RHOIM_CACHE=${RHOIM_CACHE:-/var/cache/rhoim-dev}
WHEELHOUSE=${RHOIM_WHEELHOUSE:-$RHOIM_CACHE/wheelhouse}
PYTHON=${PYTHON:-python3}

# Each package and why it is here: README.md, "Development".
CONTROLLER_PACKAGES=(python3 python3-venv ca-certificates git rsync shellcheck iproute2 kmod prometheus libvirt-clients libxml2-utils)
HOST_PACKAGES=(podman uidmap fuse-overlayfs slirp4netns runc crun netavark aardvark-dns iptables
  openssh-client debootstrap docker-registry skopeo curl gnupg qemu-system-x86 qemu-utils
  libvirt-daemon libvirt-daemon-driver-qemu python3-libvirt python3-lxml)

log() { printf '==> %s\n' "$*"; }
need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "tools/setup.sh: '$1' needs root; run make setup as root or do that step by hand (see README)." >&2
    exit 1
  fi
}

install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root "apt-get install ${missing[*]}"
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Podman's defaults fail on hosts whose hard ulimits are low or whose cgroups are hybrid
# (nested VMs such as CI runners). Write a drop-in only where that is the case.
step_podman_config() {
  local conf=/etc/containers/containers.conf.d/50-rhoim-ci.conf want nofile nproc runtime_lines=""
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
  local limits=""
  if [ "$nofile" != unlimited ] && [ "$nofile" -lt 1048576 ]; then
    limits="default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
  fi
  if [ ! -f /sys/fs/cgroup/cgroup.controllers ] || [ "$(cat /proc/1/comm)" != systemd ]; then
    runtime_lines=$'runtime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"'
  fi
  if [ -z "$limits$runtime_lines" ]; then
    return 0
  fi
  want=$(printf '# Written by rhoim.inference tools/setup.sh for this host kind (see README).\n[containers]\n%s\n[engine]\n%s\n' "$limits" "$runtime_lines")
  if [ -f "$conf" ] && [ "$(cat "$conf")" = "$want" ]; then
    return 0
  fi
  need_root "write $conf"
  log "writing $conf"
  mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$want" >"$conf"
}

step_venv() {
  local stamp="$VENV/.rhoim-requirements" want
  want=$(sha256sum "$ROOT/tools/requirements.txt" | cut -d' ' -f1)-$($PYTHON -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  log "creating $VENV from tools/requirements.txt"
  rm -rf "$VENV"
  $PYTHON -m venv "$VENV"
  "$VENV/bin/pip" install -qq --upgrade pip
  "$VENV/bin/pip" install -qq -r "$ROOT/tools/requirements.txt"
  echo "$want" >"$stamp"
}

# ansible-test fetches a get-pip script from the internet to seed its sanity venvs; this
# stand-in uses the interpreter's ensurepip and then pip from the configured index.
step_ansible_test_bootstrap() {
  local ver path
  ver=$("$VENV/bin/python" -c 'from ansible_test._internal.python_requirements import get_venv_packages as g; print(g(type("P",(),{"version":"3.11"})())["pip"])')
  path="$HOME/.ansible/test/cache/get_pip_${ver//./_}.py"
  if cmp -s "$ROOT/tools/get_pip_offline.py" "$path"; then
    return 0
  fi
  log "installing ansible-test's offline pip bootstrap at $path"
  mkdir -p "$(dirname "$path")"
  cp "$ROOT/tools/get_pip_offline.py" "$path"
}

step_controller_packages() {
  install_packages "${CONTROLLER_PACKAGES[@]}"
  # Only promtool and a Prometheus the tests start themselves are wanted: where systemd runs,
  # Debian's package would also serve on every address of the machine.
  if [ -d /run/systemd/system ] && systemctl is-enabled -q prometheus 2>/dev/null; then
    need_root "systemctl disable --now prometheus"
    systemctl disable -q --now prometheus
  fi
}
step_host_packages() { install_packages "${HOST_PACKAGES[@]}"; }

# libvirtd runs QEMU as libvirt-qemu, an account Debian makes in libvirt-daemon-system, which would also bring
# systemd's units (these machines do not run systemd as PID 1): make it as that package does.
step_libvirt_account() {
  getent group libvirt-qemu >/dev/null || { need_root groupadd; groupadd --system libvirt-qemu; }
  id libvirt-qemu >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin --gid libvirt-qemu libvirt-qemu
}

# The controller's SSH key and client configuration (tests/support/local_host.py), once per machine.
step_ssh() {
  "$VENV/bin/python" "$ROOT/tests/support/local_host.py" config >/dev/null
}

step_host_image() {
  "$ROOT/tests/support/host-image/build.sh"
  # Debian 11 (python3 3.9), for the stages' Python floor (the python_floor scenario).
  RHOIM_HOST_SUITE=bullseye "$ROOT/tests/support/host-image/build.sh"
}

# The vLLM test-host image, for make demo and the end-to-end run: the inference image's cpu variant,
# built by rhoim.inference.bootc_image on the stand-in bootc base (nothing to do when its inputs are unchanged).
step_vllm_image() {
  local build_log="$RHOIM_CACHE/vllm-image.log"
  [ -f "$WHEELHOUSE/.rhoim-requirements" ] || { echo "no wheelhouse at $WHEELHOUSE: run make setup" >&2; exit 1; }
  ANSIBLE_COLLECTIONS_PATH="$ROOT/build/collections" RHOIM_WHEELHOUSE="$WHEELHOUSE" ANSIBLE_NOCOLOR=1 \
    "$VENV/bin/ansible-playbook" -i localhost, "$ROOT/tests/support/host-image/vllm-image.yml" >"$build_log" 2>&1 ||
    { tail -n 60 "$build_log" >&2; echo "tools/setup.sh: building the vLLM test-host image failed (log: $build_log)" >&2; exit 1; }
  grep -q 'Build the image with podman' "$build_log" && log "built the vLLM test-host image localhost/rhoim-test-host-vllm:current"
  return 0
}

step_wheelhouse() {
  local req="$ROOT/tests/support/wheelhouse-requirements.txt" stamp="$WHEELHOUSE/.rhoim-requirements"
  if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
    return 0
  fi
  log "filling the wheelhouse $WHEELHOUSE (vLLM CPU build and its dependencies, about 900 MB, once per machine)"
  mkdir -p "$WHEELHOUSE"
  # The CPU torch wheel is not on PyPI: pip finds it through PIP_FIND_LINKS (see README).
  "$VENV/bin/pip" download -qq -d "$WHEELHOUSE" -r "$req"
  cp "$req" "$stamp"
}

# Two hosts on a test network: SSH, names, TCP and the controller (tools/check_hosts.py).
step_check_hosts() {
  "$VENV/bin/python" "$ROOT/tools/check_hosts.py"
}

controller() { step_controller_packages; step_venv; step_ansible_test_bootstrap; }
hosts() {
  step_host_packages; step_libvirt_account; step_podman_config; step_ssh; step_host_image; step_wheelhouse; step_vllm_image
  step_check_hosts
}

STEPS="controller_packages|venv|ansible_test_bootstrap|host_packages|podman_config|ssh|host_image|wheelhouse|vllm_image|check_hosts"
case "${1:-all}" in
  all) controller; hosts ;;
  controller) controller ;;
  hosts) controller; hosts ;;
  controller_packages|venv|ansible_test_bootstrap|host_packages|podman_config|ssh|host_image|wheelhouse|vllm_image|check_hosts)
    "step_$1" ;;
  *) echo "usage: $0 [all|controller|hosts|$STEPS]" >&2; exit 2 ;;
esac
