"""The other install paths of rhoim.inference.bootc_host, as far as they run here: the to-existing-root command
line (the role's own expression, evaluated by Ansible) against the form bootc's reinstall tool runs, and the
libvirt domain (entry point vm_domain) against libvirt's schema with virt-xml-validate."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
IMAGE = "registry.example.com/rhoim/inference@sha256:" + "e3" * 32
# crates/system-reinstall-bootc/src/podman.rs (bootc 1.16): the podman run that system-reinstall-bootc makes.
UPSTREAM = ["podman", "run", "--privileged", "--pid=host", "--user=root:root",
            "-v", "/var/lib/containers:/var/lib/containers", "-v", "/dev:/dev",
            "--security-opt", "label=type:unconfined_t", "-v", "/:/target",
            "-v", "KEYS:/bootc_authorized_ssh_keys/root",
            IMAGE, "bootc", "install", "to-existing-root", "--acknowledge-destructive", "--skip-fetch-check",
            "--cleanup", "--root-ssh-authorized-keys", "/bootc_authorized_ssh_keys/root"]


def playbook(tmp_path, plays):
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           "-e", "ansible_python_interpreter=" + sys.executable, str(path)],
                          capture_output=True, text=True, env=env, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def argvs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reinstall")
    cases = {"new": ("bootc 1.16.9", False, IMAGE), "old": ("bootc 1.1.6", False, IMAGE),
             "signed-tag": ("bootc 1.1.8", True, "registry.example.com/rhoim/inference:cpu")}
    tasks = [{"name": "Evaluate " + name, "ansible.builtin.copy": {
        "content": "{{ __bootc_host_install_argv | to_json }}", "dest": "%s/%s.json" % (folder, name), "mode": "0600"},
        "vars": {"__bootc_host_install_bootc": {"stdout": version}, "bootc_host_enforce_signature_policy": signed,
                 "__bootc_host_install_track_ref": track, "bootc_host_install_image": IMAGE}}
        for name, (version, signed, track) in cases.items()]
    rc, out = playbook(folder, [{"name": "Evaluate the install command", "hosts": "localhost", "connection": "local",
                                 "gather_facts": False,
                                 "vars_files": [os.path.join(ROOT, "roles", "bootc_host", "vars", "main.yml")],
                                 "tasks": tasks}])
    assert rc == 0, out[-3000:]
    return {name: json.loads((folder / (name + ".json")).read_text()) for name in cases}


def test_to_existing_root_is_run_as_bootc_reinstall_tool_runs_it(argvs):
    argv = argvs["new"]
    # --rm (nothing left behind) and --target-imgref (what the host tracks) are the only additions.
    assert argv[:3] == ["podman", "run", "--rm"]
    expected = [a.replace("KEYS", "/root/.rhoim-install-authorized-keys") for a in UPSTREAM]
    assert [a for a in argv if a != "--rm"][:len(UPSTREAM)] == expected
    assert argv[len(UPSTREAM) + 1:] == ["--target-imgref", IMAGE]
    assert "-it" not in argv and "--interactive" not in argv


def test_cleanup_only_where_the_image_has_it_and_the_signature_policy_when_asked(argvs):
    assert "--cleanup" not in argvs["old"] and "--cleanup" in argvs["signed-tag"]
    assert argvs["signed-tag"][-3:] == ["--target-imgref", "registry.example.com/rhoim/inference:cpu",
                                        "--enforce-container-sigpolicy"]
    assert "--enforce-container-sigpolicy" not in argvs["new"]


@pytest.mark.parametrize("domain_type, gpus", [("qemu", []), ("kvm", ["0000:17:00.0", "0000:65:00.1"])])
def test_vm_domain_is_valid_for_libvirt(tmp_path, domain_type, gpus):
    dest = tmp_path / "vm.xml"
    rc, out = playbook(tmp_path, [{"name": "Render the domain", "hosts": "localhost", "connection": "local",
                                   "gather_facts": False, "tasks": [{"name": "Render", "ansible.builtin.include_role": {
                                       "name": "rhoim.inference.bootc_host", "tasks_from": "vm_domain"},
                                       "vars": {"bootc_host_vm_name": "gpu-vm-01", "bootc_host_vm_disk": "/srv/disks/disk.qcow2",
                                                "bootc_host_vm_images_dir": str(tmp_path), "bootc_host_vm_domain_type": domain_type,
                                                "bootc_host_vm_gpus": gpus, "bootc_host_vm_domain_dest": str(dest)}}]}])
    assert rc == 0, out[-3000:]
    check = subprocess.run(["virt-xml-validate", str(dest), "domain"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    domain = ET.parse(dest).getroot()  # noqa: S314 - the role's own output, just rendered
    assert domain.get("type") == domain_type
    assert domain.find("devices/disk/source").get("file") == str(tmp_path / "gpu-vm-01.qcow2")
    assert domain.find("devices/interface/mac").get("address").startswith("52:54:00:")
    addresses = [(a.get("bus"), a.get("function")) for a in domain.findall("devices/hostdev/source/address")]
    assert addresses == [("0x" + g[5:7], "0x" + g[-1]) for g in gpus]
    assert (domain.find("cpu") is not None) == (domain_type == "kvm")


def test_vm_settings_are_refused_by_name(tmp_path):
    rc, out = playbook(tmp_path, [{"name": "Render the domain", "hosts": "localhost", "connection": "local",
                                   "gather_facts": False, "tasks": [{"name": "Render", "ansible.builtin.include_role": {
                                       "name": "rhoim.inference.bootc_host", "tasks_from": "vm_domain"},
                                       "vars": {"bootc_host_vm_name": "gpu-vm-01", "bootc_host_vm_disk": "/srv/disks/disk.raw"}}]}])
    assert rc != 0 and "bootc_host_vm_disk '/srv/disks/disk.raw' is not the absolute path of a qcow2 disk" in out
