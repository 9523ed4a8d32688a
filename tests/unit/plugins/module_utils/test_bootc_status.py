"""plugins/module_utils/bootc.py over hand-written status documents: the field set of bootc 1.1 (no
architecture, no softRebootCapable) and of 1.16 (every optional field), a host that is not a bootc host,
staged plus rollback, a queued rollback; and the decisions taken from them."""

import copy
import json

import pytest

from ansible_collections.rhoim.inference.plugins.module_utils.bootc import (
    BootcError, parse_status, plan, reboot_required, summary, upgrade_check_finds_update)

OLD = "registry.example.com/rhoim/inference:cpu"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64


def image_status(image, digest, **extra):
    out = {"image": {"image": image, "transport": "registry"}, "version": "1.0", "timestamp": "2026-11-30T10:00:00Z",
           "imageDigest": digest}
    out.update(extra)
    return out


# bootc 1.1.6: only image, cachedUpdate, incompatible, pinned, store and ostree{checksum, deploySerial} per entry.
BOOTC_1_1 = {
    "apiVersion": "org.containers.bootc/v1",
    "kind": "BootcHost",
    "metadata": {"name": "host"},
    "spec": {"image": {"image": OLD, "transport": "registry"}, "bootOrder": "default"},
    "status": {
        "staged": None,
        "booted": {"image": image_status(OLD, DIGEST_A), "cachedUpdate": None, "incompatible": False, "pinned": False,
                   "store": "ostreeContainer", "ostree": {"checksum": "1" * 64, "deploySerial": 0}},
        "rollback": None,
        "rollbackQueued": False,
        "type": "bootcHost",
    },
}


def entry_1_16(image, digest, serial, cached=None):
    return {"image": image_status(image, digest, architecture="amd64"), "cachedUpdate": cached, "incompatible": False,
            "pinned": False, "softRebootCapable": False, "downloadOnly": False, "store": "ostreeContainer",
            "ostree": {"stateroot": "default", "checksum": str(serial) * 64, "deploySerial": 0}}


# bootc 1.16: a switch staged over a booted image, a rollback deployment, every optional field.
BOOTC_1_16 = {
    "apiVersion": "org.containers.bootc/v1",
    "kind": "BootcHost",
    "metadata": {"name": "host"},
    "spec": {"image": {"image": "registry.example.com/rhoim/inference@" + DIGEST_B, "transport": "registry",
                       "signature": "containerPolicy"}, "bootOrder": "default"},
    "status": {
        "staged": entry_1_16("registry.example.com/rhoim/inference@" + DIGEST_B, DIGEST_B, 2),
        "booted": entry_1_16(OLD, DIGEST_A, 1),
        "rollback": entry_1_16("registry.example.com/rhoim/inference:old", DIGEST_C, 3),
        "rollbackQueued": False,
        "type": "bootcHost",
        "usrOverlay": None,
        "readOnly": True,
    },
}

# What bootc prints where nothing was booted from an image (or in a container).
NOT_BOOTC = {
    "apiVersion": "org.containers.bootc/v1",
    "kind": "BootcHost",
    "metadata": {"name": "host"},
    "spec": {"image": None, "bootOrder": "default"},
    "status": {"staged": None, "booted": None, "rollback": None, "rollbackQueued": False, "type": None},
}


def host(doc):
    return parse_status(json.dumps(doc))


def test_bootc_1_1_field_set():
    state = host(BOOTC_1_1)
    assert state["is_bootc"]
    assert state["spec"] == {"image": OLD, "transport": "registry", "signature": None}
    assert state["booted"]["digest"] == DIGEST_A and state["booted"]["version"] == "1.0"
    assert state["booted"]["architecture"] is None
    assert state["staged"] is None and state["rollback"] is None
    assert not reboot_required(state)


def test_bootc_1_16_field_set_with_staged_and_rollback():
    state = host(BOOTC_1_16)
    assert state["spec"]["signature"] == "containerPolicy"
    assert state["booted"]["architecture"] == "amd64"
    assert state["staged"]["digest"] == DIGEST_B and state["rollback"]["digest"] == DIGEST_C
    assert reboot_required(state)


def test_a_host_that_is_not_a_bootc_host():
    state = host(NOT_BOOTC)
    assert not state["is_bootc"] and state["booted"] is None and state["spec"] is None
    assert plan("status", state) == (None, "status only")
    for verb in ("switched", "upgraded", "rolled_back"):
        with pytest.raises(BootcError, match="not booted from a bootc image"):
            plan(verb, state, image=OLD)


def test_missing_optional_fields_are_tolerated():
    doc = copy.deepcopy(BOOTC_1_1)
    del doc["status"]["rollbackQueued"]
    del doc["spec"]["bootOrder"]
    booted = doc["status"]["booted"]["image"]
    for key in ("version", "timestamp"):
        del booted[key]
    state = host(doc)
    assert state["booted"]["version"] is None and not state["rollback_queued"] and state["boot_order"] == "default"


@pytest.mark.parametrize("text", ["", "not json", "[]"])
def test_what_is_not_a_status_document_is_named(text):
    with pytest.raises(BootcError, match="bootc status printed"):
        parse_status(text)


def test_a_switch_to_the_booted_image_does_nothing():
    assert plan("switched", host(BOOTC_1_1), image=OLD)[0] is None


def test_a_switch_already_staged_is_not_staged_again():
    staged = "registry.example.com/rhoim/inference@" + DIGEST_B
    assert plan("switched", host(BOOTC_1_16), image=staged, enforce_signature_policy=True)[0] is None
    # The same image without the signature policy is another specification.
    argv = plan("switched", host(BOOTC_1_16), image=staged)[0]
    assert argv == ["bootc", "switch", "--quiet", "--transport", "registry", staged]


def test_a_switch_to_another_image():
    argv, reason = plan("switched", host(BOOTC_1_1), image="registry.example.com/rhoim/inference:cuda",
                        enforce_signature_policy=True, retain=True)
    assert argv == ["bootc", "switch", "--quiet", "--transport", "registry", "--retain", "--enforce-container-sigpolicy",
                    "registry.example.com/rhoim/inference:cuda"]
    assert "cuda" in reason


def test_an_upgrade_always_asks_bootc():
    assert plan("upgraded", host(BOOTC_1_1))[0] == ["bootc", "upgrade", "--quiet"]


def test_a_rollback_is_queued_once():
    state = host(BOOTC_1_16)
    argv, reason = plan("rolled_back", state)
    assert argv == ["bootc", "rollback"] and DIGEST_C in reason
    doc = copy.deepcopy(BOOTC_1_16)
    doc["status"]["rollbackQueued"] = True
    doc["spec"]["bootOrder"] = "rollback"
    queued = host(doc)
    assert plan("rolled_back", queued)[0] is None
    assert reboot_required(queued)


def test_no_rollback_deployment_is_an_error():
    with pytest.raises(BootcError, match="no rollback deployment"):
        plan("rolled_back", host(BOOTC_1_1))


def test_summary_changes_with_what_a_verb_changes_only():
    before = host(BOOTC_1_1)
    same = copy.deepcopy(BOOTC_1_1)
    same["status"]["booted"]["image"]["timestamp"] = "2026-12-01T00:00:00Z"
    assert summary(host(same)) == summary(before)
    staged = copy.deepcopy(BOOTC_1_1)
    staged["status"]["staged"] = entry_1_16(OLD, DIGEST_B, 2)
    assert summary(host(staged)) != summary(before)


def test_upgrade_check_compares_the_cached_update_with_what_would_boot():
    doc = copy.deepcopy(BOOTC_1_1)
    assert not upgrade_check_finds_update(host(doc))
    doc["status"]["booted"]["cachedUpdate"] = image_status(OLD, DIGEST_A)
    assert not upgrade_check_finds_update(host(doc))
    doc["status"]["booted"]["cachedUpdate"] = image_status(OLD, DIGEST_B)
    assert upgrade_check_finds_update(host(doc))
    # Already staged: nothing new.
    doc["status"]["staged"] = entry_1_16(OLD, DIGEST_B, 2)
    assert not upgrade_check_finds_update(host(doc))
