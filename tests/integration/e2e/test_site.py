"""End to end: site.yml through ansible-runner against a local systemd host."""

import json
import os
import subprocess

import ansible_runner
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LOCAL_HOST = os.path.join(ROOT, "tests", "support", "local_host.sh")
HOST = "rhoim-e2e-1"


@pytest.fixture(scope="module")
def inference_host():
    subprocess.run([LOCAL_HOST, "up", HOST], check=True)
    yield HOST
    subprocess.run([LOCAL_HOST, "down", HOST], check=True)


def run_site(tmp_path, host, **extra):
    inventory = {
        "inference": {"hosts": {host: {"ansible_connection": "containers.podman.podman", "ansible_python_interpreter": "/usr/bin/python3"}}}
    }
    (tmp_path / "inventory").mkdir(exist_ok=True)
    (tmp_path / "inventory" / "hosts.json").write_text(json.dumps(inventory))
    return ansible_runner.run(
        private_data_dir=str(tmp_path),
        project_dir=ROOT,
        playbook=os.path.join(ROOT, "site.yml"),
        quiet=True,
        envvars={"ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "build", "collections")},
        **extra,
    )


def test_site_converges_a_systemd_host(tmp_path, inference_host):
    result = run_site(tmp_path, inference_host)
    assert result.status == "successful", result.stdout.read()
    assert result.stats["ok"].get(inference_host, 0) >= 2
    assert not result.stats["failures"]


@pytest.fixture()
def host_without_systemd():
    name = "rhoim-e2e-nosystemd"
    subprocess.run(["podman", "rm", "-f", name], check=False, capture_output=True)
    subprocess.run(
        ["podman", "run", "-d", "--name", name, "localhost/rhoim-test-host:current", "sleep", "infinity"],
        check=True,
        capture_output=True,
    )
    yield name
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], check=True, capture_output=True)


def test_site_refuses_a_host_without_systemd(tmp_path, host_without_systemd):
    result = run_site(tmp_path, host_without_systemd)
    assert result.status == "failed"
    messages = [e["event_data"].get("res", {}).get("msg", "") for e in result.events if e["event"] == "runner_on_failed"]
    assert any("needs systemd" in m for m in messages), messages
