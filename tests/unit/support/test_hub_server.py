"""Tests of tests/support/hub_server.py, the Hugging Face Hub stand-in, with the real huggingface_hub client."""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import httpx2  # a dependency of huggingface_hub
import huggingface_hub as hf
import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

import hub_server  # tests/support, on the path from tests/unit/conftest.py

TOKEN = "hf_test_token_123"  # noqa: S105 - a fixture token
BAD_TOKEN = "hf_not_a_known_token"  # noqa: S105
LFS_THRESHOLD = 64 * 1024
REPO = "acme/tiny"


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hubroot"))
    rnd = os.urandom(300 * 1024)
    main = os.path.join(root, "acme", "tiny", "refs", "main")
    _write(os.path.join(main, "model.safetensors"), rnd)
    _write(os.path.join(main, "config.json"), b'{"model_type": "tiny"}\n')
    _write(os.path.join(main, "tokenizer", "vocab.txt"), b"a\nb\nc\n")
    _write(os.path.join(main, "notes.txt"), b"x" * (LFS_THRESHOLD + 1))  # LFS by size
    v1 = os.path.join(root, "acme", "tiny", "refs", "v1")
    _write(os.path.join(v1, "config.json"), b'{"model_type": "tiny", "v": 1}\n')
    os.symlink(os.path.join(main, "model.safetensors"), os.path.join(v1, "model.safetensors"))
    shutil.copytree(main, os.path.join(root, "acme", "tiny", "refs", "same-as-main"))
    for repo, meta in (("gated", {"gated": True}), ("secret", {"private": True})):
        _write(os.path.join(root, "acme", repo, "repo.json"), json.dumps(meta).encode())
        _write(os.path.join(root, "acme", repo, "refs", "main", "config.json"), b"{}\n")
    return root


@pytest.fixture(scope="module")
def hub(root):
    server = hub_server.HubServer(root, tokens=[TOKEN], lfs_threshold=LFS_THRESHOLD)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean(request, monkeypatch):
    # In case another test module imported huggingface_hub first, with other settings.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    if "hub" in request.fixturenames:
        server = request.getfixturevalue("hub")
        server.clear_faults()
        server.clear_log()
        server.page_size = hub_server.DEFAULT_PAGE_SIZE
        server.cdn_ttl = hub_server.DEFAULT_CDN_TTL
    yield


def _urlopen(req):
    return urllib.request.urlopen(req, timeout=10)  # noqa: S310 - http URLs of the test server only


def _post(url, obj=None):
    data = b"" if obj is None else json.dumps(obj).encode()
    with _urlopen(urllib.request.Request(url, method="POST", data=data)) as r:  # noqa: S310
        return json.load(r)


def _conn(url):
    u = urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)


def _get(url, headers=None, method="GET"):
    """(status, headers, body) over a fresh connection; the body read to the end."""
    u = urlsplit(url)
    c = _conn(url)
    c.request(method, u.path + ("?" + u.query if u.query else ""), headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.headers, body


def _cdn_location(hub, path, rev="main"):
    status, headers, _unused = _get(f"{hub.url}/{REPO}/resolve/{rev}/{path}", method="HEAD")
    assert status == 302
    return headers["Location"]


# -- the real client ---------------------------------------------------------------------------------------------


def test_snapshot_download_with_token(hub, root, tmp_path):
    out = tmp_path / "out"
    path = hf.snapshot_download(REPO, local_dir=str(out), endpoint=hub.url, token=TOKEN, cache_dir=str(tmp_path / "c"))
    assert os.path.samefile(path, out)
    src = os.path.join(root, "acme", "tiny", "refs", "main")
    for rel in ("model.safetensors", "config.json", "tokenizer/vocab.txt", "notes.txt"):
        assert _sha256(out / rel) == _sha256(os.path.join(src, rel)), rel
    entry = hub.file_entry(REPO, "model.safetensors")
    assert entry.lfs and _sha256(out / "model.safetensors") == entry.sha256

    assert hub.wait_idle()
    log = hub.log
    assert all(r["done"] for r in log)
    cdn = [r for r in log if r["role"] == "cdn"]
    api = [r for r in log if r["role"] == "api"]
    assert {r["path"].rsplit("/", 1)[-1] for r in cdn} == {entry.sha256, hub.file_entry(REPO, "notes.txt").sha256}
    assert all(r["status"] == 200 and not r["auth"] for r in cdn)
    assert api and all(r["auth"] for r in api)
    assert any(r["path"] == f"/api/models/{REPO}/revision/main" for r in api)
    heads = [r for r in api if r["method"] == "HEAD"]
    assert len(heads) == 4
    assert all(r["status"] == (302 if r["path"].endswith((".safetensors", "notes.txt")) else 200) for r in heads)


def test_revision_by_branch_and_by_sha(hub, tmp_path):
    sha_v1 = hub.commit_sha(REPO, "v1")
    assert sha_v1 != hub.commit_sha(REPO, "main")
    assert hub.commit_sha(REPO, "same-as-main") == hub.commit_sha(REPO, "main")  # content-addressed commits

    a = hf.snapshot_download(REPO, revision="v1", local_dir=str(tmp_path / "a"), endpoint=hub.url, token=False)
    assert sorted(os.listdir(a)) == [".cache", "config.json", "model.safetensors"]
    with open(os.path.join(a, "config.json")) as f:
        assert json.load(f)["v"] == 1

    hub.clear_log()
    b = hf.snapshot_download(REPO, revision=sha_v1, local_dir=str(tmp_path / "b"), endpoint=hub.url, token=False)
    with open(os.path.join(b, "config.json")) as f:
        assert json.load(f)["v"] == 1
    paths = [r["path"] for r in hub.log]
    assert not any("/revision/" in p for p in paths)  # a sha needs no resolving
    assert f"/api/models/{REPO}/tree/{sha_v1}" in paths

    info = hf.HfApi(endpoint=hub.url, token=False).model_info(REPO, revision=sha_v1)
    assert info.sha == sha_v1 and sorted(s.rfilename for s in info.siblings) == ["config.json", "model.safetensors"]


def test_allow_patterns(hub, tmp_path):
    out = tmp_path / "out"
    hf.snapshot_download(REPO, local_dir=str(out), endpoint=hub.url, token=False, allow_patterns=["*.json", "tok*/*"])
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert files == ["config.json", "tokenizer/vocab.txt"]
    assert not [r for r in hub.log if r["role"] == "cdn"]


def test_errors_map_to_client_exceptions(hub, tmp_path):
    api = hf.HfApi(endpoint=hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/nope")
    with pytest.raises(RepositoryNotFoundError):
        hf.hf_hub_download("acme/nope", "config.json", endpoint=hub.url, token=False, cache_dir=str(tmp_path))
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="nope")
    with pytest.raises(RevisionNotFoundError):
        hf.hf_hub_download(REPO, "config.json", revision="nope", endpoint=hub.url, token=False, cache_dir=str(tmp_path))
    with pytest.raises(hf.errors.EntryNotFoundError):
        hf.hf_hub_download(REPO, "missing.txt", endpoint=hub.url, token=False, cache_dir=str(tmp_path))
    with pytest.raises(GatedRepoError):
        hf.hf_hub_download("acme/gated", "config.json", endpoint=hub.url, token=False, cache_dir=str(tmp_path))
    with pytest.raises(GatedRepoError):
        hf.snapshot_download("acme/gated", endpoint=hub.url, token=False, local_dir=str(tmp_path / "g"))
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/secret")
    with pytest.raises(RepositoryNotFoundError):
        hf.hf_hub_download("acme/secret", "config.json", endpoint=hub.url, token=False, cache_dir=str(tmp_path))
    # A token the server does not know is rejected as the Hub does (401, no error code, not a RepoNotFound).
    with pytest.raises(hf.errors.HfHubHTTPError) as exc:
        hf.hf_hub_download(REPO, "config.json", endpoint=hub.url, token=BAD_TOKEN, cache_dir=str(tmp_path))
    assert exc.value.response.status_code == 401 and not isinstance(exc.value, RepositoryNotFoundError)
    # With a valid token both are reachable.
    assert hf.HfApi(endpoint=hub.url, token=TOKEN).model_info("acme/secret").private is True
    p = hf.hf_hub_download("acme/gated", "config.json", endpoint=hub.url, token=TOKEN, cache_dir=str(tmp_path))
    assert open(p).read() == "{}\n"

    status, headers, body = _get(f"{hub.url}/acme/gated/resolve/main/config.json")
    assert (status, headers["X-Error-Code"]) == (401, "GatedRepo") and "error" in json.loads(body)
    status, headers, _unused = _get(f"{hub.url}/acme/secret/resolve/main/config.json")
    assert (status, headers["X-Error-Code"]) == (401, "RepoNotFound")
    status, headers, _unused = _get(f"{hub.url}/acme/nope/resolve/main/x", {"Authorization": "Bearer " + TOKEN})
    assert (status, headers["X-Error-Code"]) == (404, "RepoNotFound")
    status, headers, _unused = _get(f"{hub.url}/{REPO}/resolve/main/x")
    assert (status, headers["X-Error-Code"]) == (404, "EntryNotFound") and headers["X-Repo-Commit"]


def test_tree_paging_and_expand(hub):
    api = hf.HfApi(endpoint=hub.url, token=False)
    full = [(e.path, type(e).__name__) for e in api.list_repo_tree(REPO, recursive=True)]
    assert ("tokenizer", "RepoFolder") in full and ("tokenizer/vocab.txt", "RepoFile") in full
    hub.page_size = 2
    hub.clear_log()
    paged = [(e.path, type(e).__name__) for e in api.list_repo_tree(REPO, recursive=True)]
    assert paged == full
    assert len([r for r in hub.log if "/tree/" in r["path"]]) == 3  # 5 entries, 2 per page
    top = {e.path for e in api.list_repo_tree(REPO)}
    assert top == {"config.json", "model.safetensors", "notes.txt", "tokenizer"}
    sub = list(api.list_repo_tree(REPO, path_in_repo="tokenizer", expand=True))
    assert [e.path for e in sub] == ["tokenizer/vocab.txt"] and sub[0].last_commit is not None
    lfs = next(e for e in api.list_repo_tree(REPO) if e.path == "model.safetensors")
    entry = hub.file_entry(REPO, "model.safetensors")
    assert lfs.lfs.sha256 == entry.sha256 and lfs.lfs.size == 300 * 1024
    pointer = hub_server.lfs_pointer(entry.sha256, entry.size)
    assert lfs.lfs.pointer_size == len(pointer) and lfs.blob_id == hub_server.git_blob_sha1(pointer)
    cfg = next(e for e in api.list_repo_tree(REPO) if e.path == "config.json")
    assert cfg.lfs is None and cfg.blob_id == hub_server.git_blob_sha1(b'{"model_type": "tiny"}\n')


# -- plain HTTP -------------------------------------------------------------------------------------------------


def test_range_requests_and_keepalive(hub, root):
    data = open(os.path.join(root, "acme", "tiny", "refs", "main", "config.json"), "rb").read()
    c = _conn(hub.url)
    for rng, status, expect in (
        ("bytes=2-5", 206, data[2:6]),
        ("bytes=3-", 206, data[3:]),
        ("bytes=-4", 206, data[-4:]),
        ("bytes=0-9999", 206, data),
        (None, 200, data),
    ):
        c.request("GET", f"/{REPO}/resolve/main/config.json", headers={"Range": rng} if rng else {})
        r = c.getresponse()
        assert (r.status, r.read()) == (status, expect)
        assert r.headers["Accept-Ranges"] == "bytes" and r.headers["ETag"] == f'"{hub_server.git_blob_sha1(data)}"'
        if rng:
            assert r.headers["Content-Range"].endswith(f"/{len(data)}")
    c.request("GET", f"/{REPO}/resolve/main/config.json", headers={"Range": f"bytes={len(data)}-"})
    r = c.getresponse()
    assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    r.read()
    c.close()

    blob = open(os.path.join(root, "acme", "tiny", "refs", "main", "model.safetensors"), "rb").read()
    loc = _cdn_location(hub, "model.safetensors")
    status, headers, body = _get(loc, {"Range": "bytes=1000-2999"})
    assert (status, body, headers["Content-Range"]) == (206, blob[1000:3000], f"bytes 1000-2999/{len(blob)}")
    status, headers, body = _get(loc, method="HEAD")
    assert (status, body, int(headers["Content-Length"])) == (200, b"", len(blob))
    ports = {r["role"] for r in hub.log}
    assert ports == {"api", "cdn"}
    assert next(r["range"] for r in hub.log if r["role"] == "cdn") == "bytes=1000-2999"


def test_cdn_signature_expiry_and_authorization(hub):
    sha = hub.file_entry(REPO, "model.safetensors").sha256
    assert _get(hub.sign_cdn_url(sha, expires=int(time.time()) - 1))[0] == 403
    assert _get(hub.sign_cdn_url(sha).replace("sig=", "sig=0"))[0] == 403
    hub.cdn_ttl = 0.3  # the URL is valid for 0.3 to 1.3 s (whole seconds in the URL, rounded up)
    loc = _cdn_location(hub, "model.safetensors")
    assert _get(loc, method="HEAD")[0] == 200
    time.sleep(1.4)
    assert _get(loc)[0] == 403
    status, _unused, _unused = _get(hub.sign_cdn_url(sha), {"Authorization": "Bearer " + TOKEN})
    assert status == 400
    rec = [r for r in hub.log if r["status"] == 400][-1]
    assert rec["role"] == "cdn" and rec["auth"] is True and "Authorization" in rec["note"] and TOKEN not in str(rec)


def test_fault_truncate(hub):
    hub.add_fault("truncate", path_glob="*.safetensors", after_bytes=1000)
    u = urlsplit(_cdn_location(hub, "model.safetensors"))
    c = _conn(hub.cdn_url)
    c.request("GET", u.path + "?" + u.query)
    r = c.getresponse()
    assert int(r.headers["Content-Length"]) == 300 * 1024
    with pytest.raises(http.client.IncompleteRead) as exc:
        r.read()
    assert len(exc.value.partial) == 1000
    assert _get(hub.cdn_url + u.path + "?" + u.query)[2] == open(hub.file_entry(REPO, "model.safetensors").abspath, "rb").read()  # count=1 used up
    assert next(r["note"] for r in hub.log if r["role"] == "cdn").startswith("fault:truncate")


def test_fault_corrupt(hub, root):
    data = open(os.path.join(root, "acme", "tiny", "refs", "main", "config.json"), "rb").read()
    hub.add_fault("corrupt", path_glob="config.json", after_bytes=3, length=2)
    status, _unused, body = _get(f"{hub.url}/{REPO}/resolve/main/config.json")
    assert status == 200 and len(body) == len(data) and body != data
    assert [i for i in range(len(data)) if body[i] != data[i]] == [3, 4]


def test_fault_status_burst_via_http_hook(hub):
    faults = _post(
        hub.url + "/_test/faults",
        {"path_glob": "acme/tiny/config.json", "kind": "status", "status": 503, "count": 2, "retry_after": 1, "methods": ["GET", "HEAD"]},
    )
    assert faults[0]["count"] == 2
    url = f"{hub.url}/{REPO}/resolve/main/config.json"
    s1, h1, _unused = _get(url, method="HEAD")
    s2, _unused, b2 = _get(url)
    s3, _unused, _unused = _get(url)
    assert (s1, h1["Retry-After"], s2, s3) == (503, "1", 503, 200) and "error" in json.loads(b2)
    with _urlopen(hub.url + "/_test/log") as r:
        log = json.load(r)
    assert [r["status"] for r in log] == [503, 503, 200]
    _post(hub.url + "/_test/log/clear")
    _post(hub.url + "/_test/faults/clear")
    assert hub.log == [] and hub.faults == []


def test_fault_status_on_api_url(hub):
    hub.add_fault("status", url_glob="/api/models/*/revision/*", status=500)
    assert _get(f"{hub.url}/api/models/{REPO}/revision/main")[0] == 500
    assert _get(f"{hub.url}/api/models/{REPO}/revision/main")[0] == 200


def test_fault_drop(hub):
    hub.add_fault("drop", path_glob="*.safetensors", after_bytes=4096)
    u = urlsplit(_cdn_location(hub, "model.safetensors"))
    c = _conn(hub.cdn_url)
    c.request("GET", u.path + "?" + u.query)
    r = c.getresponse()
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        r.read()
    hub.add_fault("drop", path_glob="config.json", after_bytes=None)  # before any answer
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        _get(f"{hub.url}/{REPO}/resolve/main/config.json")


def test_client_retries_after_truncate_but_not_after_drop(hub, tmp_path):
    # A clean close before Content-Length is reached is an httpx2.RemoteProtocolError: the client retries
    # (from 0, as only whole 10 MiB chunks count as written).
    hub.add_fault("truncate", path_glob="*.safetensors", after_bytes=50000)
    out = tmp_path / "out"
    hf.snapshot_download(REPO, local_dir=str(out), endpoint=hub.url, token=False, allow_patterns=["*.safetensors"])
    assert _sha256(out / "model.safetensors") == hub.file_entry(REPO, "model.safetensors").sha256
    assert hub.wait_idle()
    gets = [r for r in hub.log if r["role"] == "cdn"]
    assert [(r["bytes"], r["range"]) for r in gets] == [(50000, None), (300 * 1024, None)]
    # A TCP reset is an httpx2.ReadError, which huggingface_hub 2.4.0 does not retry.
    hub.add_fault("drop", path_glob="*.safetensors", after_bytes=50000)
    with pytest.raises(httpx2.ReadError):
        hf.snapshot_download(REPO, local_dir=str(tmp_path / "o2"), endpoint=hub.url, token=False, allow_patterns=["*.safetensors"])


def test_fault_slow_and_client_killed_midway(hub):
    hub.add_fault("slow", path_glob="*.safetensors", rate=100 * 1024)
    u = urlsplit(_cdn_location(hub, "model.safetensors"))
    t0 = time.monotonic()
    c = _conn(hub.cdn_url)
    c.request("GET", u.path + "?" + u.query)
    r = c.getresponse()
    first = r.read(20 * 1024)
    c.sock.shutdown(socket.SHUT_RDWR)  # the "killed" client
    c.close()
    assert len(first) == 20 * 1024
    assert hub.wait_idle()
    rec = next(x for x in hub.log if x["role"] == "cdn")
    assert rec["bytes"] < 300 * 1024 and rec["note"]
    assert time.monotonic() - t0 < 4
    hub.add_fault("slow", path_glob="config.json", rate=100)
    t0 = time.monotonic()
    assert len(_get(f"{hub.url}/{REPO}/resolve/main/config.json")[2]) == 23
    assert time.monotonic() - t0 > 0.15


def test_reload_picks_up_new_ref(hub, root):
    new = os.path.join(root, "acme", "tiny", "refs", "v2")
    _write(os.path.join(new, "config.json"), b'{"v": 2}\n')
    try:
        assert _get(f"{hub.url}/api/models/{REPO}/revision/v2")[0] == 404
        assert REPO in _post(hub.url + "/_test/reload")["repos"]
        status, _unused, body = _get(f"{hub.url}/api/models/{REPO}/revision/v2")
        assert status == 200 and json.loads(body)["sha"] == hub.commit_sha(REPO, "v2")
    finally:
        shutil.rmtree(new)
        hub.reload()


def test_cli_port_file_and_sigterm(root, tmp_path):
    port_file = tmp_path / "ports.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            hub_server.__file__,
            "--root",
            root,
            "--port",
            "0",
            "--cdn-port",
            "0",
            "--cdn-host",
            "cdn.test",
            "--lfs-threshold",
            str(LFS_THRESHOLD),
            "--port-file",
            str(port_file),
            "--token",
            TOKEN,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        ports = json.loads(port_file.read_text())
        base = f"http://127.0.0.1:{ports['port']}"
        status, headers, _unused = _get(f"{base}/{REPO}/resolve/main/model.safetensors", method="HEAD")
        assert status == 302 and headers["Location"].startswith(f"http://cdn.test:{ports['cdn_port']}/_cdn/")
        with _urlopen(f"{base}/api/models/{REPO}") as r:
            assert json.load(r)["id"] == REPO
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_parse_range():
    pr = hub_server.parse_range
    assert pr(None, 10) is None and pr("bytes=0-0", 10) == (0, 0) and pr("bytes=5-", 10) == (5, 9)
    assert pr("bytes=10-", 10) == "unsatisfiable" and pr("bytes=-20", 10) == (0, 9) and pr("items=1-2", 10) is None
    assert pr("bytes=0-", 0) == "unsatisfiable" and pr("bytes=1-2,4-5", 10) is None


def test_urllib_error_body_is_json(hub):
    with pytest.raises(urllib.error.HTTPError) as exc:
        _urlopen(f"{hub.url}/api/models/{REPO}/revision/nope")
    assert exc.value.code == 404 and exc.value.headers["X-Error-Code"] == "RevisionNotFound"
    assert "error" in json.load(exc.value)


def test_client_retries_5xx_on_head_but_not_on_cdn_get(hub, tmp_path):
    hub.add_fault("status", path_glob="*.safetensors", status=503, methods=["HEAD"])
    hf.snapshot_download(REPO, local_dir=str(tmp_path / "a"), endpoint=hub.url, token=False, allow_patterns=["*.safetensors"])
    assert [(r["method"], r["status"]) for r in hub.log if "resolve" in r["path"]] == [("HEAD", 503), ("HEAD", 302)]
    hub.add_fault("status", path_glob="*.safetensors", status=503)
    with pytest.raises(hf.errors.HfHubHTTPError) as exc:
        hf.snapshot_download(REPO, local_dir=str(tmp_path / "b"), endpoint=hub.url, token=False, allow_patterns=["*.safetensors"])
    assert exc.value.response.status_code == 503


def test_refs_and_blobs(hub):
    api = hf.HfApi(endpoint=hub.url, token=False)
    refs = api.list_repo_refs(REPO)
    assert {b.name: b.target_commit for b in refs.branches} == {n: hub.commit_sha(REPO, n) for n in ("main", "v1", "same-as-main")}
    info = api.model_info(REPO, files_metadata=True)
    sib = {s.rfilename: s for s in info.siblings}
    entry = hub.file_entry(REPO, "model.safetensors")
    assert sib["model.safetensors"].lfs.sha256 == entry.sha256 and sib["model.safetensors"].size == entry.size
    assert sib["config.json"].lfs is None and sib["config.json"].blob_id == hub.file_entry(REPO, "config.json").oid
