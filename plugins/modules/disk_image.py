#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the rhoim.inference collection
# Apache License 2.0 (see LICENSE), which is compatible with the GNU General Public License v3.0+
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: disk_image
short_description: Build qcow2, raw, vmdk, AMI or installer ISO disks from a bootc image with bootc-image-builder
version_added: 0.1.0
description:
  - Pulls O(image) into the local container storage by digest (when it is not there yet), writes
    bootc-image-builder's config from O(users), O(filesystems), O(kickstart) and O(kernel_append), runs the
    builder with podman as its documentation gives it (privileged, C(/config.toml), C(/output) and
    C(/var/lib/containers/storage) mounted), and moves each result into
    C(artifacts_dir/sha256-<digest>/<type>/), named by the requested type (C(raw) and C(ami) both come out of the
    builder as C(image/disk.raw)).
  - Writes C(manifest.json) (image, digest, and per type path, size, sha256, config hash, builder, build time)
    and C(SHA256SUMS) (C(sha256sum -c) reads it) next to the artifacts.
  - A type whose artifact exists for the same digest and config is kept, not rebuilt; C(changed) says whether
    any type was built (the manifest before and after). An artifact is replaced only once its successor is
    built; a failed build leaves every artifact as it was.
  - Disk types and installer types cannot be built in one run (bootc-image-builder refuses it); run twice.
  - No password is accepted for O(users), and no private key, since a disk is copied to every host it installs.
author:
  - RHOIM developers (!UNKNOWN)
requirements:
  - podman, run as root (bootc-image-builder runs privileged and reads the root container storage).
options:
  image:
    description:
      - The bootc image, C(registry/name:tag) or C(registry/name@sha256:...). A tag is resolved to the digest it
        names when pulled; artifacts are always kept by digest.
      - Required unless O(validate_only).
    type: str
  types:
    description:
      - Image types to build, all disk types (C(qcow2), C(raw), C(ami), C(vmdk), C(vhd), C(gce), C(ova)) or all
        installer types (C(anaconda-iso), C(bootc-installer), C(pxe-tar-xz)).
    type: list
    elements: str
    required: true
  artifacts_dir:
    description: Folder that keeps the artifacts, one folder per image digest. The build works in it too.
    type: path
    required: true
  builder_image:
    description: The bootc-image-builder image.
    type: str
    default: quay.io/centos-bootc/bootc-image-builder:latest
  builder_pull:
    description: podman's C(--pull) policy for O(builder_image).
    type: str
    choices: [always, missing, never, newer]
    default: newer
  rootfs:
    description: Root file system type (C(--rootfs)); the image's default when not set.
    type: str
    choices: [ext4, xfs, btrfs]
  users:
    description: Users the disk creates, each C(name), C(key) (an SSH public key) and C(groups).
    type: list
    elements: dict
    default: []
  filesystems:
    description:
      - Minimum sizes, each C(mountpoint) (C(/), C(/boot) or a folder under C(/var)) and C(minsize)
        (bytes, or a number with a unit such as C(20 GiB)). Disk types only.
    type: list
    elements: dict
    default: []
  kickstart:
    description:
      - Kickstart commands for the installer types (C([customizations.installer.kickstart])). bootc-image-builder
        adds the C(ostreecontainer) line itself; cannot be combined with O(users).
    type: str
    default: ""
  kernel_append:
    description:
      - Kernel arguments for the disk. Accepted with a warning; put them in the image's C(/usr/lib/bootc/kargs.d)
        instead, which bootc keeps current across upgrades.
    type: str
    default: ""
  tls_verify:
    description: Verify the registry's TLS certificate when pulling O(image).
    type: bool
    default: true
  authfile:
    description: A containers-auth.json file with the registry's credentials, for the pull.
    type: path
  min_free_mb:
    description: Free space the artifacts folder needs before a build starts, in MiB.
    type: int
    default: 20480
  podman:
    description: The podman executable.
    type: str
    default: podman
  validate_only:
    description:
      - Check O(image)'s form, O(types) and the config (O(users), O(filesystems), O(kickstart), O(kernel_append)) and
        return, pulling and building nothing and needing no podman. The image need not exist yet (its tag will do);
        C(rhoim.inference.build) checks a builder's disk settings this way before it builds the image.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Pulls nothing and builds nothing; says which types would be built.
  diff_mode:
    support: full
    description: The manifest's artifacts before and after.
notes:
  - In check mode an image named by tag is resolved from the local storage only; when it is not there, every
    type is reported as one to build.
"""

EXAMPLES = r"""
- name: Build a qcow2 and an AMI disk from the pushed image
  rhoim.inference.disk_image:
    image: registry.example.com/rhoim/inference@sha256:4a6e0f...
    types: [qcow2, ami]
    artifacts_dir: /var/lib/rhoim/disks
    users:
      - name: ops
        key: "{{ lookup('ansible.builtin.file', 'files/ops.pub') }}"
        groups: [wheel]
  become: true

- name: Build an installer ISO with a kickstart
  rhoim.inference.disk_image:
    image: registry.example.com/rhoim/inference:cpu
    types: [anaconda-iso]
    artifacts_dir: /var/lib/rhoim/disks
    kickstart: |
      text
      zerombr
      clearpart --all --initlabel
      autopart --type=plain
      reboot
  become: true
"""

RETURN = r"""
image:
  description: The image's repository.
  returned: always
  type: str
digest:
  description: The image digest the artifacts were built from (null in check mode for an image not pulled yet).
  returned: always
  type: str
ref:
  description: The image by digest, as the builder was given it.
  returned: always
  type: str
pulled:
  description: Whether the image was pulled into local storage in this run.
  returned: always
  type: bool
built:
  description: The types built in this run (in check mode, those that would be).
  returned: always
  type: list
  elements: str
kept:
  description: The types whose artifact was already there for this digest and config.
  returned: always
  type: list
  elements: str
config_hash:
  description: The hash of the builder config and root file system type the artifacts are checked against.
  returned: always
  type: str
artifacts:
  description: Per type, the artifact's absolute path, size, sha256, config hash, builder image and build time.
  returned: always
  type: dict
  sample: {qcow2: {path: /var/lib/rhoim/disks/sha256-4a6e.../qcow2/disk.qcow2, size: 1073741824, sha256: 9f86d0...}}
manifest:
  description: Path of the digest folder's manifest.json.
  returned: when the digest is known
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rhoim.inference.plugins.module_utils.disk_image import DiskBuild, DiskImageError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            image=dict(type="str"),
            types=dict(type="list", elements="str", required=True),
            artifacts_dir=dict(type="path", required=True),
            builder_image=dict(type="str", default="quay.io/centos-bootc/bootc-image-builder:latest"),
            builder_pull=dict(type="str", default="newer", choices=["always", "missing", "never", "newer"]),
            rootfs=dict(type="str", choices=["ext4", "xfs", "btrfs"]),
            users=dict(type="list", elements="dict", default=[]),
            filesystems=dict(type="list", elements="dict", default=[]),
            kickstart=dict(type="str", default="", no_log=True),
            kernel_append=dict(type="str", default=""),
            tls_verify=dict(type="bool", default=True),
            authfile=dict(type="path"),
            min_free_mb=dict(type="int", default=20480),
            podman=dict(type="str", default="podman"),
            validate_only=dict(type="bool", default=False),
        ),
        required_if=[("validate_only", False, ["image"])],
        supports_check_mode=True,
    )
    params = dict(module.params)
    podman = module.get_bin_path(params["podman"])
    if podman is None and not params["validate_only"]:
        module.fail_json(msg="podman (%s) is not installed on %s: bootc-image-builder runs in it"
                         % (params["podman"], "this host"))
    params["podman"] = podman
    build = DiskBuild(module.run_command, params, check_mode=module.check_mode)
    try:
        result = build.run_build()
    except DiskImageError as exc:
        module.fail_json(msg=exc.msg)
    for warning in result.pop("warnings"):
        module.warn(warning)
    before, after = result.pop("before"), result.pop("after")
    if module._diff:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
