"""Local stand-ins for GPU hosts: podman containers that boot systemd and are reached over SSH.

Models: a booted systemd host with Python (package mode), reached as ops reach real hosts: sshd on
port 22 at a fixed address (and MAC address) on a podman network, root logins with the controller's key only, host
keys the host made at its first boot (the image carries none), known_hosts pinned per host. The
address stays the same when the host restarts (podman restart, which a reboot resembles) and when it
is recreated under the same name. CAP_SYS_ADMIN lets systemd give units their own mount namespaces
(ProtectSystem=, PrivateTmp=); the image makes / a shared mount early in boot, as systemd does on a
real host (LoadCredential= needs it). CAP_NET_ADMIN lets firewalld (on in the vLLM host image)
filter the host's own network.
Does not model: a kernel, GPUs, bootc/ostree, SELinux, DNS for the hosts (the controller finds them
through the SSH client configuration this writes).

What it keeps, once per machine, under $RHOIM_CACHE/ssh (default /var/cache/rhoim-dev/ssh):
  id_ed25519, id_ed25519.pub   the controller's key (never committed), mounted into every host as
                               /root/.ssh/authorized_keys
  config                       the SSH client configuration: `ssh -F config NAME` (Ansible, testinfra)
  hosts/NAME.conf              one host's address; hosts/NAME.known_hosts its host key

  local_host.py up NAME [--image IMG] [--network NET] [--init systemd|sshd|none] [-- PODMAN-RUN-ARGS...]
  local_host.py restart NAME    podman restart (a reboot) and wait until it answers again
  local_host.py down NAME
  local_host.py config          print the path of the SSH client configuration (made if missing)
  local_host.py ssh-args        print ansible_ssh_common_args for these hosts
  local_host.py gateway [NET]   print the controller's address on a test network (servers for the
                                hosts listen there, never on every address of the machine)

--init systemd (the default) boots /sbin/init; sshd runs sshd as PID 1 (a host without systemd);
none runs `sleep infinity` with no sshd (an image-build container, reached with podman exec).
"""

import argparse
import contextlib
import fcntl
import hashlib
import http.server
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
import zlib

CACHE = os.environ.get("RHOIM_CACHE", "/var/cache/rhoim-dev")
SSH_DIR = os.path.join(CACHE, "ssh")
SSH_CONFIG = os.path.join(SSH_DIR, "config")
KEY = os.path.join(SSH_DIR, "id_ed25519")
HOSTS_DIR = os.path.join(SSH_DIR, "hosts")
WHEELHOUSE = os.environ.get("RHOIM_WHEELHOUSE", os.path.join(CACHE, "wheelhouse"))
DEFAULT_IMAGE = "localhost/rhoim-test-host:current"
DEFAULT_NETWORK = "rhoim"
LABEL = "org.rhoim.local-host=1"
SSHD_AS_PID1 = "ssh-keygen -A && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e"


class HostError(RuntimeError):
    pass


def podman(*args, check=True):
    proc = subprocess.run(["podman", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if check and proc.returncode != 0:
        raise HostError("podman %s failed (exit %d): %s" % (" ".join(args[:3]), proc.returncode, proc.stderr.strip()))
    return proc


def image_ref(image):
    """A repository without a tag means its :current tag (what make setup builds)."""
    return image if ":" in image.rsplit("/", 1)[-1] else image + ":current"


@contextlib.contextmanager
def _locked():
    os.makedirs(HOSTS_DIR, mode=0o700, exist_ok=True)
    with open(os.path.join(SSH_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write(path, text, mode=0o600):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def ensure_ssh_config():
    """The controller's key and the client configuration; made once per machine. Returns the config's path."""
    os.makedirs(HOSTS_DIR, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(SSH_DIR, "cm"), mode=0o700, exist_ok=True)
    if not os.path.exists(KEY):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rhoim-test-controller", "-f", KEY], check=True)
    config = "\n".join([
        "# Written by tests/support/local_host.py: how the controller reaches the local test hosts.",
        "Include %s/*.conf" % HOSTS_DIR,
        "",
        "Host *",
        "    User root",
        "    IdentityFile %s" % KEY,
        "    IdentitiesOnly yes",
        "    BatchMode yes",
        "    StrictHostKeyChecking yes",
        "    ConnectTimeout 10",
        # One connection per host, shared by Ansible, testinfra and the tests' own ssh calls.
        "    ControlMaster auto",
        "    ControlPath %s/cm/%%C" % SSH_DIR,
        "    ControlPersist 120s",
        # A removed host's master goes away within seconds instead of hanging its successor.
        "    ServerAliveInterval 5",
        "    ServerAliveCountMax 3",
        "    LogLevel ERROR",
        "",
    ])
    if not os.path.exists(SSH_CONFIG) or open(SSH_CONFIG).read() != config:
        _write(SSH_CONFIG, config, 0o644)
    return SSH_CONFIG


def network_gateway(network=DEFAULT_NETWORK):
    """The controller's own address on a test network: where servers for the hosts listen.

    netavark gives the controller that address while a host is attached to the network (and
    again after a host's restart), so start a host first."""
    if not podman("ps", "-q", "--filter", "network=" + network, check=False).stdout.strip():
        raise HostError("no host runs on the network %s: start one before a server that listens on "
                        "the controller's address there (the address exists only while a host is attached)" % network)
    info = json.loads(podman("network", "inspect", network).stdout)[0]
    return info["subnets"][0]["gateway"]


@contextlib.contextmanager
def controller_server(network, body):
    """A small HTTP server on the controller's address on a test network that answers every GET
    with body; yields its port. Hosts reach it as host.containers.internal."""
    data = body.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((network_gateway(network), 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def ensure_network(network):
    if podman("network", "exists", network, check=False).returncode != 0:
        podman("network", "create", network)


def _recorded_address(name):
    path = os.path.join(HOSTS_DIR, name + ".conf")
    if not os.path.exists(path):
        return None
    for line in open(path):
        parts = line.split()
        if len(parts) == 2 and parts[0] == "HostName":
            return parts[1]
    return None


def pick_address(name, subnet, gateway, used, recorded=None):
    """A free address in subnet: the one the host had before if it is free, else one derived from its name."""
    net = ipaddress.ip_network(subnet)
    taken = {ipaddress.ip_address(a) for a in used} | {ipaddress.ip_address(gateway)}
    if recorded:
        addr = ipaddress.ip_address(recorded)
        if addr in net and addr not in taken:
            return str(addr)
    # The first host address (.1) is the gateway on podman's networks; the last is the broadcast.
    size = net.num_addresses - 2
    start = zlib.crc32(name.encode()) % size
    for step in range(size):
        addr = net.network_address + 1 + (start + step) % size
        if addr not in taken:
            return str(addr)
    raise HostError("no free address left on %s" % subnet)


def mac_address(name):
    """A fixed, locally administered MAC address per host name. A real host keeps its MAC across
    reboots; a restarted container would otherwise get a new one behind the same IP address, and the
    controller would keep sending to the old one until its neighbour entry expires (about a minute)."""
    digest = hashlib.sha256(name.encode()).digest()
    return ":".join("%02x" % b for b in (0x02, *digest[:5]))


def _addresses_in_use(network):
    ids = podman("ps", "-aq", "--filter", "network=" + network).stdout.split()
    if not ids:
        return []
    used = []
    for info in json.loads(podman("inspect", *ids).stdout):
        net = info.get("NetworkSettings", {}).get("Networks", {}).get(network) or {}
        if net.get("IPAddress"):
            used.append(net["IPAddress"])
    return used


def _running(name):
    proc = podman("inspect", "-f", "{{.State.Running}}", name, check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def ssh_common_args():
    """Ansible's ansible_ssh_common_args for these hosts: this configuration, and the same
    connection (ControlPath) that testinfra and the tests' own ssh calls share."""
    return "-F %s -o ControlPath=%s/cm/%%C" % (ensure_ssh_config(), SSH_DIR)


def ssh_argv(name, *command):
    return ["ssh", "-F", ensure_ssh_config(), name, *command]


def _close_master(name):
    subprocess.run(["ssh", "-F", SSH_CONFIG, "-O", "exit", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _wait_for_boot(name, timeout=120):
    """Until systemd has finished booting; fails naming what did not start."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        proc = podman("exec", name, "timeout", "60", "systemctl", "is-system-running", "--wait", check=False)
        state = proc.stdout.strip()
        if state in ("running", "degraded", "maintenance", "stopping"):
            break
        time.sleep(0.5)
    if state != "running":
        failed = podman("exec", name, "systemctl", "--failed", "--no-legend", check=False).stdout.strip()
        raise HostError("local host %s did not boot: systemd says %r\n%s" % (name, state, failed))


def _host_key(name, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = podman("exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub", check=False)
        if proc.returncode == 0 and proc.stdout.startswith("ssh-ed25519 "):
            return " ".join(proc.stdout.split()[:2])
        time.sleep(0.3)
    raise HostError("local host %s made no SSH host key within %d s" % (name, timeout))


def _write_host_entry(name, address, host_key):
    known_hosts = os.path.join(HOSTS_DIR, name + ".known_hosts")
    _write(known_hosts, "%s %s\n" % (name, host_key), 0o644)
    _write(os.path.join(HOSTS_DIR, name + ".conf"), "\n".join([
        "Host %s" % name,
        "    HostName %s" % address,
        "    HostKeyAlias %s" % name,
        "    UserKnownHostsFile %s" % known_hosts,
        "",
    ]), 0o644)


def wait_for_ssh(name, timeout=60):
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(ssh_argv(name, "true"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
        if proc.returncode == 0:
            return
        last = proc.stderr.strip()
        time.sleep(0.5)
    raise HostError("local host %s does not answer over SSH within %d s: %s" % (name, timeout, last))


def up(name, image=DEFAULT_IMAGE, network=DEFAULT_NETWORK, init="systemd", podman_args=(), before_start=None, wait=True):
    """Start (or reuse, when it runs) a host and wait until it answers; returns its address.

    before_start(name) runs between podman create and start (files put into the host before it boots);
    wait=False returns once it has started, without waiting for it or recording its host key."""
    ensure_ssh_config()
    image = image_ref(image)
    with _locked():
        ensure_network(network)
        if not _running(name):
            podman("rm", "-f", name, check=False)
            _close_master(name)
            info = json.loads(podman("network", "inspect", network).stdout)[0]["subnets"][0]
            address = pick_address(name, info["subnet"], info["gateway"], _addresses_in_use(network), _recorded_address(name))
            args = ["create", "--name", name, "--hostname", name, "--network", network, "--ip", address,
                    "--mac-address", mac_address(name),
                    "--label", LABEL, "--shm-size=1g"]
            if init != "none":
                args += ["-v", "%s.pub:/root/.ssh/authorized_keys:ro" % KEY]
            if os.path.isdir(WHEELHOUSE):
                args += ["-v", "%s:/var/cache/rhoim/wheelhouse:ro" % WHEELHOUSE]
            if init == "systemd":
                args += ["--systemd=always", "--cap-add=SYS_ADMIN", "--cap-add=NET_ADMIN", *podman_args, image, "/sbin/init"]
            elif init == "sshd":
                args += [*podman_args, image, "/bin/sh", "-c", SSHD_AS_PID1]
            else:
                args += [*podman_args, image, "sleep", "infinity"]
            podman(*args)
            if before_start:
                before_start(name)
            podman("start", name)
    if not wait:
        return None
    if init == "systemd":
        _wait_for_boot(name)
    if init == "none":
        return None
    address = json.loads(podman("inspect", name).stdout)[0]["NetworkSettings"]["Networks"][network]["IPAddress"]
    with _locked():
        _write_host_entry(name, address, _host_key(name))
    wait_for_ssh(name)
    return address


def restart(name):
    """podman restart, which a host's reboot resembles; returns once the host answers over SSH again.

    The controller's shared connection to the host goes first: it would otherwise hang new
    sessions until its keep-alives give up."""
    _close_master(name)
    podman("restart", name)
    _close_master(name)
    if podman("exec", name, "cat", "/proc/1/comm", check=False).stdout.strip() == "systemd":
        _wait_for_boot(name)
    wait_for_ssh(name)


def down(name):
    podman("rm", "-f", "-t", "0", name, check=False)
    if os.path.exists(SSH_CONFIG):
        _close_master(name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start (or reuse) a host and wait until it answers over SSH")
    p_up.add_argument("name")
    p_up.add_argument("--image", default=os.environ.get("RHOIM_HOST_IMAGE", DEFAULT_IMAGE))
    p_up.add_argument("--network", default=os.environ.get("RHOIM_HOST_NETWORK", DEFAULT_NETWORK))
    p_up.add_argument("--init", choices=("systemd", "sshd", "none"), default="systemd")
    p_restart = sub.add_parser("restart", help="restart a host (as a reboot) and wait until it answers over SSH")
    p_restart.add_argument("name")
    p_down = sub.add_parser("down", help="remove a host")
    p_down.add_argument("name")
    sub.add_parser("config", help="print the path of the SSH client configuration")
    sub.add_parser("ssh-args", help="print ansible_ssh_common_args for these hosts")
    p_gateway = sub.add_parser("gateway", help="print the controller's address on a test network")
    p_gateway.add_argument("network", nargs="?", default=DEFAULT_NETWORK)
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything after `--` goes to podman run as it is.
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    try:
        if args.cmd == "up":
            address = up(args.name, args.image, args.network, args.init, rest)
            print("%s %s" % (args.name, address or "(podman exec only)"))
        elif args.cmd == "restart":
            restart(args.name)
        elif args.cmd == "down":
            down(args.name)
        elif args.cmd == "ssh-args":
            print(ssh_common_args())
        elif args.cmd == "gateway":
            print(network_gateway(args.network))
        else:
            print(ensure_ssh_config())
    except HostError as exc:
        sys.exit("local_host.py: %s" % exc)


if __name__ == "__main__":
    main()
