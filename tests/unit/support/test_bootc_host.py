"""tests/support/bootc_host.py's own logic: registry views, and the /etc carried across deployments."""

import io
import os
import sys
import tarfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "support"))
import bootc_host


def test_the_controller_pulls_through_its_own_view_of_the_registry():
    registries = {"rhoim-upgrade-registry:5000": "127.0.0.1:15002"}
    assert bootc_host.controller_ref("rhoim-upgrade-registry:5000/rhoim/inference:1.1", registries) == \
        "127.0.0.1:15002/rhoim/inference:1.1"
    # Another registry, or a name that only starts alike, is left as it is.
    assert bootc_host.controller_ref("rhoim-upgrade-registry:50000/x:1", registries) == "rhoim-upgrade-registry:50000/x:1"
    assert bootc_host.repository("127.0.0.1:15002/rhoim/inference:1.1") == "127.0.0.1:15002/rhoim/inference"
    assert bootc_host.repository("127.0.0.1:15002/rhoim/inference@sha256:" + "a" * 64) == "127.0.0.1:15002/rhoim/inference"


def etc_tar(files):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, (text, gname) in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0, "root", gname
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_etc_changes_keeps_only_what_differs_from_the_image_with_the_owners_ids(monkeypatch):
    raw = etc_tar({
        "etc/passwd": ("root:x:0:0::/root:/bin/sh\nrhoim:x:961:961::/var/lib/rhoim:/usr/sbin/nologin\n", "root"),
        "etc/group": ("root:x:0:\nrhoim:x:961:\n", "root"),
        "etc/rhoim/vllm/tiny.yaml": ("port: 8000\n", "rhoim"),
        "etc/os-release": ("ID=debian\n", "root"),
    })

    class Proc:
        stdout = '{"changed": ["/etc/rhoim/vllm/tiny.yaml"], "added": ["/var/x"], "deleted": ["/etc/issue"]}'

    monkeypatch.setattr(bootc_host.local_host, "podman", lambda *args, **kwargs: Proc)
    monkeypatch.setattr(bootc_host.subprocess, "run", lambda *args, **kwargs: type("P", (), {"stdout": raw}))
    with tarfile.open(fileobj=io.BytesIO(bootc_host.etc_changes("host"))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == ["etc/rhoim/vllm/tiny.yaml"]
        # podman cp exports root's IDs with the right names: the group's ID comes from the host's own group file.
        assert (members["etc/rhoim/vllm/tiny.yaml"].uid, members["etc/rhoim/vllm/tiny.yaml"].gid) == (0, 961)
        assert tar.extractfile("etc/rhoim/vllm/tiny.yaml").read() == b"port: 8000\n"


def test_a_rollback_with_no_kept_etc_is_refused_before_anything_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(bootc_host, "ROOT", str(tmp_path))
    name = "gpu-01"
    os.makedirs(os.path.join(bootc_host.host_dir(name), "run"))
    with open(os.path.join(bootc_host.host_dir(name), "host.json"), "w") as handle:
        handle.write('{"network": "n", "registries": {}}')
    old, new = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    state = bootc_host.bootc_standin.load(bootc_host.state_file(name))
    state.update(booted={"image": "r/i:2", "transport": "registry", "signature": None, "digest": new, "version": None},
                 rollback={"image": "r/i:1", "transport": "registry", "signature": None, "digest": old, "version": None},
                 rollback_queued=True)
    bootc_host.bootc_standin.save(bootc_host.state_file(name), state)
    with pytest.raises(bootc_host.local_host.HostError, match="no /etc was kept"):
        bootc_host.reboot(name, print)
    assert bootc_host.bootc_standin.load(bootc_host.state_file(name))["booted"]["digest"] == new
