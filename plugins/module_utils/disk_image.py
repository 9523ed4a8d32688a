# -*- coding: utf-8 -*-
# Copyright: Contributors to the rhoim.inference collection
# SPDX-License-Identifier: Apache-2.0
"""What the disk stage asks of bootc-image-builder, decided before it runs: the image types, where each one's
output lands, and the build config (TOML) written from variables.

bootc-image-builder (osbuild/bootc-image-builder, ``bib/internal/imagetypes``): disk types and installer (ISO)
types cannot be built in one run; ``raw`` and ``ami`` both write ``image/disk.raw``, so artifacts are named by the
requested type. The config is a blueprint's ``customizations``: users with SSH keys and groups, filesystem
minimum sizes (``/``, ``/boot`` and folders under ``/var``, never ``/var`` itself), an installer kickstart
(ISO types only; the builder adds ``ostreecontainer`` itself, and a kickstart cannot be combined with users),
and kernel arguments (accepted with a warning: bootc manages ``/usr/lib/bootc/kargs.d`` across upgrades, while
arguments given here become host state no upgrade changes).

No password is accepted: a disk image is copied to many hosts, and hosts are reached with SSH keys.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import re

# Requested type -> (group, output path inside the builder's output folder).
TYPES = {
    "qcow2": ("disk", "qcow2/disk.qcow2"),
    "raw": ("disk", "image/disk.raw"),
    "ami": ("disk", "image/disk.raw"),
    "vmdk": ("disk", "vmdk/disk.vmdk"),
    "vhd": ("disk", "vpc/disk.vhd"),
    "gce": ("disk", "gce/image.tar.gz"),
    "ova": ("disk", "archive/image.ova"),
    "anaconda-iso": ("installer", "bootiso/install.iso"),
    "bootc-installer": ("installer", "bootiso/install.iso"),
    "pxe-tar-xz": ("installer", "bootc-pxe-tree"),
}
KARGS_WARNING = (
    "kernel arguments given to the disk build become host state that no upgrade changes; put them in the image's "
    "/usr/lib/bootc/kargs.d instead (bootc applies and updates those with each image)")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SIZE = re.compile(r"^[0-9]+(\s*(B|KiB|MiB|GiB|TiB|kB|MB|GB|TB))?$")


class DiskImageError(Exception):
    """A setting the disk stage refuses, with what to do about it."""

    def __init__(self, msg):
        super(DiskImageError, self).__init__(msg)
        self.msg = msg


def check_types(types):
    """The requested types, checked: known, not empty, no duplicates, not disk and installer types together."""
    if not types:
        raise DiskImageError("disk_image_types is empty: name at least one of %s" % ", ".join(sorted(TYPES)))
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        raise DiskImageError("disk_image_types: %s is not a type bootc-image-builder builds here; known: %s"
                             % (", ".join(unknown), ", ".join(sorted(TYPES))))
    if len(set(types)) != len(types):
        raise DiskImageError("disk_image_types names %s more than once" % ", ".join(sorted({t for t in types if types.count(t) > 1})))
    groups = sorted({TYPES[t][0] for t in types})
    if len(groups) > 1:
        raise DiskImageError("disk_image_types mixes disk types (%s) and installer types (%s), which bootc-image-builder "
                             "cannot build in one run: run the stage twice"
                             % (", ".join(t for t in types if TYPES[t][0] == "disk"),
                                ", ".join(t for t in types if TYPES[t][0] == "installer")))
    return list(types)


def output_path(image_type):
    return TYPES[image_type][1]


def artifact_path(digest, image_type):
    """Where an artifact is kept: by image digest and the requested type (raw and ami would collide otherwise)."""
    if not re.match(r"^sha256:[0-9a-f]{64}$", digest or ""):
        raise DiskImageError("the image digest %r is not sha256:<64 hex digits>" % (digest,))
    return "%s/%s/%s" % (digest.replace(":", "-"), image_type, output_path(image_type).rsplit("/", 1)[-1])


def _users(users):
    out = []
    for index, user in enumerate(users or []):
        where = "disk_image_users[%d]" % index
        if not isinstance(user, dict) or not user.get("name"):
            raise DiskImageError("%s needs a name" % where)
        if "password" in user:
            raise DiskImageError("%s (%s) has a password: a disk image is copied to every host it installs, so it "
                                 "takes SSH public keys only (key)" % (where, user["name"]))
        if not USER_NAME.match(user["name"]):
            raise DiskImageError("%s: %r is not a user name (lower-case letters, digits, _ and -)" % (where, user["name"]))
        unknown = sorted(set(user) - {"name", "key", "groups"})
        if unknown:
            raise DiskImageError("%s (%s) has %s; a user takes name, key and groups" % (where, user["name"], ", ".join(unknown)))
        entry = {"name": user["name"]}
        if user.get("key"):
            key = user["key"].strip()
            if "PRIVATE KEY" in key:
                raise DiskImageError("%s (%s): key is a private key; give the public key (the .pub file)" % (where, user["name"]))
            if not re.match(r"^(ssh-|ecdsa-|sk-)\S+ \S+", key):
                raise DiskImageError("%s (%s): key is not an SSH public key (ssh-ed25519 AAAA...)" % (where, user["name"]))
            entry["key"] = key
        if user.get("groups"):
            entry["groups"] = list(user["groups"])
        out.append(entry)
    return out


def _filesystems(filesystems):
    out = []
    for index, fs in enumerate(filesystems or []):
        where = "disk_image_filesystems[%d]" % index
        mountpoint = str(fs.get("mountpoint", ""))
        minsize = str(fs.get("minsize", "")).strip()
        if mountpoint == "/var" or not (mountpoint in ("/", "/boot") or mountpoint.startswith("/var/")):
            raise DiskImageError("%s: mountpoint %r cannot be sized here: bootc-image-builder takes /, /boot and "
                                 "folders under /var (not /var itself)" % (where, mountpoint))
        if not SIZE.match(minsize):
            raise DiskImageError("%s (%s): minsize %r is not a size (bytes, or a number with B, KiB, MiB, GiB, TiB, "
                                 "kB, MB, GB or TB)" % (where, mountpoint, minsize))
        out.append({"mountpoint": mountpoint, "minsize": int(minsize) if minsize.isdigit() else minsize})
    return out


def build_config(types, users=None, filesystems=None, kickstart="", kernel_append=""):
    """(config dict, warnings) for bootc-image-builder's --config, from the stage's variables."""
    types = check_types(types)
    installer = TYPES[types[0]][0] == "installer"
    customizations = {}
    warnings = []
    user_entries = _users(users)
    if kickstart:
        if not installer:
            raise DiskImageError("disk_image_kickstart applies to installer types (anaconda-iso, bootc-installer, "
                                 "pxe-tar-xz) only; these types are disks: %s" % ", ".join(types))
        if user_entries:
            raise DiskImageError("disk_image_kickstart and disk_image_users cannot be combined (bootc-image-builder "
                                 "refuses it): create the users in the kickstart instead")
        if re.search(r"^\s*ostreecontainer\b", kickstart, re.M):
            raise DiskImageError("disk_image_kickstart has an ostreecontainer line: bootc-image-builder adds its own for "
                                 "the image, so leave it out")
        customizations["installer"] = {"kickstart": {"contents": kickstart}}
    if user_entries:
        customizations["user"] = user_entries
    fs_entries = _filesystems(filesystems)
    if fs_entries:
        if installer:
            raise DiskImageError("disk_image_filesystems apply to disk types; an installer lays out its disks with "
                                 "its kickstart")
        customizations["filesystem"] = fs_entries
    if kernel_append:
        customizations["kernel"] = {"append": kernel_append}
        warnings.append(KARGS_WARNING)
    return {"customizations": customizations}, warnings


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[%s]" % ", ".join(_toml_value(v) for v in value)
    # A JSON string (not ASCII-escaped: no surrogate pairs) is a TOML basic string once DEL is escaped too.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007F")


def _toml_table(prefix, table, lines):
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict) and not _is_table_list(v)]
    for key, value in scalars:
        lines.append("%s = %s" % (key, _toml_value(value)))
    for key, value in table.items():
        name = "%s.%s" % (prefix, key) if prefix else key
        if isinstance(value, dict):
            lines.extend(["", "[%s]" % name])
            _toml_table(name, value, lines)
        elif _is_table_list(value):
            for item in value:
                lines.extend(["", "[[%s]]" % name])
                _toml_table(name, item, lines)


def _is_table_list(value):
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(config):
    """The config as TOML (the builder's /config.toml)."""
    lines = ["# bootc-image-builder config, written by rhoim.inference.disk_image"]
    _toml_table("", config, lines)
    return "\n".join(lines) + "\n"


def config_hash(text):
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
