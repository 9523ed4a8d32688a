"""Boots a disk image with QEMU without KVM (TCG), as a VM host the tests reach over SSH.

    with qemu_vm.VM(disk, kernel, initrd, fmt="qcow2") as vm:
        vm.wait_for_ssh()
        print(vm.ssh("systemctl is-system-running"))

The disk is opened with -snapshot: writes go to a temporary overlay, so an artifact stays as built (its
sha256 still matches its manifest). The kernel and initramfs come from the image (/usr/lib/modules/VERSION),
since the bootc-image-builder stand-in writes no boot loader; root=LABEL=root is the disk's root partition.
SSH is forwarded from a free port on 127.0.0.1; the VM reaches nothing but QEMU's user network.
KVM does not work on this machine kind, so boots take 15 to 30 s.
"""

import os
import socket
import subprocess
import tempfile
import time

CMDLINE = "root=LABEL=root rw console=ttyS0 net.ifnames=0"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VM:
    def __init__(self, disk, kernel, initrd, fmt="qcow2", key=None, memory_mb=1024):
        self.disk, self.kernel, self.initrd, self.fmt = disk, kernel, initrd, fmt
        self.key = key or os.path.join(os.environ.get("RHOIM_CACHE", "/var/cache/rhoim-dev"), "ssh", "id_ed25519")
        self.memory_mb = memory_mb
        self.port = free_port()
        self.work = tempfile.mkdtemp(prefix="rhoim-vm-")
        self.console = os.path.join(self.work, "console.log")
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "2", "-m", str(self.memory_mb),
             "-kernel", self.kernel, "-initrd", self.initrd, "-append", CMDLINE,
             "-drive", "file=%s,format=%s,if=virtio" % (self.disk, self.fmt), "-snapshot",
             "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22" % self.port, "-device", "virtio-net-pci,netdev=n0",
             "-serial", "file:" + self.console, "-display", "none", "-no-reboot"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        subprocess.run(["rm", "-rf", self.work], check=False)

    def ssh_argv(self, user="root"):
        return ["ssh", "-F", "/dev/null", "-i", self.key, "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=5", "%s@127.0.0.1" % user]

    def ssh(self, command, user="root", check=True):
        proc = subprocess.run([*self.ssh_argv(user), command], capture_output=True, text=True, timeout=120, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("%s on the VM: exit %d: %s" % (command, proc.returncode, proc.stderr or proc.stdout))
        return proc.stdout.strip() if check else proc

    def console_tail(self, lines=30):
        try:
            with open(self.console, errors="replace") as stream:
                return "".join(stream.readlines()[-lines:])
        except OSError:
            return ""

    def wait_for_ssh(self, timeout=240):
        """Until SSH answers and systemd has finished starting up (running or degraded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("QEMU exited (%s): %s\n%s"
                                     % (self.proc.returncode, self.proc.stderr.read().decode(), self.console_tail()))
            proc = self.ssh("systemctl is-system-running --wait", check=False)
            if proc.returncode in (0, 1) and proc.stdout.strip() in ("running", "degraded"):
                return proc.stdout.strip()
            time.sleep(3)
        raise AssertionError("the VM did not answer over SSH in %d s; its console:\n%s" % (timeout, self.console_tail()))
