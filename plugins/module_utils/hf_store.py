# -*- coding: utf-8 -*-
# Copyright: Contributors to the rhoim.inference collection
# SPDX-License-Identifier: Apache-2.0
"""On-disk model store of ``rhoim.inference.hf_model``.

Layout of ``dest`` (one model; nothing else may live there)::

    dest/
      current -> <commit>            the served path; switched by renaming a temporary link over it
      <commit>/...                   one complete, verified revision (files only, no bookkeeping)
      .manifests/<commit>.json       what was verified: repo, commit, patterns, and per file
                                     path, size, sha256 or git_sha1, mtime_ns, ino
      .staging/<commit>/expect.json  what the staging is for (file -> size and hash)
      .staging/<commit>/parts/<path> partial downloads (resumed with Range by the next run)
      .staging/<commit>/files/<path> verified files (downloaded, or hard links to equal files)
      .lock                          flock; holds the PID of the holder
      .trash/                        old trees being removed

Manifests live outside the revision tree so that the served folder holds model files only.
A revision counts as present only when its manifest and its folder agree (quick: size, mtime
and inode of every file; full: every hash).  Nothing is ever written inside a served revision:
a repair or a pattern change builds a new tree in staging (hard links for the good files) and
swaps it in atomically (``renameat2(RENAME_EXCHANGE)`` on Linux).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fnmatch
import json
import os
import stat
import time

from ansible_collections.rhoim.inference.plugins.module_utils.hf_errors import DiskFullError, HfModelError, PathError
from ansible_collections.rhoim.inference.plugins.module_utils.hf_fsops import (
    BackgroundSync,
    FileLock,
    ensure_dir,
    exchange_dirs,
    free_bytes_at,
    fsync_dir,
    is_file_of_size,
    rmtree,
    unlink_missing_ok,
    within,
    write_json_atomic,
)
from ansible_collections.rhoim.inference.plugins.module_utils.hf_hub import RemoteFile, is_commit
from ansible_collections.rhoim.inference.plugins.module_utils.hf_manifest import (
    FileVerifier,
    load_manifest,
    manifest_path,
    new_manifest,
    write_manifest,
)

CURRENT = "current"
RESERVED = (".lock", ".manifests", ".staging", ".trash", CURRENT)
PROGRESS_INTERVAL = 1.0


def safe_relpath(path, repo_id=None, revision=None):
    """Return ``path`` if it is a plain relative path that stays inside its root, else raise."""
    where = ""
    if repo_id:
        where = " (repo %s, revision %s)" % (repo_id, revision)
    bad = None
    if not isinstance(path, str) or not path:
        bad = "empty name"
    elif "\0" in path:
        bad = "NUL byte"
    elif "\\" in path:
        bad = "backslash"
    elif path.startswith("/"):
        bad = "absolute path"
    elif any(ord(c) < 32 for c in path):
        bad = "control character"
    else:
        for part in path.split("/"):
            if part in ("", ".", ".."):
                bad = "'%s' component" % part if part else "empty component"
                break
    if bad is None and os.path.normpath(path) != path:
        bad = "not a normalised path"
    if bad:
        raise PathError("Refusing remote file %r%s: %s would escape or confuse the destination" % (path, where, bad))
    return path


def filter_files(files, allow_patterns=None, ignore_patterns=None):
    """The same rule as huggingface_hub's ``filter_repo_objects``: fnmatch, ``dir/`` means ``dir/*``."""

    def norm(patterns):
        if not patterns:
            return None
        return [p + "*" if p.endswith("/") else p for p in patterns]

    allow, ignore = norm(allow_patterns), norm(ignore_patterns)
    out = []
    for f in files:
        if allow is not None and not any(fnmatch.fnmatchcase(f.path, p) for p in allow):
            continue
        if ignore is not None and any(fnmatch.fnmatchcase(f.path, p) for p in ignore):
            continue
        out.append(f)
    return out


def normalise_patterns(patterns):
    return sorted(set(patterns or []))


def resolve_user(owner):
    if owner is None or owner == "":
        return -1
    if isinstance(owner, int) or str(owner).isdigit():
        return int(owner)
    import pwd

    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise HfModelError("owner %r: no such user on the host" % owner) from None


def resolve_group(group):
    if group is None or group == "":
        return -1
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise HfModelError("group %r: no such group on the host" % group) from None


def parse_mode(mode):
    if mode is None:
        return 0o644
    if isinstance(mode, int):
        return mode
    try:
        value = int(str(mode), 8)
    except ValueError:
        raise HfModelError("mode %r is not an octal file mode such as '0644'" % (mode,)) from None
    if value & ~0o7777:
        raise HfModelError("mode %r is out of range" % (mode,))
    return value


def dir_mode_for(mode):
    """Folders get x wherever files get r."""
    return mode | ((mode & 0o444) >> 2)


class Laydown:
    """Lay down one revision of one model under ``dest`` (``state=present``) or remove it (``absent``).

    ``params`` uses the module's option names; they are read here, once.  ``client_factory()``
    returns a :class:`~hf_hub.HubClient`; it is only called when the Hub must be asked, so a
    pinned, present commit needs neither the network nor huggingface_hub.
    """

    def __init__(self, params, client_factory, check_mode=False, diff=False, sleep=time.sleep, clock=time.time):
        self.client_factory = client_factory
        self._client = None
        self.check_mode = check_mode
        self.want_diff = diff
        self.sleep = sleep
        self.clock = clock
        self.dest = os.path.abspath(params["dest"])
        self.repo_id = params["repo_id"]
        self.revision = params.get("revision") or "main"
        self.state = params.get("state", "present")
        self.endpoint = params.get("endpoint")
        self.allow = normalise_patterns(params.get("allow_patterns"))
        self.ignore = normalise_patterns(params.get("ignore_patterns"))
        self.mode = parse_mode(params.get("mode"))
        self.dmode = dir_mode_for(self.mode)
        self.uid = resolve_user(params.get("owner"))
        self.gid = resolve_group(params.get("group"))
        self.keep_revisions = params.get("keep_revisions", 1)
        self.protect_revisions = params.get("protect_revisions") or []
        self.min_free_bytes = int(params.get("min_free_bytes") or 0)
        self.lock_timeout = params.get("lock_timeout", 600)
        self.progress_file = params.get("progress_file")
        self.verifier = FileVerifier(params.get("verify") or "quick")
        self.changed = False
        self._progress = {"bytes_done": 0, "bytes_total": 0, "file": None, "files_done": 0, "files_total": 0}
        self._progress_at = 0.0
        self.bytes_downloaded = 0

    # -- paths -------------------------------------------------------------------------------
    def rev_dir(self, sha):
        return os.path.join(self.dest, sha)

    def stage_dir(self, sha):
        return os.path.join(self.dest, ".staging", sha)

    @property
    def current_link(self):
        return os.path.join(self.dest, CURRENT)

    @property
    def client(self):
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    def current_revision(self):
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        name = os.path.basename(target.rstrip("/"))
        return name if is_commit(name) else None

    def present_revisions(self):
        try:
            names = os.listdir(self.dest)
        except OSError:
            return []
        return sorted(n for n in names if is_commit(n) and os.path.isdir(os.path.join(self.dest, n)))

    # -- verification ------------------------------------------------------------------------
    def check_revision(self, sha):
        """(manifest, bad paths) of revision ``sha``; manifest None when it is absent or for other inputs."""
        m = load_manifest(self.dest, sha)
        if m is None or not os.path.isdir(self.rev_dir(sha)):
            return None, None
        if m.get("repo_id") != self.repo_id:
            return None, None
        return m, self.verifier.bad_files(self.rev_dir(sha), m)

    def matches_patterns(self, manifest):
        return manifest.get("allow_patterns") == self.allow and manifest.get("ignore_patterns") == self.ignore

    def reuse_index(self):
        """content key -> [(path, entry)] over every present revision with a manifest."""
        index = {}
        for sha in self.present_revisions():
            m = load_manifest(self.dest, sha)
            if m is None or m.get("repo_id") != self.repo_id:
                continue
            for e in m["files"]:
                key = RemoteFile.from_dict(e).key
                index.setdefault(key, []).append((os.path.join(self.rev_dir(sha), e["path"]), e))
        return index

    # -- progress ----------------------------------------------------------------------------
    def _write_progress(self, force=False):
        if not self.progress_file or self.check_mode:
            return
        now = self.clock()
        if not force and now - self._progress_at < PROGRESS_INTERVAL:
            return
        self._progress_at = now
        try:
            write_json_atomic(self.progress_file, dict(self._progress, updated=now), fsync=False)
        except (IOError, OSError):
            pass  # progress is best effort; never fail a laydown over it

    def _on_bytes(self, path, n):
        self._progress["bytes_done"] += n
        self._progress["file"] = path
        self._write_progress()

    # -- main entry points -------------------------------------------------------------------
    def run(self):
        if self.state == "absent":
            return self.remove()
        return self.present()

    def _lock(self):
        return FileLock(os.path.join(self.dest, ".lock"), timeout=self.lock_timeout, sleep=self.sleep)

    def present(self):
        if not self.check_mode:
            self._ensure_dest()
            with self._lock():
                return self._present()
        return self._present()

    def _ensure_dest(self):
        if os.path.lexists(self.dest) and not os.path.isdir(self.dest):
            raise HfModelError("dest %s exists and is not a folder" % self.dest)
        if not os.path.isdir(self.dest):
            os.makedirs(self.dest)
            os.chmod(self.dest, self.dmode)
            if self.uid != -1 or self.gid != -1:
                os.chown(self.dest, self.uid, self.gid)
            self.changed = True
        for sub in (".manifests",):
            p = os.path.join(self.dest, sub)
            if not os.path.isdir(p):
                os.mkdir(p, 0o755)

    def _present(self):
        revision = self.revision
        before = self.current_revision()
        sha = None
        manifest = None
        if is_commit(revision):
            m, bad = self.check_revision(revision)
            if m is not None and not bad and self.matches_patterns(m):
                sha, manifest = revision, m
        if sha is None:
            sha = revision if is_commit(revision) else self.client.resolve(self.repo_id, revision)
            m, bad = self.check_revision(sha)
            if m is not None and not bad and self.matches_patterns(m):
                manifest = m
        result = {"revision": sha, "previous_revision": before, "path": self.current_link, "requested_revision": revision}
        plan = None
        if manifest is None:
            remote = self.client.list_files(self.repo_id, sha)
            for rf in remote:
                safe_relpath(rf.path, self.repo_id, sha)
            wanted = filter_files(remote, self.allow, self.ignore)
            if not wanted:
                raise HfModelError("No files of repo %s, revision %s match allow_patterns %s / ignore_patterns %s" % (
                    self.repo_id, sha, self.allow, self.ignore))
            plan = self._plan(sha, wanted)
            files = [rf.as_dict() for rf in wanted]
        else:
            files = manifest["files"]
        result["files"] = len(files)
        result["bytes"] = sum(f["size"] for f in files)
        if self.want_diff:
            before_m = load_manifest(self.dest, before) if before else None
            result["diff"] = {
                "before": {"revision": before, "files": sorted(f["path"] for f in before_m["files"]) if before_m else []},
                "after": {"revision": sha, "files": sorted(f["path"] for f in files)},
            }
        if self.check_mode:
            fetch = [rf for rf, how, _src in plan if how == "fetch"] if plan else []
            result["files_to_fetch"] = sorted(rf.path for rf in fetch)
            result["bytes_to_fetch"] = sum(rf.size - self._partial_size(sha, rf) for rf in fetch)
            if plan is not None:
                self._space_check(sha, plan)
            result["changed"] = plan is not None or before != sha or bool(self._gc_victims(sha, before)) or bool(
                manifest is not None and self._attr_fixes(sha, manifest))
            result["bytes_downloaded"] = 0
            return result
        if plan is not None:
            manifest = self._build(sha, plan)
            self.changed = True
        elif self._attr_fixes(sha, manifest, apply=True):
            self.changed = True
        if before != sha:
            self._switch(sha)
            self.changed = True
        removed = self._gc(sha, before)
        if removed:
            self.changed = True
        result["removed_revisions"] = removed
        result["bytes_downloaded"] = self.bytes_downloaded
        result["changed"] = self.changed
        return result

    # -- planning ----------------------------------------------------------------------------
    def _plan(self, sha, wanted):
        """[(RemoteFile, how, source)] with how in staged | link | fetch."""
        index = self.reuse_index()
        expect = self._load_expect(sha)
        files_dir = os.path.join(self.stage_dir(sha), "files")
        plan = []
        for rf in wanted:
            staged = os.path.join(files_dir, rf.path)
            if expect.get(rf.path) == rf.as_dict() and is_file_of_size(staged, rf.size):
                plan.append((rf, "staged", None))
                continue
            src = None
            for path, entry in index.get(rf.key, []):
                # A touched (mtime) but intact file is re-hashed rather than downloaded again.
                if entry["size"] == rf.size and (self.verifier.check(path, entry) or self.verifier.check(path, entry, "full")):
                    src = path
                    break
            plan.append((rf, "link", src) if src else (rf, "fetch", None))
        return plan

    def _load_expect(self, sha):
        try:
            with open(os.path.join(self.stage_dir(sha), "expect.json")) as f:
                data = json.load(f)
            return data.get("files", {}) if data.get("commit") == sha and data.get("repo_id") == self.repo_id else {}
        except (IOError, OSError, ValueError, AttributeError):
            return {}

    def _partial_size(self, sha, rf):
        part = os.path.join(self.stage_dir(sha), "parts", rf.path)
        try:
            size = os.path.getsize(part)
        except OSError:
            return 0
        return size if size <= rf.size and self._load_expect(sha).get(rf.path) == rf.as_dict() else 0

    def free_bytes(self):
        return free_bytes_at(self.dest)

    def _space_check(self, sha, plan):
        missing = sum(rf.size - self._partial_size(sha, rf) for rf, how, _src in plan if how == "fetch")
        margin = self.min_free_bytes
        free = self.free_bytes()
        if missing and missing + margin > free:
            raise DiskFullError(
                "Not enough free space in %s for repo %s, revision %s: need %d bytes (%d to download + %d min_free_bytes), %d free"
                % (self.dest, self.repo_id, sha, missing + margin, missing, margin, free))
        return missing

    # -- building a revision -----------------------------------------------------------------
    def _build(self, sha, plan):
        """Lay down ``plan`` in staging, then move it in as revision ``sha``; returns its manifest."""
        want = dict((rf.path, rf.as_dict()) for rf, _how, _src in plan)
        self._drop_stale_staging(sha, want)
        # Once stale staging is gone (its space counts), and before anything is written: a run
        # that cannot fit leaves nothing new behind.
        missing = self._space_check(sha, plan)
        self._open_staging(sha, want)
        self._fill_staging(sha, plan, missing)
        self._seal_staging(sha, plan)
        files_dir = os.path.join(self.stage_dir(sha), "files")
        manifest = new_manifest(files_dir, [rf for rf, _how, _src in plan], repo_id=self.repo_id, commit=sha,
                                allow_patterns=self.allow, ignore_patterns=self.ignore, endpoint=self.endpoint, created=self.clock())
        # The manifest first: if we die before the folder moves, the next run finds the staging
        # complete and only redoes the moves.
        write_manifest(self.dest, manifest, self.mode)
        self._move_in(sha)
        self._progress["file"] = None
        self._write_progress(force=True)
        return manifest

    def _drop_stale_staging(self, sha, want):
        """Remove staging of other revisions, and partials or staged files not in ``want`` (path -> entry)."""
        staging_root = os.path.join(self.dest, ".staging")
        # Stray staging of other revisions (an interrupted earlier run) goes.
        if os.path.isdir(staging_root):
            for name in os.listdir(staging_root):
                if name != sha:
                    rmtree(os.path.join(staging_root, name))
        expect = self._load_expect(sha)
        stage = self.stage_dir(sha)
        # Partials and staged files for other files, or for other contents, go.
        for base in (os.path.join(stage, "files"), os.path.join(stage, "parts")):
            for root, _dirs, names in os.walk(base):
                for n in names:
                    full = os.path.join(root, n)
                    rel = os.path.relpath(full, base)
                    if rel not in want or expect.get(rel) != want[rel]:
                        os.unlink(full)

    def _open_staging(self, sha, want):
        stage = self.stage_dir(sha)
        for d in (os.path.join(stage, "files"), os.path.join(stage, "parts")):
            if not os.path.isdir(d):
                os.makedirs(d, 0o700)
        write_json_atomic(os.path.join(stage, "expect.json"), {"repo_id": self.repo_id, "commit": sha, "files": want}, fsync=False)

    def _fill_staging(self, sha, plan, missing):
        """Link or download every file of ``plan`` into staging; all synced to disk on return.

        A full disk removes the staging and raises :class:`DiskFullError` naming the file.
        """
        fetch = [(rf, how, src) for rf, how, src in plan if how == "fetch"]
        self._progress.update(bytes_total=missing, bytes_done=0, files_total=len(fetch), files_done=0, revision=sha, file=None)
        self._write_progress(force=True)
        rf = None
        syncer = BackgroundSync()
        try:
            for rf, how, src in sorted(plan, key=lambda x: (x[1] == "fetch", x[0].path)):
                self._stage_file(sha, rf, how, src, syncer)
            rf = None
            syncer.wait()
        except (DiskFullError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            rmtree(self.stage_dir(sha))
            raise self._disk_full(sha, rf, exc) from exc
        finally:
            syncer.close()

    def _stage_file(self, sha, rf, how, src, syncer):
        files_dir = os.path.join(self.stage_dir(sha), "files")
        dst = os.path.join(files_dir, rf.path)
        if not within(files_dir, os.path.dirname(dst) or files_dir):
            raise PathError("Refusing remote file %r (repo %s, revision %s): resolves outside %s" % (
                rf.path, self.repo_id, sha, self.dest))
        ensure_dir(os.path.dirname(dst))
        if how == "staged":
            syncer.add(dst)  # verified by an earlier run that may have died before its sync
            return
        if how == "link":
            unlink_missing_ok(dst)
            try:
                os.link(src, dst)
                return
            except OSError:
                pass  # another filesystem, too many links...: download instead
        part = os.path.join(self.stage_dir(sha), "parts", rf.path)
        ensure_dir(os.path.dirname(part))
        self._progress["file"] = rf.path
        self.bytes_downloaded += self.client.download(self.repo_id, sha, rf, part, progress=self._on_bytes, fsync=False)
        os.rename(part, dst)
        syncer.add(dst)
        self._progress["files_done"] += 1
        self._write_progress(force=True)

    def _disk_full(self, sha, rf, exc):
        """The error for a full disk while staging ``rf`` (None: found by the background sync)."""
        files_dir = os.path.join(self.stage_dir(sha), "files")
        if rf is not None:
            name = rf.path
        elif getattr(exc, "filename", None):
            name = os.path.relpath(exc.filename, files_dir)  # reported by the background sync
        else:
            name = "?"
        return DiskFullError("Disk full in %s while laying down repo %s, revision %s, file %s; staging removed, %s unchanged (%s)"
                             % (self.dest, self.repo_id, sha, name, self.current_link,
                                "still %s" % self.current_revision() if self.current_revision() else "not created"))

    def _seal_staging(self, sha, plan):
        """Set modes and owners in staging, and sync its folders."""
        files_dir = os.path.join(self.stage_dir(sha), "files")
        paths = [os.path.join(files_dir, rf.path) for rf, _how, _src in plan]
        for path in paths:
            self._set_attrs(path, self.mode)
        for d in sorted(folders_of(files_dir, paths), key=len, reverse=True):
            self._set_attrs(d, self.dmode)
            fsync_dir(d)

    def _move_in(self, sha):
        """Make the staged files revision ``sha``, then remove the staging."""
        files_dir = os.path.join(self.stage_dir(sha), "files")
        target = self.rev_dir(sha)
        if os.path.isdir(target):
            # Repair or pattern change of a present revision: swap, never write into it.
            exchange_dirs(files_dir, target)
        else:
            os.rename(files_dir, target)
        fsync_dir(self.dest)
        rmtree(self.stage_dir(sha))
        try:
            os.rmdir(os.path.join(self.dest, ".staging"))
        except OSError:
            pass

    def _set_attrs(self, path, mode):
        st = os.lstat(path)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
        if (self.uid != -1 and st.st_uid != self.uid) or (self.gid != -1 and st.st_gid != self.gid):
            os.lchown(path, self.uid, self.gid)

    def _attr_fixes(self, sha, manifest, apply=False):
        """Paths of revision ``sha`` whose mode or owner differ from the options (fixed when ``apply``)."""
        root = self.rev_dir(sha)
        paths = [os.path.join(root, e["path"]) for e in manifest["files"]]
        todo = [(p, self.mode) for p in paths]
        todo.extend((d, self.dmode) for d in folders_of(root, paths))
        fixes = []
        for p, mode in todo:
            st = os.lstat(p)
            if (stat.S_IMODE(st.st_mode) != mode or (self.uid != -1 and st.st_uid != self.uid)
                    or (self.gid != -1 and st.st_gid != self.gid)):
                fixes.append(p)
                if apply:
                    self._set_attrs(p, mode)
        return fixes

    def _switch(self, sha):
        link = self.current_link
        if os.path.lexists(link) and not os.path.islink(link):
            raise HfModelError("%s exists and is not a symbolic link; refusing to replace it" % link)
        tmp = os.path.join(self.dest, ".current.%d.tmp" % os.getpid())
        unlink_missing_ok(tmp)
        os.symlink(sha, tmp)
        if self.uid != -1 or self.gid != -1:
            os.lchown(tmp, self.uid, self.gid)
        os.rename(tmp, link)
        fsync_dir(self.dest)

    # -- garbage collection ------------------------------------------------------------------
    def _gc_victims(self, current, before):
        # Never: the revision now served, the one served when this run started (a running
        # server may still have it open), or one the caller protects (the one it has loaded).
        keep = set([current, before])
        keep.update(self.protect_revisions)
        others = [s for s in self.present_revisions() if s not in keep]

        def age(s):
            m = load_manifest(self.dest, s)
            if m and m.get("created"):
                return m["created"]
            try:
                return os.stat(self.rev_dir(s)).st_mtime
            except OSError:
                return 0

        others.sort(key=age, reverse=True)
        n = max(0, int(self.keep_revisions))
        return others[n:]

    def _gc(self, current, before):
        removed = []
        for sha in self._gc_victims(current, before):
            # Manifest first: a half-removed folder must never count as a verified revision.
            unlink_missing_ok(manifest_path(self.dest, sha))
            trash = os.path.join(self.dest, ".trash")
            ensure_dir(trash)
            tmp = os.path.join(trash, "%s.%d" % (sha, os.getpid()))
            os.rename(self.rev_dir(sha), tmp)
            removed.append(sha)
        # Manifests without a folder, and the trash.
        present = set(self.present_revisions())
        mdir = os.path.join(self.dest, ".manifests")
        if os.path.isdir(mdir):
            for n in os.listdir(mdir):
                if n.endswith(".json") and n[:-5] not in present and is_commit(n[:-5]):
                    unlink_missing_ok(os.path.join(mdir, n))
        if os.path.isdir(os.path.join(self.dest, ".trash")):
            rmtree(os.path.join(self.dest, ".trash"))
        if removed:
            fsync_dir(self.dest)
        return removed

    # -- state=absent ------------------------------------------------------------------------
    def _looks_like_ours(self):
        for n in os.listdir(self.dest):
            if n in RESERVED or is_commit(n) or (n.startswith(".current.") and n.endswith(".tmp")):
                continue
            return n
        return None

    def remove(self):
        before = self.current_revision()
        result = {"path": self.current_link, "revision": None, "previous_revision": before, "files": 0, "bytes": 0, "bytes_downloaded": 0}
        if not os.path.lexists(self.dest):
            result["changed"] = False
            return result
        if not os.path.isdir(self.dest) or os.path.islink(self.dest):
            raise HfModelError("dest %s is not a folder; refusing to remove it" % self.dest)
        stranger = self._looks_like_ours()
        if stranger is not None:
            raise HfModelError("dest %s holds %r, which hf_model did not put there; refusing to remove the folder" % (self.dest, stranger))
        if self.want_diff:
            m = load_manifest(self.dest, before) if before else None
            result["diff"] = {"before": {"revision": before, "files": sorted(f["path"] for f in m["files"]) if m else []},
                              "after": {"revision": None, "files": []}}
        result["changed"] = True
        if self.check_mode:
            return result
        lock = self._lock().acquire()
        try:
            for n in os.listdir(self.dest):
                if n != ".lock":
                    rmtree(os.path.join(self.dest, n))
            os.unlink(os.path.join(self.dest, ".lock"))
            os.rmdir(self.dest)
        finally:
            lock.release()
        return result


def folders_of(root, paths):
    """``root`` and every folder between it and each of ``paths``."""
    folders = set([root])
    for path in paths:
        d = os.path.dirname(path)
        while d != root and d not in folders:
            folders.add(d)
            d = os.path.dirname(d)
    return folders
