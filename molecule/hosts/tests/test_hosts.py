"""The test ground: real systemd hosts, reached over SSH, that later scenarios converge and verify."""

import os
import socket
import subprocess
import sys
import time

import pytest
import testinfra

sys.path.insert(0, os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."), "tests", "support"))

import local_host  # test support, not a package

PROBE_PORT = 8181
PEERS = {"rhoim-hosts-a": "rhoim-hosts-b", "rhoim-hosts-b": "rhoim-hosts-a"}
NETWORK = "rhoim-hosts"
IMAGE = "localhost/rhoim-test-host:current"


def podman(*args):
    return subprocess.run(["podman", *args], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()


def test_reached_over_ssh_with_keys_only(host):
    # The verifier's own commands arrive through sshd, as Ansible's do.
    assert host.backend.NAME == "ssh"
    assert host.check_output("echo $SSH_CONNECTION").split()[2] == host.check_output("hostname -I").split()[0]
    settings = host.check_output("sshd -T")
    assert "passwordauthentication no" in settings
    assert "kbdinteractiveauthentication no" in settings
    assert "permitrootlogin without-password" in settings


def test_image_carries_no_host_keys():
    # Host keys are made at each host's first boot: every host from one image has its own.
    keys = podman("run", "--rm", IMAGE, "sh", "-c", "ls /etc/ssh/ | grep -c ssh_host_ || true")
    assert keys == "0"


def test_each_host_has_its_own_host_key(host):
    me = host.check_output("hostname")
    mine = host.file("/etc/ssh/ssh_host_ed25519_key.pub").content_string.split()[1]
    peer = podman("exec", PEERS[me], "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    assert mine != peer
    # The controller pinned exactly this key for this host.
    pinned = open(os.path.join(local_host.HOSTS_DIR, me + ".known_hosts")).read().split()
    assert pinned == [me, "ssh-ed25519", mine]
    assert host.file("/etc/ssh/ssh_host_ed25519_key").mode == 0o600


def test_root_mount_is_shared(host):
    # Made by the image early in boot, as systemd does on a real host (LoadCredential= needs it).
    assert host.check_output("findmnt -no PROPAGATION /") == "shared"
    assert host.check_output("systemctl show -P ActiveState rhoim-shared-root.service") == "active"


def test_systemd_is_pid_1_and_running(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    state = host.run("systemctl is-system-running")
    assert state.stdout.strip() == "running", host.run("systemctl --failed --no-legend").stdout


def test_probe_unit_installed_enabled_and_running(host):
    probe = host.service("rhoim-probe.service")
    assert probe.is_enabled
    assert probe.is_running
    # DynamicUser: the unit runs as a transient user, not root.
    pid = host.check_output("systemctl show -P MainPID rhoim-probe.service")
    assert host.check_output("ps -o user= -p %s" % pid) != "root"
    assert host.socket("tcp://0.0.0.0:%d" % PROBE_PORT).is_listening


def test_journald_records_the_unit(host):
    hostname = host.check_output("hostname")
    journal = host.check_output("journalctl -u rhoim-probe.service --no-pager -o cat")
    assert "rhoim-probe starting on %s" % hostname in journal


def test_hosts_reach_each_other_by_name(host):
    me = host.check_output("hostname")
    peer = PEERS[me]
    answer = host.check_output("curl -sS --max-time 5 http://%s:%d/" % (peer, PROBE_PORT))
    assert answer == peer


@pytest.fixture(scope="module")
def controller_server():
    """A server on the controller, as later scenarios run a Hub and a registry there: it listens
    on the controller's address on the test network, not on every address of the machine."""
    token = "controller-%s" % socket.gethostname()
    with local_host.controller_server(NETWORK, token) as port:
        yield token, port


def test_host_reaches_a_server_on_the_controller(host, controller_server):
    token, port = controller_server
    answer = host.check_output("curl -sS --max-time 5 http://host.containers.internal:%d/" % port)
    assert answer == token
    # host.containers.internal is that address: the controller's side of the test network.
    assert host.check_output("getent hosts host.containers.internal").split()[0] == local_host.network_gateway(NETWORK)


def test_python_is_what_the_roles_need(host):
    version = host.check_output("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")
    assert tuple(int(x) for x in version.split(".")) >= (3, 9)
    venv = host.run("python3 -m venv /tmp/rhoim-venv-check && /tmp/rhoim-venv-check/bin/python -m pip --version")
    assert venv.rc == 0, venv.stderr
    host.run("rm -rf /tmp/rhoim-venv-check")
    assert host.package("libnuma1").is_installed


def test_shared_memory_is_large_enough_for_vllm(host):
    # vLLM needs about 160 MiB of /dev/shm; the container default is 64 MiB.
    size_kib = int(host.check_output("df -k --output=size /dev/shm | tail -n1"))
    assert size_kib >= 1024 * 1024


def test_a_restarted_host_comes_back_at_its_address_with_its_keys():
    """podman restart, which a reboot resembles: same address and MAC, same host key, / shared again, probe up."""
    me = "rhoim-hosts-b"
    host = testinfra.get_host("ssh://" + me, ssh_config=local_host.ensure_ssh_config())
    identity = "hostname -I; cat /sys/class/net/eth0/address /etc/ssh/ssh_host_ed25519_key.pub"
    before = host.check_output(identity)
    local_host.restart(me)
    # Same address, same MAC address (so the controller's neighbour entry stays right), same host key.
    assert host.check_output(identity) == before
    assert host.check_output("findmnt -no PROPAGATION /") == "shared"
    assert host.check_output("systemctl is-system-running") == "running"
    deadline = time.monotonic() + 30
    while host.run("curl -fsS -o /dev/null http://127.0.0.1:%d/" % PROBE_PORT).rc != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert host.check_output("curl -sS http://127.0.0.1:%d/" % PROBE_PORT) == me
