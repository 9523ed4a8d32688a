#!/usr/bin/env bash
# A local stand-in for a GPU host: a podman container from the test-host image running
# systemd as PID 1, reachable over Ansible's podman connection.
# Models: a booted systemd host with Python, package-mode (not bootc); CAP_SYS_ADMIN lets systemd
# give units their own mount namespaces (ProtectSystem=, PrivateTmp=) as on a real host, CAP_NET_ADMIN
# lets firewalld (enabled in the vLLM host image) filter the host's own network. Does not model: a
# kernel, GPUs, bootc/ostree, SELinux.
#   local_host.sh up NAME [PODMAN-RUN-ARGS...]   start (or reuse) and wait for systemd
#   local_host.sh down NAME                      remove it
set -euo pipefail
IMAGE=${RHOIM_HOST_IMAGE:-localhost/rhoim-test-host}:current
NETWORK=${RHOIM_HOST_NETWORK:-rhoim}
WHEELHOUSE=${RHOIM_WHEELHOUSE:-/var/cache/rhoim-dev/wheelhouse}

cmd=${1:?usage: local_host.sh up|down NAME}
name=${2:?usage: local_host.sh up|down NAME}
shift 2

case $cmd in
  up)
    podman network exists "$NETWORK" || podman network create "$NETWORK" >/dev/null
    if [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
      podman rm -f "$name" >/dev/null 2>&1 || true
      mounts=()
      [ -d "$WHEELHOUSE" ] && mounts=(-v "$WHEELHOUSE:/var/cache/rhoim/wheelhouse:ro")
      podman run -d --name "$name" --hostname "$name" --network "$NETWORK" --systemd=always \
        --shm-size=1g --cap-add=SYS_ADMIN --cap-add=NET_ADMIN --label org.rhoim.local-host=1 "${mounts[@]}" "$@" "$IMAGE" /sbin/init >/dev/null
    fi
    # Until systemd's bus is up, systemctl cannot even ask; then --wait blocks until boot ends.
    state=
    for _ in $(seq 60); do
      state=$(podman exec "$name" timeout 60 systemctl is-system-running --wait 2>/dev/null) && break
      case $state in degraded|maintenance|stopping) break ;; esac
      sleep 1
    done
    if [ "$state" != running ]; then
      echo "local host $name did not boot: systemd says '$state'" >&2
      podman exec "$name" systemctl --failed --no-legend >&2 || true
      exit 1
    fi
    # podman leaves / a private mount; systemd on a real host makes it shared, and units need
    # that for LoadCredential= (an empty $CREDENTIALS_DIRECTORY otherwise).
    podman exec "$name" mount --make-rshared /
    ;;
  down)
    podman rm -f -t 5 "$name" >/dev/null 2>&1 || true
    ;;
  *) echo "usage: local_host.sh up|down NAME" >&2; exit 2 ;;
esac
