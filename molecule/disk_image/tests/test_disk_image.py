"""The disk stage: artifacts kept by image digest and requested type with their sums and manifest; a second
run builds nothing and says so; the disks boot (QEMU, TCG) into the image's units with a key made at each
host's first boot; the installer ISO's kickstart is valid for RHEL 9, RHEL 10 and Fedora 43; bad input is
refused by name and loses no artifact."""

import glob
import hashlib
import json
import os
import re
import subprocess
import sys

import ansible_runner
import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")
EPHEMERAL = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/tmp")
sys.path.insert(0, os.path.join(PROJECT, "tests", "support"))
import qemu_vm  # noqa: E402  (test support, not a package)
from scenario import run_playbook  # noqa: E402

CONVERGE = os.path.join(PROJECT, "molecule", "disk_image", "converge.yml")
BUILD = os.path.join(PROJECT, "molecule", "disk_image", "build.yml")
VM = os.path.join(PROJECT, "molecule", "disk_image", "vm.yml")
INSTALLED = os.path.join(PROJECT, "molecule", "disk_image", "installed.yml")
ARTIFACTS = os.path.join(EPHEMERAL, "disks")
BUILDER = "localhost/rhoim-image-builder-standin:current"
REGISTRY = "127.0.0.1:15003"
KEY_FILE = "/etc/rhoim/credentials/tiny.api_key"
SECRET = "Pa55-disk-" + hashlib.sha256(b"rhoim-disk-image").hexdigest()[:12]


def run(*argv, check=True, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if check:
        assert proc.returncode == 0, "%s: %s" % (" ".join(argv[:4]), (proc.stderr or proc.stdout)[-2000:])
    return proc


@pytest.fixture(scope="module")
def pushed():
    with open(os.path.join(EPHEMERAL, "pushed.json")) as stream:
        return json.load(stream)


@pytest.fixture(scope="module")
def folder(pushed):
    return os.path.join(ARTIFACTS, pushed["digest"].replace(":", "-"))


@pytest.fixture(scope="module")
def manifest(folder):
    with open(os.path.join(folder, "manifest.json")) as stream:
        return json.load(stream)


@pytest.fixture(scope="module")
def boot_files(pushed, tmp_path_factory):
    """The image's kernel and initramfs (the stand-in builder writes no boot loader)."""
    out = tmp_path_factory.mktemp("boot")
    ctr = run("podman", "create", pushed["ref"]).stdout.strip()
    try:
        version = run("podman", "run", "--rm", "--entrypoint", "ls", pushed["ref"], "/usr/lib/modules").stdout.split()[0]
        for name in ("vmlinuz", "initramfs.img"):
            run("podman", "cp", "%s:/usr/lib/modules/%s/%s" % (ctr, version, name), str(out / name))
    finally:
        run("podman", "rm", ctr)
    return str(out / "vmlinuz"), str(out / "initramfs.img")


def build(extra, *args):
    return run_playbook(BUILD, *args, extra_vars=dict({"disk_image_artifacts_dir": ARTIFACTS}, **extra))


def sha256(path):
    return run("sha256sum", path).stdout.split()[0]


def test_artifacts_by_digest_and_type(pushed, folder, manifest):
    assert manifest["digest"] == pushed["digest"]
    assert manifest["image"] == pushed["ref"].split("@")[0]
    assert sorted(manifest["artifacts"]) == ["ami", "anaconda-iso", "qcow2", "raw"]
    expected = {"qcow2": "qcow2/disk.qcow2", "raw": "raw/disk.raw", "ami": "ami/disk.raw",
                "anaconda-iso": "anaconda-iso/install.iso"}
    for image_type, rel in expected.items():
        entry = manifest["artifacts"][image_type]
        assert entry["path"] == rel
        assert entry["size"] == os.path.getsize(os.path.join(folder, rel))
        assert entry["builder"] == BUILDER
        assert re.match(r"^sha256:[0-9a-f]{64}$", entry["config"])
    # One config for the three disks, another for the ISO (its kickstart).
    disks = {manifest["artifacts"][t]["config"] for t in ("qcow2", "raw", "ami")}
    assert len(disks) == 1 and manifest["artifacts"]["anaconda-iso"]["config"] not in disks
    # raw and ami are the same disk, kept under each requested type.
    assert manifest["artifacts"]["raw"]["sha256"] == manifest["artifacts"]["ami"]["sha256"]
    with open(os.path.join(folder, "qcow2/disk.qcow2"), "rb") as stream:
        assert stream.read(4) == b"QFI\xfb"
    check = run("sha256sum", "-c", "SHA256SUMS", cwd=folder)
    assert check.stdout.count(": OK") == 4
    assert not glob.glob(os.path.join(ARTIFACTS, ".build-*")), "the build's work folder was left behind"


def test_second_run_builds_nothing_and_says_so(folder, manifest):
    before = {t: os.stat(os.path.join(folder, e["path"])).st_mtime_ns for t, e in manifest["artifacts"].items()}
    rc, out = run_playbook(CONVERGE)
    assert rc == 0, out[-3000:]
    # The build stage finds its image in the registry (prepare pushed it with the same settings): no build.
    assert re.search(r"rhoim-disk-builder\s*:.*changed=0", out), out[-2000:]
    assert re.search(r"localhost\s*:.*changed=0", out), out[-2000:]
    assert "kept qcow2, raw, ami (already built from sha256:" in out
    assert "kept anaconda-iso (already built from sha256:" in out
    after = {t: os.stat(os.path.join(folder, e["path"])).st_mtime_ns for t, e in manifest["artifacts"].items()}
    assert after == before


def test_the_build_stage_hands_its_digest_to_the_next_workflow_job(tmp_path, pushed):
    """As an AWX / AAP job runs it (ansible-runner): the stats that a workflow hands to its next job as extra vars
    carry the digest just pushed, for an upgrade job's bootc_host_image."""
    result = ansible_runner.run(
        private_data_dir=str(tmp_path), project_dir=PROJECT, playbook=os.path.join(PROJECT, "playbooks", "build.yml"),
        inventory=os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]), quiet=True,
        envvars={"ANSIBLE_COLLECTIONS_PATH": os.path.join(PROJECT, "build", "collections")})
    assert result.status == "successful", result.stdout.read()[-3000:]
    stats = next(e for e in result.events if e["event"] == "playbook_on_stats")["event_data"]
    assert stats["artifact_data"] == {"rhoim_image_refs": {"rhoim-disk-builder": pushed["ref"]}, "bootc_host_image": pushed["ref"]}
    assert stats["changed"] == {}, "the image and its disks were there already: %s" % stats["changed"]


def test_a_mistake_in_the_disk_settings_stops_the_build_stage_before_the_image_build(tmp_path):
    rc, out = run_playbook(os.path.join(PROJECT, "playbooks", "build.yml"), extra_vars={
        "bootc_image_tag": "never-built", "disk_image_artifacts_dir": str(tmp_path / "disks"),
        "disk_image_filesystems": [{"mountpoint": "/var", "minsize": "2 GiB"}]})
    assert rc != 0
    assert "mountpoint '/var' cannot be sized here" in out and "Check the disks' settings" in out, out[-3000:]
    assert "TASK [Build and push the inference image]" not in out
    assert run("podman", "image", "exists", "%s/rhoim/inference:never-built" % REGISTRY, check=False).returncode != 0
    assert not os.path.exists(tmp_path / "disks")


def test_the_build_stage_in_check_mode_builds_no_image_and_no_disk(tmp_path):
    """An image the registry does not have yet has no digest: its disks wait for it, and nothing is written."""
    rc, out = run_playbook(os.path.join(PROJECT, "playbooks", "build.yml"), "--check", extra_vars={
        "bootc_image_tag": "not-pushed", "disk_image_artifacts_dir": str(tmp_path / "disks")})
    assert rc == 0, out[-3000:]
    assert "%s/rhoim/inference:not-pushed would be built" % REGISTRY in out
    assert "its disks are built from the digest it gets when it is pushed" in out
    assert not os.path.exists(tmp_path / "disks")
    assert run("podman", "image", "exists", "%s/rhoim/inference:not-pushed" % REGISTRY, check=False).returncode != 0


def test_check_mode_builds_nothing(tmp_path):
    rc, out = run_playbook(BUILD, "--check", extra_vars={
        "disk_image_image": "%s/rhoim/inference:slim" % REGISTRY, "disk_image_types": ["vmdk"],
        "disk_image_artifacts_dir": str(tmp_path / "disks")})
    assert rc == 0, out[-3000:]
    assert "would build vmdk" in out
    assert not os.path.exists(tmp_path / "disks")


def assert_installed(vm, pushed):
    inventory = os.path.join(EPHEMERAL, "vm-inventory.yml")
    with open(inventory, "w") as stream:
        json.dump({"inference": {"hosts": {"disk-vm": {
            "ansible_host": "127.0.0.1", "ansible_port": vm.port, "ansible_user": "root",
            "ansible_ssh_private_key_file": vm.key, "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_extra_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}}}}, stream)
    rc, out = run_playbook(INSTALLED, "-i", inventory, extra_vars={"bootc_host_install_image": pushed["ref"]})
    assert rc == 0, out[-3000:]
    other = pushed["ref"].split("@")[0] + "@sha256:" + "0" * 64
    rc, out = run_playbook(INSTALLED, "-i", inventory, extra_vars={"bootc_host_install_image": other})
    assert rc != 0 and "disk-vm boots %s, not sha256:%s" % (pushed["digest"], "0" * 64) in out, out[-2000:]


def test_qcow2_and_raw_boot_with_keys_of_their_own(folder, manifest, boot_files, pushed):
    keys = {}
    for image_type, fmt in (("qcow2", "qcow2"), ("raw", "raw")):
        disk = os.path.join(folder, manifest["artifacts"][image_type]["path"])
        with qemu_vm.VM(disk, *boot_files, fmt=fmt) as vm:
            state = vm.wait_for_ssh()
            failed = vm.ssh("systemctl --failed --no-legend --plain")
            assert state == "running", "systemd is %s; failed units: %s" % (state, failed)
            assert vm.ssh("systemctl is-active multi-user.target") == "active"
            # The image's units, enabled in the image, on the disk.
            assert vm.ssh("systemctl is-enabled rhoim-vllm@tiny.service rhoim-ssh-host-keys.service") == "enabled\nenabled"
            # The first boot made the API key (the image has none) and the machine ID.
            assert vm.ssh("stat -c '%a %U' " + KEY_FILE) == "600 root"
            keys[image_type] = vm.ssh("sha256sum " + KEY_FILE).split()[0]
            assert len(vm.ssh("cat /etc/machine-id")) == 32
            # The models' folder is where the unit's config points, made at boot (tmpfiles.d).
            model = vm.ssh("sed -n 's/^model: *//p' /etc/rhoim/vllm/tiny.yaml").strip("'\"")
            assert model.startswith("/var/lib/rhoim/models/tiny/"), model
            assert vm.ssh("stat -c '%a %U %G' /var/lib/rhoim/models") == "750 root rhoim"
            # The config's users: key logins, the groups asked for.
            assert "sudo" in vm.ssh("id -nG", user="ops").split()
            if image_type == "qcow2":
                # The install paths' last check, over SSH as Ansible reaches hosts: bootc reports the image's digest.
                assert_installed(vm, pushed)
    assert keys["qcow2"] != keys["raw"], "two hosts from the same image have the same API key"
    # Booting wrote nothing into the artifacts.
    for image_type in ("qcow2", "raw"):
        entry = manifest["artifacts"][image_type]
        assert sha256(os.path.join(folder, entry["path"])) == entry["sha256"]


def test_installer_kickstart_is_valid(folder, manifest, tmp_path):
    iso_dir = os.path.dirname(os.path.join(folder, manifest["artifacts"]["anaconda-iso"]["path"]))
    kickstart = run("podman", "run", "--rm", "-v", "%s:/iso:ro" % iso_dir, "--entrypoint", "isoinfo", BUILDER,
                    "-i", "/iso/install.iso", "-R", "-x", "/osbuild.ks").stdout
    assert re.search(r"^ostreecontainer --url=\S+ --transport=oci", kickstart, re.M)
    assert "autopart --type=plain --nohome" in kickstart and "rootpw --lock" in kickstart
    path = tmp_path / "osbuild.ks"
    path.write_text(kickstart)
    ksvalidator = os.path.join(os.path.dirname(sys.executable), "ksvalidator")
    for version in ("RHEL9", "RHEL10", "F43"):
        proc = run(ksvalidator, "-v", version, str(path), check=False)
        assert proc.returncode == 0, "%s: %s" % (version, proc.stdout + proc.stderr)


def test_changed_config_rebuilds_with_the_kernel_argument_warning(pushed, folder, manifest):
    rc, out = build({"disk_image_image": pushed["ref"], "disk_image_types": ["qcow2"],
                     "disk_image_kernel_append": "rhoim.test=1"})
    assert rc == 0, out[-3000:]
    assert "built qcow2" in out
    assert "/usr/lib/bootc/kargs.d" in out and "[WARNING]" in out
    with open(os.path.join(folder, "manifest.json")) as stream:
        now = json.load(stream)["artifacts"]
    assert now["qcow2"]["config"] != manifest["artifacts"]["qcow2"]["config"]
    assert now["raw"] == manifest["artifacts"]["raw"], "a type not asked for changed"
    assert run("sha256sum", "-c", "SHA256SUMS", cwd=folder).returncode == 0


@pytest.mark.parametrize("extra, says", [
    ({"disk_image_types": ["qcow3"]}, "disk_image_types: qcow3 is not a type"),
    ({"disk_image_types": ["qcow2", "anaconda-iso"]}, "mixes disk types (qcow2) and installer types (anaconda-iso)"),
    ({"disk_image_users": [{"name": "ops", "password": SECRET}]}, "disk_image_users: ops have a password"),
    ({"disk_image_users": [{"name": "ops", "key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----"}]},
     "key is a private key"),
    ({"disk_image_kickstart": "text\n"}, "disk_image_kickstart applies to installer types"),
    ({"disk_image_types": ["anaconda-iso"], "disk_image_kickstart": "text\nrootpw --plaintext %s\n" % SECRET},
     "disk_image_kickstart line 2 sets a root password"),
    ({"disk_image_filesystems": [{"mountpoint": "/var", "minsize": "10 GiB"}]}, "mountpoint '/var' cannot be sized"),
    ({"disk_image_image": REGISTRY + "/rhoim/no-such-image:1"}, "could not be pulled into local storage"),
    ({"disk_image_min_free_mb": 1 << 40}, "a disk build needs at least 1099511627776 MiB there"),
])
def test_bad_input_is_refused_by_name(pushed, folder, manifest, extra, says):
    values = {"disk_image_image": pushed["ref"], "disk_image_types": ["vmdk"]}
    values.update(extra)
    rc, out = build(values)
    assert rc != 0
    assert says in out, out[-3000:]
    assert SECRET not in out
    with open(os.path.join(folder, "manifest.json")) as stream:
        assert json.load(stream)["artifacts"].keys() == manifest["artifacts"].keys()


def test_failed_build_names_the_builder_and_keeps_the_artifact(pushed, folder):
    with open(os.path.join(folder, "manifest.json")) as stream:
        before = json.load(stream)["artifacts"]["qcow2"]
    # An image with no kernel: the builder fails, and its last lines say why.
    run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "containers-storage:localhost/rhoim-bootc-base:current",
        "docker://%s/rhoim/nokernel:1" % REGISTRY)
    rc, out = build({"disk_image_image": "%s/rhoim/nokernel:1" % REGISTRY, "disk_image_types": ["qcow2"]})
    assert rc != 0
    assert "bootc-image-builder failed (exit 1) building qcow2" in out
    assert "the image has no kernel" in out
    # A failed rebuild of an existing artifact (another config) keeps it as it was.
    rc, out = build({"disk_image_image": pushed["ref"], "disk_image_types": ["qcow2"],
                     "disk_image_builder_image": "localhost/rhoim-no-such-builder:1",
                     "disk_image_users": [{"name": "ops2", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA rhoim"}]})
    assert rc != 0 and "bootc-image-builder failed" in out
    with open(os.path.join(folder, "manifest.json")) as stream:
        assert json.load(stream)["artifacts"]["qcow2"] == before
    assert sha256(os.path.join(folder, before["path"])) == before["sha256"]
    assert not glob.glob(os.path.join(ARTIFACTS, ".build-*"))


def test_the_vm_path_defines_the_domain_in_a_real_libvirtd(folder, tmp_path):
    """A real libvirtd (started by prepare) defines the role's domain with community.libvirt; the stand-in disks
    have no boot loader, so it is not started here (the qcow2 boots under QEMU above)."""
    with open(os.path.join(folder, "manifest.json")) as stream:
        qcow2 = json.load(stream)["artifacts"]["qcow2"]
    disk = os.path.join(folder, qcow2["path"])
    rc, out = run_playbook(VM, extra_vars={
        "bootc_host_vm_name": "rhoim-disk-vm", "bootc_host_vm_disk": disk, "bootc_host_vm_images_dir": str(tmp_path),
        "bootc_host_vm_start": False, "bootc_host_vm_gpus": ["0000:17:00.0"]})
    try:
        assert rc == 0, out[-3000:]
        xml = run("virsh", "-c", "qemu:///system", "dumpxml", "--inactive", "rhoim-disk-vm").stdout
        assert "<domain type='qemu'>" in xml
        assert "<source file='%s/rhoim-disk-vm.qcow2'/>" % tmp_path in xml
        assert "<address domain='0x0000' bus='0x17' slot='0x00' function='0x0'/>" in xml
        assert run("virsh", "-c", "qemu:///system", "domstate", "rhoim-disk-vm").stdout.strip() == "shut off"
        info = json.loads(run("qemu-img", "info", "--output=json", str(tmp_path / "rhoim-disk-vm.qcow2")).stdout)
        assert info["backing-filename"] == disk and info["format"] == "qcow2"
    finally:
        run("virsh", "-c", "qemu:///system", "undefine", "rhoim-disk-vm", check=False)
    assert sha256(disk) == qcow2["sha256"]
