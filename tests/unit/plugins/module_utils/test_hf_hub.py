"""Unit tests of hf_hub: hashing, retry schedule, Range resume, redirects, error text (no network)."""

import email.message
import hashlib
import io
import os
import subprocess
import urllib.error

import pytest

from ansible_collections.rhoim.inference.plugins.module_utils import hf_hub
from ansible_collections.rhoim.inference.plugins.module_utils.hf_errors import ChecksumError, DiskFullError, HfModelError, HubError
from ansible_collections.rhoim.inference.plugins.module_utils.hf_hub import (
    HubClient,
    RemoteFile,
    _Retryable,
    hash_file,
    parse_retry_after,
    scrub,
)

TOKEN = "hf_secret_token_value"  # noqa: S105 - a fixture token
EP = "http://hub.test:8080"


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324


def lfs(path, data):
    return RemoteFile(path, len(data), sha256=hashlib.sha256(data).hexdigest())


class Resp:
    def __init__(self, status, body, headers=None, fail_after=None):
        self.status = status
        self._body = io.BytesIO(body)
        self.headers = email.message.Message()
        for k, v in (headers or {}).items():
            self.headers[k] = v
        self._fail_after = fail_after
        self._sent = 0

    def readinto(self, mv):
        if self._fail_after is not None and self._sent >= self._fail_after:
            raise ConnectionResetError("connection reset by peer")
        n = len(mv) if self._fail_after is None else min(len(mv), self._fail_after - self._sent)
        data = self._body.read(n)
        mv[: len(data)] = data
        self._sent += len(data)
        return len(data)

    def getcode(self):
        return self.status

    def close(self):
        pass


def http_error(url, code, headers=None):
    msg = email.message.Message()
    for k, v in (headers or {}).items():
        msg[k] = v
    return urllib.error.HTTPError(url, code, "err", msg, io.BytesIO(b""))


class Opener:
    """Answers from a list of callables ``f(request) -> Resp`` (or raising), one per request."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests = []

    def open(self, req, timeout=None):
        self.requests.append(req)
        answer = self.answers.pop(0)
        return answer(req)


def client(opener, **kw):
    kw.setdefault("retries", 3)
    sleeps = []
    c = HubClient(EP, token=kw.pop("token", TOKEN), opener=opener, sleep=sleeps.append, chunk_size=4, backoff=kw.pop("backoff", 0.5), **kw)
    return c, sleeps


def ok(body, status=200, headers=None, **kw):
    return lambda req: Resp(status, body, headers, **kw)


def fail(code, headers=None):
    def f(req):
        raise http_error(req.full_url, code, headers)

    return f


# -- hashing ----------------------------------------------------------------------------------


def test_git_blob_sha1_matches_git(tmp_path):
    data = b"hello world\n"
    p = tmp_path / "f"
    p.write_bytes(data)
    rf = RemoteFile("f", len(data), git_sha1=git_sha1(data))
    assert hash_file(str(p), rf)[0].hexdigest() == rf.expected
    try:
        out = subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git not available")
    assert out == rf.expected


def test_sha256_and_tree_entry_parsing():
    lfs_entry = {"type": "file", "path": "m.safetensors", "size": 10, "oid": "0" * 40, "lfs": {"oid": "AB" * 32, "size": 10, "pointerSize": 130}}
    rf = RemoteFile.from_tree_entry(lfs_entry)
    assert rf.sha256 == "ab" * 32 and rf.algorithm == "sha256" and rf.key == "sha256:" + "ab" * 32
    rf = RemoteFile.from_tree_entry({"type": "file", "path": "c.json", "size": 2, "oid": "cd" * 20})
    assert rf.git_sha1 == "cd" * 20 and rf.algorithm == "git-sha1"
    assert RemoteFile.from_dict(rf.as_dict()).key == rf.key


def test_retry_after_parsing():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("99999") == hf_hub.MAX_RETRY_AFTER
    assert parse_retry_after(None) is None
    assert parse_retry_after("nonsense") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480) == pytest.approx(10, abs=1)


def test_scrub():
    assert TOKEN not in scrub("Bearer %s failed" % TOKEN, TOKEN)
    assert scrub("x", None) == "x"


# -- downloads --------------------------------------------------------------------------------


def test_download_streams_verifies_and_sends_no_token_to_cdn(tmp_path):
    data = os.urandom(1000)
    rf = lfs("w.safetensors", data)
    seen = []

    def redirect(req):
        seen.append(("api", req.get_header("Authorization")))
        raise http_error(req.full_url, 302, {"Location": "http://cdn.test:9000/blob?sig=1"})

    def cdn(req):
        seen.append(("cdn", req.get_header("Authorization")))
        return Resp(200, data)

    c, _unused = client(Opener(redirect, cdn))
    part = tmp_path / "w.part"
    assert c.download("o/n", "a" * 40, rf, str(part)) == len(data)
    assert part.read_bytes() == data
    assert seen == [("api", "Bearer " + TOKEN), ("cdn", None)]


def test_resume_from_partial_left_by_killed_run(tmp_path):
    data = os.urandom(5000)
    rf = lfs("w.bin", data)
    part = tmp_path / "w.part"
    part.write_bytes(data[:1234])  # what a SIGKILLed run left behind

    def ranged(req):
        assert req.get_header("Range") == "bytes=1234-"
        return Resp(206, data[1234:], {"Content-Range": "bytes 1234-4999/5000"})

    opener = Opener(ranged)
    c, _unused = client(opener)
    assert c.download("o/n", "a" * 40, rf, str(part)) == len(data) - 1234
    assert part.read_bytes() == data


def test_200_answer_to_range_restarts_from_zero(tmp_path):
    data = os.urandom(3000)
    rf = lfs("w.bin", data)
    part = tmp_path / "w.part"
    part.write_bytes(b"\0" * 1000)  # even a wrong partial is replaced, since the server sends it all
    c, _unused = client(Opener(ok(data, 200)))
    assert c.download("o/n", "a" * 40, rf, str(part)) == 3000
    assert part.read_bytes() == data


def test_dropped_connection_resumes_with_range_and_resets_count(tmp_path):
    data = os.urandom(4000)
    rf = RemoteFile("c.json", len(data), git_sha1=git_sha1(data))

    def rest(req):
        assert req.get_header("Range") == "bytes=1500-"
        return Resp(206, data[1500:], {"Content-Range": "bytes 1500-3999/4000"})

    c, sleeps = client(Opener(ok(data, fail_after=1500), rest), retries=1)
    c.download("o/n", "a" * 40, rf, str(tmp_path / "p"))
    assert (tmp_path / "p").read_bytes() == data
    assert sleeps == [0.5]


def test_corrupt_bytes_refetched_once_then_fail_with_details(tmp_path):
    data = os.urandom(2000)
    bad = bytes([data[0] ^ 0xFF]) + data[1:]
    rf = lfs("w.bin", data)
    c, _unused = client(Opener(ok(bad), ok(data)))
    assert c.download("o/n", "b" * 40, rf, str(tmp_path / "p")) == 4000
    assert (tmp_path / "p").read_bytes() == data

    c, _unused = client(Opener(ok(bad), ok(bad)))
    with pytest.raises(ChecksumError) as ei:
        c.download("o/n", "b" * 40, rf, str(tmp_path / "q"))
    msg = str(ei.value)
    for piece in ("o/n", "b" * 40, "w.bin", rf.expected, hashlib.sha256(bad).hexdigest()):
        assert piece in msg
    assert not (tmp_path / "q").exists()
    assert TOKEN not in msg


def test_oversized_body_is_a_mismatch(tmp_path):
    data = os.urandom(100)
    rf = lfs("w.bin", data)
    c, _unused = client(Opener(ok(data + b"xx"), ok(data)))
    c.download("o/n", "b" * 40, rf, str(tmp_path / "p"))
    assert (tmp_path / "p").read_bytes() == data


def test_503_retried_with_backoff_and_retry_after(tmp_path):
    data = b"{}"
    rf = RemoteFile("c.json", 2, git_sha1=git_sha1(data))
    opener = Opener(fail(503), fail(503, {"Retry-After": "7"}), fail(502), ok(data))
    c, sleeps = client(opener, retries=3)
    c.download("o/n", "a" * 40, rf, str(tmp_path / "p"))
    assert sleeps == [0.5, 7.0, 2.0]
    assert len(opener.requests) == 4


def test_fresh_redirect_asked_on_each_retry(tmp_path):
    data = os.urandom(100)
    rf = lfs("w.bin", data)
    hits = []

    def api(req):
        hits.append(req.full_url)
        raise http_error(req.full_url, 302, {"Location": "http://cdn.test/x?sig=%d" % len(hits)})

    opener = Opener(api, fail(503), api, ok(data))
    c, _unused = client(opener)
    c.download("o/n", "a" * 40, rf, str(tmp_path / "p"))
    assert [r.full_url for r in opener.requests][1] == "http://cdn.test/x?sig=1"
    assert [r.full_url for r in opener.requests][3] == "http://cdn.test/x?sig=2"
    assert len(hits) == 2


def test_unreachable_after_retries_names_everything_but_token(tmp_path):
    def refused(req):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused " + TOKEN))

    rf = RemoteFile("dir/c.json", 2, git_sha1="0" * 40)
    c, sleeps = client(Opener(*([refused] * 4)), retries=3)
    with pytest.raises(HubError) as ei:
        c.download("o/n", "a" * 40, rf, str(tmp_path / "p"))
    assert ei.value.kind == "unreachable"
    assert "o/n" in str(ei.value) and "dir/c.json" in str(ei.value) and "a" * 40 in str(ei.value)
    assert TOKEN not in str(ei.value)
    assert sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("code,headers,kind", [
    (401, {}, "unauthorized"),
    (403, {"X-Error-Code": "GatedRepo"}, "gated"),
    (404, {"X-Error-Code": "EntryNotFound"}, "entry_not_found"),
    (404, {"X-Error-Code": "RepoNotFound"}, "repo_not_found"),
])
def test_download_http_errors_are_mapped(tmp_path, code, headers, kind):
    c, _unused = client(Opener(fail(code, headers)))
    with pytest.raises(HubError) as ei:
        c.download("o/n", "a" * 40, RemoteFile("c.json", 2, git_sha1="0" * 40), str(tmp_path / "p"))
    assert ei.value.kind == kind
    assert "c.json" in str(ei.value) and TOKEN not in str(ei.value)


def test_redirect_to_file_url_refused(tmp_path):
    c, _unused = client(Opener(fail(302, {"Location": "file:///etc/passwd"})))
    with pytest.raises(HubError):
        c.download("o/n", "a" * 40, RemoteFile("c.json", 2, git_sha1="0" * 40), str(tmp_path / "p"))


def test_enospc_while_writing_is_disk_full(tmp_path, monkeypatch):
    data = os.urandom(100)
    rf = lfs("w.bin", data)

    def boom(f, data, path):
        raise DiskFullError("Disk full while writing %s" % path)

    monkeypatch.setattr(hf_hub, "write_chunk", boom)
    c, _unused = client(Opener(ok(data)))
    with pytest.raises(DiskFullError):
        c.download("o/n", "a" * 40, rf, str(tmp_path / "p"))


def test_endpoint_must_be_http():
    with pytest.raises(HfModelError):
        HubClient("file:///etc", token=TOKEN)


# -- metadata (huggingface_hub session, faked) --------------------------------------------------


class Meta:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.urls = []

    def get(self, url, params=None):
        self.urls.append((url, params))
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    def classify(self, exc):
        return None


def test_tree_paging_and_retry():
    meta = Meta(_Retryable("HTTP 503", retry_after=2),
                ([{"type": "file", "path": "a", "size": 1, "oid": "1" * 40}], "http://hub.test:8080/next"),
                ([{"type": "directory", "path": "d"}, {"type": "file", "path": "d/b", "size": 3, "oid": "2" * 40}], None))
    c = HubClient(EP, metadata=meta, sleep=lambda s: None)
    files = c.list_files("o/n", "c" * 40)
    assert [f.path for f in files] == ["a", "d/b"]
    assert meta.urls[1][1] == {"recursive": "true", "expand": "false"} and meta.urls[2] == ("http://hub.test:8080/next", None)


def test_resolve_needs_a_sha():
    c = HubClient(EP, metadata=Meta(({"sha": "f" * 40}, None), ({"id": "x"}, None)))
    assert c.resolve("o/n", "main") == "f" * 40
    with pytest.raises(HubError):
        c.resolve("o/n", "main")
