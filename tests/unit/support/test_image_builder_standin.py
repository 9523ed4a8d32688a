"""tests/support/image-builder's bootc-image-builder stand-in: the CLI contract, the config rules, and how it
lays an image's layers (whiteouts included) into a root file system."""

import io
import os
import sys
import tarfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "support", "image-builder"))
import bootc_image_builder_standin as bib


def test_build_is_the_default_command_and_types_repeat():
    command, args = bib.parse(["--type", "qcow2", "--type", "ami", "--rootfs", "xfs", "quay.io/x/y:1"])
    assert command == "build" and args.types == ["qcow2", "ami"] and args.rootfs == "xfs" and args.image == "quay.io/x/y:1"
    assert bib.parse(["build", "quay.io/x/y:1"])[1].types == ["qcow2"]
    with pytest.raises(SystemExit):
        bib.parse(["--rootfs", "zfs", "quay.io/x/y:1"])


def test_types_are_known_and_never_mixed():
    bib.check_types(["qcow2", "raw", "vmdk"])
    bib.check_types(["anaconda-iso"])
    with pytest.raises(bib.Fatal, match="unsupported image type"):
        bib.check_types(["qcow3"])
    with pytest.raises(bib.Fatal, match="cannot be mixed"):
        bib.check_types(["qcow2", "anaconda-iso"])


@pytest.mark.parametrize("custom, types, rootfs, says", [
    ({"filesystem": [{"mountpoint": "/var", "minsize": 1}]}, ["qcow2"], None, "not supported"),
    ({"filesystem": [{"mountpoint": "/var/log", "minsize": 1}]}, ["qcow2"], "btrfs", "btrfs only"),
    ({"installer": {"kickstart": {"contents": "text"}}, "user": [{"name": "a"}]}, ["anaconda-iso"], None, "cannot be combined"),
    ({"installer": {"kickstart": {"contents": "text"}}}, ["qcow2"], None, "ISO types only"),
    ({"installer": {"kickstart": {"contents": "ostreecontainer --url=x"}}}, ["anaconda-iso"], None, "must not contain"),
    ({"user": [{"name": "a", "shell": "/bin/sh"}]}, ["qcow2"], None, "a user needs a name"),
    ({"locale": {}}, ["qcow2"], None, "unsupported customizations"),
])
def test_config_rules(custom, types, rootfs, says):
    with pytest.raises(bib.Fatal, match=says):
        bib.check_config(custom, types, rootfs)


def layer(entries):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in entries:
            info = tarfile.TarInfo(name)
            if text is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(text)
                tar.addfile(info, io.BytesIO(text))
    out.seek(0)
    return tarfile.open(fileobj=out)


def test_layers_apply_in_order_with_whiteouts(tmp_path):
    bib.unpack_layer(layer([("etc", None), ("etc/a", b"1"), ("etc/b", b"2"), ("opt", None), ("opt/x", b"x")]), str(tmp_path))
    bib.unpack_layer(layer([("etc/.wh.a", b""), ("etc/b", b"3"), ("opt/.wh..wh..opq", b""), ("opt/y", b"y")]), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "etc")) == ["b"] and (tmp_path / "etc" / "b").read_text() == "3"
    assert sorted(os.listdir(tmp_path / "opt")) == ["y"]


def test_an_image_without_a_kernel_is_named(tmp_path):
    with pytest.raises(bib.Fatal, match="the image has no kernel"):
        bib.kernel(str(tmp_path))
    (tmp_path / "usr/lib/modules/6.1.0-1").mkdir(parents=True)
    (tmp_path / "usr/lib/modules/6.1.0-1/vmlinuz").write_text("k")
    assert bib.kernel(str(tmp_path)).endswith("6.1.0-1")
