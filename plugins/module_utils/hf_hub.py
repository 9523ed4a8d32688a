# -*- coding: utf-8 -*-
# Copyright: Contributors to the rhoim.inference collection
# SPDX-License-Identifier: Apache-2.0
"""Hugging Face Hub protocol side of ``rhoim.inference.hf_model``.

Two halves:

* Metadata (revision -> commit, recursive file list with sizes and hashes) goes through
  ``huggingface_hub`` (its HTTP session, headers and error mapping from ``X-Error-Code``),
  imported lazily so that a run pinned to a commit that is already present never needs it.
* Downloads are done here with the standard library, because the client cannot meet our
  requirements: it does not check sha256 while it
  streams (only the byte count), and since huggingface_hub 1.18 it cannot resume a download
  that an earlier process left behind (unique ``.incomplete`` names, never reused).  We hash
  while writing, resume from a ``.part`` file with ``Range``, and ask the endpoint for a fresh
  redirect on each try because signed CDN URLs expire.

Nothing here imports Ansible; plain pytest drives it.  The token never appears in a message:
every text that leaves this module goes through :func:`scrub`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import email.utils
import hashlib
import http.client
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.rhoim.inference.plugins.module_utils.hf_errors import (
    ChecksumError,
    HfModelError,
    HubError,
    MissingLibraryError,
)
from ansible_collections.rhoim.inference.plugins.module_utils.hf_fsops import os_fsync, unlink_missing_ok, write_chunk

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK_SIZE = 4 * 1024 * 1024
# Reads from the network are smaller than hashing reads from disk: progress moves in 1 MiB
# steps on a slow link, and a killed run loses at most 1 MiB that was read but not written.
READ_SIZE = 1024 * 1024
USER_AGENT = "rhoim.inference-hf_model/0.1"
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
REDIRECT_STATUS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
MAX_RETRY_AFTER = 600.0
SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def scrub(text, token):
    """Remove the token (and a ``Bearer`` header built from it) from ``text``."""
    text = "%s" % (text,)
    if token:
        text = text.replace(token, "***")
    return text


def is_commit(revision):
    return bool(revision) and SHA_RE.match(revision) is not None


class RemoteFile:
    """One file of a revision as the Hub lists it."""

    __slots__ = ("git_sha1", "path", "sha256", "size")

    def __init__(self, path, size, sha256=None, git_sha1=None):
        self.path = path
        self.size = int(size)
        self.sha256 = sha256.lower() if sha256 else None
        self.git_sha1 = git_sha1.lower() if git_sha1 else None
        if not self.sha256 and not self.git_sha1:
            raise ValueError("file %s has neither an LFS sha256 nor a git blob id" % path)

    @property
    def algorithm(self):
        return "sha256" if self.sha256 else "git-sha1"

    @property
    def expected(self):
        return self.sha256 or self.git_sha1

    @property
    def key(self):
        """Content identity used to reuse a file of another revision by hard link."""
        return "%s:%s" % (self.algorithm, self.expected)

    def new_hasher(self):
        """A hash object ready for the file's bytes: sha256, or the git blob sha1 (header first)."""
        if self.sha256:
            return hashlib.sha256()
        h = hashlib.sha1()  # noqa: S324 - git object id, not a security use
        h.update(b"blob %d\0" % self.size)
        return h

    def as_dict(self):
        d = {"path": self.path, "size": self.size}
        if self.sha256:
            d["sha256"] = self.sha256
        else:
            d["git_sha1"] = self.git_sha1
        return d

    @classmethod
    def from_dict(cls, d):
        return cls(d["path"], d["size"], d.get("sha256"), d.get("git_sha1"))

    @classmethod
    def from_tree_entry(cls, entry):
        lfs = entry.get("lfs") or None
        if lfs:
            sha256 = lfs.get("oid") or lfs.get("sha256")
            return cls(entry["path"], lfs.get("size", entry.get("size")), sha256=sha256)
        return cls(entry["path"], entry["size"], git_sha1=entry.get("oid"))

    def __repr__(self):
        return "RemoteFile(%r, %d, %s:%s)" % (self.path, self.size, self.algorithm, self.expected)


def hash_file(path, rf, chunk_size=CHUNK_SIZE, limit=None):
    """Hash the file at ``path`` the way ``rf`` is checked; returns (hasher, bytes read)."""
    h = rf.new_hasher()
    n = 0
    buf = bytearray(chunk_size)
    mv = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while limit is None or n < limit:
            want = chunk_size if limit is None else min(chunk_size, limit - n)
            got = f.readinto(mv[:want])
            if not got:
                break
            h.update(mv[:got])
            n += got
    return h, n


def parse_retry_after(value, now=None):
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, min(when.timestamp() - now, MAX_RETRY_AFTER))


def _origin(url):
    p = urllib.parse.urlsplit(url)
    port = p.port or (443 if p.scheme == "https" else 80)
    return (p.scheme.lower(), (p.hostname or "").lower(), port)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would forward ``Authorization`` to another origin on a redirect: we follow by hand."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _Retryable(Exception):
    def __init__(self, reason, retry_after=None, progress=False):
        super(_Retryable, self).__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.progress = progress


class _Restart(Exception):
    """The partial file must be dropped and the download started again from byte 0."""


class _Mismatch(Exception):
    def __init__(self, got):
        super(_Mismatch, self).__init__(got)
        self.got = got


class HfApiMetadata:
    """Revision and tree calls through ``huggingface_hub`` (session, headers, error mapping).

    One request per call, no retries here: :class:`HubClient` retries with the module's own
    ``retries``/``backoff``/``timeout`` (``HfApi.list_repo_tree`` takes no timeout and retries
    on its own schedule, so we page with the same helpers it uses).
    """

    def __init__(self, endpoint, token, timeout):
        try:
            import httpx2
            from huggingface_hub import errors as hf_errors
            from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
        except ImportError as exc:
            raise MissingLibraryError("huggingface_hub", exc) from None
        self._transport_errors = (httpx2.TransportError,)
        self.errors = hf_errors
        self._session = get_session
        self._raise = hf_raise_for_status
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        # token=False: never fall back to a token stored on the managed host.
        self.headers = build_hf_headers(token=token or False, library_name="rhoim.inference", library_version="0.1")

    def get(self, url, params=None):
        """GET ``url``; returns (json, next_url). Raises _Retryable or the library's HTTP errors."""
        try:
            r = self._session().get(url, params=params, headers=self.headers, timeout=self.timeout)
        except self._transport_errors as exc:
            raise _Retryable("%s: %s" % (type(exc).__name__, exc)) from None
        if r.status_code in RETRY_STATUS:
            raise _Retryable("HTTP %d" % r.status_code, parse_retry_after(r.headers.get("Retry-After")))
        self._raise(r)
        link = r.links.get("next", {}).get("url")
        return r.json(), link

    def classify(self, exc):
        """Map a huggingface_hub exception to (kind, status) or None when it is not one of its errors."""
        e = self.errors
        if not isinstance(exc, e.HfHubHTTPError):
            return None
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, e.RevisionNotFoundError):
            return "revision_not_found", status
        if isinstance(exc, e.GatedRepoError):
            return "gated", status
        if isinstance(exc, e.RepositoryNotFoundError):
            return "repo_not_found", status
        if isinstance(exc, e.RemoteEntryNotFoundError):
            return "entry_not_found", status
        if status == 401:
            return "unauthorized", status
        if status == 403:
            return "forbidden", status
        return "http", status


class HubClient:
    """Talks to one Hub endpoint for one run of the module.

    ``metadata`` (an :class:`HfApiMetadata`-like object) and ``opener`` (a urllib opener) can be
    injected; ``sleep`` too, so that tests of the retry schedule do not wait.
    """

    def __init__(self, endpoint=DEFAULT_ENDPOINT, token=None, timeout=30.0, retries=5, backoff=1.0, backoff_max=60.0,
                 sleep=time.sleep, metadata=None, opener=None, chunk_size=CHUNK_SIZE):
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        if urllib.parse.urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise HfModelError("endpoint must be an http:// or https:// URL, got %r" % scrub(endpoint, token))
        self.token = token or None
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.backoff_max = backoff_max
        self.sleep = sleep
        self._metadata = metadata
        self.opener = opener or urllib.request.build_opener(_NoRedirect)
        self.chunk_size = chunk_size

    # -- helpers -----------------------------------------------------------------------------
    @property
    def metadata(self):
        if self._metadata is None:
            self._metadata = HfApiMetadata(self.endpoint, self.token, self.timeout)
        return self._metadata

    def _delay(self, attempt, retry_after):
        if retry_after is not None:
            return retry_after
        return min(self.backoff * (2 ** (attempt - 1)), self.backoff_max)

    def _msg(self, text):
        return scrub(text, self.token)

    def _where(self, repo_id, revision, path=None):
        s = "repo %s, revision %s" % (repo_id, revision)
        if path is not None:
            s += ", file %s" % path
        return s + " at " + self.endpoint

    def _hub_error(self, kind, repo_id, revision, path=None, status=None, extra=""):
        where = self._where(repo_id, revision, path)
        if kind == "repo_not_found":
            hint = ("the token has no access to it or it does not exist" if self.token
                    else "it does not exist, or it is private or gated and no token was given")
            msg = "Repository not found: %s (%s)" % (where, hint)
        elif kind == "revision_not_found":
            msg = "Revision not found: %s (no such branch, tag or commit)" % where
        elif kind == "gated":
            need = ("the token's user has not been granted access: accept the conditions on the Hub" if self.token
                    else "a token of a user who was granted access is required")
            msg = "Gated repository: %s; %s" % (where, need)
        elif kind == "unauthorized":
            msg = "Unauthorized (HTTP 401): %s; %s" % (where, "the token was rejected" if self.token else "a token is required")
        elif kind == "forbidden":
            msg = "Forbidden (HTTP 403): %s; the token lacks permission" % where
        elif kind == "entry_not_found":
            msg = "File not found on the Hub: %s" % where
        else:
            msg = "Hub request failed%s: %s" % (" (HTTP %s)" % status if status else "", where)
        if extra:
            msg += ": " + extra
        return HubError(kind, self._msg(msg))

    def _metadata_call(self, url, params, repo_id, revision):
        attempt = 0
        while True:
            try:
                return self.metadata.get(url, params)
            except _Retryable as exc:
                attempt += 1
                if attempt > self.retries:
                    raise HubError("unreachable", self._msg("Hub endpoint unreachable after %d tries: %s: %s" % (
                        attempt, self._where(repo_id, revision), exc.reason))) from None
                self.sleep(self._delay(attempt, exc.retry_after))
            except HfModelError:
                raise
            except Exception as exc:  # the library's own HTTP errors: mapped, others re-raised
                mapped = self.metadata.classify(exc)
                if mapped is None:
                    raise
                kind, status = mapped
                extra = (getattr(exc, "server_message", None) or "") if kind == "http" else ""
                raise self._hub_error(kind, repo_id, revision, status=status, extra=self._msg(extra)) from None

    # -- metadata ----------------------------------------------------------------------------
    def resolve(self, repo_id, revision):
        """Branch, tag or commit -> commit sha (one API request)."""
        url = "%s/api/models/%s/revision/%s" % (self.endpoint, repo_id, urllib.parse.quote(revision, safe=""))
        data = self._metadata_call(url, None, repo_id, revision)[0]
        sha = (data or {}).get("sha") if isinstance(data, dict) else None
        if not is_commit(sha or ""):
            raise HubError("http", self._msg("The Hub answered without a commit sha for %s" % self._where(repo_id, revision)))
        return sha

    def list_files(self, repo_id, commit):
        """Every file of ``commit`` (recursive tree, following ``Link: rel=next`` pages)."""
        url = "%s/api/models/%s/tree/%s" % (self.endpoint, repo_id, commit)
        params = {"recursive": "true", "expand": "false"}
        files = []
        while url:
            data, url = self._metadata_call(url, params, repo_id, commit)
            params = None  # the next link carries its query
            for entry in data or []:
                if entry.get("type") == "file":
                    try:
                        files.append(RemoteFile.from_tree_entry(entry))
                    except (KeyError, TypeError, ValueError) as exc:
                        raise HubError("http", self._msg("Unusable tree entry %r for %s: %s" % (
                            entry.get("path"), self._where(repo_id, commit), exc))) from None
        return files

    # -- downloads ---------------------------------------------------------------------------
    def file_url(self, repo_id, commit, path):
        return "%s/%s/resolve/%s/%s" % (self.endpoint, repo_id, commit, urllib.parse.quote(path))

    def _open(self, url, headers, repo_id, commit, path):
        """GET ``url`` following redirects by hand: ``Authorization`` only to the endpoint's origin."""
        endpoint_origin = _origin(self.endpoint)
        for _hop in range(MAX_REDIRECTS):
            h = dict(headers)
            if self.token and _origin(url) == endpoint_origin:
                h["Authorization"] = "Bearer %s" % self.token
            req = urllib.request.Request(url, headers=h, method="GET")  # noqa: S310 - scheme checked in __init__
            try:
                return self.opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                code = exc.code
                hdrs = exc.headers
                try:
                    exc.close()
                except Exception:  # noqa: S110 - closing a body that is already gone
                    pass
                if code in REDIRECT_STATUS and hdrs.get("Location"):
                    url = urllib.parse.urljoin(url, hdrs.get("Location"))
                    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                        raise self._hub_error("http", repo_id, commit, path, status=code, extra="redirect to a non-HTTP URL refused") from None
                    continue
                if code in RETRY_STATUS:
                    raise _Retryable("HTTP %d" % code, parse_retry_after(hdrs.get("Retry-After"))) from None
                if code == 416:
                    raise _Restart() from None
                err = hdrs.get("X-Error-Code")
                kind = {"RepoNotFound": "repo_not_found", "RevisionNotFound": "revision_not_found",
                        "EntryNotFound": "entry_not_found", "GatedRepo": "gated"}.get(err)
                if kind is None:
                    kind = {401: "unauthorized", 403: "forbidden", 404: "entry_not_found"}.get(code, "http")
                raise self._hub_error(kind, repo_id, commit, path, status=code) from None
            except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise _Retryable("%s: %s" % (type(exc).__name__, reason)) from None
            except OSError as exc:
                raise _Retryable("%s: %s" % (type(exc).__name__, exc)) from None
        raise HubError("http", self._msg("Too many redirects for %s" % self._where(repo_id, commit, path)))

    def download(self, repo_id, commit, rf, part_path, progress=None, fsync=True):
        """Download ``rf`` into ``part_path``, resuming what is there, verifying while streaming.

        Returns the number of bytes transferred.  On success ``part_path`` holds exactly the
        expected bytes, fsynced unless ``fsync`` is false (the caller then syncs it, for example
        in the background while the next file downloads).  A checksum mismatch deletes the
        partial and fetches once more (counting as a retry); a second mismatch raises
        :class:`ChecksumError`.
        """
        # Seed the hash with what an earlier (possibly killed) run left behind.
        try:
            hasher, offset = hash_file(part_path, rf, self.chunk_size, limit=rf.size + 1)
        except (IOError, OSError):
            hasher, offset = rf.new_hasher(), 0
        if offset > rf.size:
            unlink_missing_ok(part_path)
            hasher, offset = rf.new_hasher(), 0
        state = {"hasher": hasher, "offset": offset}
        transferred = 0
        attempt = 0
        refetched = False
        while True:
            try:
                if state["offset"] < rf.size:
                    transferred += self._fetch_once(repo_id, commit, rf, part_path, state, progress, fsync)
                got = state["hasher"].hexdigest()
                if got != rf.expected:
                    raise _Mismatch(got)
                return transferred
            except _Restart:
                unlink_missing_ok(part_path)
                state["hasher"], state["offset"] = rf.new_hasher(), 0
                attempt += 1
                if attempt > self.retries:
                    raise HubError("http", self._msg("Range requests keep failing for %s" % self._where(repo_id, commit, rf.path))) from None
            except _Mismatch as exc:
                unlink_missing_ok(part_path)
                state["hasher"], state["offset"] = rf.new_hasher(), 0
                attempt += 1
                if refetched or attempt > self.retries:
                    raise ChecksumError(self._msg("Checksum mismatch after re-fetch: %s: expected %s %s, got %s" % (
                        self._where(repo_id, commit, rf.path), rf.algorithm, rf.expected, exc.got))) from None
                refetched = True
            except _Retryable as exc:
                if exc.progress:
                    attempt = 0
                attempt += 1
                if attempt > self.retries:
                    raise HubError("unreachable", self._msg("Download failed after %d tries: %s: %s" % (
                        attempt, self._where(repo_id, commit, rf.path), exc.reason))) from None
                self.sleep(self._delay(attempt, exc.retry_after))

    def _fetch_once(self, repo_id, commit, rf, part_path, state, progress, fsync=True):
        # A fresh request to the endpoint on every try: a signed CDN URL from an earlier
        # redirect may have expired.
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if state["offset"]:
            headers["Range"] = "bytes=%d-" % state["offset"]
        resp = self._open(self.file_url(repo_id, commit, rf.path), headers, repo_id, commit, rf.path)
        moved = 0
        try:
            status = getattr(resp, "status", None) or resp.getcode()
            if state["offset"] and status == 200:
                # The server ignored Range: start over from byte 0 with this very answer.
                state["hasher"], state["offset"] = rf.new_hasher(), 0
                mode = "wb"
            elif status == 206:
                start = _content_range_start(resp.headers.get("Content-Range"))
                if start != state["offset"]:
                    raise _Restart()
                mode = "ab"
            elif status == 200:
                mode = "wb"
            else:
                raise _Retryable("unexpected HTTP %s" % status)
            buf = bytearray(min(self.chunk_size, READ_SIZE))
            mv = memoryview(buf)
            with open(part_path, mode, buffering=0) as f:
                if mode == "ab":
                    f.truncate(state["offset"])
                try:
                    while True:
                        try:
                            n = resp.readinto(mv)
                        except (http.client.HTTPException, socket.timeout, ConnectionError, OSError) as exc:
                            raise _Retryable("%s: %s" % (type(exc).__name__, exc), progress=moved > 0) from None
                        if not n:
                            break
                        if state["offset"] + n > rf.size:
                            # More bytes than the file list says: corrupt, do not write past the size.
                            n = rf.size - state["offset"]
                            write_chunk(f, mv[:n], part_path)
                            state["hasher"].update(mv[:n])
                            state["offset"] += n
                            moved += n
                            raise _Mismatch("more than %d bytes" % rf.size)
                        write_chunk(f, mv[:n], part_path)
                        state["hasher"].update(mv[:n])
                        state["offset"] += n
                        moved += n
                        if progress is not None:
                            progress(rf.path, n)
                finally:
                    # A partial left for the next run is always synced; a complete file only
                    # when the caller does not sync it itself.
                    if moved and (fsync or state["offset"] < rf.size):
                        os_fsync(f)
            if state["offset"] < rf.size:
                raise _Retryable("connection closed at byte %d of %d" % (state["offset"], rf.size), progress=moved > 0)
            return moved
        finally:
            try:
                resp.close()
            except Exception:  # noqa: S110 - best effort close
                pass


def _content_range_start(value):
    m = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", value or "")
    return int(m.group(1)) if m else None
