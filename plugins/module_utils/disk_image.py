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

import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile

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
    return "%s/%s/%s" % (digest_folder(digest), image_type, output_path(image_type).rsplit("/", 1)[-1])


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


def _check_kickstart(kickstart):
    """No password in an installer: the ISO is clear text wherever it is served. rootpw --lock and sshkey are fine."""
    for number, line in enumerate(kickstart.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if words[0] == "rootpw" and words[1:] != ["--lock"]:
            raise DiskImageError("disk_image_kickstart line %d sets a root password: an installer ISO is copied and served "
                                 "in clear text; use 'rootpw --lock' and 'sshkey --username=root \"ssh-ed25519 ...\"'" % number)
        if words[0] == "user" and any(w.startswith(("--password", "--iscrypted", "--plaintext")) for w in words):
            raise DiskImageError("disk_image_kickstart line %d gives a user a password: use sshkey --username=NAME with a "
                                 "public key instead" % number)
    if "PRIVATE KEY" in kickstart:
        raise DiskImageError("disk_image_kickstart holds a private key: give public keys only (sshkey)")


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
        _check_kickstart(kickstart)
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


# --- the build: what to build, the builder's command line, the artifacts and their manifest ---

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"


def split_reference(ref):
    """(name, digest or None) of an image reference; a tag stays part of the name."""
    ref = (ref or "").strip()
    if not ref:
        raise DiskImageError("disk_image_image is empty: name the image to build disks from (registry/name:tag or "
                             "registry/name@sha256:...)")
    if "@" in ref:
        name, digest = ref.split("@", 1)
        if not re.match(r"^sha256:[0-9a-f]{64}$", digest):
            raise DiskImageError("disk_image_image %r: the digest after @ is not sha256:<64 hex digits>" % ref)
        return name, digest
    return ref, None


def repository(name):
    """The name without its tag (a port's colon is not a tag)."""
    last = name.rsplit("/", 1)[-1]
    return name[:-(len(last) - last.index(":"))] if ":" in last else name


def digest_from_inspect(name, inspect):
    """The registry digest a pulled image is known by in local storage (podman image inspect)."""
    repo = repository(name)
    digests = [d.split("@", 1)[1] for d in inspect.get("RepoDigests") or [] if d.split("@", 1)[0] == repo]
    if inspect.get("Digest") in digests:
        return inspect["Digest"]
    return digests[0] if digests else None


def config_identity(toml_text, rootfs):
    """What decides whether an artifact is current besides the digest: the config and the root file system."""
    return config_hash(toml_text + "\n# --rootfs %s\n" % (rootfs or "default"))


def plan(types, manifest, identity, present):
    """(to build, kept): a type is kept when the manifest has it for this config and its artifact is present."""
    entries = (manifest or {}).get("artifacts", {})
    build, kept = [], []
    for image_type in types:
        entry = entries.get(image_type)
        if entry and entry.get("config") == identity and present(entry.get("path", "")):
            kept.append(image_type)
        else:
            build.append(image_type)
    return build, kept


def builder_argv(podman, builder_image, builder_pull, config_file, output_dir, types, image_ref, rootfs=None,
                 tls_verify=True):
    """podman run for bootc-image-builder, as its README gives it: privileged, the config, the output folder and
    the host's container storage (the image is read from there, pulled first)."""
    argv = [podman, "run", "--rm", "--privileged", "--pull=%s" % builder_pull,
            "--security-opt", "label=type:unconfined_t",
            "-v", "%s:/config.toml:ro" % config_file,
            "-v", "%s:/output" % output_dir,
            "-v", "/var/lib/containers/storage:/var/lib/containers/storage",
            builder_image, "build"]
    for image_type in types:
        argv += ["--type", image_type]
    if rootfs:
        argv += ["--rootfs", rootfs]
    if not tls_verify:
        argv += ["--tls-verify=false"]
    argv += ["--use-librepo=True", image_ref]
    return argv


def last_lines(text, count=20):
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def digest_folder(digest):
    return digest.replace(":", "-")


def sums_text(entries):
    """SHA256SUMS for the digest's folder (sha256sum -c reads it): one line per file."""
    lines = []
    for image_type in sorted(entries):
        for rel, digest in sorted(entries[image_type].get("files", {}).items()):
            lines.append("%s  %s" % (digest, rel))
    return "\n".join(lines) + ("\n" if lines else "")


def summary(build, kept, digest, check_mode=False):
    parts = []
    if build:
        parts.append("%s %s" % ("would build" if check_mode else "built", ", ".join(build)))
    if kept:
        parts.append("kept %s (already built from %s with this config)" % (", ".join(kept), digest))
    return "; ".join(parts)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sums(folder, rel, known=None):
    """{path relative to the digest folder: sha256} for an artifact (a file, or a tree such as pxe-tar-xz's).
    ``known`` maps (device, inode) to a sum already taken: raw and ami are links to one file, read once."""
    path = os.path.join(folder, rel)
    if os.path.isfile(path):
        known = {} if known is None else known
        stat = os.stat(path)
        if (stat.st_dev, stat.st_ino) not in known:
            known[(stat.st_dev, stat.st_ino)] = _sha256(path)
        return {rel: known[(stat.st_dev, stat.st_ino)]}
    sums = {}
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            sums[os.path.relpath(full, folder)] = _sha256(full)
    return sums


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name)) for root, _dirs, files in os.walk(path) for name in files)


def read_manifest(folder):
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as stream:
            manifest = json.load(stream)
    except ValueError as exc:
        raise DiskImageError("%s is not JSON (%s): move it aside and run again; its artifacts are then rebuilt" % (path, exc)) from None
    return manifest if isinstance(manifest, dict) else {}


def _write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".%s." % os.path.basename(path))
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _place(source, target):
    """Hard-links the builder's output into the artifacts folder (one file may serve raw and ami), replacing an
    older artifact only now that the new one exists."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = target + ".new"
    if os.path.lexists(staging):
        shutil.rmtree(staging) if os.path.isdir(staging) else os.unlink(staging)
    if os.path.isdir(source):
        shutil.copytree(source, staging, copy_function=os.link)
    else:
        os.link(source, staging)
    if os.path.isdir(target):
        old = target + ".old"
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old)
    else:
        os.replace(staging, target)


class DiskBuild:
    """One run of the disk stage. ``run(argv) -> (rc, stdout, stderr)`` runs podman (the module's run_command)."""

    def __init__(self, run, params, check_mode=False):
        self.run = run
        self.params = params
        self.check_mode = check_mode
        self.warnings = []

    def _inspect(self, ref):
        rc, out, _err = self.run([self.params["podman"], "image", "inspect", "--format", "json", ref])
        if rc != 0:
            return None
        data = json.loads(out)
        return data[0] if isinstance(data, list) and data else None

    def resolve(self, name, digest):
        """(digest, pulled): the image in local storage by digest, pulled when missing (not in check mode)."""
        podman = self.params["podman"]
        wanted = "%s@%s" % (repository(name), digest) if digest else name
        if digest and self._inspect(wanted) is not None:
            return digest, False
        if self.check_mode:
            local = None if digest else self._inspect(name)
            return (digest or (digest_from_inspect(name, local) if local else None)), False
        argv = [podman, "pull", "--quiet"]
        if not self.params["tls_verify"]:
            argv.append("--tls-verify=false")
        if self.params.get("authfile"):
            argv += ["--authfile", self.params["authfile"]]
        rc, out, err = self.run([*argv, wanted])
        if rc != 0:
            raise DiskImageError("the image %s could not be pulled into local storage (podman pull, exit %d): %s\n"
                                 "Check the name, the tag or digest, and the registry's credentials (disk_image_authfile)."
                                 % (wanted, rc, last_lines(err or out, 5)))
        if digest:
            return digest, True
        found = digest_from_inspect(name, self._inspect(name) or {})
        if not found:
            raise DiskImageError("podman pulled %s but local storage names no registry digest for it" % name)
        return found, True

    def run_build(self):
        params = self.params
        name, digest = split_reference(params["image"]) if params.get("image") else (None, None)
        types = check_types(params["types"])
        config, self.warnings = build_config(types, params.get("users"), params.get("filesystems"),
                                             params.get("kickstart") or "", params.get("kernel_append") or "")
        toml_text = to_toml(config)
        identity = config_identity(toml_text, params.get("rootfs"))
        if params.get("validate_only"):
            # Before the image exists: its settings are checked where it is built, ahead of a long image build.
            return {"image": repository(name) if name else None, "digest": digest, "ref": params.get("image"), "pulled": False,
                    "config_hash": identity, "built": [], "kept": [], "artifacts": {}, "changed": False,
                    "warnings": list(self.warnings), "before": {}, "after": {},
                    "msg": "the disk settings for %s are valid (nothing pulled or built)" % ", ".join(types)}
        digest, pulled = self.resolve(name, digest)
        result = {"image": repository(name), "digest": digest, "pulled": pulled, "config_hash": identity,
                  "built": [], "kept": [], "artifacts": {}, "warnings": list(self.warnings)}
        if digest is None:
            # Check mode with an image not in local storage: everything would be pulled and built.
            result.update(built=list(types), changed=True, ref=name, before={}, after={"would_build": list(types)},
                          msg="would pull %s and build %s" % (name, ", ".join(types)))
            return result
        result["ref"] = "%s@%s" % (repository(name), digest)
        root = params["artifacts_dir"]
        folder = os.path.join(root, digest_folder(digest))
        manifest = read_manifest(folder)
        build, kept = plan(types, manifest, identity, lambda rel: os.path.exists(os.path.join(folder, rel)))
        result.update(kept=kept, built=build, manifest=os.path.join(folder, MANIFEST))
        before = dict(manifest.get("artifacts", {}))
        if build and not self.check_mode:
            self._check_space(root)
            self._build(build, toml_text, result["ref"], folder, manifest, identity)
        after = read_manifest(folder).get("artifacts", {}) if not self.check_mode else before
        result["artifacts"] = dict((t, dict(after[t], path=os.path.join(folder, after[t]["path"])))
                                   for t in types if t in after)
        result["changed"] = bool(build)
        result["before"] = {"artifacts": dict((t, before[t]) for t in sorted(before))}
        result["after"] = {"artifacts": dict((t, after[t]) for t in sorted(after))}
        if self.check_mode:
            result["after"]["would_build"] = build
        result["msg"] = summary(build, kept, digest, self.check_mode)
        return result

    def _check_space(self, root):
        os.makedirs(root, exist_ok=True)
        free = shutil.disk_usage(root).free // (1024 * 1024)
        needed = self.params["min_free_mb"]
        if free < needed:
            raise DiskImageError("%s has %d MiB free; a disk build needs at least %d MiB there (disk_image_min_free_mb): "
                                 "free space or choose another disk_image_artifacts_dir" % (root, free, needed))

    def _build(self, build, toml_text, image_ref, folder, manifest, identity):
        params = self.params
        work = tempfile.mkdtemp(prefix=".build-", dir=params["artifacts_dir"])
        try:
            config_file = os.path.join(work, "config.toml")
            with os.fdopen(os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as stream:
                stream.write(toml_text)
            output = os.path.join(work, "output")
            os.mkdir(output, 0o755)
            argv = builder_argv(params["podman"], params["builder_image"], params["builder_pull"], config_file, output,
                                build, image_ref, params.get("rootfs"), params["tls_verify"])
            rc, out, err = self.run(argv)
            if rc != 0:
                raise DiskImageError("bootc-image-builder failed (exit %d) building %s from %s; its last lines:\n%s"
                                     % (rc, ", ".join(build), image_ref, last_lines((out or "") + "\n" + (err or ""))))
            missing = [t for t in build if not os.path.exists(os.path.join(output, output_path(t)))]
            if missing:
                raise DiskImageError("bootc-image-builder exited 0 but wrote no %s for %s (looked for %s)"
                                     % (", ".join(missing), image_ref,
                                        ", ".join(output_path(t) for t in missing)))
            os.makedirs(folder, exist_ok=True)
            entries = dict(manifest.get("artifacts", {}))
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            known = {}
            for image_type in build:
                rel = artifact_path(image_ref.rsplit("@", 1)[1], image_type).split("/", 1)[1]
                _place(os.path.join(output, output_path(image_type)), os.path.join(folder, rel))
                files = file_sums(folder, rel, known)
                entries[image_type] = {"path": rel, "size": _size(os.path.join(folder, rel)),
                                       "sha256": files[rel] if rel in files else config_hash(json.dumps(files, sort_keys=True)).split(":", 1)[1],
                                       "files": files, "config": identity, "builder": params["builder_image"],
                                       "built": now}
            manifest = {"image": image_ref.rsplit("@", 1)[0], "digest": image_ref.rsplit("@", 1)[1], "artifacts": entries}
            _write_atomic(os.path.join(folder, SUMS), sums_text(entries))
            _write_atomic(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
