"""A small Hugging Face Hub stand-in for tests (Python standard library only, 3.9+).

It speaks enough of the Hub's HTTP protocol for ``huggingface_hub`` (checked against 2.4.0) to run
``snapshot_download`` / ``hf_hub_download`` / ``list_repo_tree`` / ``model_info`` over plain HTTP,
serving fixture files straight from disk (``os.sendfile``; GiB files are fine, nothing is read whole
into memory).

Fixture layout
--------------
::

    ROOT/<org>/<name>/repo.json                  optional, e.g. {"gated": true} or {"private": true}
    ROOT/<org>/<name>/refs/<refname>/<files...>  one folder per branch or tag: a full snapshot of the repo

* Files may be symlinks (followed), so a big blob can be shared between refs without copying.
* The commit sha of a ref is ``sha1`` over the sorted ``(path, blob-id)`` list of its files (the ref
  name is not included: two refs with identical content share a commit). Any ref may also be
  addressed by its commit sha.
* ``repo.json`` keys: ``gated`` (bool; a valid token is required, else 401 ``GatedRepo``),
  ``private`` (bool; a valid token is required, else 401 ``RepoNotFound`` as the Hub hides the repo),
  ``allowed_tokens`` (list; for a gated/private repo, only these valid tokens get in: others get
  403 ``GatedRepo`` / 404 ``RepoNotFound``), ``tags`` (list of ref names reported as tags, not branches).
* A file is LFS when its size is >= the LFS threshold (default 1 MiB) or its name matches
  ``*.safetensors``, ``*.bin``, ``*.pt``, ``*.gguf``. LFS files get ``lfs: {oid: <sha256>, size,
  pointerSize}`` in the tree and ``oid`` = git blob sha1 of their git-lfs pointer text; other files
  get ``oid`` = git blob sha1 of their content. Directory oids are real git tree hashes.
* Hashes are computed once when the root is scanned (start-up, ``/_test/reload``), before the port
  file is written, with a cache keyed on (path, size, mtime, inode) so a reload only re-hashes what
  changed; ``--hash-cache FILE`` keeps that cache across restarts.

What it models
--------------
* ``GET /api/models/{org}/{name}[/revision/{rev}]`` (``id``, ``sha``, ``siblings``; ``?blobs=true``
  adds ``size``/``blobId``/``lfs``), ``GET /api/models/{org}/{name}/tree/{rev}[/{path}]``
  (``recursive``, ``expand`` adds ``lastCommit``; paging with ``Link: <...>; rel="next"``),
  ``GET /api/models/{org}/{name}/refs``, ``GET /api/whoami-v2``.
* ``HEAD``/``GET /{org}/{name}/resolve/{rev}/{path}``: ``X-Repo-Commit``, quoted ``ETag`` (git sha1, or
  sha256 for LFS), ``Content-Length``, ``Accept-Ranges``; ranges ``bytes=N-``, ``bytes=N-M``,
  ``bytes=-N`` (206 + ``Content-Range``; 416 when unsatisfiable). Non-LFS files are served directly.
  LFS files answer ``302`` with ``X-Linked-Etag``/``X-Linked-Size`` and a ``Location`` on a second
  listening socket (another origin, like the Hub's CDN): ``/_cdn/<sha256>?expires=..&sig=..``, an
  HMAC-signed URL that expires (default 60 s; expired or bad signature -> 403). The CDN rejects any
  request carrying ``Authorization`` with 400, as S3 does (the client must drop the token).
* Errors as the Hub sends them: ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``, ``GatedRepo``), ``X-Error-Message`` and a JSON body ``{"error": ...}``; a missing
  or private repo answers 401 without a valid token and 404 with one; a bearer token that is not in
  ``--token`` gets 401 "Invalid credentials in Authorization header". With no ``--token`` at all,
  any bearer token counts as valid.
* HTTP/1.1 keep-alive (every answer has ``Content-Length``), one thread per connection.

What it does not model
----------------------
No Xet (never sends ``X-Xet-*`` headers or ``xetHash``, so clients use plain HTTP), no git smart-HTTP
endpoints, no uploads/commits, no datasets or spaces, no repo ids without an org, no ``refs/pr/N``
(ref folder names cannot hold ``/``), no security scan data, no rate limiting (but see faults), no
compression, no HTTPS.

Test hooks
----------
On the API port, under ``/_test/`` (not logged themselves), and as the Python API of
:class:`HubServer` when started in-process:

* ``GET /_test/log`` -> JSON list of requests (both ports): ``role`` (api|cdn), ``method``, ``path``,
  ``query``, ``status``, ``range``, ``auth`` (whether ``Authorization`` was present; the token is never
  logged), ``bytes`` (body bytes sent), ``note``, ``time``, ``done`` (false while the answer is still being sent; an entry
  is added when a request starts and updated in place). ``POST /_test/log/clear``.
* ``POST /_test/faults`` with a JSON object (or list of them); ``GET /_test/faults``;
  ``POST /_test/faults/clear``. Keys: ``kind`` (``truncate``: full ``Content-Length`` but a clean close
  after ``after_bytes`` body bytes; ``corrupt``: bytes ``after_bytes`` .. ``after_bytes+length-1`` of the
  body (default 0, 1) are XOR-ed with 0xFF, same length; ``status``: answer ``status`` (default 503)
  with optional ``retry_after``; ``drop``: abortive close (TCP RST) after ``after_bytes`` body bytes, or
  before any answer when ``after_bytes`` is null; ``slow``: send the body at ``rate`` bytes/s),
  ``path_glob`` (fnmatch on the file's path in the repo, or on ``org/name/path``), ``url_glob``
  (fnmatch on the request path, any endpoint), ``repo`` (``org/name``), ``count`` (hits before the
  fault is used up; default 1; null = forever), ``methods`` (default ``["GET"]``), ``port``
  (``api``|``cdn``|``any``, default ``any``). Body faults apply where a file body is streamed (GET resolve of a
  non-LFS file, CDN GET); ``status`` applies to any matching request (for an LFS file, also to the resolve
  that answers 302). The first matching fault wins, and each hit uses one ``count``.
  Seen with huggingface_hub 2.4.0: a ``truncate`` surfaces as ``httpx2.RemoteProtocolError`` and is retried
  (from byte 0 unless whole 10 MiB chunks had arrived); a ``drop`` surfaces as ``httpx2.ReadError`` and is
  not retried (the download fails); ``status`` 503 on the CDN GET fails the download (429 there is retried,
  after ``Retry-After``), while in ``snapshot_download`` a 503 on the HEAD or on an ``/api`` call is retried.
* ``POST /_test/reload`` rescans ROOT (add a ref, change a file between runs).
* ``POST /_test/config`` with ``{"cdn_ttl": s, "page_size": n}``.

Python API: ``HubServer(root, host="127.0.0.1", port=0, cdn_port=0, cdn_host=None, tokens=(), lfs_threshold=...,
page_size=..., cdn_ttl=..., hash_cache=None)`` with ``.start()`` (serves on daemon threads; returns self), ``.stop()``,
context manager use, ``.url``, ``.cdn_url``, ``.port``, ``.cdn_port``, ``.log`` (a copy), ``.clear_log()``,
``.wait_idle(timeout)`` (until every logged answer is complete, so ``bytes`` are final), ``.add_fault(kind,
path_glob=None, **spec)``, ``.clear_faults()``, ``.faults``, ``.reload()``, ``.commit_sha(repo_id, rev)``,
``.file_entry(repo_id, path, rev)`` (``.sha256``, ``.oid``, ``.lfs``, ``.size``, ``.abspath``),
``.sign_cdn_url(sha256, host=None, expires=None)``; ``.cdn_ttl`` and ``.page_size`` may be changed at any time.

CLI::

    python3 tests/support/hub_server.py --root DIR [--host 127.0.0.1] [--port 0] [--cdn-port 0]
        [--cdn-host NAME] [--token T]... [--lfs-threshold BYTES] [--page-size N] [--cdn-ttl S]
        [--port-file F] [--hash-cache F] [--verbose]

``--port-file`` is written (atomically) with ``{"port": .., "cdn_port": ..}`` once both sockets listen and
the root is hashed. ``--cdn-host`` is the host name put into ``Location`` (default: the host part of the
request's ``Host`` header). SIGTERM/SIGINT exit cleanly.
"""

import argparse
import fnmatch
import hashlib
import hmac
import json
import math
import os
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

DEFAULT_LFS_THRESHOLD = 1024 * 1024
DEFAULT_PAGE_SIZE = 1000
DEFAULT_CDN_TTL = 60
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")
HASH_CHUNK = 8 * 1024 * 1024
SEND_CHUNK = 4 * 1024 * 1024
FIXED_DATE = "2024-01-01T00:00:00.000Z"


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256, size):
    """The pointer text git-lfs commits in place of the file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def hash_file(path, want_sha1=True):
    """(sha256, git blob sha1 or None) of a file, read in chunks; the git sha1 is skipped for LFS files."""
    size = os.path.getsize(path)
    h256 = hashlib.sha256()
    h1 = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False) if want_sha1 else None
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h256.update(view[:n])
            if h1 is not None:
                h1.update(view[:n])
    return h256.hexdigest(), (h1.hexdigest() if h1 is not None else None)


class FileEntry:
    __slots__ = ("abspath", "git_sha1", "lfs", "mtime", "oid", "path", "pointer_size", "sha256", "size")

    def to_tree(self, expand=False, commit=None):
        d = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            d["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        if expand:
            d["lastCommit"] = {"id": commit, "title": "Fixture snapshot", "date": _iso(self.mtime)}
        return d


class Ref:
    def __init__(self, name, files):
        self.names = [name]
        self.files = files  # path -> FileEntry
        items = sorted((p, e.oid) for p, e in files.items())
        text = "".join(f"{p}\0{oid}\n" for p, oid in items)
        self.commit = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        self.dirs = {}  # dir path ("" = root) -> git tree oid
        self.children = {}  # dir path -> sorted list of (name, is_dir)
        self._build_trees()
        self.mtime = max([e.mtime for e in files.values()] or [0])

    def _build_trees(self):
        root = {}
        for path, entry in self.files.items():
            node = root
            parts = path.split("/")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = entry

        def walk(node, prefix):
            raw = []
            kids = []
            for name, sub in node.items():
                if isinstance(sub, dict):
                    oid = walk(sub, prefix + name + "/")
                    raw.append(((name + "/").encode(), b"40000 " + name.encode() + b"\0" + bytes.fromhex(oid)))
                    kids.append((name, True))
                else:
                    raw.append((name.encode(), b"100644 " + name.encode() + b"\0" + bytes.fromhex(sub.oid)))
                    kids.append((name, False))
            raw.sort()
            body = b"".join(r[1] for r in raw)
            oid = hashlib.sha1(b"tree %d\0" % len(body) + body, usedforsecurity=False).hexdigest()
            key = prefix[:-1]
            self.dirs[key] = oid
            self.children[key] = sorted(kids)
            return oid

        walk(root, "")


class Repo:
    def __init__(self, repo_id, meta, refs):
        self.id = repo_id
        self.meta = meta
        self.refs = refs  # name -> Ref
        self.by_commit = {}
        for ref in refs.values():
            self.by_commit.setdefault(ref.commit, ref)
        self.tags = set(meta.get("tags") or [])

    def resolve(self, rev):
        if rev in self.refs:
            return self.refs[rev]
        for prefix in ("refs/heads/", "refs/tags/"):
            if rev.startswith(prefix) and rev[len(prefix) :] in self.refs:
                return self.refs[rev[len(prefix) :]]
        return self.by_commit.get(rev.lower()) if len(rev) == 40 else None


class Index:
    """Everything known about ROOT after one scan."""

    def __init__(self, repos, cdn):
        self.repos = repos  # "org/name" -> Repo
        self.cdn = cdn  # sha256 -> (abspath, size, [org/name/path, ...])


class Scanner:
    def __init__(self, root, lfs_threshold, hash_cache=None, workers=None):
        self.root = os.path.abspath(root)
        self.lfs_threshold = lfs_threshold
        self.hash_cache_file = hash_cache
        self.cache = {}  # (realpath, size, mtime_ns, ino) -> (sha256, sha1)
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        if hash_cache and os.path.exists(hash_cache):
            try:
                with open(hash_cache) as f:
                    for row in json.load(f):
                        self.cache[tuple(row[0])] = tuple(row[1])
            except (OSError, ValueError, TypeError, IndexError):
                self.cache = {}

    def is_lfs(self, path, size):
        name = path.rsplit("/", 1)[-1]
        return size >= self.lfs_threshold or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)

    def scan(self):
        pending = []  # (key, FileEntry)
        repos_raw = {}
        root = self.root
        for org in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            org_dir = os.path.join(root, org)
            if org.startswith(".") or not os.path.isdir(org_dir):
                continue
            for name in sorted(os.listdir(org_dir)):
                repo_dir = os.path.join(org_dir, name)
                refs_dir = os.path.join(repo_dir, "refs")
                if name.startswith(".") or not os.path.isdir(refs_dir):
                    continue
                meta = {}
                meta_file = os.path.join(repo_dir, "repo.json")
                if os.path.isfile(meta_file):
                    with open(meta_file) as f:
                        meta = json.load(f)
                refs = {}
                for ref in sorted(os.listdir(refs_dir)):
                    ref_dir = os.path.join(refs_dir, ref)
                    if not os.path.isdir(ref_dir):
                        continue
                    files = {}
                    for dirpath, dirnames, filenames in os.walk(ref_dir, followlinks=True):
                        dirnames.sort()
                        for fn in sorted(filenames):
                            abspath = os.path.join(dirpath, fn)
                            try:
                                st = os.stat(abspath)
                            except OSError:
                                continue  # dangling link
                            rel = os.path.relpath(abspath, ref_dir).replace(os.sep, "/")
                            e = FileEntry()
                            e.path = rel
                            e.abspath = abspath
                            e.size = st.st_size
                            e.mtime = st.st_mtime
                            e.lfs = self.is_lfs(rel, st.st_size)
                            key = (os.path.realpath(abspath), st.st_size, st.st_mtime_ns, st.st_ino)
                            pending.append((key, e))
                            files[rel] = e
                    refs[ref] = files
                repos_raw[f"{org}/{name}"] = (meta, refs)

        need_sha1 = {}
        for k, e in pending:
            need_sha1[k] = need_sha1.get(k, False) or not e.lfs
        todo = sorted(
            (k for k, sha1 in need_sha1.items() if k not in self.cache or (sha1 and self.cache[k][1] is None)),
            key=lambda k: -k[1],
        )
        if todo:
            with ThreadPoolExecutor(self.workers) as pool:
                for key, result in zip(todo, pool.map(lambda k: hash_file(k[0], need_sha1[k]), todo)):
                    self.cache[key] = result
        live = {item[0] for item in pending}
        self.cache = {k: v for k, v in self.cache.items() if k in live}
        if self.hash_cache_file:
            tmp = self.hash_cache_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump([[list(k), list(v)] for k, v in self.cache.items()], f)
            os.replace(tmp, self.hash_cache_file)

        cdn = {}
        for key, e in pending:
            e.sha256, e.git_sha1 = self.cache[key]
            if e.lfs:
                ptr = lfs_pointer(e.sha256, e.size)
                e.pointer_size = len(ptr)
                e.oid = git_blob_sha1(ptr)
            else:
                e.pointer_size = None
                e.oid = e.git_sha1
        repos = {}
        for repo_id, (meta, refs) in repos_raw.items():
            repo = Repo(repo_id, meta, {n: Ref(n, files) for n, files in refs.items()})
            repos[repo_id] = repo
            for ref in repo.refs.values():
                for e in ref.files.values():
                    if e.lfs:
                        slot = cdn.setdefault(e.sha256, (e.abspath, e.size, []))
                        slot[2].append(f"{repo_id}/{e.path}")
        return Index(repos, cdn)


class HubError(Exception):
    def __init__(self, status, message, code=None, headers=None):
        Exception.__init__(self, message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


class _Abort(Exception):
    """Connection was cut on purpose (fault) or by the peer."""


class Fault:
    KINDS = ("truncate", "corrupt", "status", "drop", "slow")

    def __init__(self, spec):
        kind = spec.get("kind")
        if kind not in self.KINDS:
            raise ValueError("fault kind must be one of {}".format(", ".join(self.KINDS)))
        self.spec = dict(spec)
        self.kind = kind
        self.path_glob = spec.get("path_glob")
        self.url_glob = spec.get("url_glob")
        self.repo = spec.get("repo")
        self.count = spec.get("count", 1)
        self.methods = [m.upper() for m in spec.get("methods") or ["GET"]]
        self.port = spec.get("port", "any")
        self.status = int(spec.get("status", 503))
        self.retry_after = spec.get("retry_after")
        self.after_bytes = spec.get("after_bytes", 0 if kind != "drop" else None)
        self.length = int(spec.get("length", 1))
        self.rate = spec.get("rate", 64 * 1024)
        if self.path_glob is None and self.url_glob is None:
            raise ValueError("a fault needs path_glob or url_glob")

    def matches(self, role, method, url_path, repo_id, file_paths):
        if method not in self.methods or self.port not in ("any", role):
            return False
        if self.url_glob is not None and fnmatch.fnmatchcase(url_path, self.url_glob):
            return True
        if self.path_glob is None or not file_paths:
            return False
        for full in file_paths:
            org, name, path = full.split("/", 2)
            rid = org + "/" + name
            if repo_id is not None and rid != repo_id:
                continue
            if self.repo is not None and rid != self.repo:
                continue
            if fnmatch.fnmatchcase(path, self.path_glob) or fnmatch.fnmatchcase(full, self.path_glob):
                return True
        return False

    def describe(self):
        d = dict(self.spec)
        d["count"] = self.count
        return d


def parse_range(header, size):
    """Return None (no/ignored range), (start, end_inclusive), or "unsatisfiable"."""
    if not header:
        return None
    header = header.strip()
    if not header.startswith("bytes=") or "," in header:
        return None
    spec = header[6:].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size - 1) if size else "unsatisfiable"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or end < start:
        return None if end < start and last else "unsatisfiable"
    if start >= size:
        return "unsatisfiable"
    return (start, min(end, size - 1))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hub-stand-in/1.0"
    role = "api"
    disable_nagle_algorithm = True

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def hub(self):
        return self.server.hub

    def log_message(self, fmt, *args):
        if self.hub.verbose:
            sys.stderr.write(f"[{self.role}] {self.address_string()} - {fmt % args}\n")

    def setup(self):
        BaseHTTPRequestHandler.setup(self)
        self.hub._track(self.connection, True)

    def finish(self):
        try:
            BaseHTTPRequestHandler.finish(self)
        finally:
            self.hub._track(self.connection, False)

    def _begin(self):
        split = urlsplit(self.path)
        self.url_path = split.path
        self.query = split.query
        self.params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self.rec = {
            "time": time.time(),
            "role": self.role,
            "method": self.command,
            "path": split.path,
            "query": split.query,
            "status": None,
            "range": self.headers.get("Range"),
            "auth": self.headers.get("Authorization") is not None,
            "bytes": 0,
            "note": None,
            "done": False,
        }
        self.sent_status = None
        # Logged when it starts (and updated in place), so that a test that clears the log after it got an
        # answer never finds that request showing up later.
        if not self.url_path.startswith("/_test/"):
            self.hub._log_append(self.rec)

    def _finish_log(self):
        if self.rec is not None:
            self.rec["done"] = True

    def send_response(self, code, message=None):
        self.sent_status = code
        if self.rec is not None:
            self.rec["status"] = code
        BaseHTTPRequestHandler.send_response(self, code, message)

    def _send_bytes(self, status, body, headers=None, content_type="application/json; charset=utf-8"):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self.rec["bytes"] += len(body)

    def _send_json(self, status, obj, headers=None):
        self._send_bytes(status, json.dumps(obj).encode(), headers)

    def _send_error(self, err):
        headers = dict(err.headers)
        if err.code:
            headers["X-Error-Code"] = err.code
        headers["X-Error-Message"] = err.message.encode("ascii", "replace").decode()
        self._send_json(err.status, {"error": err.message}, headers)

    def _read_body(self):
        if self.body is None:
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                n = 0
            self.body = self.rfile.read(n) if n > 0 else b""
        return self.body

    def _dispatch(self):
        self.rec = None
        self.body = None
        self._begin()
        if self.command == "POST":
            self._read_body()  # always consumed, so that the connection can be kept alive
        try:
            try:
                fault = None
                if not self.url_path.startswith("/_test/"):
                    fault = self.hub._take_fault(self.role, self.command, self.url_path, None, None, status_only=True)
                if fault is not None:
                    self._apply_status_fault(fault)
                else:
                    self.route()
            except HubError as err:
                self._send_error(err)
        except _Abort as e:
            self.rec["note"] = self.rec["note"] or str(e)
            self.close_connection = True
        except (TimeoutError, BrokenPipeError, ConnectionResetError) as e:
            self.rec["note"] = f"client went away: {e.__class__.__name__}"
            self.close_connection = True
        except Exception as e:  # a bug in this server: say so, and never leave the client hanging
            traceback.print_exc()
            self.rec["note"] = f"server error: {e!r}"
            self.close_connection = True
            if self.sent_status is None:
                try:
                    self._send_json(500, {"error": f"hub_server internal error: {e!r}"})
                except OSError:
                    pass
        finally:
            self._finish_log()

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _apply_status_fault(self, fault):
        self.rec["note"] = f"fault:{fault.kind}"
        if fault.kind == "drop":
            self._abort_connection()
            raise _Abort("fault:drop before answer")
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        self._send_json(fault.status, {"error": f"Injected fault: status {fault.status}"}, headers)

    def _abort_connection(self):
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass

    def _auth(self):
        """None (no header), "valid", or "invalid"."""
        value = self.headers.get("Authorization")
        if value is None:
            return None
        parts = value.split(None, 1)
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return "invalid"
        token = parts[1].strip()
        tokens = self.hub.tokens
        if not tokens or token in tokens:
            self.token = token
            return "valid"
        return "invalid"

    # -- file streaming -------------------------------------------------------------------------

    def _serve_file(self, abspath, size, headers, fault_paths, repo_id):
        """Send a file (or a range of it) with the given extra headers, applying body faults."""
        rng = parse_range(self.headers.get("Range"), size)
        fault = self.hub._take_fault(self.role, self.command, self.url_path, repo_id, fault_paths)
        if fault is not None and fault.kind in ("status", "drop") and (fault.kind == "status" or fault.after_bytes is None):
            self._apply_status_fault(fault)
            return
        if rng == "unsatisfiable":
            h = dict(headers)
            h["Content-Range"] = f"bytes */{size}"
            raise HubError(416, "Requested range not satisfiable", headers=h)
        start, end = (0, size - 1) if rng is None else rng
        length = end - start + 1 if size else 0
        self.send_response(200 if rng is None else 206)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if rng is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD" or length == 0:
            return
        if fault is not None:
            self.rec["note"] = f"fault:{fault.kind}"
        with open(abspath, "rb", buffering=0) as f:
            self._stream(f, start, length, fault)

    def _stream(self, f, start, length, fault):
        sock = self.connection
        limit = length
        kind = fault.kind if fault is not None else None
        if kind in ("truncate", "drop"):
            limit = max(0, min(length, int(fault.after_bytes or 0)))
        sent = 0
        if kind in (None, "truncate", "drop"):
            while sent < limit:
                n = os.sendfile(sock.fileno(), f.fileno(), start + sent, min(SEND_CHUNK, limit - sent))
                if n == 0:
                    break  # file shrank under us
                sent += n
                self.rec["bytes"] = sent
        else:
            rate = max(1, int(fault.rate or 1)) if kind == "slow" else None
            chunk = max(1, min(SEND_CHUNK, rate // 10)) if rate else 1024 * 1024
            c_from = int(fault.after_bytes or 0) if kind == "corrupt" else -1
            c_to = c_from + fault.length if kind == "corrupt" else -1
            f.seek(start)
            t0 = time.monotonic()
            while sent < limit:
                data = f.read(min(chunk, limit - sent))
                if not data:
                    break
                if kind == "corrupt" and c_from < sent + len(data) and c_to > sent:
                    buf = bytearray(data)
                    for i in range(max(c_from, sent), min(c_to, sent + len(data))):
                        buf[i - sent] ^= 0xFF
                    data = bytes(buf)
                sock.sendall(data)
                sent += len(data)
                self.rec["bytes"] = sent
                if rate:
                    delay = t0 + sent / float(rate) - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        if sent < length:
            if kind == "drop":
                self._abort_connection()
                raise _Abort(f"fault:drop after {sent} bytes")
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            raise _Abort(f"fault:truncate after {sent} bytes" if kind == "truncate" else "short file")


class ApiHandler(_Handler):
    role = "api"

    def route(self):
        raw = self.url_path
        segs = raw.split("/")[1:]
        if raw.startswith("/_test/"):
            return self.test_hook(raw[len("/_test/") :])
        if self.command == "POST":
            raise HubError(404, "Not Found")
        if segs[:2] == ["api", "whoami-v2"]:
            if self._auth() != "valid":
                raise HubError(401, "Invalid credentials in Authorization header")
            return self._send_json(200, {"type": "user", "name": "test-user", "auth": {"type": "access_token"}})
        if len(segs) >= 4 and segs[0] == "api" and segs[1] == "models":
            repo_id = f"{unquote(segs[2])}/{unquote(segs[3])}"
            rest = segs[4:]
            if self.command != "GET":
                raise HubError(405, "Method Not Allowed")
            if not rest or rest == [""]:
                return self.api_info(repo_id, "main")
            if rest[0] == "revision" and len(rest) >= 2:
                return self.api_info(repo_id, unquote("/".join(rest[1:])))
            if rest[0] == "tree" and len(rest) >= 2:
                return self.api_tree(repo_id, unquote(rest[1]), unquote("/".join(rest[2:])).strip("/"))
            if rest[0] == "refs" and len(rest) == 1:
                return self.api_refs(repo_id)
            raise HubError(404, "Not Found")
        if len(segs) >= 5 and segs[2] == "resolve":
            repo_id = f"{unquote(segs[0])}/{unquote(segs[1])}"
            return self.resolve(repo_id, unquote(segs[3]), unquote("/".join(segs[4:])))
        raise HubError(404, "Not Found")

    # -- access checks --------------------------------------------------------------------------

    def _repo(self, repo_id):
        auth = self._auth()
        if auth == "invalid":
            raise HubError(401, "Invalid credentials in Authorization header")
        repo = self.hub.index.repos.get(repo_id)
        hidden = "Repository not found"
        if repo is None:
            raise HubError(404 if auth == "valid" else 401, hidden, "RepoNotFound")
        allowed = repo.meta.get("allowed_tokens")
        if repo.meta.get("private"):
            if auth != "valid":
                raise HubError(401, hidden, "RepoNotFound")
            if allowed is not None and self.token not in allowed:
                raise HubError(404, hidden, "RepoNotFound")
        if repo.meta.get("gated"):
            if auth != "valid":
                raise HubError(
                    401, f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to access it. Please log in.", "GatedRepo"
                )
            if allowed is not None and self.token not in allowed:
                raise HubError(403, f"Access to model {repo_id} is restricted and you are not in the authorized list.", "GatedRepo")
        return repo

    def _ref(self, repo, rev):
        ref = repo.resolve(rev)
        if ref is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return ref

    # -- endpoints ------------------------------------------------------------------------------

    def api_info(self, repo_id, rev):
        repo = self._repo(repo_id)
        ref = self._ref(repo, rev)
        blobs = self.params.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path in sorted(ref.files):
            e = ref.files[path]
            s = {"rfilename": path}
            if blobs:
                s["size"] = e.size
                s["blobId"] = e.oid
                if e.lfs:
                    s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": e.pointer_size}
            siblings.append(s)
        org = repo_id.split("/")[0]
        gated = repo.meta.get("gated", False)
        body = {
            "_id": hashlib.sha1(repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": org,
            "sha": ref.commit,
            "lastModified": _iso(ref.mtime),
            "createdAt": FIXED_DATE,
            "private": bool(repo.meta.get("private", False)),
            "gated": "auto" if gated is True else gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(repo.meta.get("model_tags", [])),
            "library_name": repo.meta.get("library_name"),
            "siblings": siblings,
        }
        if body["library_name"] is None:
            del body["library_name"]
        self._send_json(200, body)

    def api_refs(self, repo_id):
        repo = self._repo(repo_id)
        out = {"branches": [], "tags": [], "converts": []}
        for name, ref in sorted(repo.refs.items()):
            kind = "tags" if name in repo.tags else "branches"
            out[kind].append({"name": name, "ref": "refs/{}/{}".format("tags" if kind == "tags" else "heads", name), "targetCommit": ref.commit})
        self._send_json(200, out)

    def api_tree(self, repo_id, rev, path):
        repo = self._repo(repo_id)
        ref = self._ref(repo, rev)
        recursive = self.params.get("recursive", "").lower() in ("1", "true")
        expand = self.params.get("expand", "").lower() in ("1", "true")
        if path not in ref.dirs:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": ref.commit})
        entries = []

        def emit(dpath):
            for name, is_dir in ref.children[dpath]:
                full = dpath + "/" + name if dpath else name
                if is_dir:
                    entries.append({"type": "directory", "oid": ref.dirs[full], "size": 0, "path": full})
                    if recursive:
                        emit(full)
                else:
                    entries.append(ref.files[full].to_tree(expand, ref.commit))

        emit(path)
        page_size = self.hub.page_size
        try:
            cursor = int(self.params.get("cursor", "0") or 0)
        except ValueError:
            raise HubError(400, "Invalid cursor") from None
        page = entries[cursor : cursor + page_size]
        headers = {"X-Repo-Commit": ref.commit}
        if cursor + page_size < len(entries):
            params = {k: v for k, v in self.params.items() if k != "cursor"}
            params["cursor"] = str(cursor + page_size)
            qs = "&".join("{}={}".format(quote(k, safe=""), quote(v, safe="")) for k, v in sorted(params.items()))
            headers["Link"] = f'<{self._origin()}{self.url_path}?{qs}>; rel="next"'
        self._send_json(200, page, headers)

    def _origin(self):
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return f"http://{host}"

    def resolve(self, repo_id, rev, path):
        if self.command not in ("GET", "HEAD"):
            raise HubError(405, "Method Not Allowed")
        repo = self._repo(repo_id)
        ref = self._ref(repo, rev)
        e = ref.files.get(path)
        if e is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": ref.commit})
        headers = {"X-Repo-Commit": ref.commit}
        fault_paths = [f"{repo_id}/{path}"]
        if not e.lfs:
            headers["ETag"] = f'"{e.git_sha1}"'
            return self._serve_file(e.abspath, e.size, headers, fault_paths, repo_id)
        fault = self.hub._take_fault(self.role, self.command, self.url_path, repo_id, fault_paths, status_only=True)
        if fault is not None:
            return self._apply_status_fault(fault)
        headers["ETag"] = f'"{e.sha256}"'
        headers["X-Linked-Etag"] = f'"{e.sha256}"'
        headers["X-Linked-Size"] = str(e.size)
        headers["Location"] = self.hub.sign_cdn_url(e.sha256, host=self.hub.cdn_host or self._host_part())
        headers["Accept-Ranges"] = "bytes"
        self._send_bytes(302, b"", headers, content_type="text/plain; charset=utf-8")

    def _host_part(self):
        host = self.headers.get("Host") or self.server.server_address[0]
        if host.startswith("["):
            return host[: host.index("]") + 1]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    # -- test hooks -----------------------------------------------------------------------------

    def test_hook(self, name):
        hub = self.hub
        body = self.body or b""
        if self.command == "GET" and name == "log":
            return self._send_json(200, hub.log)
        if self.command == "GET" and name == "faults":
            return self._send_json(200, hub.faults)
        if self.command != "POST":
            raise HubError(404, "Not Found")
        try:
            data = json.loads(body.decode() or "null")
        except ValueError:
            raise HubError(400, "Body is not JSON") from None
        if name == "log/clear":
            hub.clear_log()
            return self._send_json(200, {"ok": True})
        if name == "faults/clear":
            hub.clear_faults()
            return self._send_json(200, {"ok": True})
        if name == "faults":
            specs = data if isinstance(data, list) else [data]
            try:
                for spec in specs:
                    hub.add_fault(**spec)
            except (ValueError, TypeError) as e:
                raise HubError(400, str(e)) from None
            return self._send_json(200, hub.faults)
        if name == "reload":
            t0 = time.time()
            hub.reload()
            index = hub.index
            return self._send_json(200, {"repos": sorted(index.repos), "seconds": round(time.time() - t0, 3)})
        if name == "config":
            data = data or {}
            if "cdn_ttl" in data:
                hub.cdn_ttl = float(data["cdn_ttl"])
            if "page_size" in data:
                hub.page_size = max(1, int(data["page_size"]))
            return self._send_json(200, {"cdn_ttl": hub.cdn_ttl, "page_size": hub.page_size})
        raise HubError(404, "Not Found")


class CdnHandler(_Handler):
    role = "cdn"

    def route(self):
        if self.command not in ("GET", "HEAD"):
            raise HubError(405, "Method Not Allowed")
        segs = self.url_path.split("/")
        if len(segs) != 3 or segs[1] != "_cdn":
            raise HubError(404, "Not Found")
        if self.headers.get("Authorization") is not None:
            self.rec["note"] = "rejected: Authorization header sent to the CDN"
            if self.hub.verbose or not self.hub.quiet:
                sys.stderr.write(f"hub_server: CDN request with an Authorization header: {self.url_path}\n")
            raise HubError(
                400,
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                "Signature query string parameter or the Authorization header should be specified",
            )
        sha = segs[2]
        if not self.hub.check_signature(sha, self.params.get("expires"), self.params.get("sig")):
            self.rec["note"] = "rejected: bad or expired signature"
            raise HubError(403, "Request has expired or the signature does not match")
        slot = self.hub.index.cdn.get(sha)
        if slot is None:
            raise HubError(404, "NoSuchKey")
        abspath, size, names = slot
        headers = {"ETag": f'"{sha}"', "Cache-Control": "public, max-age=604800, immutable"}
        self._serve_file(abspath, size, headers, names, None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler, hub):
        host = addr[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.hub = hub
        ThreadingHTTPServer.__init__(self, addr, handler)


class HubServer:
    """In-process Hub stand-in: ``with HubServer(root) as hub: ... hub.url ...``."""

    def __init__(
        self,
        root,
        host="127.0.0.1",
        port=0,
        cdn_port=0,
        cdn_host=None,
        tokens=(),
        lfs_threshold=DEFAULT_LFS_THRESHOLD,
        page_size=DEFAULT_PAGE_SIZE,
        cdn_ttl=DEFAULT_CDN_TTL,
        hash_cache=None,
        verbose=False,
        quiet=True,
    ):
        self.root = os.path.abspath(root)
        self.host = host
        self.port = port
        self.cdn_port = cdn_port
        self.cdn_host = cdn_host
        self.tokens = set(tokens or ())
        self.page_size = max(1, int(page_size))
        self.cdn_ttl = cdn_ttl
        self.verbose = verbose
        self.quiet = quiet
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._log = []
        self._faults = []
        self._conns = set()
        self._scanner = Scanner(root, lfs_threshold, hash_cache)
        self.index = Index({}, {})
        self._api = self._cdn = None
        self._threads = []

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self):
        self.reload()
        self._api = _Server((self.host, self.port), ApiHandler, self)
        self._cdn = _Server((self.host, self.cdn_port), CdnHandler, self)
        self.port = self._api.server_address[1]
        self.cdn_port = self._cdn.server_address[1]
        for srv in (self._api, self._cdn):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        for srv in (self._api, self._cdn):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        self._threads = []
        self._api = self._cdn = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _track(self, conn, add):
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    @property
    def _display_host(self):
        h = self.host
        if h in ("0.0.0.0", ""):
            return "127.0.0.1"
        if h == "::":
            return "[::1]"
        return f"[{h}]" if ":" in h else h

    @property
    def url(self):
        return f"http://{self._display_host}:{self.port}"

    @property
    def cdn_url(self):
        return f"http://{self.cdn_host or self._display_host}:{self.cdn_port}"

    def reload(self):
        with self._reload_lock:
            self.index = self._scanner.scan()
        return self.index

    # -- repo helpers ---------------------------------------------------------------------------

    def commit_sha(self, repo_id, rev="main"):
        return self.index.repos[repo_id].resolve(rev).commit

    def file_entry(self, repo_id, path, rev="main"):
        return self.index.repos[repo_id].resolve(rev).files[path]

    # -- CDN signing ----------------------------------------------------------------------------

    def _sig(self, sha, expires):
        return hmac.new(self._secret, (f"{sha}:{expires}").encode(), hashlib.sha256).hexdigest()

    def sign_cdn_url(self, sha256, host=None, expires=None):
        if expires is None:
            expires = math.ceil(time.time() + self.cdn_ttl)  # valid for at least cdn_ttl seconds
        host = host or self.cdn_host or self._display_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.cdn_port}/_cdn/{sha256}?expires={expires}&sig={self._sig(sha256, expires)}"

    def check_signature(self, sha, expires, sig):
        if not expires or not sig:
            return False
        try:
            exp = int(expires)
        except ValueError:
            return False
        return hmac.compare_digest(self._sig(sha, exp), sig) and time.time() <= exp

    # -- log ------------------------------------------------------------------------------------

    def _log_append(self, rec):
        with self._lock:
            self._log.append(rec)

    @property
    def log(self):
        with self._lock:
            return [dict(r) for r in self._log]

    def wait_idle(self, timeout=5.0):
        """Wait until every logged request has been answered completely (its ``bytes`` are final)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = [r for r in self._log if not r["done"]]
            if not busy or time.monotonic() > deadline:
                return not busy
            time.sleep(0.01)

    def clear_log(self):
        with self._lock:
            del self._log[:]

    # -- faults ---------------------------------------------------------------------------------

    def add_fault(self, kind, path_glob=None, **spec):
        spec["kind"] = kind
        if path_glob is not None:
            spec["path_glob"] = path_glob
        fault = Fault(spec)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self):
        with self._lock:
            del self._faults[:]

    @property
    def faults(self):
        with self._lock:
            return [f.describe() for f in self._faults]

    def _take_fault(self, role, method, url_path, repo_id, file_paths, status_only=False):
        with self._lock:
            for f in self._faults:
                if status_only and f.kind != "status" and not (f.kind == "drop" and f.after_bytes is None):
                    continue
                if status_only and file_paths is None and f.url_glob is None:
                    continue
                if not f.matches(role, method, url_path, repo_id, file_paths):
                    continue
                if f.count is not None:
                    if f.count <= 0:
                        continue
                    f.count -= 1
                return f
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description="Hugging Face Hub stand-in for tests.")
    p.add_argument("--root", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cdn-port", type=int, default=0)
    p.add_argument("--cdn-host", default=None)
    p.add_argument("--token", action="append", default=[])
    p.add_argument("--lfs-threshold", type=int, default=DEFAULT_LFS_THRESHOLD)
    p.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE)
    p.add_argument("--cdn-ttl", type=float, default=DEFAULT_CDN_TTL)
    p.add_argument("--port-file", default=None)
    p.add_argument("--hash-cache", default=None)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)

    hub = HubServer(
        args.root,
        host=args.host,
        port=args.port,
        cdn_port=args.cdn_port,
        cdn_host=args.cdn_host,
        tokens=args.token,
        lfs_threshold=args.lfs_threshold,
        page_size=args.page_size,
        cdn_ttl=args.cdn_ttl,
        hash_cache=args.hash_cache,
        verbose=args.verbose,
        quiet=False,
    )
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    hub.start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"port": hub.port, "cdn_port": hub.cdn_port, "pid": os.getpid()}, f)
        os.replace(tmp, args.port_file)
    sys.stderr.write(f"hub_server: api {hub.url} cdn {hub.cdn_url} root {hub.root} ({len(hub.index.repos)} repos)\n")
    while not stop.wait(0.5):
        pass
    hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
