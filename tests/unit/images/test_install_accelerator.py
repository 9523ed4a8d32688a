"""images/inference/build/install-accelerator on each known base, rendered statically: no base, repository or
GPU is reachable here, so dnf, curl, dkms and systemctl are recorders on PATH and the base is its
/etc/os-release and its kernel folder under a scratch root. What runs for real: the script, the kernel-match
guard it calls (check-kernel-modules, with the real modinfo on module files made here) and the copy of the
cuda files."""

import os
import shlex
import subprocess

import pytest

from test_check_kernel_modules import DRIVER, ROOT, module_bytes

SCRIPT = os.path.join(ROOT, "images", "inference", "build", "install-accelerator")
FILES = os.path.join(ROOT, "images", "inference", "accelerator")
MODULES = ["nvidia", "nvidia-uvm", "nvidia-modeset", "nvidia-drm"]
RECORDER = """#!/bin/sh
printf '%%s' "$(basename "$0")" >>"%(log)s"
for word in "$@"; do printf ' %%s' "$word" >>"%(log)s"; done
echo >>"%(log)s"
if [ "$(basename "$0")" = curl ]; then
  while [ "$#" -gt 0 ]; do [ "$1" = -o ] && echo "# repo" >"$2"; shift; done
fi
"""

# (base, os-release, the image's kernel, NVIDIA repository, EPEL release package, module stream)
BASES = [
    ("registry.redhat.io/rhel9/rhel-bootc:9.6", 'ID="rhel"\nVERSION_ID="9.6"\n', "5.14.0-570.12.1.el9_6.x86_64",
     "rhel9", "https://dl.fedoraproject.org/pub/epel/epel-release-latest-9.noarch.rpm", "nvidia-driver:580-open"),
    ("quay.io/centos-bootc/centos-bootc:stream9", 'ID="centos"\nVERSION_ID="9"\n', "5.14.0-611.el9.x86_64",
     "rhel9", "epel-release", "nvidia-driver:580-open"),
    ("registry.redhat.io/rhel10/rhel-bootc:10.0", 'ID="rhel"\nVERSION_ID="10.0"\n', "6.12.0-55.9.1.el10_0.x86_64",
     "rhel10", "https://dl.fedoraproject.org/pub/epel/epel-release-latest-10.noarch.rpm", None),
    ("quay.io/centos-bootc/centos-bootc:stream10", 'ID="centos"\nVERSION_ID="10"\n', "6.12.0-124.el10.x86_64",
     "rhel10", "epel-release", None),
    ("quay.io/fedora/fedora-bootc:42", "ID=fedora\nVERSION_ID=42\n", "6.17.7-200.fc42.x86_64", "fedora42", None, None),
]


def base_root(tmp_path, os_release, kernels=(), modules_for=None, driver=DRIVER):
    root = tmp_path / "root"
    (root / "etc" / "yum.repos.d").mkdir(parents=True)
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(os_release)
    for kernel in kernels:
        folder = root / "usr" / "lib" / "modules" / kernel
        (folder / "extra").mkdir(parents=True)
        (folder / "vmlinuz").write_bytes(b"kernel")
        # What dkms install leaves (the recorder stands in for dkms itself).
        for name in MODULES if kernel == (modules_for or kernel) else ():
            (folder / "extra" / (name + ".ko")).write_bytes(module_bytes(kernel, name, driver))
    return root


def install(tmp_path, root, *argv):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "commands"
    log.write_text("")
    for name in ["dnf", "curl", "dkms", "systemctl"]:
        (bin_dir / name).write_text(RECORDER % {"log": log})
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, RHOIM_ROOT=str(root), RHOIM_ACCELERATOR_FILES=FILES,
               PATH="%s:%s:/usr/sbin:/sbin" % (bin_dir, os.environ.get("PATH", "")))
    proc = subprocess.run([SCRIPT, *argv], env=env, capture_output=True, text=True, check=False)
    return proc, [shlex.split(line) for line in log.read_text().splitlines()]


def test_cpu_installs_nothing(tmp_path):
    root = base_root(tmp_path, BASES[3][1], [BASES[3][2]])
    proc, commands = install(tmp_path, root, "cpu", "")
    assert proc.returncode == 0, proc.stderr
    assert commands == []
    assert not (root / "usr" / "lib" / "bootc").exists()


@pytest.mark.parametrize(("base", "os_release", "kernel", "distro", "epel", "stream"), BASES, ids=[b[0] for b in BASES])
def test_cuda_on_each_known_base(tmp_path, base, os_release, kernel, distro, epel, stream):
    root = base_root(tmp_path, os_release, [kernel])
    proc, commands = install(tmp_path, root, "cuda", DRIVER)
    assert proc.returncode == 0, proc.stderr
    arch = os.uname().machine
    assert ["curl", "-fsSL", "-o", "%s/etc/yum.repos.d/rhoim-cuda.repo" % root,
            "https://developer.download.nvidia.com/compute/cuda/repos/%s/%s/cuda-%s.repo" % (distro, arch, distro)] in commands
    assert (["dnf", "-y", "install", epel] in commands) == (epel is not None)
    assert (["dnf", "-y", "module", "enable", stream] in commands) if stream else not [c for c in commands if "module" in c]
    installs = [c for c in commands if c[:3] == ["dnf", "-y", "install"] and "--setopt=install_weak_deps=False" in c]
    assert len(installs) == 1
    for package in ["kernel-devel-" + kernel, "kmod-nvidia-open-dkms-" + DRIVER, "nvidia-driver-cuda-" + DRIVER,
                    "nvidia-persistenced-" + DRIVER, "nvidia-container-toolkit-base"]:
        assert package in installs[0]
    # DKMS builds for the image's kernel, not the build host's.
    assert ["dkms", "install", "-m", "nvidia", "-v", DRIVER, "-k", kernel, "--force"] in commands
    assert "built for kernel %s, driver %s" % (kernel, DRIVER) in proc.stdout
    assert ["systemctl", "enable", "nvidia-persistenced.service", "rhoim-nvidia-cdi.service"] in commands
    # The repositories are gone again; what the image needs stays.
    assert sorted(os.listdir(root / "etc" / "yum.repos.d")) == []
    kargs = (root / "usr" / "lib" / "bootc" / "kargs.d" / "50-rhoim-nvidia.toml").read_text()
    assert 'kargs = ["rd.driver.blacklist=nouveau", "modprobe.blacklist=nouveau"]' in kargs
    assert "blacklist nouveau" in (root / "usr" / "lib" / "modprobe.d" / "50-rhoim-nouveau.conf").read_text()
    cdi = (root / "usr" / "lib" / "systemd" / "system" / "rhoim-nvidia-cdi.service").read_text()
    assert "ExecStart=/usr/bin/nvidia-ctk cdi generate --output=/run/cdi/nvidia.yaml" in cdi


def test_cuda_fails_when_the_modules_are_of_another_driver(tmp_path):
    root = base_root(tmp_path, BASES[3][1], [BASES[3][2]], driver="575.57.08")
    proc, commands = install(tmp_path, root, "cuda", DRIVER)
    assert proc.returncode == 1
    assert "is driver 575.57.08, not the pinned driver %s" % DRIVER in proc.stderr
    assert not [c for c in commands if c[0] == "systemctl"]


def test_cuda_fails_on_an_image_with_two_kernels_before_installing_anything(tmp_path):
    root = base_root(tmp_path, BASES[3][1], ["6.12.0-124.el10.x86_64", "6.12.0-130.el10.x86_64"])
    proc, commands = install(tmp_path, root, "cuda", DRIVER)
    assert proc.returncode == 1
    assert "install exactly one" in proc.stderr and "6.12.0-130.el10.x86_64" in proc.stderr
    assert commands == []


@pytest.mark.parametrize(("os_release", "message"), [
    ("ID=debian\nVERSION_ID=12\n", "cuda on debian 12 is not supported"),
    ('ID="centos"\nVERSION_ID="8"\n', "cuda on centos 8 is not supported: EL 9 and 10 are"),
])
def test_cuda_refuses_other_bases(tmp_path, os_release, message):
    root = base_root(tmp_path, os_release, ["6.1.0-28-amd64"])
    proc, commands = install(tmp_path, root, "cuda", DRIVER)
    assert proc.returncode == 1 and message in proc.stderr
    assert commands == []


@pytest.mark.parametrize(("argv", "message"), [
    (["rocm", ""], "ACCELERATOR 'rocm' is not cpu or cuda"),
    (["cuda", ""], "NVIDIA_DRIVER_VERSION '' is not a driver version"),
    (["cuda", "latest"], "NVIDIA_DRIVER_VERSION 'latest' is not a driver version"),
])
def test_bad_arguments_are_named(tmp_path, argv, message):
    root = base_root(tmp_path, BASES[4][1], [BASES[4][2]])
    proc = install(tmp_path, root, *argv)[0]
    assert proc.returncode == 1 and message in proc.stderr
