"""The host-side pollers the roles copy to a host while they wait: the model role's progress poll
(roles/model/files/rhoim_model_poll.py) and vllm_service's readiness poll
(roles/vllm_service/files/rhoim_vllm_ready.py)."""

import http.server
import importlib.util
import json
import os
import threading

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
