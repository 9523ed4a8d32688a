#!/usr/bin/env bash
# Starts the collection's unit, as rendered on the demo host, on a host of its own: a Debian 12 VM
# (systemd 252, its own kernel) booted with QEMU (TCG: KVM does not work on the CI machines), and
# prints on the console whether it starts with ProtectProc=invisible beside PrivateUsers=, which a
# container host refuses (status 217/USER). ExecStart is replaced by a /proc reader: the VM proves
# the sandbox, not vLLM under it. Needs `make demo` first and qemu-system-x86 (not part of make setup:
# apt-get install --no-install-recommends qemu-system-x86). Takes about 2 minutes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
HOST=${RHOIM_DEMO_HOST:-rhoim-demo}
work=$(mktemp -d /var/tmp/rhoim-vm-probe.XXXXXX)
trap 'rm -rf "$work"; podman rmi localhost/rhoim-vm-probe >/dev/null 2>&1 || true' EXIT
cd "$work"

podman exec "$HOST" cat /etc/systemd/system/rhoim-vllm@.service >unit.service
podman exec "$HOST" cat /etc/systemd/system/rhoim-vllm@tiny.service.d/10-rhoim.conf >10-rhoim.conf
podman exec "$HOST" cat /etc/sysusers.d/rhoim.conf >sysusers.conf
model=$(sed -n 's/^ReadOnlyPaths=-//p' 10-rhoim.conf)
cp "$HERE/vm-probe-boot.sh" probe.sh
cat >Containerfile <<EOF2
FROM localhost/rhoim-test-host:current
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-image-cloud-amd64 udev >/dev/null && apt-get clean
COPY unit.service /etc/systemd/system/rhoim-vllm@.service
COPY 10-rhoim.conf /etc/systemd/system/rhoim-vllm@tiny.service.d/10-rhoim.conf
COPY sysusers.conf /etc/sysusers.d/rhoim.conf
COPY probe.sh /usr/local/bin/probe.sh
# What the unit's conditions and paths ask for; the "key" is a placeholder.
RUN chmod 755 /usr/local/bin/probe.sh && mkdir -p /etc/rhoim/vllm /etc/rhoim/credentials $model \
 && echo '{}' >$model/config.json && touch /etc/rhoim/vllm/tiny.yaml /etc/rhoim/vllm/tiny.env \
 && echo placeholder >/etc/rhoim/credentials/tiny.api_key && chmod 600 /etc/rhoim/credentials/tiny.api_key \
 && printf '[Unit]\nAfter=multi-user.target\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/probe.sh\n[Install]\nWantedBy=multi-user.target\n' >/etc/systemd/system/rhoim-probe.service \
 && systemctl enable rhoim-probe.service && : >/etc/machine-id
EOF2
podman build -q -t localhost/rhoim-vm-probe . >/dev/null
ctr=$(podman create localhost/rhoim-vm-probe)
mkdir rootfs
podman export "$ctr" | tar -C rootfs -xpf - --numeric-owner
podman rm "$ctr" >/dev/null
cp rootfs/boot/vmlinuz-* vmlinuz
cp rootfs/boot/initrd.img-* initrd.img
mkfs.ext4 -q -d rootfs disk.ext4 3G
rm -rf rootfs
timeout 600 qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 2 -m 1536 -kernel vmlinuz -initrd initrd.img \
  -append 'root=/dev/vda rw console=ttyS0 net.ifnames=0' -drive file=disk.ext4,format=raw,if=virtio \
  -serial file:console.log -display none -no-reboot -nic none
grep '^PROBE' console.log
