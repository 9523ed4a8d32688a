"""hf_hub + hf_store end to end against tests/support/hub_server.py (loopback, real huggingface_hub)."""

import os

import pytest

import hub_server  # tests/support, on the path from tests/unit/conftest.py
from ansible_collections.rhoim.inference.plugins.module_utils import hf_hub
from ansible_collections.rhoim.inference.plugins.module_utils.hf_errors import ChecksumError, HubError
from ansible_collections.rhoim.inference.plugins.module_utils.hf_hub import HubClient
from ansible_collections.rhoim.inference.plugins.module_utils.hf_store import Laydown

TOKEN = "hf_e2e_token_abcdef"  # noqa: S105 - a fixture token
REPO = "acme/tiny"
BIG = 3 * 1024 * 1024 + 17


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hubroot"))
    main = os.path.join(root, "acme", "tiny", "refs", "main")
    _write(os.path.join(main, "model.safetensors"), os.urandom(BIG))
    _write(os.path.join(main, "config.json"), b'{"model_type": "tiny"}\n')
    _write(os.path.join(main, "tokenizer", "vocab.txt"), b"a\nb\nc\n")
    v2 = os.path.join(root, "acme", "tiny", "refs", "v2")
    _write(os.path.join(v2, "config.json"), b'{"model_type": "tiny", "v": 2}\n')
    _write(os.path.join(v2, "tokenizer", "vocab.txt"), b"a\nb\nc\n")
    os.symlink(os.path.join(main, "model.safetensors"), os.path.join(v2, "model.safetensors"))
    _write(os.path.join(root, "acme", "gated", "repo.json"), b'{"gated": true, "allowed_tokens": []}')
    _write(os.path.join(root, "acme", "gated", "refs", "main", "config.json"), b"{}")
    server = hub_server.HubServer(root, tokens=[TOKEN])
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean(hub):
    hub.clear_faults()
    hub.clear_log()
    yield


def laydown(hub, dest, token=TOKEN, retries=3, **params):
    p = dict(repo_id=REPO, dest=dest, revision="main", keep_revisions=1, endpoint=hub.url)
    p.update(params)
    sleeps = []

    def factory():
        return HubClient(hub.url, token=token, retries=retries, backoff=0.01, timeout=10, sleep=sleeps.append, chunk_size=64 * 1024)

    return Laydown(p, factory).run(), sleeps


def gets(hub, path_part=""):
    return [r for r in hub.log if r["method"] == "GET" and path_part in r["path"] and "/api/" not in r["path"]]


def test_laydown_no_token_to_cdn_and_no_op(hub, tmp_path):
    dest = str(tmp_path / "m")
    r, _unused = laydown(hub, dest)
    assert r["changed"] and r["files"] == 3 and r["bytes_downloaded"] == r["bytes"]
    assert all(not x["auth"] for x in hub.log if x["role"] == "cdn") and any(x["role"] == "cdn" for x in hub.log)
    assert all(x["auth"] for x in hub.log if x["role"] == "api")
    hub.clear_log()
    r2, _unused = laydown(hub, dest, revision=r["revision"])
    assert not r2["changed"] and hub.log == []
    r3, _unused = laydown(hub, dest)
    assert not r3["changed"] and [x["path"] for x in hub.log] == ["/api/models/acme/tiny/revision/main"]


def test_resume_after_kill_uses_range(hub, tmp_path):
    dest = str(tmp_path / "m")
    hub.add_fault("drop", path_glob="model.safetensors", after_bytes=1024 * 1024, count=None)
    with pytest.raises(HubError) as ei:
        laydown(hub, dest, retries=0)  # the run dies mid-download: a partial stays in staging
    assert ei.value.kind == "unreachable" and "model.safetensors" in str(ei.value)
    assert not os.path.exists(os.path.join(dest, "current"))
    hub.clear_faults()
    hub.clear_log()
    r, _unused = laydown(hub, dest)
    ranged = [x for x in gets(hub) if x["role"] == "cdn"]
    assert ranged and ranged[0]["status"] == 206 and ranged[0]["range"].startswith("bytes=")
    assert r["bytes_downloaded"] < BIG + 100


def test_partial_is_synced_and_complete_file_left_to_the_caller(hub, tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(hf_hub, "os_fsync", lambda f: synced.append(os.path.getsize(f.name)))
    client = HubClient(hub.url, token=TOKEN, retries=0, backoff=0.01, timeout=10, sleep=lambda s: None, chunk_size=64 * 1024)
    commit = hub.commit_sha(REPO)
    rf = next(f for f in client.list_files(REPO, commit) if f.path == "model.safetensors")
    part = str(tmp_path / "model.part")
    hub.add_fault("drop", path_glob="model.safetensors", after_bytes=1024 * 1024, count=1)
    with pytest.raises(HubError):
        client.download(REPO, commit, rf, part, fsync=False)
    assert synced == [os.path.getsize(part)] and 0 < synced[0] < BIG  # kept for the next run: synced
    assert client.download(REPO, commit, rf, part, fsync=False) == BIG - synced[0]
    assert len(synced) == 1 and os.path.getsize(part) == BIG  # complete: the caller syncs it
    os.unlink(part)
    client.download(REPO, commit, rf, part)
    assert synced[-1] == BIG


def test_corrupt_bytes_refetched(hub, tmp_path):
    hub.add_fault("corrupt", path_glob="model.safetensors", after_bytes=1000, count=1)
    r, _unused = laydown(hub, str(tmp_path / "m"))
    assert r["changed"] and len([x for x in gets(hub) if x["role"] == "cdn"]) == 2


def test_corrupt_twice_fails_with_details(hub, tmp_path):
    hub.add_fault("corrupt", path_glob="config.json", count=None)
    with pytest.raises(ChecksumError) as ei:
        laydown(hub, str(tmp_path / "m"))
    assert "config.json" in str(ei.value) and REPO in str(ei.value)


def test_503_burst_retried(hub, tmp_path):
    hub.add_fault("status", path_glob="config.json", status=503, retry_after=0, count=2)
    r, sleeps = laydown(hub, str(tmp_path / "m"))
    assert r["changed"] and sleeps == [0, 0]


def test_new_revision_downloads_only_changed_file(hub, tmp_path):
    dest = str(tmp_path / "m")
    laydown(hub, dest)
    hub.clear_log()
    r, _unused = laydown(hub, dest, revision="v2")
    assert [x["path"].rsplit("/", 1)[-1] for x in gets(hub)] == ["config.json"]
    assert r["previous_revision"] != r["revision"]


@pytest.mark.parametrize("token,repo,rev,kind", [
    (TOKEN, "acme/nope", "main", "repo_not_found"),
    (TOKEN, REPO, "no-such-branch", "revision_not_found"),
    (None, "acme/gated", "main", "gated"),
    ("hf_wrong_token_zzz", REPO, "main", "unauthorized"),
])
def test_errors_name_repo_and_never_the_token(hub, tmp_path, token, repo, rev, kind):
    with pytest.raises(HubError) as ei:
        laydown(hub, str(tmp_path / "m"), token=token, repo_id=repo, revision=rev)
    assert ei.value.kind in (kind, "repo_not_found" if kind == "unauthorized" else kind)
    assert repo in str(ei.value) and rev in str(ei.value)
    for t in (TOKEN, "hf_wrong_token_zzz"):
        assert t not in str(ei.value)


def test_unreachable_endpoint(tmp_path):
    c = HubClient("http://127.0.0.1:9", retries=1, backoff=0, timeout=2, sleep=lambda s: None)
    with pytest.raises(HubError) as ei:
        Laydown(dict(repo_id=REPO, dest=str(tmp_path / "m"), revision="main"), lambda: c).run()
    assert ei.value.kind == "unreachable" and REPO in str(ei.value)
