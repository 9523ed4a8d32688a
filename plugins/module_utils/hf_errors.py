# -*- coding: utf-8 -*-
# Copyright: Contributors to the rhoim.inference collection
# SPDX-License-Identifier: Apache-2.0
"""Errors of ``rhoim.inference.hf_model``.

Each has a ``kind`` that the module returns with ``fail_json``, so that a playbook can tell
a full disk from a missing repository without parsing the message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class HfModelError(Exception):
    """An error the module reports with ``fail_json``; ``str()`` is the whole message."""

    kind = "error"

    def __init__(self, msg):
        super(HfModelError, self).__init__(msg)
        self.msg = msg


class HubError(HfModelError):
    """The Hub answered with an error (kind: repo_not_found, revision_not_found, gated,
    unauthorized, forbidden, entry_not_found, http) or could not be reached (unreachable)."""

    def __init__(self, kind, msg):
        super(HubError, self).__init__(msg)
        self.kind = kind


class ChecksumError(HfModelError):
    kind = "checksum"


class DiskFullError(HfModelError):
    kind = "disk_full"


class PathError(HfModelError):
    kind = "path"


class LockError(HfModelError):
    kind = "lock"


class MissingLibraryError(HfModelError):
    kind = "missing_library"

    def __init__(self, library, exc):
        super(MissingLibraryError, self).__init__("%s is required: %s" % (library, exc))
        self.library = library
        self.exception = exc
