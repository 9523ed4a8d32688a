"""vllm_service in an image build: unit installed and enabled, settings in place, nothing started, no
API key; hosts booted from the built image make their own keys."""

import os
import subprocess
import sys
import time

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")
sys.path.insert(0, os.path.join(PROJECT, "tests", "support"))
from scenario import run_playbook  # noqa: E402  (test support, not a package)

CONVERGE = os.path.join(PROJECT, "molecule", "vllm_service_image", "converge.yml")
LOCAL_HOST = os.path.join(PROJECT, "tests", "support", "local_host.py")
BUILD = "rhoim-vllm-image"
BOOTED_IMAGE = "localhost/rhoim-vllm-image-booted:test"
BOOTED = ["rhoim-vllm-image-boot-1", "rhoim-vllm-image-boot-2"]

UNIT = "rhoim-vllm@tiny.service"


def test_not_booted(host):
    assert host.file("/proc/1/comm").content_string.strip() != "systemd"
    assert not host.file("/run/systemd/system").exists


def test_unit_enabled_by_its_wants_symlink(host):
    link = host.file("/etc/systemd/system/multi-user.target.wants/%s" % UNIT)
    assert link.is_symlink
    assert link.linked_to == "/etc/systemd/system/rhoim-vllm@.service"
    # systemctl reads the same state offline.
    assert host.run("systemctl is-enabled %s" % UNIT).stdout.strip() == "enabled"


def test_unit_waits_for_its_credential_and_model(host):
    unit = host.file("/etc/systemd/system/rhoim-vllm@.service").content_string
    assert "ConditionPathExists=/etc/rhoim/credentials/%i.api_key" in unit
    assert "ExecStart=/usr/libexec/rhoim/rhoim-vllm-serve /etc/rhoim/vllm/%i.yaml" in unit
    dropin = host.file("/etc/systemd/system/rhoim-vllm@tiny.service.d/10-rhoim.conf").content_string
    assert "ConditionPathExists=/var/lib/rhoim/models/tiny/5eed0000000000000000000000000000000000e1/config.json" in dropin
    assert "PrivateDevices=yes" in dropin


def test_image_unit_hides_other_processes(host):
    """An image is for hosts of their own, where ProtectProc= works beside PrivateUsers=."""
    unit = host.file("/etc/systemd/system/rhoim-vllm@.service").content_string
    assert "\nProtectProc=invisible\n" in unit
    assert "\nPrivateUsers=yes\n" in unit


def test_settings_and_files_in_place(host):
    config = host.file("/etc/rhoim/vllm/tiny.yaml")
    assert config.exists and config.group == "rhoim"
    assert "max-model-len: 256" in config.content_string
    # The revision's own folder: the config says exactly what the unit serves.
    assert "model: /var/lib/rhoim/models/tiny/5eed0000000000000000000000000000000000e1\n" in config.content_string
    assert host.file("/etc/rhoim/vllm/tiny.env").exists
    assert host.file("/etc/rhoim/credentials").mode == 0o700
    assert host.file("/usr/libexec/rhoim/rhoim-vllm-serve").mode == 0o755
    assert host.file("/usr/libexec/rhoim/rhoim-vllm-keygen").mode == 0o755
    assert host.file("/usr/libexec/rhoim/rhoim_vllm_auth.py").exists
    assert host.user("rhoim").uid == 961


def test_nothing_started(host):
    procs = host.check_output("ps -eo args")
    assert "vllm" not in procs
    assert "rhoim-vllm-serve" not in procs
    assert not host.socket("tcp://0.0.0.0:8000").is_listening


def test_cuda_model_with_tls(host):
    dropin = host.file("/etc/systemd/system/rhoim-vllm@big.service.d/10-rhoim.conf").content_string
    assert "PrivateDevices=no" in dropin and "DevicePolicy=closed" in dropin
    assert "DeviceAllow=char-nvidia-frontend rw" in dropin
    assert "LoadCredential=tls_cert:/etc/pki/rhoim/big.crt" in dropin
    assert "LoadCredential=tls_key:/etc/pki/rhoim/big.key" in dropin
    config = host.file("/etc/rhoim/vllm/big.yaml").content_string
    assert "ssl-certfile: /run/credentials/rhoim-vllm@big.service/tls_cert" in config
    assert "ssl-keyfile: /run/credentials/rhoim-vllm@big.service/tls_key" in config
    assert "tensor-parallel-size: 2" in config
    assert "gpu-memory-utilization: 0.9" in config
    # vLLM ignores "key: false" in a config file.
    assert "no-enable-prefix-caching: true" in config
    assert "enable-prefix-caching: false" not in config
    env = host.file("/etc/rhoim/vllm/big.env").content_string
    assert 'VLLM_TARGET_DEVICE="cuda"' in env
    assert "VLLM_CPU_KVCACHE_SPACE" not in env
    assert host.file("/etc/systemd/system/multi-user.target.wants/rhoim-vllm@big.service").is_symlink


def test_model_defaults_are_merged_over_the_roles_own(host):
    """vllm_service_model_defaults set only the port: the model that gives nothing else gets it, and
    keeps the role's own accelerator, host_ip and CPU settings."""
    config = host.file("/etc/rhoim/vllm/plain.yaml").content_string
    assert "port: 8100" in config and "host: 0.0.0.0" in config
    env = host.file("/etc/rhoim/vllm/plain.env").content_string
    for line in ('VLLM_TARGET_DEVICE="cpu"', 'VLLM_HOST_IP="127.0.0.1"', 'VLLM_CPU_KVCACHE_SPACE="4"', 'GLOO_SOCKET_IFNAME="lo"'):
        assert line in env
    # The models that set a port keep theirs.
    assert "port: 8000" in host.file("/etc/rhoim/vllm/tiny.yaml").content_string
    # A cuda model's NCCL sockets stay on loopback too.
    assert 'NCCL_SOCKET_IFNAME="lo"' in host.file("/etc/rhoim/vllm/big.env").content_string


def test_ports_open_in_firewalld_offline_configuration(host):
    # firewalld is installed in the image but not running: the role used firewall-offline-cmd.
    assert host.run("firewall-cmd --state").rc != 0
    ports = host.check_output("firewall-offline-cmd --list-ports").split()
    assert "8000/tcp" in ports and "8001/tcp" in ports and "8100/tcp" in ports


def test_no_api_key_in_the_image(host):
    """An image is pulled by many hosts: no layer may carry a key."""
    assert host.check_output("find /etc/rhoim /usr/libexec/rhoim -name '*.api_key' -o -name '*.token'") == ""


def test_a_given_api_key_is_refused_in_an_image_build(host):
    rc, out = run_playbook(CONVERGE, extra_vars={"vllm_service_models": [
        {"name": "tiny", "port": 8000, "api_key": "rhoim-image-test-key-never-written-0123456789"}]})
    assert rc == 2, out
    assert "api_key is set for tiny in an image build" in " ".join(out.split()), out
    assert "rhoim-image-test-key-never-written" not in out
    assert not host.file("/etc/rhoim/credentials/tiny.api_key").exists


def podman(*argv, check=True):
    return subprocess.run(["podman", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=check)


def test_each_host_booted_from_the_image_makes_its_own_key():
    """The image build's container, committed and booted twice with systemd as PID 1: each host's
    rhoim-vllm-key@tiny makes a key at boot (the model is not there, so the server itself is skipped)."""
    podman("commit", "-q", "--change", 'CMD ["/sbin/init"]', "--change", "STOPSIGNAL=SIGRTMIN+3", BUILD, BOOTED_IMAGE)
    try:
        for name in BOOTED:
            subprocess.run([sys.executable, LOCAL_HOST, "up", name, "--image", BOOTED_IMAGE, "--network", "rhoim-vllm-image"],
                           check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        digests = []
        for name in BOOTED:
            deadline = time.monotonic() + 60
            while podman("exec", name, "test", "-s", "/etc/rhoim/credentials/tiny.api_key", check=False).returncode != 0:
                assert time.monotonic() < deadline, podman("exec", name, "journalctl", "--no-pager", "-b", "-u",
                                                           "rhoim-vllm-key@tiny.service", check=False).stdout
                time.sleep(1)
            stat = podman("exec", name, "stat", "-c", "%U %a", "/etc/rhoim/credentials/tiny.api_key").stdout.split()
            assert stat == ["root", "600"]
            # Compared by digest: the keys never reach the test's output.
            line = podman("exec", name, "sh", "-c", "head -n 1 /etc/rhoim/credentials/tiny.api_key | tr -d '\\n' | wc -c; "
                          "sha256sum < /etc/rhoim/credentials/tiny.api_key").stdout.split()
            assert line[0] == "48"
            digests.append(line[1])
            show = podman("exec", name, "systemctl", "show", "-P", "Result,ExecMainStatus", "rhoim-vllm-key@tiny.service").stdout
            assert show.split() == ["success", "0"]
            # The server waits for its model: skipped by its condition, not failed.
            assert podman("exec", name, "systemctl", "is-failed", "rhoim-vllm@tiny.service", check=False).stdout.strip() != "failed"
            # A key that exists is kept: the unit's condition skips it on the next start.
            podman("exec", name, "systemctl", "start", "rhoim-vllm-key@tiny.service")
            again = podman("exec", name, "sha256sum", "/etc/rhoim/credentials/tiny.api_key").stdout.split()[0]
            assert again == line[1]
        assert digests[0] != digests[1]
    finally:
        for name in BOOTED:
            subprocess.run([sys.executable, LOCAL_HOST, "down", name], check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        podman("rmi", "-f", BOOTED_IMAGE, check=False)
