"""The example inventory in docs/inventory: it loads with its vault password, the deploy stages accept
its settings (their argument specs and their check entry points), as deploy.yml's first play would, and the
build stages accept the build host's."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
INVENTORY = os.path.join(ROOT, "docs", "inventory")
BIN = os.path.dirname(sys.executable)

CHECK = """
- name: Check the example's settings
  hosts: inference
  gather_facts: false
  tasks:
    - name: Check the models' settings
      ansible.builtin.include_role:
        name: rhoim.inference.model
        tasks_from: check
    - name: Check the serving settings
      ansible.builtin.include_role:
        name: rhoim.inference.vllm_service
        tasks_from: check
"""

# The first play of rhoim.inference.build, on the build host.
BUILD_CHECK = """
- name: Check the build host's settings
  hosts: image_builders
  gather_facts: false
  tasks:
    - name: Check the image's settings
      ansible.builtin.include_role:
        name: rhoim.inference.bootc_image
        tasks_from: check
    - name: Check the disks' settings
      ansible.builtin.include_role:
        name: rhoim.inference.disk_image
        tasks_from: check
"""


def env():
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"), ANSIBLE_FORCE_COLOR="false")


def password_file(tmp_path):
    path = tmp_path / "vault-pass"
    path.write_text("rhoim-example\n")
    path.chmod(0o600)
    return str(path)


def test_the_example_inventory_loads_with_its_vault(tmp_path):
    out = subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", INVENTORY, "--vault-password-file", password_file(tmp_path),
                          "--host", "gpu-02.example.com"], env=env(), capture_output=True, text=True, check=True).stdout
    hostvars = json.loads(out)
    assert hostvars["ansible_become"] is True
    assert hostvars["host_serving"][0]["name"] == "llama-8b"


def test_both_stages_accept_the_examples_settings(tmp_path):
    # As on the booted hosts the example is for (an image build refuses API keys); the serve stage's
    # port check then runs here, on the controller (ss, from iproute2).
    playbook = tmp_path / "check.yml"
    playbook.write_text(CHECK)
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", INVENTORY, "--vault-password-file", password_file(tmp_path),
                           "-e", "ansible_connection=local", "-e", "ansible_python_interpreter=%s" % sys.executable,
                           "-e", "vllm_service_booted=true", str(playbook)],
                          env=env(), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "gpu-02.example.com         : ok=" in proc.stdout
    # Nothing secret reaches the output.
    for secret in ("example-granite-key", "example-llama-key", "example-metrics-token", "hf_exampleToken"):
        assert secret not in proc.stdout + proc.stderr


def test_the_build_stages_accept_the_build_hosts_settings(tmp_path):
    playbook = tmp_path / "build-check.yml"
    playbook.write_text(BUILD_CHECK)
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-v", "-i", INVENTORY, "--vault-password-file", password_file(tmp_path),
                           "-e", "ansible_connection=local", "-e", "ansible_python_interpreter=%s" % sys.executable,
                           str(playbook)], env=env(), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "build-01.example.com       : ok=" in proc.stdout, proc.stdout[-2000:]
    assert "the disk settings for qcow2 are valid (nothing pulled or built)" in proc.stdout
    # Nothing of the inference hosts' secrets reaches the builder.
    out = subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", INVENTORY, "--vault-password-file", password_file(tmp_path),
                          "--host", "build-01.example.com"], env=env(), capture_output=True, text=True, check=True).stdout
    hostvars = json.loads(out)
    assert hostvars["disk_image_types"] == ["qcow2"]
    assert not [name for name in hostvars if name.startswith(("vault_", "vllm_service_", "model_"))]
