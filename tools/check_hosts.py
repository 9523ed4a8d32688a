"""The last step of make setup: proves, in a few seconds, what the test suite relies on.

Two test hosts on a network of their own (one booting systemd, one with sshd as PID 1):
podman starts them on its network (netavark, which calls iptables), the controller logs in over
SSH with its key, a host resolves the other by name (aardvark-dns) and reaches it over TCP, and
reaches a server on the controller's address on that network. Each failure names the missing
piece and what to do. The hosts are removed afterwards, whatever happened.

A pass is remembered for the same image, podman, packages and configuration, so the next setup
skips it: `check_hosts.py --force` runs it anyway.
"""

import hashlib
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "support"))

import local_host  # test support, not a package

NETWORK = "rhoim-check"
HOST_A, HOST_B = "rhoim-check-a", "rhoim-check-b"
PACKAGES = ("podman", "netavark", "aardvark-dns", "iptables", "runc", "openssh-client")
STAMP = os.path.join(local_host.CACHE, "check-hosts.ok")


class Missing(Exception):
    pass


def run(argv, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False, **kw)


def fingerprint(image):
    """What a pass depends on: the image, the packages' versions and podman's configuration."""
    parts = [run(["podman", "image", "inspect", "-f", "{{.Id}}", image]).stdout,
             run(["dpkg-query", "-W", *PACKAGES]).stdout]
    conf_dir = "/etc/containers/containers.conf.d"
    if os.path.isdir(conf_dir):
        for name in sorted(os.listdir(conf_dir)):
            with open(os.path.join(conf_dir, name), "rb") as f:
                parts.append(name + hashlib.sha256(f.read()).hexdigest())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def diagnose_start(exc):
    text = str(exc)
    if "netavark" in text and "No such file or directory" in text:
        return "podman cannot set up its network: netavark calls iptables, which is missing (apt-get install iptables)"
    if "aardvark" in text:
        return "podman's name server for test networks does not run: apt-get install aardvark-dns (%s)" % text
    if "setrlimit" in text:
        return ("podman's default ulimits exceed this machine's hard limits: write the drop-in that "
                "tools/setup.sh podman_config writes (%s)" % text)
    if "cgroup" in text:
        return "the container runtime refuses this machine's cgroups: use runc and cgroupfs (tools/setup.sh podman_config) (%s)" % text
    return "a test host did not start: %s" % text


def on(host, script):
    return run(local_host.ssh_argv(host, script))


def check(image):
    for tool, package in (("podman", "podman"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")):
        if run(["sh", "-c", "command -v %s" % tool]).returncode != 0:
            raise Missing("%s is not installed: apt-get install %s" % (tool, package))
    if run(["podman", "image", "exists", image]).returncode != 0:
        raise Missing("the test-host image %s does not exist: run tools/setup.sh host_image" % image)
    try:
        local_host.up(HOST_A, image=image, network=NETWORK, init="systemd")
        local_host.up(HOST_B, image=image, network=NETWORK, init="sshd")
    except local_host.HostError as exc:
        raise Missing(diagnose_start(exc)) from None

    got = on(HOST_A, "getent hosts %s" % HOST_B)
    if got.returncode != 0 or not got.stdout.strip():
        raise Missing("a test host cannot resolve another by name on its network: podman's name server "
                      "(aardvark-dns) is missing or not answering (apt-get install aardvark-dns) %s" % got.stderr.strip())
    probe = "python3 -c 'import socket; socket.create_connection((\"%s\", 22), 5)'" % HOST_B
    got = on(HOST_A, probe)
    if got.returncode != 0:
        raise Missing("a test host resolves %s but cannot reach it over TCP: check the podman network's "
                      "firewall rules (iptables) %s" % (HOST_B, got.stderr.strip()))

    gateway = local_host.network_gateway(NETWORK)
    with local_host.controller_server(NETWORK, "rhoim-controller") as port:
        got = on(HOST_A, "curl -sS --max-time 5 http://host.containers.internal:%d/" % port)
    if got.returncode != 0 or got.stdout.strip() != "rhoim-controller":
        raise Missing("a test host cannot reach a server on the controller at %s (host.containers.internal): "
                      "check this machine's firewall for the podman network %s: %s" % (gateway, NETWORK, got.stderr.strip()))


def main(argv):
    image = local_host.image_ref(os.environ.get("RHOIM_HOST_IMAGE", local_host.DEFAULT_IMAGE))
    want = fingerprint(image)
    if "--force" not in argv and os.path.exists(STAMP) and open(STAMP).read().strip() == want:
        return 0
    print("==> checking the test ground: two hosts on a test network, SSH, names, TCP, the controller", flush=True)
    try:
        check(image)
    except Missing as exc:
        print("make setup: the test ground is not usable: %s" % exc, file=sys.stderr)
        return 1
    finally:
        for host in (HOST_A, HOST_B):
            local_host.down(host)
    with open(STAMP, "w") as f:
        f.write(want + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
