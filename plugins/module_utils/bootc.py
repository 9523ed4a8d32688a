# -*- coding: utf-8 -*-
# Copyright: Contributors to the rhoim.inference collection
# SPDX-License-Identifier: Apache-2.0
"""What ``rhoim.inference.bootc`` reads from ``bootc status --format=json`` and decides from it.

bootc's status document (``org.containers.bootc/v1``, kind ``BootcHost``) gained fields release by release
(``architecture`` in 1.1.7, ``softRebootCapable`` in 1.7, ``downloadOnly`` in 1.12, ``usrOverlay`` in 1.14,
``readOnly`` in 1.16.7): only ``image`` and ``transport`` of an image reference are relied on, every other
field is optional. A host that is not booted from an image (or a container) prints the empty document, whose
``status.booted`` is null.

``changed`` is decided by comparing :func:`summary` before and after a verb, never from bootc's output text.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

STATES = ("status", "switched", "upgraded", "rolled_back")


class BootcError(Exception):
    """An error the module reports with ``fail_json``."""

    def __init__(self, msg):
        super(BootcError, self).__init__(msg)
        self.msg = msg


def _get(mapping, *keys):
    """mapping[k1][k2]... or None where a level is missing or null."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def image_reference(ref):
    """An ImageReference as {image, transport, signature}; None for null."""
    if not isinstance(ref, dict) or not ref.get("image"):
        return None
    signature = ref.get("signature")
    if isinstance(signature, dict):
        # {"ostreeRemote": "name"}
        signature = "ostreeRemote:%s" % signature.get("ostreeRemote", "")
    return {"image": ref["image"], "transport": ref.get("transport") or "registry", "signature": signature or None}


def boot_entry(entry):
    """A BootEntry as {image, transport, signature, digest, version, timestamp, architecture, pinned}; None for null."""
    if not isinstance(entry, dict):
        return None
    ref = image_reference(_get(entry, "image", "image"))
    out = dict(ref or {"image": None, "transport": None, "signature": None})
    out.update({
        "digest": _get(entry, "image", "imageDigest"),
        "version": _get(entry, "image", "version"),
        "timestamp": _get(entry, "image", "timestamp"),
        "architecture": _get(entry, "image", "architecture"),
        "pinned": bool(entry.get("pinned", False)),
        "cached_update_digest": _get(entry, "cachedUpdate", "imageDigest"),
    })
    return out


def parse_status(text):
    """The status document (JSON text) as the module's host state."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BootcError("bootc status printed no JSON document (%s): %s" % (exc, text[:200])) from exc
    if not isinstance(doc, dict):
        raise BootcError("bootc status printed %s, not a status document" % type(doc).__name__)
    status = doc.get("status") or {}
    booted = boot_entry(status.get("booted"))
    return {
        "is_bootc": booted is not None and booted["image"] is not None,
        "spec": image_reference(_get(doc, "spec", "image")),
        "boot_order": _get(doc, "spec", "bootOrder") or "default",
        "booted": booted,
        "staged": boot_entry(status.get("staged")),
        "rollback": boot_entry(status.get("rollback")),
        "rollback_queued": bool(status.get("rollbackQueued", False)),
    }


def summary(host):
    """What a verb can change, compared before and after it: the spec and the deployments' images."""
    def entry(e):
        return None if e is None else {k: e[k] for k in ("image", "transport", "digest")}

    return {
        "spec": host["spec"],
        "booted": entry(host["booted"]),
        "staged": entry(host["staged"]),
        "rollback": entry(host["rollback"]),
        "rollback_queued": host["rollback_queued"],
    }


def reboot_required(host):
    """A staged deployment or a queued rollback takes effect at the next boot."""
    return host["staged"] is not None or host["rollback_queued"]


def wanted_spec(image, transport, enforce_signature_policy):
    return {"image": image, "transport": transport, "signature": "containerPolicy" if enforce_signature_policy else None}


def plan(state, host, image=None, transport="registry", enforce_signature_policy=False, retain=False):
    """(argv of the bootc verb to run, or None, reason). Raises BootcError for what cannot be done."""
    if state not in STATES:
        raise BootcError("state %s is not one of %s" % (state, ", ".join(STATES)))
    if state == "status":
        return None, "status only"
    if not host["is_bootc"]:
        raise BootcError("this host is not booted from a bootc image (bootc status shows no booted image): "
                         "it cannot be %s; install it from an image first" % state.replace("_", " "))
    if state == "switched":
        want = wanted_spec(image, transport, enforce_signature_policy)
        # spec.image is the staged deployment's image where one is staged, else the booted one's: a switch
        # staged by an earlier run is not staged again.
        if host["spec"] == want:
            return None, "the host's image is already %s" % image
        argv = ["bootc", "switch", "--quiet", "--transport", transport]
        if retain:
            argv.append("--retain")
        if enforce_signature_policy:
            argv.append("--enforce-container-sigpolicy")
        return [*argv, image], "switch to %s" % image
    if state == "upgraded":
        return ["bootc", "upgrade", "--quiet"], "upgrade to the newest image of %s" % host["spec"]["image"]
    # rolled_back: running bootc rollback again would flip back to the current deployment.
    if host["rollback_queued"]:
        return None, "a rollback is already queued for the next boot"
    if host["rollback"] is None:
        raise BootcError("this host has no rollback deployment to go back to")
    return ["bootc", "rollback"], "roll back to %s (%s)" % (host["rollback"]["image"], host["rollback"]["digest"])


def upgrade_check_finds_update(host):
    """After ``bootc upgrade --check``: whether it found an image other than the staged (or booted) one."""
    booted = host["booted"]
    if booted is None or not booted["cached_update_digest"]:
        return False
    current = (host["staged"] or booted)["digest"]
    return booted["cached_update_digest"] != current


def result(host):
    """The module's return values from a host state."""
    return {
        "is_bootc": host["is_bootc"],
        "spec": host["spec"],
        "booted": host["booted"],
        "staged": host["staged"],
        "rollback": host["rollback"],
        "rollback_queued": host["rollback_queued"],
        "reboot_required": reboot_required(host),
    }
