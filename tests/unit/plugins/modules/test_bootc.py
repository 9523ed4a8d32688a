"""rhoim.inference.bootc against the bootc stand-in (tests/support/bootc_standin.py) on PATH: switch, upgrade and
rollback with check mode, diff, the second run that changes nothing, a reboot between (the stand-in's `boot`,
what the harness runs), and the errors of a host that is not a bootc host or an image the registry lacks."""

import json
import os
import subprocess
import sys

import pytest
from ansible.module_utils import basic

from ansible_collections.rhoim.inference.plugins.modules import bootc
from module_harness import run_main

TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
STANDIN = os.path.join(TESTS, "support", "bootc_standin.py")
REPO = "registry.example.com/rhoim/inference"
OLD, NEW = REPO + ":cpu", REPO + ":cuda"
DIGEST_A, DIGEST_B, DIGEST_C = ("sha256:" + c * 64 for c in "abc")


class Host:
    """A bootc host as the stand-in keeps it: its state file and the registry's images."""

    def __init__(self, folder, monkeypatch):
        self.folder = folder
        self.state = str(folder / "state.json")
        self.images = str(folder / "images.json")
        bin_dir = folder / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "bootc"
        wrapper.write_text('#!/bin/sh\nexec "%s" "%s" "$@"\n' % (sys.executable, STANDIN))
        wrapper.chmod(0o755)
        monkeypatch.setenv("PATH", "%s:%s" % (bin_dir, os.environ.get("PATH", "")))
        monkeypatch.setenv("RHOIM_BOOTC_STATE", self.state)
        monkeypatch.setenv("RHOIM_BOOTC_IMAGES", self.images)
        monkeypatch.setenv("RHOIM_BOOTC_REBOOT_REQUIRED", str(folder / "reboot-required"))
        self.registry({OLD: DIGEST_A, NEW: DIGEST_B})

    def registry(self, images):
        with open(self.images, "w") as handle:
            json.dump({ref: {"digest": digest, "version": "1"} for ref, digest in images.items()}, handle)

    def install(self, image=OLD, digest=DIGEST_A):
        with open(self.state, "w") as handle:
            json.dump({"spec": None, "booted": {"image": image, "transport": "registry", "signature": None,
                                                "digest": digest, "version": "1"},
                       "staged": None, "rollback": None, "rollback_queued": False, "cached": None}, handle)

    def reboot(self):
        subprocess.run([sys.executable, STANDIN, "boot", self.state], check=True)

    def raw(self):
        with open(self.state) as handle:
            return handle.read()


@pytest.fixture
def host(tmp_path, monkeypatch):
    return Host(tmp_path, monkeypatch)


def call(args, check_mode=False, diff=False):
    return run_main(bootc.main, args, check_mode, diff)


def test_a_host_never_installed_from_an_image(host):
    e = call({})
    assert not e.failed and not e.result["changed"] and not e.result["is_bootc"] and e.result["booted"] is None
    e = call({"state": "switched", "image": NEW})
    assert e.failed and "not booted from a bootc image" in e.result["msg"]


def test_a_host_without_bootc(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, *a, **k: None)
    assert call({}).result["is_bootc"] is False
    e = call({"state": "upgraded"})
    assert e.failed and "bootc is not installed on this host" in e.result["msg"]


def test_status_returns_the_deployments(host):
    host.install()
    e = call({})
    assert not e.failed and not e.result["changed"]
    assert e.result["booted"]["digest"] == DIGEST_A and e.result["spec"]["image"] == OLD
    assert e.result["staged"] is None and not e.result["reboot_required"]


def test_switch_check_mode_then_real_then_again(host):
    host.install()
    before = host.raw()
    e = call({"state": "switched", "image": NEW}, check_mode=True)
    assert not e.failed and e.result["changed"] and host.raw() == before
    e = call({"state": "switched", "image": NEW}, diff=True)
    assert not e.failed and e.result["changed"], e.result
    assert e.result["staged"]["digest"] == DIGEST_B and e.result["reboot_required"]
    assert e.result["diff"]["before"]["staged"] is None and e.result["diff"]["after"]["staged"]["image"] == NEW
    # Staged already: bootc is not asked to switch again.
    e = call({"state": "switched", "image": NEW})
    assert not e.result["changed"] and "already" in e.result["msg"]
    host.reboot()
    e = call({"state": "switched", "image": NEW})
    assert not e.result["changed"] and e.result["booted"]["digest"] == DIGEST_B and e.result["rollback"]["digest"] == DIGEST_A


def test_switch_to_an_image_the_registry_lacks_fails_with_bootc_s_error(host):
    host.install()
    e = call({"state": "switched", "image": REPO + ":missing"})
    assert e.failed and "bootc switch failed (rc 1)" in e.result["msg"] and "manifest unknown" in e.result["msg"]
    assert call({}).result["staged"] is None


def test_upgrade_stages_a_new_digest_once(host):
    host.install()
    e = call({"state": "upgraded"})
    assert not e.result["changed"] and e.result["msg"] == "no newer image of %s" % OLD
    host.registry({OLD: DIGEST_C, NEW: DIGEST_B})
    before = json.loads(host.raw())
    e = call({"state": "upgraded"}, check_mode=True)
    assert e.result["changed"] and e.result["staged"] is None
    assert before["staged"] is None
    assert json.loads(host.raw())["staged"] is None
    e = call({"state": "upgraded"})
    assert e.result["changed"] and e.result["staged"]["digest"] == DIGEST_C
    e = call({"state": "upgraded"})
    assert not e.result["changed"]
    assert not call({"state": "upgraded"}, check_mode=True).result["changed"]


def test_a_digest_pinned_image_never_upgrades(host):
    pinned = REPO + "@" + DIGEST_A
    host.install(pinned, DIGEST_A)
    host.registry({pinned: DIGEST_A, OLD: DIGEST_C})
    assert not call({"state": "upgraded"}).result["changed"]


def test_rollback_is_queued_once_and_never_flipped_back(host):
    host.install()
    e = call({"state": "rolled_back"})
    assert e.failed and "no rollback deployment" in e.result["msg"]
    call({"state": "switched", "image": NEW})
    host.reboot()
    e = call({"state": "rolled_back"}, check_mode=True)
    assert e.result["changed"] and not e.result["rollback_queued"]
    e = call({"state": "rolled_back"})
    assert e.result["changed"] and e.result["rollback_queued"] and e.result["reboot_required"]
    e = call({"state": "rolled_back"})
    assert not e.result["changed"] and e.result["rollback_queued"]
    host.reboot()
    assert call({}).result["booted"]["digest"] == DIGEST_A


def test_switch_needs_an_image(host):
    host.install()
    e = call({"state": "switched"})
    assert e.failed and "image" in e.result["msg"]
