"""rhoim.inference.hf_model main(): argument handling, check mode, real mode, errors (loopback Hub)."""

import json
import os

import pytest

import hub_server  # tests/support, on the path from tests/unit/conftest.py

from ansible_collections.rhoim.inference.plugins.modules import hf_model
from module_harness import run_main

TOKEN = "hf_module_token_secret"  # noqa: S105 - a fixture token


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hubroot"))
    main = os.path.join(root, "acme", "tiny", "refs", "main")
    os.makedirs(main)
    with open(os.path.join(main, "model.safetensors"), "wb") as f:
        f.write(os.urandom(200000))
    with open(os.path.join(main, "config.json"), "w") as f:
        f.write("{}")
    server = hub_server.HubServer(root, tokens=[TOKEN])
    server.start()
    yield server
    server.stop()


def call(args, check_mode=False, diff=False):
    return run_main(hf_model.main, args, check_mode, diff)


def test_check_then_real_then_again(hub, tmp_path):
    dest = str(tmp_path / "m")
    args = dict(repo_id="acme/tiny", dest=dest, endpoint=hub.url, token=TOKEN, retries=1, backoff=0.01)
    e = call(args, check_mode=True, diff=True)
    assert not e.failed and e.result["changed"] and e.result["bytes_to_fetch"] == 200002
    assert e.result["files_to_fetch"] == ["config.json", "model.safetensors"]
    assert e.result["diff"]["after"]["files"] == ["config.json", "model.safetensors"]
    assert not os.path.exists(dest)
    e = call(args)
    assert not e.failed and e.result["changed"] and e.result["bytes_downloaded"] == 200002
    assert e.result["path"] == os.path.join(dest, "current") and os.path.islink(e.result["path"])
    sha = e.result["revision"]
    hub.clear_log()
    e = call(dict(args, revision=sha))
    assert not e.failed and not e.result["changed"] and hub.log == []
    e = call(dict(args, revision=sha), check_mode=True)
    assert not e.result["changed"] and e.result["files_to_fetch"] == []
    e = call(dict(args, state="absent"))
    assert e.result["changed"] and not os.path.exists(dest)


def test_failure_message_has_no_token(hub, tmp_path):
    e = call(dict(repo_id="acme/missing", dest=str(tmp_path / "m"), endpoint=hub.url, token=TOKEN, retries=0))
    assert e.failed and "acme/missing" in e.result["msg"] and e.result["kind"] == "repo_not_found"
    assert TOKEN not in json.dumps(e.result)


def test_missing_library_reported(tmp_path, monkeypatch):
    from ansible_collections.rhoim.inference.plugins.module_utils import hf_hub
    from ansible_collections.rhoim.inference.plugins.module_utils.hf_errors import MissingLibraryError

    def missing(self, *a, **k):
        raise MissingLibraryError("huggingface_hub", ImportError("No module named 'huggingface_hub'"))

    monkeypatch.setattr(hf_hub.HfApiMetadata, "__init__", missing)
    e = call(dict(repo_id="acme/tiny", dest=str(tmp_path / "m"), endpoint="http://127.0.0.1:9"))
    assert e.failed and "huggingface_hub" in e.result["msg"]


def test_argument_spec_matches_documentation():
    import yaml

    doc = yaml.safe_load(hf_model.DOCUMENTATION)["options"]
    spec = hf_model.argument_spec()
    assert set(doc) == set(spec)
    for name, o in spec.items():
        assert doc[name]["type"] == o["type"], name
        assert doc[name].get("default") == o.get("default"), name
        assert bool(doc[name].get("required")) == bool(o.get("required")), name
        assert doc[name].get("choices") == o.get("choices"), name
