"""The disk stage's run around bootc-image-builder, with a fake podman: what is pulled, the builder's command
line, what is kept, what a failure leaves, the manifest and sums, check mode."""

import hashlib
import json
import os

import pytest

from ansible_collections.rhoim.inference.plugins.module_utils import disk_image
from ansible_collections.rhoim.inference.plugins.module_utils.disk_image import DiskBuild, DiskImageError

DIGEST = "sha256:" + "cd" * 32
NAME = "registry.example.com/rhoim/inference"


class FakePodman:
    """podman image inspect / pull / run (the builder), recording every call."""

    def __init__(self, local=True, pull_rc=0, build_rc=0, writes=None):
        self.calls = []
        self.local = local
        self.pull_rc = pull_rc
        self.build_rc = build_rc
        self.writes = writes

    def __call__(self, argv):
        self.calls.append(argv)
        verb = argv[1]
        if verb == "image":
            if not self.local:
                return 125, "", "Error: no such image"
            return 0, json.dumps([{"Digest": DIGEST, "RepoDigests": ["%s@%s" % (NAME, DIGEST)]}]), ""
        if verb == "pull":
            if self.pull_rc:
                return self.pull_rc, "", "Error: initializing source docker://%s: manifest unknown" % argv[-1]
            self.local = True
            return 0, "f00d\n", ""
        if verb == "run":
            output = next(a.split(":", 1)[0] for a in argv if a.endswith(":/output"))
            if self.build_rc:
                return self.build_rc, "line %s\n" % "\nline ".join(str(i) for i in range(40)), "error: osbuild failed"
            types = [argv[i + 1] for i, a in enumerate(argv) if a == "--type"]
            for image_type in types:
                path = os.path.join(output, disk_image.output_path(image_type))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as stream:
                    stream.write((self.writes or "disk") + ":" + image_type.replace("ami", "raw"))
            return 0, "build complete", ""
        raise AssertionError(argv)

    def builds(self):
        return [c for c in self.calls if c[1] == "run"]


def params(tmp_path, **kwargs):
    base = {"image": "%s@%s" % (NAME, DIGEST), "types": ["qcow2", "raw", "ami"], "artifacts_dir": str(tmp_path),
            "builder_image": "quay.io/centos-bootc/bootc-image-builder:latest", "builder_pull": "newer",
            "rootfs": None, "users": [], "filesystems": [], "kickstart": "", "kernel_append": "",
            "tls_verify": True, "authfile": None, "min_free_mb": 1, "podman": "podman"}
    base.update(kwargs)
    return base


def test_builds_once_then_keeps_and_says_so(tmp_path):
    podman = FakePodman()
    result = DiskBuild(podman, params(tmp_path)).run_build()
    assert result["changed"] and result["built"] == ["qcow2", "raw", "ami"] and result["kept"] == []
    assert not result["pulled"], "an image already in local storage by digest is not pulled again"
    argv = podman.builds()[0]
    assert argv[:4] == ["podman", "run", "--rm", "--privileged"]
    assert "/var/lib/containers/storage:/var/lib/containers/storage" in argv
    assert any(a.endswith("config.toml:/config.toml:ro") for a in argv)
    assert argv[-1] == "%s@%s" % (NAME, DIGEST)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--type"] == ["qcow2", "raw", "ami"]
    folder = tmp_path / ("sha256-" + "cd" * 32)
    assert (folder / "raw" / "disk.raw").read_text() == (folder / "ami" / "disk.raw").read_text() == "disk:raw"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["digest"] == DIGEST and manifest["image"] == NAME
    assert manifest["artifacts"]["qcow2"]["sha256"] == hashlib.sha256(b"disk:qcow2").hexdigest()
    assert (folder / "SHA256SUMS").read_text().splitlines()[0] == "%s  ami/disk.raw" % hashlib.sha256(b"disk:raw").hexdigest()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".build-")]

    again = DiskBuild(podman, params(tmp_path)).run_build()
    assert not again["changed"] and again["built"] == [] and again["kept"] == ["qcow2", "raw", "ami"]
    assert "kept qcow2, raw, ami (already built from %s with this config)" % DIGEST == again["msg"]
    assert len(podman.builds()) == 1
    assert again["artifacts"]["qcow2"]["path"] == str(folder / "qcow2" / "disk.qcow2")


def test_another_config_rebuilds_only_what_is_asked(tmp_path):
    podman = FakePodman()
    DiskBuild(podman, params(tmp_path)).run_build()
    podman.writes = "disk2"
    build = DiskBuild(podman, params(tmp_path, types=["qcow2"], kernel_append="console=ttyS0"))
    result = build.run_build()
    assert result["built"] == ["qcow2"] and result["changed"]
    assert disk_image.KARGS_WARNING in build.warnings
    folder = tmp_path / ("sha256-" + "cd" * 32)
    assert (folder / "qcow2" / "disk.qcow2").read_text() == "disk2:qcow2"
    assert (folder / "raw" / "disk.raw").read_text() == "disk:raw"
    assert result["before"]["artifacts"]["qcow2"]["config"] != result["after"]["artifacts"]["qcow2"]["config"]
    assert result["before"]["artifacts"]["raw"] == result["after"]["artifacts"]["raw"]


def test_a_missing_artifact_is_rebuilt(tmp_path):
    podman = FakePodman()
    DiskBuild(podman, params(tmp_path)).run_build()
    os.unlink(tmp_path / ("sha256-" + "cd" * 32) / "qcow2" / "disk.qcow2")
    assert DiskBuild(podman, params(tmp_path)).run_build()["built"] == ["qcow2"]


def test_a_failed_build_names_the_builder_and_loses_nothing(tmp_path):
    podman = FakePodman()
    DiskBuild(podman, params(tmp_path)).run_build()
    folder = tmp_path / ("sha256-" + "cd" * 32)
    before = (folder / "manifest.json").read_text()
    podman.build_rc = 1
    with pytest.raises(DiskImageError) as err:
        DiskBuild(podman, params(tmp_path, types=["qcow2"], rootfs="xfs")).run_build()
    assert "bootc-image-builder failed (exit 1) building qcow2" in err.value.msg
    assert "error: osbuild failed" in err.value.msg and "line 39" in err.value.msg and "line 5\n" not in err.value.msg
    assert (folder / "manifest.json").read_text() == before
    assert (folder / "qcow2" / "disk.qcow2").read_text() == "disk:qcow2"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".build-")]


def test_a_tag_is_pulled_and_resolved_to_its_digest(tmp_path):
    podman = FakePodman(local=False)
    result = DiskBuild(podman, params(tmp_path, image=NAME + ":cpu", tls_verify=False, authfile="/root/auth.json")).run_build()
    pull = next(c for c in podman.calls if c[1] == "pull")
    assert pull == ["podman", "pull", "--quiet", "--tls-verify=false", "--authfile", "/root/auth.json", NAME + ":cpu"]
    assert result["pulled"] and result["digest"] == DIGEST and result["ref"] == "%s@%s" % (NAME, DIGEST)
    assert podman.builds()[0][-1] == "%s@%s" % (NAME, DIGEST)


def test_an_image_that_cannot_be_pulled_is_named(tmp_path):
    podman = FakePodman(local=False, pull_rc=125)
    with pytest.raises(DiskImageError) as err:
        DiskBuild(podman, params(tmp_path)).run_build()
    assert "the image %s@%s could not be pulled" % (NAME, DIGEST) in err.value.msg
    assert "manifest unknown" in err.value.msg
    assert not podman.builds()


def test_check_mode_pulls_and_builds_nothing(tmp_path):
    podman = FakePodman(local=False)
    result = DiskBuild(podman, params(tmp_path / "disks", image=NAME + ":cpu"), check_mode=True).run_build()
    assert result["changed"] and result["built"] == ["qcow2", "raw", "ami"] and result["digest"] is None
    assert [c[1] for c in podman.calls] == ["image"]
    assert not os.path.exists(tmp_path / "disks")
    podman.local = True
    result = DiskBuild(podman, params(tmp_path / "disks"), check_mode=True).run_build()
    assert result["msg"] == "would build qcow2, raw, ami" and not podman.builds()


def test_too_little_space_is_said_before_building(tmp_path):
    podman = FakePodman()
    with pytest.raises(DiskImageError) as err:
        DiskBuild(podman, params(tmp_path, min_free_mb=1 << 40)).run_build()
    assert str(tmp_path) in err.value.msg and "disk_image_min_free_mb" in err.value.msg
    assert not podman.builds()


def test_a_broken_manifest_is_named(tmp_path):
    folder = tmp_path / ("sha256-" + "cd" * 32)
    folder.mkdir()
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(DiskImageError) as err:
        DiskBuild(FakePodman(), params(tmp_path)).run_build()
    assert "manifest.json is not JSON" in err.value.msg and "move it aside" in err.value.msg


def test_installer_trees_are_kept_with_a_sum_per_file(tmp_path):
    class TreePodman(FakePodman):
        def __call__(self, argv):
            if argv[1] == "run":
                output = next(a.split(":", 1)[0] for a in argv if a.endswith(":/output"))
                os.makedirs(os.path.join(output, "bootc-pxe-tree"))
                for name in ("vmlinuz", "initrd.img"):
                    with open(os.path.join(output, "bootc-pxe-tree", name), "w") as stream:
                        stream.write(name)
                self.calls.append(argv)
                return 0, "", ""
            return super().__call__(argv)

    result = DiskBuild(TreePodman(), params(tmp_path, types=["pxe-tar-xz"])).run_build()
    entry = result["artifacts"]["pxe-tar-xz"]
    assert sorted(entry["files"]) == ["pxe-tar-xz/bootc-pxe-tree/initrd.img", "pxe-tar-xz/bootc-pxe-tree/vmlinuz"]
    assert entry["size"] == len("vmlinuz") + len("initrd.img")


def test_raw_and_ami_are_read_once(tmp_path, monkeypatch):
    reads = []
    real = disk_image._sha256
    monkeypatch.setattr(disk_image, "_sha256", lambda path: reads.append(path) or real(path))
    DiskBuild(FakePodman(), params(tmp_path, types=["raw", "ami"])).run_build()
    assert len(reads) == 1


def test_validate_only_checks_the_settings_and_runs_nothing(tmp_path):
    podman = FakePodman(local=False)
    settings = params(tmp_path / "disks", image=None, validate_only=True,
                      users=[{"name": "ops", "key": "ssh-ed25519 AAAAC3Nza ops@example.com"}], kernel_append="quiet")
    result = DiskBuild(podman, settings).run_build()
    assert not result["changed"] and result["built"] == [] and result["image"] is None
    assert result["msg"] == "the disk settings for qcow2, raw, ami are valid (nothing pulled or built)"
    assert result["warnings"], "kernel arguments are accepted with their warning"
    assert podman.calls == [] and not os.path.exists(tmp_path / "disks")
    # A tag (the image before it is built) has its form checked too.
    assert DiskBuild(podman, dict(settings, image=NAME + ":cuda-1")).run_build()["image"] == NAME
    with pytest.raises(DiskImageError, match="disk_image_image 'x@sha256:12'"):
        DiskBuild(podman, dict(settings, image="x@sha256:12")).run_build()
    with pytest.raises(DiskImageError, match="anaconda-iso"):
        DiskBuild(podman, dict(settings, types=["qcow2", "anaconda-iso"])).run_build()
    with pytest.raises(DiskImageError, match="minsize"):
        DiskBuild(podman, dict(settings, filesystems=[{"mountpoint": "/", "minsize": "lots"}])).run_build()
    assert podman.calls == []
