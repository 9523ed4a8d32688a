"""Unit tests of hf_store (the on-disk side) with a fake Hub client: no network, no Ansible."""

import fcntl
import hashlib
import json
import os
import time

import pytest

from ansible_collections.rhoim.inference.plugins.module_utils import hf_fsops, hf_manifest
from ansible_collections.rhoim.inference.plugins.module_utils.hf_errors import DiskFullError, HfModelError, LockError, PathError
from ansible_collections.rhoim.inference.plugins.module_utils.hf_fsops import BackgroundSync, FileLock
from ansible_collections.rhoim.inference.plugins.module_utils.hf_hub import RemoteFile
from ansible_collections.rhoim.inference.plugins.module_utils.hf_store import (
    Laydown,
    dir_mode_for,
    filter_files,
    parse_mode,
    safe_relpath,
)

REPO = "acme/tiny"
A = "a" * 40
B = "b" * 40
C = "c" * 40


def rf_for(path, data):
    if path.endswith(".safetensors"):
        return RemoteFile(path, len(data), sha256=hashlib.sha256(data).hexdigest())
    return RemoteFile(path, len(data), git_sha1=hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())  # noqa: S324


class FakeHub:
    """Stands in for HubClient: commits of {path: bytes}, refs, and a request count."""

    def __init__(self, commits, refs=None):
        self.commits = commits
        self.refs = refs or {}
        self.calls = []
        self.downloaded = []
        self.fail_download = None  # or an exception that download() raises

    def resolve(self, repo_id, revision):
        self.calls.append(("resolve", revision))
        return self.refs.get(revision, revision)

    def list_files(self, repo_id, commit):
        self.calls.append(("tree", commit))
        return [rf_for(p, d) for p, d in sorted(self.commits[commit].items())]

    def _maybe_fail(self):
        error = self.fail_download
        if error is not None:
            # The tests set it to an exception; pylint infers only the None above.
            raise error  # pylint: disable=raising-bad-type

    def download(self, repo_id, commit, rf, part, progress=None, fsync=True):
        self.calls.append(("get", rf.path))
        self._maybe_fail()
        data = self.commits[commit][rf.path]
        have = os.path.getsize(part) if os.path.exists(part) else 0
        with open(part, "ab") as f:
            f.write(data[have:])
        self.downloaded.append(rf.path)
        if progress:
            progress(rf.path, len(data) - have)
        return len(data) - have


COMMITS = {
    A: {"config.json": b'{"v": 1}', "model.safetensors": b"W" * 5000, "tok/vocab.txt": b"a\nb\n"},
    B: {"config.json": b'{"v": 2}', "model.safetensors": b"W" * 5000, "tok/vocab.txt": b"a\nb\n"},
    C: {"config.json": b'{"v": 3}', "model.safetensors": b"X" * 5000, "tok/vocab.txt": b"a\nb\n"},
}


@pytest.fixture
def hub():
    return FakeHub(COMMITS, refs={"main": A, "v2": B, "v3": C})


@pytest.fixture
def dest(tmp_path):
    return str(tmp_path / "model")


def run(hub, dest, check_mode=False, diff=False, **params):
    p = dict(repo_id=REPO, dest=dest, revision="main", keep_revisions=1, lock_timeout=1, mode="0644")
    p.update(params)
    return Laydown(p, lambda: hub, check_mode=check_mode, diff=diff, sleep=lambda s: None).run()


def rev_file(dest, sha, path):
    return os.path.join(dest, sha, path)


# -- path safety and patterns -------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a\\b", "a\0b", "", "..", "a/", "x\nb"])
def test_hostile_paths_refused(bad):
    with pytest.raises(PathError) as ei:
        safe_relpath(bad, REPO, A)
    assert REPO in str(ei.value)


@pytest.mark.parametrize("good", ["config.json", "a/b/c.safetensors", ".gitattributes", "a..b", "-x"])
def test_plain_paths_accepted(good):
    assert safe_relpath(good) == good


def test_hostile_remote_name_fails_before_writing(hub, dest):
    hub.commits = dict(COMMITS, **{"e" * 40: {"../evil": b"x", "ok.json": b"{}"}})
    with pytest.raises(PathError) as ei:
        run(hub, dest, revision="e" * 40)
    assert "../evil" in str(ei.value)
    assert not os.path.exists(os.path.join(os.path.dirname(dest), "evil"))
    assert not any(c[0] == "get" for c in hub.calls)


def test_patterns_like_huggingface_hub():
    files = [RemoteFile(p, 1, git_sha1="0" * 40) for p in ("a.json", "b.bin", "tok/x.txt", "original/c.pth")]
    assert [f.path for f in filter_files(files, ["*.json", "tok/"])] == ["a.json", "tok/x.txt"]
    assert [f.path for f in filter_files(files, None, ["original/*", "*.bin"])] == ["a.json", "tok/x.txt"]


def test_modes():
    assert parse_mode("0640") == 0o640 and dir_mode_for(0o640) == 0o750 and dir_mode_for(0o644) == 0o755
    with pytest.raises(HfModelError):
        parse_mode("rw-r--r--")


# -- first run, second run, pinned ---------------------------------------------------------------


def test_first_run_lays_down_and_second_is_a_no_op(hub, dest):
    r = run(hub, dest, diff=True)
    assert r["changed"] and r["revision"] == A and r["previous_revision"] is None
    assert r["files"] == 3 and r["bytes"] == 8 + 5000 + 4 and r["bytes_downloaded"] == r["bytes"]
    assert r["diff"]["after"] == {"revision": A, "files": ["config.json", "model.safetensors", "tok/vocab.txt"]}
    assert os.readlink(os.path.join(dest, "current")) == A
    assert open(os.path.join(dest, "current", "tok", "vocab.txt"), "rb").read() == b"a\nb\n"
    m = json.load(open(os.path.join(dest, ".manifests", A + ".json")))
    assert m["repo_id"] == REPO and m["commit"] == A and {f["path"] for f in m["files"]} == set(COMMITS[A])
    assert not os.path.exists(os.path.join(dest, ".staging"))
    assert not any(n.startswith(".") for n in os.listdir(os.path.join(dest, A)))  # only model files are served
    assert oct(os.stat(rev_file(dest, A, "config.json")).st_mode & 0o777) == "0o644"

    hub.calls[:] = []
    r = run(hub, dest)
    assert not r["changed"] and r["bytes_downloaded"] == 0
    assert hub.calls == [("resolve", "main")]  # a branch costs one request, nothing else


def test_pinned_commit_present_makes_zero_requests_and_does_not_hash(hub, dest, monkeypatch):
    run(hub, dest, revision=A)
    hub.calls[:] = []

    def no_hashing(*a, **k):
        raise AssertionError("quick verify must not hash")

    monkeypatch.setattr(hf_manifest, "hash_file", no_hashing)
    factory_calls = []

    def factory():
        factory_calls.append(1)
        return hub

    r = Laydown(dict(repo_id=REPO, dest=dest, revision=A, keep_revisions=1), factory).run()
    assert r["changed"] is False and r["revision"] == A
    assert factory_calls == [] and hub.calls == []


def test_check_mode_writes_nothing(hub, dest, tmp_path):
    r = run(hub, dest, check_mode=True, diff=True, progress_file=str(tmp_path / "p.json"))
    assert r["changed"] and r["files_to_fetch"] == ["config.json", "model.safetensors", "tok/vocab.txt"]
    assert r["bytes_to_fetch"] == 5012 and r["revision"] == A
    assert not os.path.exists(dest) and not (tmp_path / "p.json").exists()
    run(hub, dest)
    before = sorted(os.walk(dest))
    r = run(hub, dest, check_mode=True, revision="v2")
    assert r["changed"] and r["files_to_fetch"] == ["config.json"] and r["bytes_to_fetch"] == 8
    assert sorted(os.walk(dest)) == before
    r = run(hub, dest, check_mode=True)
    assert r["changed"] is False and r["files_to_fetch"] == []


# -- verification of what is present -------------------------------------------------------------


def test_quick_notices_deleted_and_resized_files_and_repairs_by_swap(hub, dest):
    run(hub, dest)
    os.unlink(rev_file(dest, A, "tok/vocab.txt"))
    served_ino = os.stat(rev_file(dest, A, "model.safetensors")).st_ino
    hub.calls[:] = []
    r = run(hub, dest, revision=A)
    assert r["changed"] and hub.downloaded[-1:] == ["tok/vocab.txt"] and r["bytes_downloaded"] == 4
    assert [c for c in hub.calls if c[0] == "get"] == [("get", "tok/vocab.txt")]
    assert os.stat(rev_file(dest, A, "model.safetensors")).st_ino == served_ino  # good files hard-linked, not copied
    # size change
    os.chmod(rev_file(dest, A, "config.json"), 0o644)
    with open(rev_file(dest, A, "config.json"), "ab") as f:
        f.write(b" ")
    r = run(hub, dest, revision=A)
    assert r["changed"] and open(rev_file(dest, A, "config.json"), "rb").read() == COMMITS[A]["config.json"]
    assert not run(hub, dest, revision=A)["changed"]


def test_mtime_change_found_by_quick(hub, dest):
    run(hub, dest)
    p = rev_file(dest, A, "config.json")
    os.utime(p, ns=(0, 12345))
    hub.calls[:] = []
    r = run(hub, dest, revision=A)
    assert r["changed"] and ("tree", A) in hub.calls
    # it was hashed when planning, found intact, and reused: nothing downloaded
    assert r["bytes_downloaded"] == 0 and not [c for c in hub.calls if c[0] == "get"]
    assert not run(hub, dest, revision=A)["changed"]


def test_same_size_same_mtime_content_change_found_only_by_full(hub, dest):
    run(hub, dest)
    p = rev_file(dest, A, "model.safetensors")
    st = os.stat(p)
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.write(b"Z")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    hub.calls[:] = []
    assert run(hub, dest, revision=A)["changed"] is False  # quick cannot see it
    assert hub.calls == []
    r = run(hub, dest, revision=A, verify="full")
    assert r["changed"] and ("get", "model.safetensors") in hub.calls
    assert open(p, "rb").read() == COMMITS[A]["model.safetensors"]
    hub.calls[:] = []
    assert run(hub, dest, revision=A, verify="full")["changed"] is False and hub.calls == []


def test_mode_drift_fixed_without_download(hub, dest):
    run(hub, dest, revision=A)
    os.chmod(rev_file(dest, A, "config.json"), 0o600)
    hub.calls[:] = []
    r = run(hub, dest, revision=A)
    assert r["changed"] and hub.calls == []
    assert os.stat(rev_file(dest, A, "config.json")).st_mode & 0o777 == 0o644


# -- new revisions: reuse, resume, GC ------------------------------------------------------------


def test_new_revision_hard_links_unchanged_files(hub, dest):
    run(hub, dest)
    hub.downloaded[:] = []
    r = run(hub, dest, revision="v2", diff=True)
    assert r["changed"] and r["previous_revision"] == A and r["revision"] == B
    assert hub.downloaded == ["config.json"] and r["bytes_downloaded"] == 8
    assert os.stat(rev_file(dest, A, "model.safetensors")).st_ino == os.stat(rev_file(dest, B, "model.safetensors")).st_ino
    assert os.readlink(os.path.join(dest, "current")) == B
    assert r["diff"]["before"]["revision"] == A


def test_resume_partial_from_killed_run_and_clean_strays(hub, dest):
    run(hub, dest)  # A present
    # a killed run of B left: a partial of model.safetensors... (reused by link anyway), a partial config,
    # and stray staging of another commit and of a file that is not wanted
    stage = os.path.join(dest, ".staging", C)
    os.makedirs(os.path.join(stage, "parts", "tok"))
    os.makedirs(os.path.join(stage, "files"))
    want = {p: rf_for(p, d).as_dict() for p, d in COMMITS[C].items()}
    json.dump({"repo_id": REPO, "commit": C, "files": want}, open(os.path.join(stage, "expect.json"), "w"))
    with open(os.path.join(stage, "parts", "model.safetensors"), "wb") as f:
        f.write(COMMITS[C]["model.safetensors"][:3000])
    with open(os.path.join(stage, "parts", "stray.bin"), "wb") as f:
        f.write(b"junk")
    os.makedirs(os.path.join(dest, ".staging", "d" * 40, "parts"))
    r = run(hub, dest, revision="v3")
    assert r["bytes_downloaded"] == 2000 + 8  # the rest of the partial, and the config; vocab linked
    assert open(rev_file(dest, C, "model.safetensors"), "rb").read() == COMMITS[C]["model.safetensors"]
    assert not os.path.exists(os.path.join(dest, ".staging"))


def test_gc_keeps_current_previous_and_protected(hub, dest):
    run(hub, dest, revision="main")
    run(hub, dest, revision="v2")
    r = run(hub, dest, revision="v3", keep_revisions=0)
    # B was current when the run started: kept; A goes
    assert r["removed_revisions"] == [A]
    assert sorted(n for n in os.listdir(dest) if len(n) == 40) == [B, C]
    assert not os.path.exists(os.path.join(dest, ".manifests", A + ".json"))
    r = run(hub, dest, revision="v3", keep_revisions=0, protect_revisions=[B])
    assert r["removed_revisions"] == [] and not r["changed"]
    r = run(hub, dest, revision="v3", keep_revisions=0)
    assert r["removed_revisions"] == [B] and r["changed"]
    assert sorted(n for n in os.listdir(dest) if len(n) == 40) == [C]
    assert open(os.path.join(dest, "current", "config.json"), "rb").read() == b'{"v": 3}'


def test_gc_keeps_n_newest(hub, dest):
    clock = iter(range(100, 200))
    for rev in ("main", "v2", "v3"):
        Laydown(dict(repo_id=REPO, dest=dest, revision=rev, keep_revisions=5), lambda: hub, clock=lambda: next(clock)).run()
    r = run(hub, dest, revision="v3", keep_revisions=1)
    assert r["removed_revisions"] == [A]


# -- failures --------------------------------------------------------------------------------------


def test_space_check_counts_only_missing_bytes(hub, dest, monkeypatch):
    run(hub, dest)
    monkeypatch.setattr(Laydown, "free_bytes", lambda self: 100)
    r = run(hub, dest, revision="v2", min_free_bytes=92)  # needs 8 (config) + 92 = 100: fits
    assert r["changed"]
    with pytest.raises(DiskFullError) as ei:
        run(hub, dest, revision="v3", min_free_bytes=0)  # needs 5008 (new weights + config)
    msg = str(ei.value)
    assert "need 5008 bytes" in msg and "100 free" in msg and dest in msg
    assert os.readlink(os.path.join(dest, "current")) == B


def test_stale_staging_is_removed_before_the_space_check(hub, dest, monkeypatch):
    """The download fits only once the staging an interrupted run left for another revision is gone."""
    stale = os.path.join(dest, ".staging", "d" * 40, "parts", "model.safetensors")
    os.makedirs(os.path.dirname(stale))
    with open(stale, "wb") as f:
        f.write(b"W" * 6000)
    # 100 bytes free while the stale staging is there; its 6000 bytes come back when it goes.
    monkeypatch.setattr(Laydown, "free_bytes", lambda self: 100 if os.path.exists(stale) else 6100)
    r = run(hub, dest)  # needs 5012
    assert r["changed"] and r["bytes_downloaded"] == 5012
    assert os.readlink(os.path.join(dest, "current")) == A
    assert not os.path.exists(os.path.join(dest, ".staging"))


def test_disk_full_during_download_cleans_staging_keeps_current(hub, dest):
    run(hub, dest)
    hub.fail_download = DiskFullError("Disk full while writing x")
    with pytest.raises(DiskFullError) as ei:
        run(hub, dest, revision="v3")
    msg = str(ei.value)
    assert "staging removed" in msg and C in msg and REPO in msg and "config.json" in msg
    assert os.readlink(os.path.join(dest, "current")) == A
    assert not os.path.exists(os.path.join(dest, ".staging", C))
    assert not os.path.exists(os.path.join(dest, C))


def test_background_sync_syncs_every_file_before_wait_returns(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def slow_fsync(fd):
        time.sleep(0.05)
        synced.append(os.readlink("/proc/self/fd/%d" % fd))
        real_fsync(fd)

    monkeypatch.setattr(hf_fsops.os, "fsync", slow_fsync)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / ("f%d" % i)))
        with open(paths[-1], "wb") as f:
            f.write(b"x" * 10)
    syncer = BackgroundSync()
    try:
        for p in paths:
            syncer.add(p)
        syncer.wait()
        assert synced == paths
    finally:
        syncer.close()


def test_background_sync_error_names_the_file(tmp_path):
    syncer = BackgroundSync()
    try:
        syncer.add(str(tmp_path / "gone"))
        with pytest.raises(OSError) as ei:
            syncer.wait()
        assert ei.value.filename == str(tmp_path / "gone")
    finally:
        syncer.close()


def test_disk_full_at_writeback_cleans_staging_keeps_current(hub, dest, monkeypatch):
    """ENOSPC can surface only at fsync (delayed allocation): same outcome as during the download."""
    run(hub, dest)
    real_fsync = os.fsync

    def enospc_for_weights(fd):
        if os.readlink("/proc/self/fd/%d" % fd).endswith("model.safetensors"):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(hf_fsops.os, "fsync", enospc_for_weights)
    with pytest.raises(DiskFullError) as ei:
        run(hub, dest, revision="v3")
    msg = str(ei.value)
    assert "file model.safetensors;" in msg and "staging removed" in msg and C in msg
    assert os.readlink(os.path.join(dest, "current")) == A
    assert not os.path.exists(os.path.join(dest, ".staging", C))
    assert not os.path.exists(os.path.join(dest, C))


def test_failed_download_keeps_partials_for_next_run(hub, dest):
    hub.fail_download = HfModelError("unreachable")
    with pytest.raises(HfModelError):
        run(hub, dest)
    assert not os.path.exists(os.path.join(dest, "current"))
    assert os.path.exists(os.path.join(dest, ".staging", A, "expect.json"))
    hub.fail_download = None
    assert run(hub, dest)["changed"]


def test_lock_contention_names_holder(tmp_path):
    path = str(tmp_path / ".lock")
    held = FileLock(path).acquire()
    try:
        ticks = iter([0, 0, 0.5, 1.0, 1.5, 2.5])
        with pytest.raises(LockError) as ei:
            FileLock(path, timeout=2, sleep=lambda s: None, clock=lambda: next(ticks)).acquire()
        assert str(os.getpid()) in str(ei.value)
    finally:
        held.release()
    FileLock(path, timeout=0).acquire().release()


def test_lock_of_dead_holder_is_free(tmp_path):
    path = str(tmp_path / ".lock")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: take the lock, then die without releasing
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os._exit(0)
    os.waitpid(pid, 0)
    FileLock(path, timeout=0).acquire().release()


def test_run_waits_for_lock(hub, dest):
    os.makedirs(dest)
    held = FileLock(os.path.join(dest, ".lock")).acquire()
    try:
        with pytest.raises(LockError):
            run(hub, dest, lock_timeout=0.05)
    finally:
        held.release()


# -- state=absent --------------------------------------------------------------------------------


def test_absent_removes_only_our_folder(hub, dest):
    run(hub, dest)
    r = run(hub, dest, state="absent", check_mode=True)
    assert r["changed"] and os.path.isdir(dest)
    r = run(hub, dest, state="absent")
    assert r["changed"] and not os.path.exists(dest)
    assert run(hub, dest, state="absent")["changed"] is False
    os.makedirs(os.path.join(dest, "precious"))
    with pytest.raises(HfModelError) as ei:
        run(hub, dest, state="absent")
    assert "precious" in str(ei.value)
    assert os.path.isdir(os.path.join(dest, "precious"))


def test_progress_file(hub, dest, tmp_path):
    pf = tmp_path / "progress.json"
    run(hub, dest, progress_file=str(pf))
    data = json.loads(pf.read_text())
    assert data["bytes_done"] == data["bytes_total"] == 5012 and data["files_done"] == data["files_total"] == 3
    assert data["revision"] == A and time.time() - data["updated"] < 60
