"""The test ground: real systemd hosts that later scenarios converge and verify."""

import http.server
import socket
import threading

import pytest

PROBE_PORT = 8181
PEERS = {"rhoim-hosts-a": "rhoim-hosts-b", "rhoim-hosts-b": "rhoim-hosts-a"}


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
    """A server on the controller, as later scenarios run a Hub and a registry there."""
    token = "controller-%s" % socket.gethostname()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = token.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield token, server.server_address[1]
    server.shutdown()


def test_host_reaches_a_server_on_the_controller(host, controller_server):
    token, port = controller_server
    answer = host.check_output("curl -sS --max-time 5 http://host.containers.internal:%d/" % port)
    assert answer == token


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
