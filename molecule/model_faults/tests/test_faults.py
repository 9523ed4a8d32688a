"""hf_model under faults: each test checks that nothing is lost and that the served path still
holds a complete, verified model afterwards.

The Hub stand-in runs in this process (tests/support/hub_server.py) on the controller's address on
the scenario's network; the host reaches it at host.containers.internal (API port) and is
redirected to the CDN port (another origin) for LFS files.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(PROJECT, "tests", "support"))
from hub_server import FileEntry, HubServer  # noqa: E402
from local_host import network_gateway  # noqa: E402
from scenario import playbook_command, remove_vars_files  # noqa: E402

HOST = "rhoim-model-faults"
TOKEN = "hf_rhoimGoodToken0123456789"  # noqa: S105 - a test token for the stand-in
WRONG_TOKEN = "hf_rhoimWrongS3cret9876543210"  # noqa: S105 - a test token for the stand-in
MIB = 1024 * 1024


def _fixtures(root):
    spec = importlib.util.spec_from_file_location("make_hub_fixtures", os.path.join(PROJECT, "molecule", "model", "files", "make_hub_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.make(root)

    def write(path, data):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    # slow: one 6 MiB weight file to kill a run in the middle of.
    write(os.path.join(root, "acme/slow/refs/main/model.safetensors"), mod.blob("slow", 6 * MIB))
    write(os.path.join(root, "acme/slow/refs/main/config.json"), b'{"slow": true}\n')
    # grow: main fits the 8 MiB tmpfs, v2 adds 10 MiB that do not.
    for ref in ("main", "v2"):
        write(os.path.join(root, "acme/grow/refs", ref, "model.safetensors"), mod.blob("grow", 2 * MIB))
        write(os.path.join(root, "acme/grow/refs", ref, "config.json"), b'{"grow": "%s"}\n' % ref.encode())
    write(os.path.join(root, "acme/grow/refs/v2/extra.safetensors"), mod.blob("grow-extra", 10 * MIB))
    # private: needs the right token.
    write(os.path.join(root, "acme/private/refs/main/config.json"), b'{"private": true}\n')
    write(os.path.join(root, "acme/private/repo.json"), b'{"private": true}\n')
    # evil: a file list naming ../x (patched into the server's index below).
    write(os.path.join(root, "acme/evil/refs/main/config.json"), b'{"evil": true}\n')


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hub"))
    _fixtures(root)
    server = HubServer(root, host=network_gateway("rhoim-model-faults"), tokens=[TOKEN]).start()
    # A hostile file list: "../x" next to config.json (a Hub could send it; a folder cannot hold it).
    ref = server.index.repos["acme/evil"].resolve("main")
    good = ref.files["config.json"]
    evil = FileEntry()
    for slot in FileEntry.__slots__:
        setattr(evil, slot, getattr(good, slot))
    evil.path = "../x"
    ref.files["../x"] = evil
    ref.children[""] = sorted(ref.children[""] + [("../x", False)])
    server.endpoint = "http://host.containers.internal:%d" % server.port
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh(hub):
    hub.clear_faults()
    hub.clear_log()
    yield
    hub.clear_faults()


def playbook(hub, extra_args=(), background=False, **hf):
    hf.setdefault("endpoint", hub.endpoint)
    cmd, env = playbook_command(os.path.join(HERE, "hf_model.yml"), *extra_args, extra_vars={"hf": hf})
    if "-vvv" not in extra_args:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
    if background:
        # Its vars file stays in Molecule's ephemeral folder (root only), removed with the scenario.
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    finally:
        remove_vars_files(cmd)


def result_of(run):
    """The module's result from the json callback's output."""
    data = json.loads(run.stdout)
    return data["plays"][0]["tasks"][0]["hosts"][HOST]


def ok(hub, **hf):
    run = playbook(hub, **hf)
    res = result_of(run)
    assert not res.get("failed"), res.get("msg")
    return res


def failed(hub, **hf):
    run = playbook(hub, **hf)
    res = result_of(run)
    assert res.get("failed"), res
    return res


def served_is_complete(host, dest, repo, rev="main", hub=None):
    """current -> the commit of rev, holding exactly the repo's files with their sha256/size."""
    commit = hub.commit_sha(repo, rev)
    assert host.file(dest + "/current").linked_to.rsplit("/", 1)[-1] == commit
    files = hub.index.repos[repo].resolve(rev).files
    listed = host.check_output("cd %s/current/ && find . -type f -printf '%%P\\n' | sort", dest).split()
    assert listed == sorted(files)
    for path in sorted(files):
        assert host.file("%s/current/%s" % (dest, path)).sha256sum == files[path].sha256, path
    assert not host.file(dest + "/.staging").exists


def cdn_gets(hub, name=None):
    out = []
    for r in hub.log:
        if r["role"] == "cdn" and r["method"] == "GET":
            out.append(r)
    return out


def test_killed_mid_download_resumes_with_range(host, hub):
    dest = "/var/lib/rhoim/models/slow"
    hub.add_fault("slow", "model.safetensors", repo="acme/slow", rate=MIB, count=1, port="cdn")
    run = playbook(hub, background=True, repo_id="acme/slow", dest=dest)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            # hf_model reads 4 MiB at a time: past 5 MiB sent, one whole chunk is on the host's disk.
            if any(r["bytes"] >= 5 * MIB for r in cdn_gets(hub)):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the slow download never passed 5 MiB: %s" % hub.log)
        # The module's own process: pipelined over SSH, the venv's interpreter reading the module
        # from stdin (not the sh -c around it, nor this command's shell).
        pids = host.check_output("pgrep -x -f /var/lib/rhoim/venv-hf/bin/python || true").split()
        assert pids, "no hf_model process on the host"
        for pid in pids:
            host.run("kill -KILL %s", pid)
    finally:
        run.communicate(timeout=120)
    assert run.returncode != 0
    partial = int(host.check_output("stat -c %%s %s/.staging/*/parts/model.safetensors", dest))
    assert partial >= 4 * MIB
    assert not host.file(dest + "/current").exists  # nothing half-written is served

    hub.clear_log()
    res = ok(hub, repo_id="acme/slow", dest=dest)
    assert res["changed"]
    gets = cdn_gets(hub)
    assert len(gets) == 1 and gets[0]["status"] == 206, gets
    start = int(re.match(r"bytes=(\d+)-$", gets[0]["range"]).group(1))
    assert start >= 4 * MIB
    assert res["bytes_downloaded"] < 6 * MIB
    served_is_complete(host, dest, "acme/slow", hub=hub)


def test_corrupted_bytes_are_detected_and_fetched_again(host, hub):
    dest = "/var/lib/rhoim/models/corrupt"
    hub.add_fault("corrupt", "model.safetensors", repo="acme/tiny-a", after_bytes=MIB, length=16, count=1)
    ok(hub, repo_id="acme/tiny-a", dest=dest)
    gets = cdn_gets(hub)
    assert len(gets) == 2 and gets[0]["note"] == "fault:corrupt", gets
    served_is_complete(host, dest, "acme/tiny-a", hub=hub)


def test_file_changed_on_disk_found_by_quick_and_full(host, hub):
    dest = "/var/lib/rhoim/models/altered"
    ok(hub, repo_id="acme/tiny-a", dest=dest)
    weights = dest + "/current/model.safetensors"
    flip = ("python3 -c \"import os,sys; f=open(sys.argv[1],'r+b'); f.seek(4096); b=f.read(1); f.seek(4096); "
            "f.write(bytes([b[0]^255])); f.close()\" %s")

    # Same size, mtime put back: quick trusts the manifest, full re-hashes and fetches again.
    host.check_output("touch -r %s /tmp/stamp && " + flip + " && touch -r /tmp/stamp %s", weights, weights, weights)
    hub.clear_log()
    assert not ok(hub, repo_id="acme/tiny-a", dest=dest)["changed"]
    assert cdn_gets(hub) == []
    res = ok(hub, repo_id="acme/tiny-a", dest=dest, verify="full")
    assert res["changed"] and len(cdn_gets(hub)) == 1
    served_is_complete(host, dest, "acme/tiny-a", hub=hub)

    # Same size, new mtime: quick notices.
    host.check_output(flip, weights)
    hub.clear_log()
    assert ok(hub, repo_id="acme/tiny-a", dest=dest)["changed"]
    assert len(cdn_gets(hub)) == 1
    served_is_complete(host, dest, "acme/tiny-a", hub=hub)

    # Another size: quick notices.
    host.check_output("truncate -s 1000 %s", weights)
    hub.clear_log()
    assert ok(hub, repo_id="acme/tiny-a", dest=dest)["changed"]
    assert len(cdn_gets(hub)) == 1
    served_is_complete(host, dest, "acme/tiny-a", hub=hub)


def test_503_bursts_are_retried(host, hub):
    dest = "/var/lib/rhoim/models/flaky"
    hub.add_fault("status", "*", repo="acme/tiny-b", status=503, count=3, methods=["GET"])
    hub.add_fault("status", url_glob="/api/models/acme/tiny-b/*", status=503, count=2)
    ok(hub, repo_id="acme/tiny-b", dest=dest)
    assert sum(1 for r in hub.log if r["status"] == 503) == 5
    served_is_complete(host, dest, "acme/tiny-b", hub=hub)


def test_disk_full_fails_early_and_keeps_the_old_revision(host, hub):
    dest = "/var/lib/rhoim/small/grow"
    ok(hub, repo_id="acme/grow", dest=dest)
    hub.clear_log()
    res = failed(hub, repo_id="acme/grow", revision="v2", dest=dest)
    assert re.search(r"Not enough free space in %s .*acme/grow.*need \d+ bytes .*\d+ free" % dest, res["msg"]), res["msg"]
    assert cdn_gets(hub) == []  # failed before downloading
    served_is_complete(host, dest, "acme/grow", "main", hub=hub)


def test_hostile_file_names_are_refused(host, hub):
    dest = "/var/lib/rhoim/models/evil"
    res = failed(hub, repo_id="acme/evil", dest=dest)
    assert "'../x'" in res["msg"] and "acme/evil" in res["msg"], res["msg"]
    assert [r for r in hub.log if "/resolve/" in r["path"]] == []
    assert not host.file("/var/lib/rhoim/models/x").exists
    assert not host.file(dest + "/current").exists


def test_wrong_token_is_a_clear_error_and_never_shown(host, hub):
    dest = "/var/lib/rhoim/models/private"
    run = playbook(hub, extra_args=["-vvv"], repo_id="acme/private", dest=dest, token=WRONG_TOKEN)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "acme/private" in out and re.search(r"[Uu]nauthori[sz]ed|token was rejected|not found", out), out[-3000:]
    assert WRONG_TOKEN not in out
    # What was searched includes the SSH connection's own debug log (ssh -vvv).
    assert "SSH: EXEC ssh" in out and "debug1:" in out, out[-3000:]
    # The right token works, and is not shown either.
    run = playbook(hub, extra_args=["-vvv"], repo_id="acme/private", dest=dest, token=TOKEN)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert TOKEN not in run.stdout + run.stderr
    assert not any(r["auth"] for r in hub.log if r["role"] == "cdn")


def test_new_revision_fetches_only_the_changed_file(host, hub):
    dest = "/var/lib/rhoim/models/revs"
    ok(hub, repo_id="acme/tiny-a", dest=dest)
    old = hub.commit_sha("acme/tiny-a", "main")
    hub.clear_log()
    res = ok(hub, repo_id="acme/tiny-a", revision="v2", dest=dest)
    assert res["changed"] and res["previous_revision"] == old
    fetched = [r["path"].split("/resolve/", 1)[1].split("/", 1)[1] for r in hub.log if "/resolve/" in r["path"]]
    assert fetched == ["config.json"] and cdn_gets(hub) == []
    assert res["bytes_downloaded"] == hub.file_entry("acme/tiny-a", "config.json", "v2").size
    new = res["revision"]
    inode = "stat -c %%i %s/%s/model.safetensors"
    assert host.check_output(inode, dest, old) == host.check_output(inode, dest, new)  # hard link
    served_is_complete(host, dest, "acme/tiny-a", "v2", hub=hub)
