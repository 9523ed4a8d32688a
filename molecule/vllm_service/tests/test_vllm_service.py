"""The real vLLM CPU server as rhoim-vllm@tiny.service: serving, the API key, hardening, recovery.

vLLM starts once (converge); the tests that restart it (config change, kill -9) come last.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

import pytest

UNIT = "rhoim-vllm@tiny.service"
BASE = "http://127.0.0.1:8000"
KEYFILE = "/etc/rhoim/credentials/tiny.api_key"
HEADER = "/root/.rhoim-test-auth-header"
SERVED = "tiny"
USER = "rhoim"
CONTAINER = "rhoim-vllm"
OPEN_ROUTES = {"/health", "/metrics", "/version"}
# Routes that run the model, named by the issue; the journal's Route: lines add the rest.
MODEL_ROUTES = {
    "/invocations": "POST",
    "/tokenize": "POST",
    "/detokenize": "POST",
    "/v1/completions": "POST",
    "/v1/chat/completions": "POST",
    "/v1/models": "GET",
    "/pooling": "POST",
    "/score": "POST",
    "/rerank": "POST",
    "/v1/embeddings": "POST",
}
BODIES = {
    "/invocations": {"prompt": "def hello(", "max_tokens": 4},
    "/tokenize": {"model": SERVED, "prompt": "def hello("},
    "/detokenize": {"model": SERVED, "tokens": [1, 2, 3]},
    "/v1/completions": {"model": SERVED, "prompt": "def hello(", "max_tokens": 4},
    "/v1/chat/completions": {"model": SERVED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
}


def curl(host, path, auth=False, body=None, method=None, timeout=120, headers=()):
    """(status, body) of one request made on the host; the key travels in a header file, never argv."""
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-w", "\\n%{http_code}"]
    if auth:
        cmd += ["-H", "@" + HEADER]
    for header in headers:
        cmd += ["-H", header]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    if method == "HEAD":
        cmd.append("--head")
    elif method:
        cmd += ["-X", method]
    cmd.append(BASE + path)
    out = host.run(" ".join("'%s'" % c.replace("'", "'\\''") for c in cmd))
    assert out.rc == 0, out.stderr
    text, _sep, status = out.stdout.rpartition("\n")
    return int(status), text


def show(host, prop):
    return host.check_output("systemctl show -P %s %s" % (prop, UNIT))


def wait_healthy(host, ceiling=300):
    start = time.monotonic()
    while time.monotonic() - start < ceiling:
        if host.run("curl -fsS --max-time 5 -o /dev/null %s/health" % BASE).rc == 0:
            return time.monotonic() - start
        time.sleep(2)
    pytest.fail("%s did not answer /health within %d s:\n%s" % (UNIT, ceiling, journal_tail(host)))


def journal_tail(host, lines=40):
    return host.run("journalctl --no-pager -n %d -u %s" % (lines, UNIT)).stdout


@pytest.fixture(scope="module", autouse=True)
def auth_header(host):
    # printf is a shell builtin: the key never appears in a command line.
    host.check_output('sh -c \'umask 077; printf "Authorization: Bearer %%s\\n" "$(cat %s)" > %s\'' % (KEYFILE, HEADER))
    yield
    host.run("rm -f %s" % HEADER)


@pytest.fixture(scope="module")
def key_file_on_controller(host):
    """The key in a private file on the controller, for grep -F -f (never in argv)."""
    key = host.file(KEYFILE).content_string.strip()
    assert len(key) >= 32
    fd, path = tempfile.mkstemp(prefix="rhoim-key-")
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    yield path
    os.unlink(path)


def run_converge(extra_vars=None):
    """ansible-playbook -vvv of converge.yml against the host; returns (rc, output)."""
    scenario = os.environ.get("MOLECULE_SCENARIO_DIRECTORY", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    project = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.dirname(os.path.dirname(scenario)))
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=os.path.join(project, "build", "collections"),
        ANSIBLE_FORCE_COLOR="false",
        ANSIBLE_PIPELINING="true",
        ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
        ANSIBLE_CALLBACK_RESULT_FORMAT="yaml",
        ANSIBLE_NOCOLOR="1",
    )
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-vvv", "-i", CONTAINER + ",", "-c", "containers.podman.podman"]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    cmd.append(os.path.join(scenario, "converge.yml"))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200, check=False)
    return proc.returncode, proc.stdout


def assert_key_absent(text, key_file, where):
    """grep -F -f KEYFILE over text; the key itself never goes through argv."""
    proc = subprocess.run(["grep", "-c", "-F", "-f", key_file], input=text, text=True, stdout=subprocess.PIPE, check=False)
    assert proc.returncode == 1, "the API key appears in %s (%s lines)" % (where, proc.stdout.strip())


def started_since(host, cursor):
    out = host.check_output("journalctl --no-pager -o cat -u %s --after-cursor='%s'" % (UNIT, cursor))
    return len(re.findall(r"^Started rhoim-vllm@tiny\.service", out, re.M))


def cursor(host):
    out = host.check_output("journalctl --no-pager -n 1 --show-cursor -o cat")
    return re.search(r"-- cursor: (\S+)", out).group(1)


def routes_from_journal(host):
    out = host.check_output("journalctl --no-pager -o cat -u %s" % UNIT)
    routes = {}
    for path, methods in re.findall(r"Route: (\S+), Methods: ([A-Z, ]+)", out):
        names = [m.strip() for m in methods.split(",")]
        routes[path] = next((m for m in names if m != "HEAD"), names[0])
    return routes


def test_unit_enabled_and_active_as_the_service_user(host):
    service = host.service(UNIT)
    assert service.is_enabled
    assert service.is_running
    pid = show(host, "MainPID")
    assert host.check_output("ps -o user= -p %s" % pid) == USER
    assert int(host.check_output("ps -o uid= -p %s" % pid)) == 961
    # Every process of the unit (API server, engine core, worker) runs as the service user.
    rows = [line.split(None, 1) for line in host.check_output("ps -eo user=,cgroup=").splitlines()]
    users = {row[0] for row in rows if len(row) == 2 and row[1].endswith("/" + UNIT)}
    assert users == {USER}


def test_settings_live_in_etc(host):
    config = host.file("/etc/rhoim/vllm/tiny.yaml")
    assert config.exists and config.mode == 0o640
    assert "model: /var/lib/rhoim/models/tiny/" in config.content_string
    assert "enforce-eager: true" in config.content_string
    env = host.file("/etc/rhoim/vllm/tiny.env").content_string
    for line in ('VLLM_TARGET_DEVICE="cpu"', 'HF_HUB_OFFLINE="1"', 'VLLM_NO_USAGE_STATS="1"', 'DO_NOT_TRACK="1"'):
        assert line in env
    keyfile = host.file(KEYFILE)
    assert keyfile.user == "root" and keyfile.mode == 0o600
    assert host.file("/etc/rhoim/credentials").mode == 0o700


def test_port_listening(host):
    assert host.socket("tcp://0.0.0.0:8000").is_listening


def test_models_lists_the_served_name(host):
    status, body = curl(host, "/v1/models", auth=True)
    assert status == 200, body
    assert SERVED in [m["id"] for m in json.loads(body)["data"]]


def test_completions_return_tokens(host):
    status, body = curl(host, "/v1/completions", auth=True, body={"model": SERVED, "prompt": "def hello(", "max_tokens": 8, "temperature": 0})
    assert status == 200, body
    answer = json.loads(body)
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["choices"][0]["text"]


def test_chat_completions_return_tokens(host):
    body = {"model": SERVED, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "temperature": 0}
    status, text = curl(host, "/v1/chat/completions", auth=True, body=body)
    assert status == 200, text
    answer = json.loads(text)
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["choices"][0]["message"]["content"]


def test_streaming(host):
    body = {"model": SERVED, "prompt": "def hello(", "max_tokens": 8, "temperature": 0, "stream": True}
    status, text = curl(host, "/v1/completions", auth=True, body=body)
    assert status == 200, text
    chunks = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert chunks[-1] == "[DONE]"
    pieces = [json.loads(c)["choices"][0]["text"] for c in chunks[:-1] if json.loads(c)["choices"]]
    assert len(pieces) >= 2 and "".join(pieces)


def test_every_model_route_needs_the_key(host):
    routes = dict(MODEL_ROUTES)
    listed = routes_from_journal(host)
    assert "/v1/completions" in listed, "no Route: lines in the journal"
    routes.update(listed)
    failures = []
    for path, method in sorted(routes.items()):
        if path in OPEN_ROUTES:
            continue
        concrete = re.sub(r"\{[^}]*\}", "x", path)
        status, body = curl(host, concrete, method=method, body=BODIES.get(path, {}) if method in ("POST", "PUT", "PATCH") else None)
        if status != 401:
            failures.append("%s %s -> %s %s" % (method, concrete, status, body[:100]))
        status, _body = curl(host, concrete, method=method, headers=["Authorization: Bearer wrong"])
        if status != 401:
            failures.append("%s %s with a wrong key -> %s" % (method, concrete, status))
    print("checked %d routes without the key" % len(routes))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", ["/invocations", "/tokenize", "/detokenize", "/v1/completions", "/v1/chat/completions"])
def test_model_routes_answer_with_the_key(host, path):
    status, body = curl(host, path, auth=True, body=BODIES[path])
    assert status == 200, body


@pytest.mark.parametrize("path", ["/pooling", "/score", "/rerank", "/v1/embeddings"])
def test_other_model_routes_pass_the_key_check(host, path):
    # A generative model does not serve these; with the key they get past authentication.
    status, body = curl(host, path, auth=True, body={"model": SERVED, "input": "x"})
    assert status != 401, body


@pytest.mark.parametrize("path", sorted(OPEN_ROUTES))
def test_open_routes_answer_without_the_key(host, path):
    status, _body = curl(host, path)
    assert status == 200


def test_metrics_carry_vllm_series(host):
    status, body = curl(host, "/metrics")
    assert status == 200
    assert re.search(r"^vllm:\w+", body, re.M)
    assert "vllm:request_success_total" in body


def test_key_absent_from_the_unit_and_systemctl(host, key_file_on_controller):
    assert_key_absent(host.check_output("systemctl cat %s" % UNIT), key_file_on_controller, "systemctl cat")
    assert_key_absent(host.check_output("systemctl show %s" % UNIT), key_file_on_controller, "systemctl show")
    files = host.check_output("cat /etc/systemd/system/rhoim-vllm@.service /etc/rhoim/vllm/tiny.*")
    assert_key_absent(files, key_file_on_controller, "unit and settings files")


def test_key_absent_from_process_lists_for_other_users(host, key_file_on_controller):
    cmdlines = host.check_output('runuser -u nobody -- sh -c \'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < $f; echo; done\'')
    assert "vllm" in cmdlines
    assert_key_absent(cmdlines, key_file_on_controller, "/proc/*/cmdline read as nobody")
    assert_key_absent(host.check_output("runuser -u nobody -- ps -eo args"), key_file_on_controller, "ps -eo args")
    pid = show(host, "MainPID")
    assert host.run("runuser -u nobody -- cat /proc/%s/environ" % pid).rc != 0


def test_config_change_restarts_once_and_ansible_log_keeps_the_key(host, key_file_on_controller):
    for max_len, extra in ((128, {"molecule_max_model_len": 128}), (256, None)):
        before = {p: show(host, p) for p in ("NRestarts", "MainPID", "ActiveEnterTimestamp")}
        mark = cursor(host)
        rc, out = run_converge(extra)
        assert rc == 0, out[-4000:]
        assert_key_absent(out, key_file_on_controller, "ansible-playbook -vvv output")
        assert re.search(r"changed=[1-9]", out), out[-2000:]
        after = {p: show(host, p) for p in ("NRestarts", "MainPID", "ActiveEnterTimestamp")}
        assert after["NRestarts"] == before["NRestarts"]
        assert after["MainPID"] != before["MainPID"]
        assert after["ActiveEnterTimestamp"] != before["ActiveEnterTimestamp"]
        assert started_since(host, mark) == 1
        status, body = curl(host, "/v1/models", auth=True)
        assert status == 200 and json.loads(body)["data"][0]["max_model_len"] == max_len


def test_kill_9_of_the_main_process_recovers(host):
    restarts = int(show(host, "NRestarts"))
    pid = show(host, "MainPID")
    start = time.monotonic()
    host.check_output("kill -9 %s" % pid)
    deadline = start + 300
    while time.monotonic() < deadline:
        new_pid = show(host, "MainPID")
        if new_pid not in ("0", pid) and show(host, "ActiveState") == "active":
            break
        time.sleep(1)
    wait_healthy(host, ceiling=max(1, deadline - time.monotonic()))
    elapsed = time.monotonic() - start
    print("\nkill -9 recovery: /health 200 again %.1f s after kill -9 of PID %s" % (elapsed, pid))
    assert int(show(host, "NRestarts")) > restarts
    assert show(host, "MainPID") != pid
    status, _body = curl(host, "/v1/completions", auth=True, body=BODIES["/v1/completions"])
    assert status == 200


def test_key_absent_from_the_journal(host, key_file_on_controller):
    assert_key_absent(host.check_output("journalctl --no-pager -o verbose"), key_file_on_controller, "the journal")
