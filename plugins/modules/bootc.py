#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the rhoim.inference collection
# Apache License 2.0 (see LICENSE), which is compatible with the GNU General Public License v3.0+
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: bootc
short_description: Read, switch, upgrade or roll back the image a bootc host boots
version_added: 0.1.0
description:
  - Reads C(bootc status --format=json) and returns the host's booted, staged and rollback images with their
    digests, and whether a reboot is needed to boot what is staged or queued.
  - V(switched) stages O(image) with C(bootc switch), V(upgraded) stages the newest image of the host's image
    reference with C(bootc upgrade), V(rolled_back) queues the rollback deployment with C(bootc rollback). Nothing is
    applied before the next boot; this module never reboots (reboot with M(ansible.builtin.reboot)) and never
    uses C(--apply), which does not return.
  - C(changed) comes from the status document before and after the verb, never from bootc's output. A switch to
    the image the host already boots or has staged does nothing; an upgrade that finds nothing new does nothing;
    a rollback already queued is not run again (a second C(bootc rollback) would flip back).
  - Fields that bootc added over its releases (C(architecture), C(softRebootCapable), C(usrOverlay), ...) are
    optional; bootc 1.1 and newer are read alike.
author:
  - RHOIM developers (!UNKNOWN)
requirements:
  - bootc on the host, run as root (C(become=true)).
options:
  state:
    description:
      - V(status) only reads. On a host that is not booted from a bootc image it returns RV(is_bootc=false).
      - V(switched) makes O(image) the host's image (staged for the next boot).
      - V(upgraded) stages the newest image of the host's current image reference. A reference pinned to a digest
        (C(name@sha256:...)) never has a newer image, so V(upgraded) does nothing there; switch to the new digest instead.
      - V(rolled_back) queues the rollback deployment for the next boot.
      - The three fail with a clear message on a host that is not a bootc host.
    type: str
    choices: [status, switched, upgraded, rolled_back]
    default: status
  image:
    description: Image to switch to (registry reference, or a path for the oci transports). Required for V(switched).
    type: str
  transport:
    description: Where O(image) is (C(bootc switch --transport)).
    type: str
    choices: [registry, oci, oci-archive, containers-storage]
    default: registry
  enforce_signature_policy:
    description:
      - Verify the image's signature with the host's C(/etc/containers/policy.json) on this and every later upgrade
        (C(--enforce-container-sigpolicy)). Part of the image specification compared for V(switched).
    type: bool
    default: false
  retain:
    description: Keep the image of the deployment switched away from (C(bootc switch --retain)).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description:
      - Stages nothing. V(upgraded) runs C(bootc upgrade --check), which fetches the image's manifest and configuration
        only, to say whether an upgrade would happen.
  diff_mode:
    support: full
    description:
      - The host's image specification and deployments before and after.
  idempotent:
    support: full
    description:
      - A switch to the image already booted or staged, an upgrade that finds nothing new and a rollback already
        queued change nothing.
notes:
  - Greenboot arms its rollback when a staged deployment is finalized at shutdown; a health gate run after the
    reboot must finish before greenboot's own checks give up (see the rhoim.inference.bootc_host role).
seealso:
  - name: bootc status
    description: The status document this module reads.
    link: https://bootc-dev.github.io/bootc/man/bootc-status.8.html
"""

EXAMPLES = r"""
- name: Read what the host boots
  rhoim.inference.bootc:
  become: true
  register: host

- name: Stage the new inference image by digest
  rhoim.inference.bootc:
    state: switched
    image: registry.example.com/rhoim/inference@sha256:4a6e...
  become: true
  register: staged

- name: Boot it
  ansible.builtin.reboot:
  become: true
  when: staged.reboot_required

- name: Go back to the previous image
  rhoim.inference.bootc:
    state: rolled_back
  become: true
"""

RETURN = r"""
is_bootc:
  description: Whether the host is booted from a bootc image.
  returned: always
  type: bool
spec:
  description: The host's image specification (what upgrades follow), or null.
  returned: always
  type: dict
  sample: {image: registry.example.com/rhoim/inference:cpu, transport: registry, signature: null}
booted:
  description: The booted deployment's image, or null.
  returned: always
  type: dict
  contains:
    image:
      description: Image reference.
      type: str
    transport:
      description: Transport of the image reference.
      type: str
    digest:
      description: Digest of the image's manifest.
      type: str
    version:
      description: The image's version label, where it has one.
      type: str
    timestamp:
      description: The image's creation time, where bootc reports it.
      type: str
  sample: {image: registry.example.com/rhoim/inference:cpu, transport: registry, digest: "sha256:4a6e...", version: "1.0"}
staged:
  description: The deployment staged for the next boot, as RV(booted), or null.
  returned: always
  type: dict
rollback:
  description: The rollback deployment, as RV(booted), or null.
  returned: always
  type: dict
rollback_queued:
  description: Whether the next boot is the rollback deployment.
  returned: always
  type: bool
reboot_required:
  description: Whether a staged deployment or a queued rollback waits for a reboot.
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rhoim.inference.plugins.module_utils.bootc import (
    BootcError, parse_status, plan, result, summary, upgrade_check_finds_update)


def read_status(module, bootc):
    rc, out, err = module.run_command([bootc, "status", "--format=json"])
    if rc == 2:
        # bootc before 0.1.13 has only the legacy flag.
        rc, out, err = module.run_command([bootc, "status", "--json"])
    if rc != 0:
        raise BootcError("bootc status failed (rc %d): %s" % (rc, (err or out).strip()))
    return parse_status(out)


def run_verb(module, argv):
    rc, out, err = module.run_command(argv)
    if rc != 0:
        message = (err or out).strip()
        if message.startswith("error: "):
            message = message[len("error: "):]
        raise BootcError("%s failed (rc %d): %s" % (" ".join(argv[:2]), rc, message))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="status", choices=["status", "switched", "upgraded", "rolled_back"]),
            image=dict(type="str"),
            transport=dict(type="str", default="registry", choices=["registry", "oci", "oci-archive", "containers-storage"]),
            enforce_signature_policy=dict(type="bool", default=False),
            retain=dict(type="bool", default=False),
        ),
        required_if=[("state", "switched", ["image"])],
        supports_check_mode=True,
    )
    state = module.params["state"]
    bootc = module.get_bin_path("bootc")
    if bootc is None:
        if state == "status":
            module.exit_json(changed=False, is_bootc=False, spec=None, booted=None, staged=None, rollback=None,
                             rollback_queued=False, reboot_required=False)
        module.fail_json(msg="bootc is not installed on this host: it is not a bootc host, so it cannot be %s"
                         % state.replace("_", " "))
    if os.geteuid() != 0:
        module.fail_json(msg="bootc needs root: run this task with become: true")
    try:
        before = read_status(module, bootc)
        argv, reason = plan(state, before, module.params["image"], module.params["transport"],
                            module.params["enforce_signature_policy"], module.params["retain"])
        after = before
        if argv and module.check_mode:
            if state == "upgraded":
                run_verb(module, [bootc, "upgrade", "--check", "--quiet"])
                checked = read_status(module, bootc)
                changed = upgrade_check_finds_update(checked)
            else:
                changed = True
        elif argv:
            run_verb(module, [bootc, *argv[1:]])
            after = read_status(module, bootc)
            changed = summary(after) != summary(before)
        else:
            changed = False
    except BootcError as exc:
        module.fail_json(msg=exc.msg)
    if state == "status":
        reason = "read the host's status"
    elif not changed and state == "upgraded" and argv:
        reason = "no newer image of %s" % before["spec"]["image"]
    out = dict(result(after), changed=changed, msg=reason)
    if module._diff:
        out["diff"] = {"before": summary(before), "after": summary(after)}
    module.exit_json(**out)


if __name__ == "__main__":
    main()
