"""The model role on a systemd host against the Hub stand-in (rhoim-model-hub)."""

import json
import os
import re
import sys

import pytest
import testinfra

SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = os.path.dirname(os.path.dirname(SCENARIO))
sys.path.insert(0, os.path.join(PROJECT, "tests", "support"))

from local_host import ensure_ssh_config  # noqa: E402  (test support, not a package)
from scenario import run_playbook  # noqa: E402

HUB = "http://rhoim-model-hub:8080"
ROOT = "/var/lib/rhoim/models"
MODELS = {
    # name: (repo, files expected after the patterns)
    "tiny-a": ("acme/tiny-a", ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]),
    "tiny-b": ("acme/tiny-b", ["config.json", "weights/model-00001-of-00002.safetensors",
                               "weights/model-00002-of-00002.safetensors", "weights/model.safetensors.index.json"]),
}


def hub_get(host, path):
    return json.loads(host.check_output("curl -sSf %s%s", HUB, path))


@pytest.fixture(scope="module")
def hub_log(host):
    """The requests of the last converge (molecule's idempotence run): converge clears the log first."""
    return hub_get(host, "/_test/log")


@pytest.fixture(scope="module")
def served(host):
    return json.loads(host.file("/var/lib/rhoim-test/model_served.json").content_string)


# First: the log must hold only what the idempotence run asked, before the tests below ask anything.
def test_second_run_made_no_download_request(hub_log):
    # The branch of tiny-a is resolved (one API call); nothing is downloaded, and the pinned
    # tiny-b makes no request at all.
    assert [r for r in hub_log if r["role"] == "cdn" or "/resolve/" in r["path"]] == []
    assert [r["path"] for r in hub_log] == ["/api/models/acme/tiny-a/revision/main"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_current_link_points_to_a_verified_commit(host, name):
    repo, files = MODELS[name]
    link = host.file("%s/%s/current" % (ROOT, name))
    assert link.is_symlink
    commit = link.linked_to.rsplit("/", 1)[-1]
    assert re.match(r"^[0-9a-f]{40}$", commit)
    assert commit == hub_get(host, "/api/models/%s/revision/main" % repo)["sha"]
    manifest = json.loads(host.file("%s/%s/.manifests/%s.json" % (ROOT, name, commit)).content_string)
    assert manifest["commit"] == commit and manifest["repo_id"] == repo
    assert sorted(e["path"] for e in manifest["files"]) == files


@pytest.mark.parametrize("name", sorted(MODELS))
def test_files_match_the_hub(host, name):
    repo, files = MODELS[name]
    tree = {e["path"]: e for e in hub_get(host, "/api/models/%s/tree/main?recursive=true" % repo) if e["type"] == "file"}
    on_disk = host.check_output("cd %s/%s/current/ && find . -type f -printf '%%P\\n' | sort", ROOT, name).split()
    assert on_disk == files
    for path in files:
        f = host.file("%s/%s/current/%s" % (ROOT, name, path))
        assert f.size == tree[path]["size"]
        if "lfs" in tree[path]:
            assert f.sha256sum == tree[path]["lfs"]["oid"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_owned_by_root_readable_by_the_service_group(host, name):
    root = host.file(ROOT)
    assert (root.user, root.group, root.mode) == ("root", "rhoim", 0o750)
    out = host.check_output("find -L %s/%s/current -printf '%%y %%u %%g %%m %%P\\n'", ROOT, name)
    for line in out.splitlines():
        kind, user, group, mode, _path = [*line.split(" ", 4), ""][:5]
        assert (user, group) == ("root", "rhoim"), line
        assert mode == ("750" if kind == "d" else "640"), line
    # The service user reads the weights and cannot change them.
    weights = "%s/%s/current/%s" % (ROOT, name, MODELS[name][1][-2])
    assert host.run("setpriv --reuid rhoim --regid rhoim --init-groups head -c1 %s", weights).rc == 0
    assert host.run("setpriv --reuid rhoim --regid rhoim --init-groups sh -c 'echo x >> %s'", weights).rc != 0


def test_service_account_has_the_fixed_ids(host):
    assert host.user("rhoim").uid == 961
    assert host.group("rhoim").gid == 961


def test_facts_published(host, served):
    assert sorted(served) == sorted(MODELS)
    for name, (repo, files) in MODELS.items():
        entry = served[name]
        assert entry["path"] == "%s/%s/current" % (ROOT, name)
        assert entry["revision"] == host.file(entry["path"]).linked_to.rsplit("/", 1)[-1]
        assert entry["repo_id"] == repo
        assert entry["files"] == len(files)
        assert entry["bytes"] == sum(host.file("%s/%s" % (entry["path"], f)).size for f in files)


def test_no_staging_or_partial_left(host):
    for name in MODELS:
        assert not host.file("%s/%s/.staging" % (ROOT, name)).exists
    assert host.run("ls /run/rhoim-model-*.progress.json").rc != 0


def snapshot(host):
    return host.check_output("find %s -printf '%%p %%y %%s %%T@ %%i %%m %%u %%g %%l\\n' | sort", ROOT)


def test_check_mode_reports_a_change_and_writes_nothing(host):
    """A new tag for tiny-a and a third model, in check mode: reported, and the disk is the same."""
    before = snapshot(host)
    models = [
        {"name": "tiny-a", "repo_id": "acme/tiny-a", "revision": "v2", "allow_patterns": ["*.json", "*.safetensors"]},
        {"name": "tiny-c", "repo_id": "acme/tiny-b", "revision": "main"},
    ]
    rc, out = run_playbook(os.path.join(SCENARIO, "converge.yml"), "--check", "--diff", extra_vars={"model_models": models},
                           timeout=300)
    assert rc == 0, out
    assert re.search(r"rhoim-model-host\s*:\s*ok=\d+\s+changed=[1-9]", out), out
    assert "1 files (" in out and "to download" in out  # tiny-a v2: only config.json
    assert snapshot(host) == before
    assert not host.file(ROOT + "/tiny-c").exists


def test_check_mode_shows_the_hubs_own_error(host):
    """A Hub error in check mode fails with the module's message (not a later task's template error)."""
    before = snapshot(host)
    models = [{"name": "nope", "repo_id": "acme/does-not-exist", "revision": "main"}]
    rc, out = run_playbook(os.path.join(SCENARIO, "converge.yml"), "--check", extra_vars={"model_models": models}, timeout=300)
    assert rc != 0
    assert "Repository not found: repo acme/does-not-exist, revision main" in out, out[-3000:]
    assert "previous_revision" not in out
    assert snapshot(host) == before


def test_verifier_can_reach_the_hub_container():
    hub = testinfra.get_host("ssh://rhoim-model-hub", ssh_config=ensure_ssh_config())
    assert hub.service("rhoim-hub.service").is_running


def test_the_revision_a_unit_serves_stays_until_it_is_no_longer_served(host):
    """A new revision with keep_revisions 0: the commit a unit's config names (as vllm_service writes it)
    is protected; once no config names it, the next run removes it."""
    old = host.file("%s/tiny-a/current" % ROOT).linked_to.rsplit("/", 1)[-1]
    # As vllm_service writes it: the model folder is the revision's own.
    host.check_output("install -d -m 0755 /etc/rhoim/vllm && echo 'model: %s/tiny-a/%s' > /etc/rhoim/vllm/tiny-a.yaml" % (ROOT, old))
    models = [{"name": "tiny-a", "repo_id": "acme/tiny-a", "revision": "v2", "keep_revisions": 0,
               "allow_patterns": ["*.json", "*.safetensors"]}]
    rc, out = run_playbook(os.path.join(SCENARIO, "converge.yml"), extra_vars={"model_models": models}, timeout=300)
    assert rc == 0, out[-3000:]
    new = host.file("%s/tiny-a/current" % ROOT).linked_to.rsplit("/", 1)[-1]
    assert new != old
    assert host.file("%s/tiny-a/%s/config.json" % (ROOT, old)).exists, "the served revision was removed"
    host.check_output("rm -f /etc/rhoim/vllm/tiny-a.yaml")
    rc, out = run_playbook(os.path.join(SCENARIO, "converge.yml"), extra_vars={"model_models": models}, timeout=300)
    assert rc == 0, out[-3000:]
    assert not host.file("%s/tiny-a/%s" % (ROOT, old)).exists


def test_a_model_marked_absent_goes_only_once_nothing_serves_it(host):
    remove = os.path.join(SCENARIO, "tests", "remove.yml")
    models = {"model_models": [{"name": "tiny-b", "state": "absent"}]}
    # A unit of that name is active: the files stay, and the run says why.
    host.check_output("systemd-run --unit rhoim-vllm@tiny-b.service sleep 600")
    try:
        rc, out = run_playbook(remove, extra_vars=models, timeout=300)
        assert rc != 0
        assert "model tiny-b: rhoim-vllm@tiny-b.service is active" in out, out[-3000:]
        assert host.file("%s/tiny-b/current/config.json" % ROOT).exists
    finally:
        host.run("systemctl stop rhoim-vllm@tiny-b.service")
    rc, out = run_playbook(remove, extra_vars=models, timeout=300)
    assert rc == 0, out[-3000:]
    assert re.search(r"changed=[1-9]", out)
    assert not host.file("%s/tiny-b" % ROOT).exists
    assert host.file("%s/tiny-a/current/config.json" % ROOT).exists
    rc, out = run_playbook(remove, extra_vars=models, timeout=300)
    assert rc == 0 and re.search(r"changed=0\s", out), out[-3000:]
