"""The ExecStart wrapper of the vllm_service unit (rhoim-vllm-serve).

The wrapper runs for real, with a stand-in ``vllm`` (RHOIM_VLLM_BIN) that records the arguments
and the environment it was started with.
"""

import json
import os
import subprocess
import sys

import pytest

_FILES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "vllm_service", "files"))
WRAPPER = os.path.join(_FILES, "rhoim-vllm-serve")
MIDDLEWARE = ["--middleware", "rhoim_vllm_auth.ApiKeyMiddleware"]
KEY = "Zq7Xw9Kp2Vj4"

_FAKE_VLLM = """#!{python}
import json, os, sys
with open(os.environ["RECORD"], "w") as f:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ)}}, f)
"""


@pytest.fixture
def box(tmp_path):
    """A config, an api_key credential holding KEY and a recording vllm, in tmp_path."""
    (tmp_path / "model.yaml").write_text("model: m\n")
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "api_key").write_text(KEY + "\n")
    fake = tmp_path / "vllm"
    fake.write_text(_FAKE_VLLM.format(python=sys.executable))
    fake.chmod(0o755)
    return tmp_path


def serve(box, *args, **env):
    """Run the wrapper with a minimal environment plus ``env``; returns (result, record or None)."""
    record = box / "record.json"
    base = {
        "PATH": os.environ["PATH"],
        "RHOIM_VLLM_BIN": str(box / "vllm"),
        "RECORD": str(record),
        "CREDENTIALS_DIRECTORY": str(box / "credentials"),
    }
    base.update(env)
    environ = {k: v for k, v in base.items() if v is not None}
    result = subprocess.run([WRAPPER, str(box / "model.yaml"), *args], env=environ, capture_output=True, text=True, check=False)
    return result, (json.loads(record.read_text()) if record.exists() else None)


def test_the_wrapper_execs_vllm_serve_with_the_middleware(box):
    result, record = serve(box, "--port", "8001")
    assert result.returncode == 0, result.stderr
    assert record["argv"] == ["serve", "--config", str(box / "model.yaml"), "--port", "8001", *MIDDLEWARE]
    assert record["env"]["PYTHONPATH"] == _FILES


def test_the_wrapper_puts_the_middleware_directory_first_on_pythonpath(box):
    record = serve(box, PYTHONPATH="/a:/b")[1]
    assert record["env"]["PYTHONPATH"] == _FILES + ":/a:/b"
    record = serve(box, RHOIM_VLLM_PYTHONPATH="/opt/auth", PYTHONPATH="/a")[1]
    assert record["env"]["PYTHONPATH"] == "/opt/auth:/a"


def test_the_wrapper_never_exports_a_key(box):
    result, record = serve(box)
    assert result.returncode == 0, result.stderr
    assert "VLLM_API_KEY" not in record["env"]
    assert not any(KEY in value for value in record["env"].values())
    assert KEY not in result.stdout + result.stderr


def test_the_wrapper_passes_the_key_file_override_through_only_when_set(box):
    assert "RHOIM_VLLM_API_KEY_FILE" not in serve(box)[1]["env"]
    other = box / "elsewhere"
    other.write_text(KEY + "\n")
    result, record = serve(box, RHOIM_VLLM_API_KEY_FILE=str(other), CREDENTIALS_DIRECTORY=None)
    assert result.returncode == 0, result.stderr
    assert record["env"]["RHOIM_VLLM_API_KEY_FILE"] == str(other)
    assert "VLLM_API_KEY" not in record["env"]


def test_the_wrapper_passes_the_middleware_settings_through(box):
    settings = {"RHOIM_VLLM_METRICS_TOKEN_FILE": "/run/m", "RHOIM_VLLM_AUTH_OPEN_PATHS": "/health"}
    record = serve(box, **settings)[1]
    assert {k: record["env"][k] for k in settings} == settings


@pytest.mark.parametrize("value", [KEY, ""])
def test_the_wrapper_refuses_vllm_api_key(box, value):
    result, record = serve(box, VLLM_API_KEY=value)
    assert result.returncode == 1
    assert record is None
    assert "VLLM_API_KEY is set" in result.stderr and "api_key credential only" in result.stderr
    assert KEY not in result.stdout + result.stderr


def test_the_wrapper_needs_a_key_file(box):
    result, record = serve(box, CREDENTIALS_DIRECTORY=None)
    assert (result.returncode, record) == (1, None)
    assert "no API key file" in result.stderr


@pytest.mark.parametrize("where", ["credential", "override"])
def test_the_wrapper_names_a_missing_key_file(box, where):
    (box / "credentials" / "api_key").unlink()
    env = {"RHOIM_VLLM_API_KEY_FILE": str(box / "nonexistent")} if where == "override" else {}
    expected = str(box / "nonexistent") if where == "override" else str(box / "credentials" / "api_key")
    result, record = serve(box, **env)
    assert (result.returncode, record) == (1, None)
    assert "cannot read the API key file %s" % expected in result.stderr


def test_the_wrapper_refuses_a_directory_as_key_file(box):
    result, record = serve(box, RHOIM_VLLM_API_KEY_FILE=str(box / "credentials"))
    assert (result.returncode, record) == (1, None)
    assert "cannot read the API key file" in result.stderr


def test_serving_without_a_key_is_no_longer_possible(box):
    result, record = serve(box, CREDENTIALS_DIRECTORY=None, RHOIM_VLLM_ALLOW_NO_KEY="1")
    assert (result.returncode, record) == (1, None)


def test_the_wrapper_leaves_the_key_file_rule_to_the_middleware(box):
    # A key file the middleware refuses still starts vllm: there is one parser, in the middleware.
    (box / "credentials" / "api_key").write_bytes(b"\x0b" + KEY.encode() + b"\n")
    result, record = serve(box)
    assert result.returncode == 0, result.stderr
    assert record["argv"][-2:] == MIDDLEWARE


def test_the_wrapper_needs_a_readable_config(box):
    result = subprocess.run([WRAPPER, str(box / "missing.yaml")], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "cannot read config" in result.stderr
    result = subprocess.run([WRAPPER], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "usage:" in result.stderr
