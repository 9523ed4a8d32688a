#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the rhoim.inference collection
# Apache License 2.0 (see LICENSE), which is compatible with the GNU General Public License v3.0+
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hf_model
short_description: Lay down one revision of a Hugging Face Hub model, verified and atomically
version_added: 0.1.0
description:
  - Downloads the files of one revision of a model repository from a Hugging Face Hub endpoint (the public Hub,
    a mirror or an internal Hub-compatible server) into O(dest), verifying every byte while it streams
    (sha256 for LFS files, git blob sha1 for the others, against the Hub's file list).
  - Each revision is kept complete in C(dest/<commit>/); the stable path C(dest/current) is a symbolic link switched
    atomically to a new revision only after every file is verified and synced to disk, so a half-written model
    is never visible there and the previous revision keeps serving when a run fails.
  - A download killed in an earlier run is resumed with HTTP Range requests. Files equal to a file of a revision
    already present (same sha256 or git sha1) are hard-linked instead of downloaded.
  - A run pinned to a commit that is already present and verified makes no request to the Hub. Presence is
    decided from a manifest written after verification (in C(dest/.manifests/), outside the served tree).
  - Two runs on the same O(dest) never write at once (an C(flock) on C(dest/.lock), released by the kernel when a
    holder dies).
author:
  - RHOIM developers (!UNKNOWN)
requirements:
  - Python 3.10 or later and C(huggingface_hub) on the managed host, used for the revision and file-list calls;
    not needed for a run pinned to a commit that is already present.
attributes:
  check_mode:
    support: full
    description:
      - Asks the Hub (read-only) and reports the revision before and after, RV(files_to_fetch) and RV(bytes_to_fetch),
        writing nothing (no lock, no staging, no progress file).
  diff_mode:
    support: full
    description:
      - Shows the revision and the file list before and after.
  idempotent:
    support: full
    description:
      - A second run with the same options is not changed and does not re-hash files when O(verify=quick).
options:
  repo_id:
    description:
      - Model repository on the Hub, C(org/name).
    type: str
    required: true
  revision:
    description:
      - Branch, tag or commit sha (40 hex digits) to lay down.
      - A branch or tag costs one request per run to resolve it to a commit; pin a commit for runs with no request.
      - Ignored when O(state=absent).
    type: str
    default: main
  dest:
    description:
      - Folder for this model. Revisions go to C(dest/<commit>/), the served link is C(dest/current).
      - Created when missing. Use one folder per model; hf_model owns everything in it.
    type: path
    required: true
  allow_patterns:
    description:
      - Only files whose path matches one of these shell patterns (C(fnmatch); C(dir/) means C(dir/*)).
    type: list
    elements: str
  ignore_patterns:
    description:
      - Leave out files whose path matches one of these shell patterns.
    type: list
    elements: str
  endpoint:
    description:
      - Base URL of the Hub or of a Hub-compatible mirror.
      - E(HF_ENDPOINT) on the managed host is B(not) read; set this option instead, so that what runs is what the
        playbook says.
    type: str
    default: https://huggingface.co
  token:
    description:
      - Hub access token for private or gated repositories. Never shown in any output or message.
      - Sent only to the O(endpoint) origin, never to the storage host an LFS download redirects to.
      - When not set, no token is sent (a token stored on the managed host, or E(HF_TOKEN), is not used).
    type: str
  verify:
    description:
      - How files already present are checked. Files being downloaded are always hashed while they stream.
      - V(quick) compares size, modification time and inode of each file with the manifest (no hashing).
      - V(full) re-hashes every file of the revision (and any file reused from another revision).
      - A file found missing or changed is downloaded again into a new copy of the revision, which then replaces the
        old one atomically.
    type: str
    choices: [quick, full]
    default: quick
  state:
    description:
      - V(present) lays down O(revision) and points C(dest/current) at it.
      - V(absent) removes O(dest) with every revision in it. hf_model refuses when O(dest) holds anything it did not put
        there.
    type: str
    choices: [present, absent]
    default: present
  keep_revisions:
    description:
      - How many revisions to keep besides the one C(current) points to, newest first; older ones are removed after a
        successful run.
      - The revision C(current) pointed to when the run started and those in O(protect_revisions) are never removed.
    type: int
    default: 1
  protect_revisions:
    description:
      - Commit shas never to remove, for example the revision a running server has loaded.
    type: list
    elements: str
    default: []
  retries:
    description:
      - How many times a failed request is retried (connection errors, timeouts, HTTP 408, 429 and 5xx, a truncated
        body, one checksum mismatch). The count starts again when a try made progress.
    type: int
    default: 5
  backoff:
    description:
      - Seconds before the first retry; doubled for each further one, at most 60. A C(Retry-After) header wins.
    type: float
    default: 1.0
  timeout:
    description:
      - Seconds to wait for a connection or for data on it.
    type: float
    default: 30.0
  lock_timeout:
    description:
      - Seconds to wait for another run holding the lock on O(dest) before failing with its PID.
    type: float
    default: 600.0
  owner:
    description:
      - Owner of the files and folders laid down (name or UID). Default the user running the module.
    type: str
  group:
    description:
      - Group of the files and folders laid down (name or GID), for example the serving service's group.
    type: str
  mode:
    description:
      - Mode of the files, as an octal string. Folders get the same bits plus C(x) wherever C(r) is set.
      - The default lets the group read and not write.
    type: str
    default: '0644'
  min_free_bytes:
    description:
      - Bytes that must stay free on the file system of O(dest) after the download. The check counts only bytes still
        to download (not files reused by hard link or already partly downloaded) and fails before any download.
    type: int
    default: 0
  progress_file:
    description:
      - File to which the module writes its progress as JSON (C(bytes_done), C(bytes_total), C(file), C(files_done),
        C(files_total), C(revision), C(updated)) about once a second, for a role that runs this module asynchronously
        and polls.
    type: path
notes:
  - The module runs on the managed host and downloads there; it is not meant to be delegated to the controller.
  - Downloads use the Python standard library, not huggingface_hub, because the client does not check sha256 while
    it streams and cannot resume a download left by an earlier process. Proxy settings come from the usual
    E(https_proxy)/E(no_proxy) variables.
  - The served link is relative (C(current -> <commit>)), so O(dest) may be moved or bind-mounted.
  - SELinux labels are not set by this module; the C(rhoim.inference.model) role restores them.
seealso:
  - name: Hugging Face Hub HTTP API
    description: The endpoints this module uses.
    link: https://huggingface.co/docs/hub/api
"""

EXAMPLES = r"""
- name: Lay down a pinned commit of a small model, readable by the vllm group
  rhoim.inference.hf_model:
    repo_id: Qwen/Qwen2.5-0.5B-Instruct
    revision: 7ae557604adf67be50417f59c2c2f167def9a775
    dest: /var/lib/rhoim/models/qwen2.5-0.5b
    allow_patterns: ["*.json", "*.safetensors", "tokenizer*"]
    group: vllm
    mode: "0640"
  register: model

- name: Follow a branch of a gated model from an internal mirror
  rhoim.inference.hf_model:
    repo_id: meta-llama/Llama-3.1-8B-Instruct
    revision: main
    endpoint: https://hub.mirror.example.com
    token: "{{ vault_hf_token }}"
    dest: /var/lib/rhoim/models/llama-3.1-8b
    keep_revisions: 1
    protect_revisions: ["{{ running_model_revision }}"]
    progress_file: /run/rhoim/llama-progress.json
  async: 7200
  poll: 0
  register: download

- name: Re-hash every file of the served revision
  rhoim.inference.hf_model:
    repo_id: Qwen/Qwen2.5-0.5B-Instruct
    revision: 7ae557604adf67be50417f59c2c2f167def9a775
    dest: /var/lib/rhoim/models/qwen2.5-0.5b
    verify: full

- name: Remove a model and all its revisions
  rhoim.inference.hf_model:
    repo_id: Qwen/Qwen2.5-0.5B-Instruct
    dest: /var/lib/rhoim/models/qwen2.5-0.5b
    state: absent
"""

RETURN = r"""
path:
  description: The stable path to load the model from (C(dest/current), a link to the revision folder).
  returned: always
  type: str
  sample: /var/lib/rhoim/models/qwen2.5-0.5b/current
revision:
  description: Commit sha that RV(path) points to after the run (null after O(state=absent)).
  returned: always
  type: str
  sample: 7ae557604adf67be50417f59c2c2f167def9a775
requested_revision:
  description: O(revision) as given.
  returned: when O(state=present)
  type: str
  sample: main
previous_revision:
  description: Commit sha C(current) pointed to before the run, or null.
  returned: always
  type: str
files:
  description: Number of files in the revision.
  returned: always
  type: int
  sample: 12
bytes:
  description: Total size of the revision's files.
  returned: always
  type: int
  sample: 988097824
bytes_downloaded:
  description: Bytes transferred from the Hub in this run (0 when everything was present or reused).
  returned: always
  type: int
  sample: 0
removed_revisions:
  description: Revisions removed by O(keep_revisions).
  returned: when O(state=present) and not in check mode
  type: list
  elements: str
files_to_fetch:
  description: Paths that would be downloaded (files not present and not reusable by hard link).
  returned: in check mode, when O(state=present)
  type: list
  elements: str
bytes_to_fetch:
  description: Bytes that would be downloaded.
  returned: in check mode, when O(state=present)
  type: int
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.rhoim.inference.plugins.module_utils.hf_errors import HfModelError, MissingLibraryError
from ansible_collections.rhoim.inference.plugins.module_utils.hf_hub import DEFAULT_ENDPOINT, HubClient, scrub
from ansible_collections.rhoim.inference.plugins.module_utils.hf_store import Laydown


def argument_spec():
    return dict(
        repo_id=dict(type="str", required=True),
        revision=dict(type="str", default="main"),
        dest=dict(type="path", required=True),
        allow_patterns=dict(type="list", elements="str"),
        ignore_patterns=dict(type="list", elements="str"),
        endpoint=dict(type="str", default=DEFAULT_ENDPOINT),
        token=dict(type="str", no_log=True),
        verify=dict(type="str", choices=["quick", "full"], default="quick"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        keep_revisions=dict(type="int", default=1),
        protect_revisions=dict(type="list", elements="str", default=[]),
        retries=dict(type="int", default=5),
        backoff=dict(type="float", default=1.0),
        timeout=dict(type="float", default=30.0),
        lock_timeout=dict(type="float", default=600.0),
        owner=dict(type="str"),
        group=dict(type="str"),
        mode=dict(type="str", default="0644"),
        min_free_bytes=dict(type="int", default=0),
        progress_file=dict(type="path"),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    token = p["token"]

    def client_factory():
        return HubClient(endpoint=p["endpoint"], token=token, timeout=p["timeout"], retries=p["retries"], backoff=p["backoff"])

    try:
        result = Laydown(p, client_factory, check_mode=module.check_mode, diff=module._diff).run()
    except MissingLibraryError as exc:
        module.fail_json(msg=missing_required_lib(exc.library), exception=scrub(to_native(exc.exception), token))
    except HfModelError as exc:
        module.fail_json(msg=scrub(exc.msg, token), kind=exc.kind, repo_id=p["repo_id"], revision=p["revision"], dest=p["dest"])
    except (IOError, OSError) as exc:
        module.fail_json(msg=scrub("%s for repo %s, revision %s, dest %s: %s" % (
            type(exc).__name__, p["repo_id"], p["revision"], p["dest"], to_native(exc)), token))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
