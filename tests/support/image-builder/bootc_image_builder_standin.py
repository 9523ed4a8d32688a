"""Stand-in for bootc-image-builder (quay.io/centos-bootc/bootc-image-builder), which cannot be pulled here.

Runs as the builder image's entry point (tests/support/image-builder/Containerfile), the way its README runs it:

    podman run --rm --privileged --security-opt label=type:unconfined_t \
      -v ./config.toml:/config.toml:ro -v ./output:/output \
      -v /var/lib/containers/storage:/var/lib/containers/storage \
      IMAGE [build] --type qcow2 [--type ...] [--rootfs ext4] [--chown UID[:GID]] [--tls-verify=false] REF

Models (bib/cmd/bootc-image-builder, bib/internal/imagetypes, its README and tests):
- the CLI contract: the build subcommand (also when left out), repeatable --type with the known types, disk and
  installer types never in one run, --rootfs ext4|xfs|btrfs, --chown, --use-librepo, --progress, --log-level,
  --tls-verify, the image reference last; a privileged container; the container storage mounted at
  /var/lib/containers/storage (its error message when it is not); the image read from that storage (it must
  have been pulled first); exit 1 with a log.Fatalf line on any error, 0 on success;
- the config at /config.toml or /config.json: blueprint customizations user (name, password, key, groups),
  filesystem (/, /boot, folders under /var but not /var; btrfs only / and /boot), kernel.append,
  installer.kickstart.contents (installer types only; never with user), installer.modules, iso; unknown keys
  refused;
- the outputs in the documented layout: qcow2/disk.qcow2, image/disk.raw (raw and ami), vmdk/disk.vmdk,
  vpc/disk.vhd, gce/image.tar.gz, archive/image.ova, bootiso/install.iso, bootc-pxe-tree/, and
  manifest-<types>.json.
For qcow2, raw, ami, vmdk and vhd the disk is real and boots: a GPT disk whose one partition (label root, the
x86-64 root type) is an ext4 file system holding the image's root file system, with /etc/machine-id emptied
(first boot), the users of the config and their keys, and the units a container cannot run (udev, getty,
kernel file systems, which the stand-in bootc base masks) unmasked. The image brings its kernel and initramfs in
/usr/lib/modules/VERSION (the bootc layout); boot it with them (QEMU -kernel/-initrd, root=LABEL=root).

Does not model: osbuild and its manifest's content, bootloaders (no GRUB, no bootupd, no EFI or /boot
partition), ostree deployments (the root file system is the image's files, not an ostree repository), xfs and
btrfs (every disk is ext4), filesystem sizes other than /, kernel.append (validated only), an installer ISO's
boot loader and payload (the ISO holds the kickstart Anaconda would run, nothing to boot), PXE's squashfs
(the tree holds the kernel, the initramfs and the ext4 root), cross-architecture builds, AWS upload.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib

STORAGE = "/var/lib/containers/storage"
OUTPUT = "/output"
DISK = {"qcow2": "qcow2/disk.qcow2", "raw": "image/disk.raw", "ami": "image/disk.raw", "vmdk": "vmdk/disk.vmdk",
        "vhd": "vpc/disk.vhd", "gce": "gce/image.tar.gz", "ova": "archive/image.ova"}
INSTALLER = {"anaconda-iso": "bootiso/install.iso", "bootc-installer": "bootiso/install.iso",
             "pxe-tar-xz": "bootc-pxe-tree"}
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
# What the stand-in bootc base masks for containers (tests/support/host-image/build.sh); a disk boots a kernel.
CONTAINER_MASKS = ("getty.target", "console-getty.service", "systemd-udevd.service", "systemd-udevd-control.socket",
                   "systemd-udevd-kernel.socket", "systemd-modules-load.service", "sys-kernel-config.mount",
                   "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "systemd-remount-fs.service")


class Fatal(Exception):
    pass


def log(msg):
    print("%s %s" % (datetime.datetime.now().strftime("%Y/%m/%d %H:%M:%S"), msg), flush=True)


def run(argv, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise Fatal("%s failed: %s" % (argv[0], (proc.stderr or proc.stdout).strip()[-2000:]))
    return proc.stdout


def parse(argv):
    if argv and argv[0] in ("build", "manifest", "version"):
        command, argv = argv[0], argv[1:]
    else:
        command = "build"
    if command == "version":
        return command, None
    parser = argparse.ArgumentParser(prog="bootc-image-builder " + command)
    parser.add_argument("--type", action="append", dest="types")
    parser.add_argument("--rootfs", choices=["ext4", "xfs", "btrfs"])
    parser.add_argument("--chown")
    parser.add_argument("--output", default=".")
    parser.add_argument("--store", default="/store")
    parser.add_argument("--rpmmd", default="/rpmmd")
    parser.add_argument("--progress", choices=["auto", "verbose", "term", "debug"], default="auto")
    parser.add_argument("--use-librepo", default="true")
    parser.add_argument("--tls-verify", default="true")
    parser.add_argument("--log-level", default="error")
    parser.add_argument("--config")
    parser.add_argument("--target-arch")
    parser.add_argument("--local", default=None)
    parser.add_argument("-v", action="store_true")
    parser.add_argument("image")
    args = parser.parse_args(argv)
    args.types = args.types or ["qcow2"]
    return command, args


def check_environment():
    if not os.path.isdir(STORAGE) or not os.path.ismount(STORAGE):
        raise Fatal("could not access container storage, did you forget -v %s:%s?" % (STORAGE, STORAGE))
    with open("/proc/self/status") as stream:
        caps = dict(line.split(":", 1) for line in stream if line.startswith("Cap"))
    if int(caps["CapEff"].strip(), 16) & (1 << 21) == 0 or not os.path.exists("/dev/loop-control"):
        raise Fatal("this command must be run in a privileged container (podman run --privileged)")


def check_types(types):
    unknown = [t for t in types if t not in DISK and t not in INSTALLER]
    if unknown:
        raise Fatal("cannot build %s: unsupported image type (supported: %s)"
                    % (", ".join(unknown), ", ".join(sorted(list(DISK) + list(INSTALLER)))))
    if any(t in DISK for t in types) and any(t in INSTALLER for t in types):
        raise Fatal("cannot build %s: installer and disk image types cannot be mixed" % ", ".join(types))


def read_config(args):
    path = args.config or next((p for p in ("/config.toml", "/config.json") if os.path.exists(p)), None)
    if path is None:
        return {}
    with open(path, "rb") as stream:
        data = json.load(stream) if path.endswith(".json") else tomllib.load(stream)
    unknown = sorted(set(data) - {"customizations"})
    if unknown:
        raise Fatal("cannot load config %s: unknown keys %s" % (path, ", ".join(unknown)))
    return data.get("customizations", {})


def check_config(custom, types, rootfs):
    allowed = {"user", "filesystem", "kernel", "installer", "iso"}
    unknown = sorted(set(custom) - allowed)
    if unknown:
        raise Fatal("cannot load config: unsupported customizations %s" % ", ".join(unknown))
    for user in custom.get("user", []):
        extra = sorted(set(user) - {"name", "password", "key", "groups"})
        if extra or not user.get("name"):
            raise Fatal("cannot load config: a user needs a name and takes password, key, groups (got %s)" % extra)
    for fs in custom.get("filesystem", []):
        mountpoint = fs.get("mountpoint", "")
        if mountpoint == "/var" or not (mountpoint in ("/", "/boot") or mountpoint.startswith("/var/")):
            raise Fatal("the following custom mountpoints are not supported [%s]" % mountpoint)
        if rootfs == "btrfs" and mountpoint not in ("/", "/boot"):
            raise Fatal("btrfs only supports / and /boot, not %s" % mountpoint)
    installer = custom.get("installer", {})
    if installer.get("kickstart") and custom.get("user"):
        raise Fatal("installer.kickstart cannot be combined with user customizations")
    if installer and any(t in DISK for t in types):
        raise Fatal("installer customizations apply to ISO types only, not %s" % ", ".join(types))
    kickstart = installer.get("kickstart", {}).get("contents", "")
    if re.search(r"^\s*ostreecontainer\b", kickstart, re.M):
        raise Fatal("kickstart contents must not contain ostreecontainer: the image builder adds it")


def read_image(image, work):
    """The image's root file system, read from the mounted container storage (layers in order, whiteouts)."""
    layout = os.path.join(work, "oci")
    try:
        run(["skopeo", "copy", "--quiet", "containers-storage:" + image, "oci:%s:image" % layout])
    except Fatal as exc:
        raise Fatal("cannot find %s in the local container storage (pull it first): %s" % (image, exc)) from None
    with open(os.path.join(layout, "index.json")) as stream:
        manifest_digest = json.load(stream)["manifests"][0]["digest"]
    with open(os.path.join(layout, "blobs", *manifest_digest.split(":"))) as stream:
        manifest = json.load(stream)
    with open(os.path.join(layout, "blobs", *manifest["config"]["digest"].split(":"))) as stream:
        labels = json.load(stream).get("config", {}).get("Labels") or {}
    rootfs = os.path.join(work, "rootfs")
    os.mkdir(rootfs)
    for layer in manifest["layers"]:
        with tarfile.open(os.path.join(layout, "blobs", *layer["digest"].split(":")), "r:*") as tar:
            unpack_layer(tar, rootfs)
    shutil.rmtree(layout)
    return rootfs, labels


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def unpack_layer(tar, rootfs):
    members = tar.getmembers()
    keep = []
    for member in members:
        folder, name = os.path.split(member.name)
        if name == ".wh..wh..opq":
            target = os.path.join(rootfs, folder)
            for entry in os.listdir(target) if os.path.isdir(target) else []:
                _remove(os.path.join(target, entry))
        elif name.startswith(".wh."):
            _remove(os.path.join(rootfs, folder, name[len(".wh."):]))
        else:
            target = os.path.join(rootfs, member.name)
            if os.path.lexists(target) and not (member.isdir() and os.path.isdir(target)):
                _remove(target)
            keep.append(member)
    # Layers of an image in local storage, as the real builder trusts them (it mounts the image).
    tar.extractall(rootfs, members=keep, numeric_owner=True)  # noqa: S202


def prepare_rootfs(rootfs, custom):
    """What a disk needs that the container image does not: a first boot, the users, the units a kernel runs."""
    with open(os.path.join(rootfs, "etc/machine-id"), "w"):
        pass
    for unit in CONTAINER_MASKS:
        path = os.path.join(rootfs, "etc/systemd/system", unit)
        if os.path.islink(path) and os.readlink(path) == "/dev/null":
            os.unlink(path)
    for user in custom.get("user", []):
        name = user["name"]
        with open(os.path.join(rootfs, "etc/passwd")) as stream:
            exists = any(line.split(":", 1)[0] == name for line in stream)
        if not exists:
            run(["useradd", "--root", rootfs, "--create-home", "--shell", "/bin/bash", name])
        if user.get("groups"):
            run(["usermod", "--root", rootfs, "--append", "--groups", ",".join(user["groups"]), name])
        if user.get("password"):
            run(["chpasswd", "--root", rootfs], input="%s:%s\n" % (name, user["password"]))
        if user.get("key"):
            home = "/root" if name == "root" else "/home/" + name
            ssh = os.path.join(rootfs, home.lstrip("/"), ".ssh")
            os.makedirs(ssh, mode=0o700, exist_ok=True)
            with open(os.path.join(ssh, "authorized_keys"), "a") as stream:
                stream.write(user["key"].strip() + "\n")
            uid_gid = run(["chroot", rootfs, "id", "-u", name]).strip(), run(["chroot", rootfs, "id", "-g", name]).strip()
            for path in (ssh, os.path.join(ssh, "authorized_keys")):
                os.chown(path, int(uid_gid[0]), int(uid_gid[1]))
            os.chmod(os.path.join(ssh, "authorized_keys"), 0o600)


def record_deployment(rootfs, image, labels):
    """A disk is a bootc deployment of the image: where the image carries the bootc stand-in, its state on the
    disk says so (bootc status then reports the image and digest, as on a disk the real builder makes)."""
    if not os.path.exists(os.path.join(rootfs, "usr/lib/rhoim-standin/bootc_standin.py")):
        return
    digest = image.split("@", 1)[1] if "@" in image else None
    booted = {"image": image, "transport": "registry", "signature": None, "digest": digest,
              "version": labels.get("org.opencontainers.image.version")}
    folder = os.path.join(rootfs, "var/lib/rhoim-standin/bootc")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "state.json"), "w") as stream:
        json.dump({"spec": None, "booted": booted, "staged": None, "rollback": None, "rollback_queued": False, "cached": None}, stream)


def kernel(rootfs):
    modules = os.path.join(rootfs, "usr/lib/modules")
    for version in sorted(os.listdir(modules)) if os.path.isdir(modules) else []:
        if os.path.exists(os.path.join(modules, version, "vmlinuz")):
            return os.path.join(modules, version)
    raise Fatal("the image has no kernel: no /usr/lib/modules/VERSION/vmlinuz (a bootc image carries its kernel there)")


def _size_mib(text):
    match = re.match(r"^\s*([0-9]+)\s*(B|KiB|MiB|GiB|TiB|kB|MB|GB|TB)?\s*$", str(text))
    if not match:
        raise Fatal("cannot parse filesystem size %r" % text)
    factor = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "kB": 10 ** 3,
              "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12}[match.group(2)]
    return -(-int(match.group(1)) * factor // (1 << 20))


def make_disk(rootfs, custom, work):
    kernel(rootfs)
    used = int(run(["du", "-s", "--block-size=1M", rootfs]).split()[0])
    size = max(used + used // 4 + 256, *[_size_mib(fs["minsize"]) for fs in custom.get("filesystem", [])
                                         if fs["mountpoint"] == "/"] or [0])
    part = os.path.join(work, "root.ext4")
    run(["mkfs.ext4", "-q", "-L", "root", "-d", rootfs, part, "%dM" % size])
    disk = os.path.join(work, "disk.raw")
    with open(disk, "wb") as stream:
        stream.truncate((size + 2) << 20)
    run(["sfdisk", "--quiet", disk], input="label: gpt\nstart=2048, size=%d, type=%s, name=root\n" % (size * 2048, ROOT_TYPE))
    run(["dd", "if=" + part, "of=" + disk, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"])
    os.unlink(part)
    return disk


def write_disk(disk, image_type, target, work):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if image_type in ("raw", "ami"):
        if not os.path.exists(target):
            run(["cp", "--sparse=always", disk, target])
    elif image_type == "qcow2":
        run(["qemu-img", "convert", "-O", "qcow2", disk, target])
    elif image_type == "vmdk":
        run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", disk, target])
    elif image_type == "vhd":
        run(["qemu-img", "convert", "-O", "vpc", "-o", "subformat=fixed,force_size=on", disk, target])
    elif image_type == "gce":
        with tarfile.open(target, "w:gz") as tar:
            tar.add(disk, arcname="disk.raw")
    elif image_type == "ova":
        vmdk = os.path.join(work, "disk.vmdk")
        run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", disk, vmdk])
        ovf = os.path.join(work, "image.ovf")
        with open(ovf, "w") as stream:
            stream.write('<?xml version="1.0"?>\n<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">'
                         '<References><File ovf:href="disk.vmdk" ovf:id="file1" '
                         'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"/></References></Envelope>\n')
        with tarfile.open(target, "w") as tar:
            tar.add(ovf, arcname="image.ovf")
            tar.add(vmdk, arcname="disk.vmdk")


def installer_kickstart(image, custom):
    """The kickstart an installer ISO runs: the image from the ISO's payload, then what the config adds."""
    lines = ["# written by bootc-image-builder (stand-in)",
             "ostreecontainer --url=/run/install/repo/container --transport=oci --no-signature-verification",
             "# payload: %s" % image]
    contents = custom.get("installer", {}).get("kickstart", {}).get("contents", "")
    if not contents:
        lines += ["graphical", "clearpart --all --initlabel", "autopart", "reboot"]
    return "\n".join(lines) + "\n" + contents


def write_installer(image_type, image, custom, rootfs, target, work):
    if image_type == "pxe-tar-xz":
        os.makedirs(target, exist_ok=True)
        version = kernel(rootfs)
        shutil.copy(os.path.join(version, "vmlinuz"), os.path.join(target, "vmlinuz"))
        if os.path.exists(os.path.join(version, "initramfs.img")):
            shutil.copy(os.path.join(version, "initramfs.img"), os.path.join(target, "initrd.img"))
        run(["mkfs.ext4", "-q", "-L", "root", "-d", rootfs, os.path.join(target, "rootfs.img"), "%dM" % (
            int(run(["du", "-s", "--block-size=1M", rootfs]).split()[0]) * 5 // 4 + 256)])
        return
    tree = os.path.join(work, "iso")
    os.makedirs(tree, exist_ok=True)
    with open(os.path.join(tree, "osbuild.ks"), "w") as stream:
        stream.write(installer_kickstart(image, custom))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    iso = custom.get("iso", {})
    run(["genisoimage", "-quiet", "-r", "-J", "-V", iso.get("volume_id", "bootc-installer")[:32], "-o", target, tree])


def build(args):
    check_environment()
    check_types(args.types)
    custom = read_config(args)
    check_config(custom, args.types, args.rootfs)
    output = os.path.abspath(args.output if args.output != "." else OUTPUT)
    if not os.path.ismount(output):
        raise Fatal("the output folder %s is not a volume: run with -v ./output:/output" % output)
    work = tempfile.mkdtemp(prefix="bib-", dir="/var/tmp")
    try:
        log("reading %s from the container storage" % args.image)
        rootfs, labels = read_image(args.image, work)
        disk = None
        for image_type in args.types:
            log("building %s" % image_type)
            if image_type in DISK:
                if disk is None:
                    prepare_rootfs(rootfs, custom)
                    record_deployment(rootfs, args.image, labels)
                    disk = make_disk(rootfs, custom, work)
                write_disk(disk, image_type, os.path.join(output, DISK[image_type]), work)
            else:
                write_installer(image_type, args.image, custom, rootfs, os.path.join(output, INSTALLER[image_type]), work)
        with open(os.path.join(output, "manifest-%s.json" % "-".join(args.types)), "w") as stream:
            json.dump({"version": "2", "standin": True, "image": args.image, "types": args.types}, stream)
        if args.chown:
            uid, gid = [*args.chown.split(":", 1), ""][:2]
            for root, dirs, files in os.walk(output):
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), int(uid), int(gid or 0))
        log("build complete")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv):
    try:
        command, args = parse(argv)
        if command == "version":
            print("bootc-image-builder stand-in (rhoim tests)")
            return 0
        if command == "manifest":
            check_types(args.types)
            print(json.dumps({"version": "2", "standin": True, "types": args.types}))
            return 0
        build(args)
        return 0
    except Fatal as exc:
        log("error: %s" % exc)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
