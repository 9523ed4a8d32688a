"""The kickstarts rhoim.inference.bootc_host writes (entry point kickstart), checked with pykickstart's
ksvalidator for each target, their %post and %pre bodies with bash -n (which ksvalidator does not check), and
the install settings it refuses. One ansible-playbook run renders every case; a refused case records its message."""

import os
import subprocess
import sys

import pytest
import yaml
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DIGEST = "sha256:" + "e3" * 32
IMAGE = "registry.example.com:5000/rhoim/inference@" + DIGEST
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM2e2mMb8YxgDmWvQmjJ4hd9GzY8X2x3nXVbQh6N1Q7e ops@example"
AUTH_URL = "https://pull.example.com/fleet/auth.json"
VERSIONS = {"rhel9": "RHEL9", "rhel10": "RHEL10", "fedora": "F43"}

CASES = {
    "rhel9-digest": {"bootc_host_install_target": "rhel9"},
    "rhel9-tag-auth": {"bootc_host_install_target": "rhel9", "bootc_host_install_track": "tag",
                       "bootc_host_install_tag": "cpu", "bootc_host_install_auth_url": AUTH_URL},
    "rhel10-digest": {"bootc_host_install_target": "rhel10"},
    "rhel10-tag-auth": {"bootc_host_install_target": "rhel10", "bootc_host_install_track": "tag",
                        "bootc_host_install_tag": "cpu", "bootc_host_install_auth_url": AUTH_URL},
    "fedora-tag": {"bootc_host_install_target": "fedora", "bootc_host_install_track": "tag", "bootc_host_install_tag": "1.1"},
    "signed-rhel9": {"bootc_host_install_target": "rhel9", "bootc_host_enforce_signature_policy": True},
}
REFUSED = {
    "by-tag": ({"bootc_host_install_image": "registry.example.com/rhoim/inference:cpu"}, "is not an image by digest"),
    "tag-missing": ({"bootc_host_install_track": "tag"}, "set bootc_host_install_tag"),
    "target": ({"bootc_host_install_target": "rhel8"}, "bootc_host_install_target must be one of: rhel9, rhel10, fedora, got: rhel8"),
    "http": ({"bootc_host_install_auth_url": "http://pull.example.com/auth.json"}, "must be an https:// URL"),
    "userinfo": ({"bootc_host_install_auth_url": "https://robot:Pa55-kick-5eed@pull.example.com/a.json"},
                 "with no credentials in it"),
    "private-key": ({"bootc_host_install_ssh_keys": ["-----BEGIN OPENSSH PRIVATE KEY-----"]}, "holds a private key"),
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kickstarts")
    tasks = []
    for name, case in list(CASES.items()) + [(n, refused[0]) for n, refused in REFUSED.items()]:
        values = {"bootc_host_install_image": IMAGE, "bootc_host_install_ssh_keys": [KEY],
                  "bootc_host_kickstart_dest": "%s/%s.ks" % (folder, name)}
        values.update(case)
        tasks.append({"name": name, "block": [{"name": "Render " + name, "ansible.builtin.include_role": {
            "name": "rhoim.inference.bootc_host", "tasks_from": "kickstart"}, "vars": values}],
            "rescue": [{"name": "Keep the refusal of " + name, "ansible.builtin.copy": {
                "content": "{{ ansible_failed_result.msg }}", "dest": "%s/%s.refused" % (folder, name), "mode": "0600"}}]})
    playbook = folder / "kickstarts.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Kickstarts", "hosts": "localhost", "gather_facts": False,
                                         "connection": "local", "tasks": tasks}], sort_keys=False))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           "-e", "ansible_python_interpreter=" + sys.executable, str(playbook)],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return folder, proc.stdout


def parse(path, target):
    parser = KickstartParser(makeVersion(VERSIONS[target]))
    parser.readKickstart(str(path))
    return parser.handler


@pytest.mark.parametrize("name", sorted(CASES))
def test_kickstart_is_valid_for_its_target(rendered, name):
    folder, _out = rendered
    target = CASES[name]["bootc_host_install_target"]
    path = folder / (name + ".ks")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ksvalidator"), "-v", VERSIONS[target], str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    handler = parse(path, target)
    for script in handler.scripts:
        check = subprocess.run(["bash", "-n"], input=script.script, capture_output=True, text=True, check=False)
        assert check.returncode == 0, "%s: %s\n%s" % (name, check.stderr, script.script)
    assert handler.rootpw.lock
    assert [k.key for k in handler.sshkey.sshUserList] == [KEY]
    assert "PRIVATE KEY" not in path.read_text()


def test_rhel9_installs_by_digest_with_ostreecontainer_and_completes_with_bootc(rendered):
    folder, _out = rendered
    handler = parse(folder / "rhel9-digest.ks", "rhel9")
    assert handler.ostreecontainer.url == IMAGE and handler.ostreecontainer.transport == "registry"
    assert handler.ostreecontainer.noSignatureVerification
    assert not parse(folder / "signed-rhel9.ks", "rhel9").ostreecontainer.noSignatureVerification
    posts = [s.script for s in handler.scripts if s.type == 1 and s.inChroot]
    assert any("bootc install ensure-completion" in s for s in posts)
    # Pinned: no switch to a tag.
    assert "bootc switch" not in (folder / "rhel9-digest.ks").read_text()
    tagged = (folder / "rhel9-tag-auth.ks").read_text()
    assert "bootc switch --mutate-in-place --transport registry registry.example.com:5000/rhoim/inference:cpu" in tagged


def test_rhel10_and_fedora_install_with_the_bootc_command_and_track_what_was_asked(rendered):
    folder, _out = rendered
    pinned = parse(folder / "rhel10-digest.ks", "rhel10").bootc
    assert pinned.sourceImgRef == "registry:" + IMAGE and pinned.targetImgRef == IMAGE
    tagged = parse(folder / "fedora-tag.ks", "fedora").bootc
    assert tagged.sourceImgRef == "registry:" + IMAGE
    assert tagged.targetImgRef == "registry.example.com:5000/rhoim/inference:1.1"
    # Anaconda runs bootc itself here: no ensure-completion.
    assert "ensure-completion" not in (folder / "rhel10-digest.ks").read_text()


def test_the_pull_secret_is_fetched_over_https_and_left_for_bootc(rendered):
    folder, _out = rendered
    for name, target in (("rhel9-tag-auth", "rhel9"), ("rhel10-tag-auth", "rhel10")):
        handler = parse(folder / (name + ".ks"), target)
        pre = [s.script for s in handler.scripts if s.type == 0]
        assert len(pre) == 1 and "--proto '=https'" in pre[0] and AUTH_URL in pre[0] and "/etc/ostree/auth.json" in pre[0]
        nochroot = [s.script for s in handler.scripts if s.type == 1 and not s.inChroot]
        assert any("install -D -m 0600 /etc/ostree/auth.json /mnt/sysimage/etc/ostree/auth.json" in s for s in nochroot)
    assert "%pre" not in (folder / "rhel10-digest.ks").read_text()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_install_settings_are_refused_by_name(rendered, name):
    folder, out = rendered
    assert not (folder / (name + ".ks")).exists()
    message = (folder / (name + ".refused")).read_text()
    assert REFUSED[name][1] in message, message
    assert "Pa55-kick-5eed" not in message and "Pa55-kick-5eed" not in out
