#!/usr/bin/env bash
# Builds the systemd test-host image from Debian with debootstrap (no registry is reachable),
# tagged by a hash of this recipe, so a changed recipe rebuilds it and an unchanged one is
# reused. Prints nothing when the image exists.
#
# What a host carries: systemd as PID 1, Python 3 with venv and pip (the roles' modules and
# the vLLM venv), libnuma1 (vLLM's CPU build needs it), curl, iproute2, sudo, procps, and firewalld
# installed but disabled (netbase gives it /etc/protocols): hosts that run it enable it and need
# CAP_NET_ADMIN; an image build uses firewall-offline-cmd.
# Hosts are reached over SSH as ops reach GPU hosts: openssh-server, key logins only, and no host
# keys in the image: every host makes its own at first boot (many hosts boot from one image). The
# controller's public key is mounted at /root/.ssh/authorized_keys when a host starts
# (tests/support/local_host.sh).
# RHOIM_HOST_SUITE=bullseye builds the same host from Debian 11 (localhost/rhoim-test-host-bullseye),
# whose python3 is 3.9: the host the stages' Python floor is proven on (no firewalld there).
# / is made a shared mount early in boot, as systemd does on a real host (podman leaves it
# private, and units then get an empty $CREDENTIALS_DIRECTORY from LoadCredential=), so a
# restarted host serves again with no help from outside.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SUITE=${RHOIM_HOST_SUITE:-bookworm}
if [ "$SUITE" = bookworm ]; then
  IMAGE=${RHOIM_HOST_IMAGE:-localhost/rhoim-test-host}
else
  IMAGE=localhost/rhoim-test-host-$SUITE
fi
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,python3-pip,libnuma1,sudo,iproute2,curl,ca-certificates,procps,less,netbase,openssh-server
RECIPE_HASH=$( (cat "$HERE/build.sh"; echo "$SUITE") | sha256sum | cut -c1-12)

if podman image exists "$IMAGE:$RECIPE_HASH"; then
  podman tag "$IMAGE:$RECIPE_HASH" "$IMAGE:current"
  exit 0
fi

# The mirror apt already uses on this machine.
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
[ -n "$mirror" ] || mirror=$(awk '/^deb / && !/security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d /var/tmp/rhoim-host-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "==> building $IMAGE:$RECIPE_HASH with debootstrap from $mirror (about 2 minutes, once per recipe)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

rootfs=$work/rootfs
: >"$rootfs/etc/machine-id"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*
# Units that need hardware or a console a container does not have.
for unit in getty.target console-getty.service systemd-udevd.service systemd-udevd-control.socket \
  systemd-udevd-kernel.socket systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
  sys-kernel-tracing.mount systemd-remount-fs.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done

# No host keys in the image: each host generates its own before sshd first starts.
rm -f "$rootfs"/etc/ssh/ssh_host_*
cat >"$rootfs/etc/systemd/system/rhoim-ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate this host's SSH host keys (an image carries none)
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
RequiredBy=ssh.service
UNIT
cat >"$rootfs/etc/ssh/sshd_config.d/rhoim-test-host.conf" <<'CONF'
# Test hosts: key logins only (the controller's key is mounted when a host starts).
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
CONF
install -d -m 0700 "$rootfs/root/.ssh"

# Before any unit that loads credentials; skipped where the container may not change mounts.
cat >"$rootfs/etc/systemd/system/rhoim-shared-root.service" <<'UNIT'
[Unit]
Description=Make / a shared mount, as systemd does when it boots a real host
DefaultDependencies=no
Before=sysinit.target local-fs.target
ConditionCapability=CAP_SYS_ADMIN

[Service]
Type=oneshot
ExecStart=/bin/mount --make-rshared /
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
UNIT
for unit in rhoim-ssh-host-keys.service rhoim-shared-root.service; do
  chroot "$rootfs" systemctl enable -q "$unit"
done

if [ "$SUITE" != bookworm ]; then
  tar -C "$rootfs" -c . | podman import -q --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL=SIGRTMIN+3' \
    --change "LABEL org.rhoim.recipe=$RECIPE_HASH" - "$IMAGE:$RECIPE_HASH" >/dev/null
else
  tar -C "$rootfs" -c . | podman import -q - "$IMAGE:$RECIPE_HASH-rootfs" >/dev/null
  # firewalld's polkitd does not configure inside debootstrap's chroot: install it with apt in a
  # container. It stays off unless a host enables it (it cannot start without CAP_NET_ADMIN).
  work_ctr=rhoim-host-image-build-$$
  trap 'rm -rf "$work"; podman rm -f "$work_ctr" >/dev/null 2>&1 || true; podman rmi "$IMAGE:$RECIPE_HASH-rootfs" >/dev/null 2>&1 || true' EXIT
  podman run --name "$work_ctr" "$IMAGE:$RECIPE_HASH-rootfs" /bin/sh -euc '
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends firewalld >/dev/null
    systemctl disable -q firewalld
    apt-get clean
    rm -rf /var/lib/apt/lists/*
  ' >"$work/firewalld.log" 2>&1 || { tail -n 30 "$work/firewalld.log" >&2; exit 1; }
  podman commit -q --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL=SIGRTMIN+3' \
    --change "LABEL org.rhoim.recipe=$RECIPE_HASH" "$work_ctr" "$IMAGE:$RECIPE_HASH" >/dev/null
fi
podman tag "$IMAGE:$RECIPE_HASH" "$IMAGE:current"
# Images of older recipes are not used again.
podman images --format '{{.Repository}}:{{.Tag}}' "$IMAGE" | grep -vxF -e "$IMAGE:$RECIPE_HASH" -e "$IMAGE:current" |
  xargs -r podman rmi >/dev/null 2>&1 || true
echo "==> built $IMAGE:$RECIPE_HASH"
