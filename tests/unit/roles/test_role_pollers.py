"""The host-side pollers the roles copy to a host while they wait: the model role's progress poll
(roles/model/files/rhoim_model_poll.py) and vllm_service's readiness poll
(roles/vllm_service/files/rhoim_vllm_ready.py)."""

import http.server
import importlib.util
import json
import os
import sys
import threading
import time

import pytest

ROLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))), "roles")


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROLES, path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


model_poll = load("model/files/rhoim_model_poll.py", "rhoim_model_poll")
ready = load("vllm_service/files/rhoim_vllm_ready.py", "rhoim_vllm_ready")


def poll(capsys, results, progress, seconds="0.3"):
    assert model_poll.main(["poll", str(results), str(progress), seconds]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_running_job_reports_its_progress_and_keeps_the_file(tmp_path, capsys):
    (tmp_path / "job").write_text(json.dumps({"started": 1, "finished": 0}))
    (tmp_path / "progress").write_text(json.dumps({"bytes_done": 5, "bytes_total": 10}))
    assert poll(capsys, tmp_path / "job", tmp_path / "progress") == {"finished": False, "progress": {"bytes_done": 5, "bytes_total": 10}}
    assert (tmp_path / "progress").exists()


def test_a_finished_job_ends_the_poll_and_removes_the_progress_file(tmp_path, capsys):
    (tmp_path / "job").write_text(json.dumps({"changed": True}))
    (tmp_path / "progress").write_text("{}")
    assert poll(capsys, tmp_path / "job", tmp_path / "progress", seconds="30")["finished"] is True
    assert not (tmp_path / "progress").exists()


def test_no_results_file_yet_is_not_finished(tmp_path, capsys):
    assert poll(capsys, tmp_path / "none", tmp_path / "none-either") == {"finished": False, "progress": None}


@pytest.mark.parametrize(("state", "why"), [
    ({"active": "activating", "sub": "auto-restart", "result": "exit-code", "condition": ""}, None),
    ({"active": "active", "sub": "running", "result": "success", "condition": "yes"}, None),
    ({"active": "inactive", "sub": "dead", "result": "success", "condition": "no"}, "a start condition failed"),
    ({"active": "failed", "sub": "failed", "result": "start-limit-hit", "condition": "yes"}, "start-limit-hit"),
])
def test_waiting_stops_only_when_systemd_has_given_up(state, why):
    got = ready.gave_up(state)
    assert (got is None) if why is None else (why in got)


@pytest.fixture()
def server():
    """/health, and /v1/models for the key k1 only."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/v1/models" and self.headers.get("Authorization") != "Bearer k1":
                self.send_error(401)
                return
            body = {"/health": b"", "/v1/models": json.dumps({"data": [{"id": "tiny"}]}).encode()}.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()


def test_ready_needs_health_and_the_served_name_with_the_key(server, tmp_path):
    key = tmp_path / "key"
    key.write_text("k1\n")
    context = None
    assert ready.ready(server, str(key), "tiny", context) is True
    assert ready.ready(server, str(key), "other", context) is False
    key.write_text("wrong\n")
    assert ready.ready(server, str(key), "tiny", context) is False
    assert ready.ready("http://127.0.0.1:1", str(key), "tiny", context) is False


# --enabled: the health of every enabled instance (tasks/health.yml).

def test_the_config_parser_reads_plain_and_quoted_scalars_and_lists():
    text = "\n".join([
        "# Ansible managed",
        "model: /var/lib/rhoim/models/tiny/abc",
        "served-model-name: tiny",
        "host: '0.0.0.0'",
        "port: 8100",
        "dtype: \"bfloat16\"",
        "quoted: 'it''s'",
        "json: \"a\\\"b\"",
        "compilation-config:",
        "  level: 0",
        "  sizes:",
        "  - 1",
        "enforce_eager: true",
        "",
    ])
    conf = ready.parse_config(text)
    assert conf == {
        "model": "/var/lib/rhoim/models/tiny/abc", "served-model-name": "tiny", "host": "0.0.0.0", "port": "8100",
        "dtype": "bfloat16", "quoted": "it's", "json": 'a"b', "enforce-eager": "true",
    }


def test_the_config_parser_reads_a_list_of_served_names():
    conf = ready.parse_config("served-model-name:\n- first\n- 'second'\nport: 8000\nextra-list:\n  - \"x\"\n")
    assert conf["served-model-name"] == ["first", "second"]
    assert conf["extra-list"] == ["x"]
    assert ready.endpoint(conf, "name") == ("http://127.0.0.1:8000", "first")


@pytest.mark.parametrize(("conf", "base", "served"), [
    ({"host": "0.0.0.0", "port": "8100", "served-model-name": "tiny"}, "http://127.0.0.1:8100", "tiny"),
    ({"host": "::", "port": "8100", "served-model-name": ["a", "b"]}, "http://127.0.0.1:8100", "a"),
    ({"port": "8100", "ssl-certfile": "/run/credentials/x/tls_cert"}, "https://127.0.0.1:8100", "name"),
    ({"host": "10.0.0.5", "port": "9000", "model": "/models/m"}, "http://10.0.0.5:9000", "/models/m"),
    ({"host": "::1", "ssl-certfile": None}, "http://[::1]:8000", "name"),
])
def test_the_endpoint_of_an_instance(conf, base, served):
    assert ready.endpoint(conf, "name") == (base, served)


def test_the_endpoint_from_a_config_as_the_role_writes_it():
    text = "# Ansible managed\nmodel: /m\nserved-model-name: tiny\nhost: 0.0.0.0\nport: 8443\nssl-certfile: /run/credentials/u/tls_cert\n"
    assert ready.endpoint(ready.parse_config(text), "tiny") == ("https://127.0.0.1:8443", "tiny")


@pytest.fixture()
def systemctl(tmp_path, monkeypatch):
    """A fake systemctl on PATH: units.json maps a unit to {"enabled": str, "show": {property: value}}."""
    units = tmp_path / "units.json"
    units.write_text("{}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text("\n".join([
        "#!" + sys.executable,
        "import json, sys",
        "units = json.load(open(%r))" % str(units),
        "unit = units.get(sys.argv[2], {})",
        "if sys.argv[1] == 'is-enabled':",
        "    print(unit.get('enabled', 'disabled'))",
        "elif sys.argv[1] == 'show':",
        "    for k, v in unit.get('show', {}).items():",
        "        print('%s=%s' % (k, v))",
        "",
    ]))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])

    def set_units(value):
        units.write_text(json.dumps(value))

    return set_units


RUNNING = {"ActiveState": "active", "SubState": "running", "Result": "success", "ConditionResult": "yes",
           "ConditionTimestampMonotonic": "1", "NRestarts": "0"}


def test_discovery_keeps_the_configured_instances_whose_unit_is_enabled(tmp_path, systemctl):
    conf = tmp_path / "vllm"
    conf.mkdir()
    (conf / "tiny.yaml").write_text("served-model-name:\n- tiny-a\nport: 8100\n")
    (conf / "off.yaml").write_text("port: 8200\n")
    (conf / "tiny.env").write_text("X=1\n")
    systemctl({"rhoim-vllm@tiny.service": {"enabled": "enabled"}, "rhoim-vllm@off.service": {"enabled": "disabled"},
               "rhoim-vllm@gone.service": {"enabled": "enabled"}})
    assert ready.discover(str(conf), "/creds", "rhoim-vllm") == [{
        "name": "tiny", "unit": "rhoim-vllm@tiny.service", "base": "http://127.0.0.1:8100", "served": "tiny-a",
        "key_file": "/creds/tiny.api_key",
    }]
    assert ready.discover(str(tmp_path / "none"), "/creds", "rhoim-vllm") == []


def test_the_unit_state_reads_the_restarts(systemctl):
    systemctl({"u.service": {"show": dict(RUNNING, NRestarts="3")}})
    assert ready.unit_state("u.service")["restarts"] == 3
    assert ready.unit_state("other.service")["restarts"] == 0


KEY = "s3cret-key-XYZ"


@pytest.fixture()
def vllm():
    """A stand-in for a vLLM server: /health, and with the key /v1/models (tiny) and /v1/completions,
    which answers with completion_status (a list, so a test can change it)."""
    completion_status = [200]
    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, status, body):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                self.answer(200, b"")
            elif self.headers.get("Authorization") != "Bearer " + KEY:
                self.answer(401, b"")
            elif self.path == "/v1/models":
                self.answer(200, json.dumps({"data": [{"id": "tiny"}]}).encode())
            else:
                self.answer(404, b"")

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            asked.append(body)
            if self.headers.get("Authorization") != "Bearer " + KEY:
                self.answer(401, b"")
            elif self.path != "/v1/completions" or body.get("model") != "tiny":
                self.answer(404, b"")
            elif completion_status[0] != 200:
                self.answer(completion_status[0], b"")
            else:
                self.answer(200, json.dumps({"choices": [{"text": " world"}]}).encode())

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield {"port": httpd.server_address[1], "completion_status": completion_status, "asked": asked}
    httpd.shutdown()


@pytest.fixture()
def host(tmp_path, systemctl, vllm):
    """Config and key folders with the instance tiny served by the stand-in, its unit enabled and running."""
    conf, creds = tmp_path / "vllm", tmp_path / "credentials"
    conf.mkdir()
    creds.mkdir()
    (conf / "tiny.yaml").write_text("# Ansible managed\nmodel: /m\nserved-model-name: tiny\nhost: 0.0.0.0\nport: %d\n" % vllm["port"])
    (creds / "tiny.api_key").write_text(KEY + "\n")
    systemctl({"rhoim-vllm@tiny.service": {"enabled": "enabled", "show": RUNNING}})
    return {"conf": str(conf), "creds": str(creds), "systemctl": systemctl, "vllm": vllm}


def health(capsys, host, seconds="5", max_restarts="1"):
    assert ready.main(["rhoim_vllm_ready.py", "--enabled", host["conf"], host["creds"], "rhoim-vllm", seconds, max_restarts]) == 0
    out = capsys.readouterr().out
    assert KEY not in out
    return json.loads(out)


def test_a_serving_instance_is_healthy(capsys, host):
    got = health(capsys, host)
    assert got["healthy"] is True
    [inst] = got["instances"]
    assert inst["name"] == "tiny" and inst["unit"] == "rhoim-vllm@tiny.service"
    assert inst["healthy"] is True and inst["why"] is None and inst["state"] == "active/running"
    assert isinstance(inst["seconds"], float)
    assert host["vllm"]["asked"] == [{"model": "tiny", "prompt": "Hello", "max_tokens": 1}]


def test_a_failing_completion_is_not_healthy_and_says_why(capsys, host):
    host["vllm"]["completion_status"][0] = 500
    got = health(capsys, host, seconds="1.5")
    assert got["healthy"] is False
    [inst] = got["instances"]
    assert inst["healthy"] is False
    assert "timed out" in inst["why"] and "completion" in inst["why"] and "500" in inst["why"]


def test_a_wrong_key_is_not_healthy(capsys, host, tmp_path):
    (tmp_path / "credentials" / "tiny.api_key").write_text("wrong\n")
    [inst] = health(capsys, host, seconds="0.5")["instances"]
    assert inst["healthy"] is False and "/v1/models" in inst["why"] and "401" in inst["why"]


def test_a_crash_looping_unit_is_given_up_early(capsys, host):
    host["systemctl"]({"rhoim-vllm@tiny.service": {"enabled": "enabled", "show": dict(RUNNING, NRestarts="2")}})
    start = time.monotonic()
    got = health(capsys, host, seconds="30", max_restarts="2")
    assert time.monotonic() - start < 10
    [inst] = got["instances"]
    assert got["healthy"] is False and inst["healthy"] is False
    assert "restarted 2 times" in inst["why"]
    assert inst["seconds"] < 10


def test_restarts_do_not_count_when_the_maximum_is_0(capsys, host):
    host["systemctl"]({"rhoim-vllm@tiny.service": {"enabled": "enabled", "show": dict(RUNNING, NRestarts="7")}})
    assert health(capsys, host, max_restarts="0")["healthy"] is True


def test_a_unit_systemd_gave_up_on_is_not_waited_for(capsys, host):
    failed = dict(RUNNING, ActiveState="failed", SubState="failed", Result="start-limit-hit")
    host["systemctl"]({"rhoim-vllm@tiny.service": {"enabled": "enabled", "show": failed}})
    [inst] = health(capsys, host, seconds="30")["instances"]
    assert inst["healthy"] is False and inst["why"].startswith("gave up") and "start-limit-hit" in inst["why"]
    assert inst["state"] == "failed/failed" and inst["seconds"] < 10


def test_an_inactive_unit_times_out(capsys, host):
    host["systemctl"]({"rhoim-vllm@tiny.service": {"enabled": "enabled", "show": dict(RUNNING, ActiveState="activating", SubState="start")}})
    [inst] = health(capsys, host, seconds="0.5")["instances"]
    assert inst["healthy"] is False and "timed out" in inst["why"] and "activating/start" in inst["why"]


def test_no_enabled_instance_is_healthy(capsys, host):
    host["systemctl"]({})
    assert health(capsys, host) == {"healthy": True, "instances": []}


@pytest.mark.parametrize("args", [[], ["a", "b", "c", "5"], ["a", "b", "c", "x", "1"], ["a", "b", "c", "5", "-1"]])
def test_wrong_arguments_exit_2_with_the_usage(capsys, args):
    assert ready.main(["rhoim_vllm_ready.py", "--enabled", *args]) == 2
    assert "usage:" in capsys.readouterr().err
