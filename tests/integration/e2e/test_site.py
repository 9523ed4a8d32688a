"""End to end: site.yml through ansible-runner against a local systemd host.

The host is booted from the inference image's cpu variant (tests/support/host-image/vllm-image.yml: an
image-mode host, vLLM and the unit from the image) and is reached over SSH; a
Hub stand-in on the controller (on its address on the hosts' network) serves a tiny model made
here; site.yml lays it down with the model role and serves it with vllm_service, as
`ansible-playbook site.yml` does for users.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

import ansible_runner
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SUPPORT = os.path.join(ROOT, "tests", "support")
sys.path.insert(0, SUPPORT)

import local_host  # noqa: E402  (test support, not a package)
from hub_server import HubServer  # noqa: E402

HOST = "rhoim-e2e-1"
NETWORK = "rhoim-e2e"
REPO = "rhoim-e2e/tiny-llama"
ACCOUNT = "llm"
# As ops reach GPU hosts: SSH with pipelining, one persistent connection per host.
SSH = {"ansible_user": "root", "ansible_ssh_common_args": local_host.ssh_common_args(), "ansible_ssh_pipelining": True,
       "ansible_python_interpreter": "/usr/bin/python3"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory, inference_host):
    root = tmp_path_factory.mktemp("hub")
    subprocess.run([sys.executable, os.path.join(SUPPORT, "make_tiny_model.py"), str(root / REPO / "refs" / "main")], check=True, capture_output=True)
    # Hosts reach the controller as host.containers.internal: its address on their network.
    server = HubServer(str(root), host=local_host.network_gateway(NETWORK), cdn_host="host.containers.internal")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def inference_host():
    local_host.up(HOST, image="localhost/rhoim-test-host-vllm", network=NETWORK)
    yield HOST
    local_host.down(HOST)


def on_host(host, script):
    return subprocess.run(local_host.ssh_argv(host, script), check=True, capture_output=True, text=True).stdout


def run_site(private_dir, hosts, group_vars=None, cmdline=None):
    inventory = {"inference": {"hosts": {h: SSH for h in hosts}, "vars": group_vars or {}}}
    (private_dir / "inventory").mkdir(exist_ok=True)
    (private_dir / "inventory" / "hosts.json").write_text(json.dumps(inventory))
    return ansible_runner.run(
        private_data_dir=str(private_dir),
        project_dir=ROOT,
        playbook=os.path.join(ROOT, "site.yml"),
        quiet=True,
        cmdline=cmdline,
        envvars={"ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "build", "collections")},
    )


def serving_vars(hub):
    return {
        # One account for both stages, named once: the model files' group and the unit's user. The image's
        # own account (rhoim, 961) is on the host already, so this one has its own IDs.
        "service_account_user": ACCOUNT,
        "service_account_group": ACCOUNT,
        "service_account_uid": 962,
        "service_account_gid": 962,
        "model_hub_endpoint": "http://host.containers.internal:%d" % hub.port,
        "model_pip_find_links": "/var/cache/rhoim/wheelhouse",
        "model_pip_extra_args": "--no-index",
        "model_models": [{"name": "tiny", "repo_id": REPO, "revision": "main"}],
        "vllm_service_models": [
            {"name": "tiny", "dtype": "float32", "max_model_len": 256, "cpu_kvcache_space": 1, "extra": {"enforce-eager": True}}
        ],
    }


def completion_on(host):
    # The header file keeps the key out of curl's command line.
    script = (
        "umask 077; printf 'Authorization: Bearer %s\\n' \"$(head -n1 /etc/rhoim/credentials/tiny.api_key)\" >/run/e2e-auth; "
        "curl -sS --fail -H @/run/e2e-auth -H 'Content-Type: application/json' "
        "-d '{\"model\": \"tiny\", \"prompt\": \"def hello(\", \"max_tokens\": 8, \"temperature\": 0}' "
        "http://127.0.0.1:8000/v1/completions; rm -f /run/e2e-auth"
    )
    return json.loads(on_host(host, script))


def test_site_lays_down_and_serves_a_model(tmp_path, hub, inference_host):
    result = run_site(tmp_path, [inference_host], serving_vars(hub))
    assert result.status == "successful", result.stdout.read()
    answer = completion_on(inference_host)
    assert answer["model"] == "tiny"
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["choices"][0]["text"]
    served = on_host(inference_host, "readlink /var/lib/rhoim/models/tiny/current").strip()
    config = on_host(inference_host, "cat /etc/rhoim/vllm/tiny.yaml")
    # The unit serves the revision the model role laid down, from that revision's own folder.
    assert "model: /var/lib/rhoim/models/tiny/%s\n" % os.path.basename(served) in config
    # Both stages used the one account: vLLM runs as it and reads the 0640 model files through its group.
    assert on_host(inference_host, "systemctl show -P User rhoim-vllm@tiny.service").strip() == ACCOUNT
    assert on_host(inference_host, "stat -c %G /var/lib/rhoim/models/tiny/current/config.json").strip() == ACCOUNT
    assert on_host(inference_host, "stat -c %G /etc/rhoim/vllm/tiny.yaml").strip() == ACCOUNT
    # The host runs firewalld (as RHEL does); the role opened the port.
    assert on_host(inference_host, "firewall-cmd --query-port=8000/tcp").strip() == "yes"


def test_site_a_second_run_changes_nothing(tmp_path, hub, inference_host):
    hub.clear_log()
    result = run_site(tmp_path, [inference_host], serving_vars(hub))
    assert result.status == "successful", result.stdout.read()
    assert result.stats["changed"].get(inference_host, 0) == 0, result.stats
    # A branch costs one revision request; nothing is downloaded again.
    paths = [e["path"] for e in hub.log]
    assert paths, "the model role did not ask the Hub for the branch's commit"
    assert not [p for p in paths if "/resolve/" in p or p.startswith("/_cdn/")], paths


def test_site_in_check_mode_on_an_up_to_date_host_reports_no_change(tmp_path, hub, inference_host):
    """Drift detection: --check --diff where a real run changes nothing reports nothing."""
    result = run_site(tmp_path, [inference_host], serving_vars(hub), cmdline="--check --diff")
    assert result.status == "successful", result.stdout.read()
    changed = [e["event_data"]["task"] for e in result.events if e["event"] == "runner_on_ok" and e["event_data"]["res"].get("changed")]
    assert result.stats["changed"].get(inference_host, 0) == 0, changed


def test_a_new_revision_is_served_from_its_own_folder_and_the_old_one_kept_while_served(tmp_path, hub, inference_host):
    """The Hub's branch moves on: the model stage lays the new commit down beside the one the unit
    serves (protected, even with keep_revisions 0), the serving stage points the unit at the new
    commit's folder and restarts it once; the next run removes the old commit, served by nobody."""
    old = os.path.basename(on_host(inference_host, "readlink /var/lib/rhoim/models/tiny/current").strip())
    with open(os.path.join(hub.root, REPO, "refs", "main", "NOTES.md"), "w") as f:
        f.write("a second commit of the tiny model\n")
    hub.reload()
    settings = serving_vars(hub)
    settings["model_models"][0]["keep_revisions"] = 0
    result = run_site(tmp_path, [inference_host], settings)
    assert result.status == "successful", result.stdout.read()
    new = os.path.basename(on_host(inference_host, "readlink /var/lib/rhoim/models/tiny/current").strip())
    assert new == hub.commit_sha(REPO) and new != old
    assert "model: /var/lib/rhoim/models/tiny/%s\n" % new in on_host(inference_host, "cat /etc/rhoim/vllm/tiny.yaml")
    assert on_host(inference_host, "test -e /var/lib/rhoim/models/tiny/%s/config.json && echo kept" % old).strip() == "kept"
    assert completion_on(inference_host)["usage"]["completion_tokens"] == 8
    result = run_site(tmp_path, [inference_host], settings)
    assert result.status == "successful", result.stdout.read()
    assert on_host(inference_host, "test -e /var/lib/rhoim/models/tiny/%s && echo kept || echo gone" % old).strip() == "gone"


def test_a_serving_mistake_is_found_before_any_download(tmp_path, hub, inference_host):
    """Both stages' settings are checked before either changes the host: a second model on tiny's
    port fails the run before the model stage asks the Hub for anything."""
    hub.clear_log()
    settings = serving_vars(hub)
    settings["model_models"] = settings["model_models"] + [{"name": "other", "repo_id": REPO, "revision": "main"}]
    settings["vllm_service_models"] = settings["vllm_service_models"] + [{"name": "other", "port": 8000}]
    result = run_site(tmp_path, [inference_host], settings)
    assert result.status == "failed"
    messages = [e["event_data"].get("res", {}).get("msg", "") for e in result.events if e["event"] == "runner_on_failed"]
    assert any("models tiny and other both listen on port 8000" in m for m in messages), messages
    assert hub.log == []
    assert on_host(inference_host, "test -e /var/lib/rhoim/models/other && echo yes || echo no").strip() == "no"


def test_a_restarted_host_serves_again_with_no_ansible_run(inference_host):
    """podman restart, which a host's reboot resembles: the unit comes back by itself with its
    key credential (/ is made shared early in boot by the image), same address, same host key."""
    address = local_host.up(inference_host, image="localhost/rhoim-test-host-vllm", network=NETWORK)
    known = open(os.path.join(local_host.HOSTS_DIR, inference_host + ".known_hosts")).read()
    start = time.monotonic()
    local_host.restart(inference_host)
    health = None
    while time.monotonic() - start < 300:
        try:
            with urllib.request.urlopen("http://%s:8000/health" % address, timeout=5) as resp:  # noqa: S310 - test URL
                health = resp.status
                break
        except OSError:
            time.sleep(2)
    print("\nrestart: /health 200 again %.1f s after podman restart" % (time.monotonic() - start))
    assert health == 200, on_host(inference_host, "journalctl --no-pager -n 30 -u rhoim-vllm@tiny.service")
    assert open(os.path.join(local_host.HOSTS_DIR, inference_host + ".known_hosts")).read() == known
    answer = completion_on(inference_host)
    assert answer["usage"]["completion_tokens"] == 8


@pytest.fixture()
def host_without_systemd():
    # Reached over SSH like the others, but sshd is PID 1: no systemd.
    name = "rhoim-e2e-nosystemd"
    local_host.up(name, network=NETWORK, init="sshd")
    yield name
    local_host.down(name)


def test_site_refuses_a_host_without_systemd(tmp_path, host_without_systemd):
    result = run_site(tmp_path, [host_without_systemd])
    assert result.status == "failed"
    messages = [e["event_data"].get("res", {}).get("msg", "") for e in result.events if e["event"] == "runner_on_failed"]
    assert any("needs systemd" in m for m in messages), messages
