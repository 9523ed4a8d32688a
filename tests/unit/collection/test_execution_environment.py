"""execution-environment.yml: ansible-builder makes its build context (offline: the base image is not
pulled), the context installs this collection's tarball, and what it pins is what the collection is tested
with. The image build itself needs the base image from a registry this machine cannot reach."""

import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.path.dirname(sys.executable)


def load(path):
    with open(os.path.join(ROOT, path)) as stream:
        return yaml.safe_load(stream)


def pins():
    with open(os.path.join(ROOT, "tools", "requirements.txt")) as stream:
        return {line.split("==")[0]: line.strip() for line in stream if "==" in line and not line.startswith("#")}


def test_the_pins_are_the_tested_versions():
    ee = load("execution-environment.yml")
    version = load("galaxy.yml")["version"]
    assert ee["dependencies"]["ansible_core"]["package_pip"] == pins()["ansible-core"]
    assert ee["dependencies"]["ansible_runner"]["package_pip"] == pins()["ansible-runner"]
    tarball = "rhoim-inference-%s.tar.gz" % version
    assert ee["additional_build_files"] == [{"src": "build/dist/" + tarball, "dest": "collections"}]
    assert ee["dependencies"]["galaxy"]["collections"] == [{"name": "collections/" + tarball, "type": "file"}]


def test_the_build_context_installs_the_collection(tmp_path):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "none"), ANSIBLE_FORCE_COLOR="false")
    # Where `make build` writes the tarball, next to a copy of the definition.
    shutil.copy(os.path.join(ROOT, "execution-environment.yml"), tmp_path)
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path / "build" / "dist"), ROOT],
                   env=env, check=True, capture_output=True)
    proc = subprocess.run([os.path.join(BIN, "ansible-builder"), "create", "-f", str(tmp_path / "execution-environment.yml"),
                           "-c", str(tmp_path / "context")], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    context = tmp_path / "context"
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream10"' in containerfile
    assert 'ARG ANSIBLE_INSTALL_REFS="%s %s"' % (pins()["ansible-core"], pins()["ansible-runner"]) in containerfile
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in containerfile
    assert "openssh-clients [platform:rpm]" in (context / "_build" / "bindep.txt").read_text()
    # The galaxy stage's own step, from its working folder (/build there): the tarball installs.
    installed = tmp_path / "collections"
    proc = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--no-deps", "-r", "requirements.yml",
                           "-p", str(installed)], cwd=context / "_build", env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    collection = installed / "ansible_collections" / "rhoim" / "inference"
    assert (collection / "MANIFEST.json").is_file()
    # The job templates' playbooks, from the installed collection.
    for playbook in ("rhoim.inference.site", "rhoim.inference.build", "rhoim.inference.deploy", "rhoim.inference.upgrade"):
        proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "--syntax-check", "-i", "localhost,", playbook],
                              env=dict(env, ANSIBLE_COLLECTIONS_PATH=str(installed)),
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, playbook + ": " + proc.stdout + proc.stderr
