"""vllm_service in an image build: unit installed and enabled, settings in place, nothing started."""

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
    assert host.file("/etc/rhoim/credentials/tiny.api_key").mode == 0o600
    assert host.file("/usr/libexec/rhoim/rhoim-vllm-serve").mode == 0o755
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
    # A given key is written as given.
    assert host.file("/etc/rhoim/credentials/big.api_key").content_string == "not-a-real-key-only-for-the-image-test\n"
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
