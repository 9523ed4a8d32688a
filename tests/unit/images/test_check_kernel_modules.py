"""images/inference/build/check-kernel-modules, the cuda build's guard: exactly one kernel, and the driver's
modules built for it. The modules here are minimal ELF objects with a real .modinfo section, read by the
real modinfo (kmod)."""

import lzma
import os
import shutil
import struct
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
GUARD = os.path.join(ROOT, "images", "inference", "build", "check-kernel-modules")
KERNEL = "6.12.0-55.el10.x86_64"
DRIVER = "580.105.08"


def module_bytes(vermagic, name, version=DRIVER):
    """An ELF64 relocatable object holding only .modinfo and .shstrtab, as modinfo reads a .ko."""
    modinfo = ("version=%s\0vermagic=%s SMP preempt mod_unload modversions \0name=%s\0license=Dual MIT/GPL\0"
               % (version, vermagic, name)).encode()
    names = b"\0.modinfo\0.shstrtab\0"
    at_modinfo = 64
    at_names = at_modinfo + len(modinfo)
    at_sections = (at_names + len(names) + 7) // 8 * 8
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, at_sections, 0, 64, 0, 0, 64, 3, 2)
    body = header + modinfo + names
    body += bytes(at_sections - len(body))
    sections = bytes(64)
    sections += struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, at_modinfo, len(modinfo), 0, 0, 1, 0)
    sections += struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, at_names, len(names), 0, 0, 1, 0)
    return body + sections


def kernel(root, version, modules=(), built_for=None, compress=True, driver=DRIVER):
    folder = root / version
    (folder / "extra").mkdir(parents=True)
    (folder / "vmlinuz").write_bytes(b"kernel")
    for name in modules:
        data = module_bytes(built_for or version, name, driver)
        if compress:
            (folder / "extra" / (name + ".ko.xz")).write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32))
        else:
            (folder / "extra" / (name + ".ko")).write_bytes(data)


def guard(root, *modules):
    env = dict(os.environ, RHOIM_MODULES_ROOT=str(root), PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    return subprocess.run([GUARD, *modules], env=env, capture_output=True, text=True, check=False)


@pytest.fixture(autouse=True)
def modinfo():
    if not (shutil.which("modinfo") or os.path.exists("/usr/sbin/modinfo") or os.path.exists("/sbin/modinfo")):
        pytest.fail("modinfo (kmod) is missing: make setup installs it")


@pytest.mark.parametrize("compress", [True, False])
def test_modules_built_for_the_one_kernel_pass(tmp_path, compress):
    kernel(tmp_path, KERNEL, ["nvidia", "nvidia-uvm"], compress=compress)
    proc = guard(tmp_path, "nvidia", "nvidia-uvm")
    assert proc.returncode == 0, proc.stderr
    assert "nvidia nvidia-uvm built for kernel %s" % KERNEL in proc.stdout


def test_two_kernels_fail(tmp_path):
    kernel(tmp_path, KERNEL, ["nvidia"])
    kernel(tmp_path, "6.12.0-60.el10.x86_64")
    proc = guard(tmp_path, "nvidia")
    assert proc.returncode == 1
    assert "the image has 2 kernels" in proc.stderr and KERNEL in proc.stderr and "6.12.0-60.el10.x86_64" in proc.stderr


def test_no_kernel_fails(tmp_path):
    (tmp_path / "6.1.0-extra-only" / "extra").mkdir(parents=True)
    proc = guard(tmp_path, "nvidia")
    assert proc.returncode == 1 and "the image has 0 kernels" in proc.stderr


def test_a_module_built_for_another_kernel_fails(tmp_path):
    kernel(tmp_path, KERNEL, ["nvidia"], built_for="6.12.0-40.el10.x86_64")
    proc = guard(tmp_path, "nvidia")
    assert proc.returncode == 1
    assert "is built for kernel 6.12.0-40.el10.x86_64, not the image's kernel %s" % KERNEL in proc.stderr


def test_a_module_only_in_another_kernels_folder_fails_and_says_where_it_is(tmp_path):
    kernel(tmp_path, KERNEL)
    stray = tmp_path / "6.12.0-40.el10.x86_64" / "extra"
    stray.mkdir(parents=True)
    (stray / "nvidia.ko").write_bytes(module_bytes("6.12.0-40.el10.x86_64", "nvidia"))
    proc = guard(tmp_path, "nvidia")
    assert proc.returncode == 1
    assert "no nvidia module for the image's kernel %s" % KERNEL in proc.stderr
    assert "6.12.0-40.el10.x86_64/extra/nvidia.ko" in proc.stderr


def test_a_module_modinfo_cannot_read_fails(tmp_path):
    kernel(tmp_path, KERNEL)
    (tmp_path / KERNEL / "extra" / "nvidia.ko").write_bytes(b"not an ELF object")
    proc = guard(tmp_path, "nvidia")
    assert proc.returncode == 1 and "modinfo cannot read" in proc.stderr


def test_the_pinned_driver_version_passes(tmp_path):
    kernel(tmp_path, KERNEL, ["nvidia", "nvidia-uvm"])
    proc = guard(tmp_path, "--version", DRIVER, "nvidia", "nvidia-uvm")
    assert proc.returncode == 0, proc.stderr
    assert "built for kernel %s, driver %s" % (KERNEL, DRIVER) in proc.stdout


def test_a_module_of_another_driver_version_fails(tmp_path):
    kernel(tmp_path, KERNEL, ["nvidia"], driver="575.57.08")
    proc = guard(tmp_path, "--version", DRIVER, "nvidia")
    assert proc.returncode == 1
    assert "is driver 575.57.08, not the pinned driver %s" % DRIVER in proc.stderr
