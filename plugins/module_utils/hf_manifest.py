# -*- coding: utf-8 -*-
# Copyright: Contributors to the rhoim.inference collection
# SPDX-License-Identifier: Apache-2.0
"""Manifests of ``rhoim.inference.hf_model``: what was verified of one revision.

``dest/.manifests/<commit>.json`` holds the repo, the commit, the patterns, the endpoint, when
it was made, and per file its path, size, sha256 or git_sha1, mtime_ns and inode.  It is
written only after every file of the revision is verified and synced, so a revision counts as
present only when its manifest and its folder agree.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat

from ansible_collections.rhoim.inference.plugins.module_utils.hf_errors import HfModelError
from ansible_collections.rhoim.inference.plugins.module_utils.hf_fsops import write_json_atomic
from ansible_collections.rhoim.inference.plugins.module_utils.hf_hub import RemoteFile, hash_file

MANIFEST_FORMAT = 1


def manifest_path(dest, sha):
    return os.path.join(dest, ".manifests", sha + ".json")


def load_manifest(dest, sha):
    """The manifest of revision ``sha``, or None when it is missing, unreadable or not for ``sha``."""
    try:
        with open(manifest_path(dest, sha)) as f:
            data = json.load(f)
    except (IOError, OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or data.get("commit") != sha:
        return None
    return data


def new_manifest(root, files, repo_id, commit, allow_patterns, ignore_patterns, endpoint, created):
    """The manifest of ``files`` (verified :class:`RemoteFile` s) as they lie under ``root`` now."""
    entries = []
    for rf in files:
        st = os.lstat(os.path.join(root, rf.path))
        if st.st_size != rf.size:
            raise HfModelError("Staged file %s of repo %s, revision %s has %d bytes, expected %d" % (rf.path, repo_id, commit, st.st_size, rf.size))
        e = rf.as_dict()
        e.update(mtime_ns=st.st_mtime_ns, ino=st.st_ino)
        entries.append(e)
    return {
        "format": MANIFEST_FORMAT, "repo_id": repo_id, "commit": commit,
        "allow_patterns": allow_patterns, "ignore_patterns": ignore_patterns,
        "endpoint": endpoint, "created": created,
        "files": sorted(entries, key=lambda e: e["path"]),
    }


def write_manifest(dest, manifest, mode):
    write_json_atomic(manifest_path(dest, manifest["commit"]), manifest, mode=mode)


class FileVerifier:
    """Checks files against manifest entries: ``quick`` (size, mtime, inode) or ``full`` (hash).

    A full check hashes each file once per run, however many revisions hold it.
    """

    def __init__(self, verify):
        self.verify = verify
        self._checked = {}

    def check(self, path, entry, mode=None):
        """Does the file at ``path`` still hold what ``entry`` (a manifest entry) says?"""
        mode = mode or self.verify
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry["size"]:
            return False
        if mode == "quick":
            return st.st_mtime_ns == entry.get("mtime_ns") and st.st_ino == entry.get("ino")
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._checked:
            rf = RemoteFile.from_dict(entry)
            h, _n = hash_file(path, rf)
            self._checked[key] = h.hexdigest() == rf.expected
        return self._checked[key]

    def bad_files(self, root, manifest):
        """Paths of ``manifest`` whose file under ``root`` fails the check."""
        return [e["path"] for e in manifest["files"] if not self.check(os.path.join(root, e["path"]), e)]
