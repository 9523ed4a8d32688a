"""The real vLLM CPU server as rhoim-vllm@tiny.service: serving, the API key, hardening, recovery.

vLLM starts once (converge); the tests that restart it come last, and each restart serves as many
checks as it can: one run changes tiny's settings (one restart) and adds a second model over TLS
beside it, the next changes them back and removes that model, then kill -9 recovery.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(SCENARIO)), "tests", "support"))

from scenario import run_playbook  # noqa: E402  (test support, not a package)

UNIT = "rhoim-vllm@tiny.service"
BASE = "http://127.0.0.1:8000"
KEYFILE = "/etc/rhoim/credentials/tiny.api_key"
HEADER = "/root/.rhoim-test-auth-header"
SERVED = "tiny"
USER = "rhoim"
CONTAINER = "rhoim-vllm"
OPEN_ROUTES = {"/health", "/version"}
# The fleet's metrics token (converge.yml): /metrics takes it, and nothing else does.
METRICS_TOKEN = "rhoim-test-metrics-Z7q4Lw9e2Xk1Vb8Rt5Nc3Hp6"  # noqa: S105 - a test token
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
    """The API key and the metrics token in a private file on the controller, for grep -F -f
    (never in argv): a leak of either is found."""
    key = host.file(KEYFILE).content_string.strip()
    assert len(key) >= 32
    fd, path = tempfile.mkstemp(prefix="rhoim-key-")
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n" + METRICS_TOKEN + "\n")
    yield path
    os.unlink(path)


def run_converge(extra_vars=None, check=False):
    """ansible-playbook -vvv of converge.yml against the host over SSH (--check --diff if check),
    with ssh -vvv too, so the leak checks read what the SSH connection logs. Returns (rc, output)."""
    args = ["-vvv"] + (["--check", "--diff"] if check else [])
    rc, out = run_playbook(os.path.join(SCENARIO, "converge.yml"), *args, extra_vars=extra_vars,
                           env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml"})
    # A run that reached the host carries SSH's own log (a refusal of the settings may not reach it).
    if rc == 0:
        assert "SSH: EXEC ssh" in out and "debug1:" in out, out[-3000:]
    return rc, out


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


def test_only_the_api_port_listens_beyond_loopback(host):
    """The workers' own sockets (torch's gloo binds to the host name's address) stay on loopback:
    of the unit's TCP and UDP sockets, only the API port listens on another or a wildcard address."""
    rows = [line.split(None, 1) for line in host.check_output("ps -eo pid=,cgroup=").splitlines()]
    pids = {row[0] for row in rows if len(row) == 2 and row[1].endswith("/" + UNIT)}
    assert pids
    sockets = host.check_output("ss -H -lntup").splitlines()
    mine = [line for line in sockets if any("pid=%s," % pid in line for pid in pids)]
    assert mine, sockets
    exposed = []
    for line in mine:
        local = line.split()[4]
        address, _sep, port = local.rpartition(":")
        if address.strip("[]").split("%")[0] in ("127.0.0.1", "::1"):
            continue
        if port == "8000":
            continue
        exposed.append(line)
    assert not exposed, "\n".join(exposed)


def container_ip():
    out = subprocess.run(["podman", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", CONTAINER],
                         check=True, stdout=subprocess.PIPE, text=True).stdout.split()
    assert out, "no IP address for %s" % CONTAINER
    return out[0]


def reachable_from_controller(ip, port, path="/"):
    """HTTP status of a GET from the controller, over the network; None when no connection."""
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (ip, port, path), timeout=5) as resp:  # noqa: S310 - test URL
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_firewalld_lets_the_port_in_and_keeps_others_out(host):
    assert host.run("firewall-cmd --state").rc == 0
    assert host.run("firewall-cmd --query-port=8000/tcp").rc == 0
    ip = container_ip()
    assert reachable_from_controller(ip, 8000, "/health") == 200
    # A listener on a port nobody opened answers on the host, but not from outside.
    host.check_output("systemd-run --unit rhoim-test-probe python3 -m http.server 9999")
    try:
        for _attempt in range(20):
            if host.run("curl -fsS -o /dev/null http://127.0.0.1:9999/").rc == 0:
                break
            time.sleep(0.5)
        assert host.run("curl -fsS -o /dev/null http://127.0.0.1:9999/").rc == 0
        assert reachable_from_controller(ip, 9999) is None
    finally:
        host.run("systemctl stop rhoim-test-probe")


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


def test_metrics_carry_vllm_series_with_the_metrics_token_only(host):
    status, body = curl(host, "/metrics", headers=["Authorization: Bearer " + METRICS_TOKEN])
    assert status == 200
    assert re.search(r"^vllm:\w+", body, re.M)
    assert "vllm:request_success_total" in body
    # Not without it, not with the model's API key, and the metrics token opens nothing else.
    assert curl(host, "/metrics")[0] == 401
    assert curl(host, "/metrics", auth=True)[0] == 401
    assert curl(host, "/metrics/", auth=True)[0] == 401
    assert curl(host, "/v1/models", headers=["Authorization: Bearer " + METRICS_TOKEN])[0] == 401
    token_file = host.file("/etc/rhoim/credentials/metrics.token")
    assert (token_file.user, token_file.mode) == ("root", 0o600)


def test_prometheus_scrapes_the_unit_with_the_shipped_scrape_job(tmp_path):
    """A real Prometheus on the controller, with docs/monitoring/prometheus-scrape.yml (targets and the
    token file set here), scrapes the unit: up == 1 and vllm: series; the same job without the token
    gets up == 0."""
    project = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.dirname(os.path.dirname(SCENARIO)))
    with open(os.path.join(project, "docs", "monitoring", "prometheus-scrape.yml")) as f:
        shipped = yaml.safe_load(f)
    token_file = tmp_path / "metrics.token"
    token_file.write_text(METRICS_TOKEN + "\n")
    token_file.chmod(0o600)
    job = shipped["scrape_configs"][0]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["authorization"]["credentials_file"] = str(token_file)
    job["static_configs"] = [{"targets": ["%s:8000" % container_ip()]}]
    without = {k: v for k, v in job.items() if k != "authorization"}
    without["job_name"] = "rhoim-vllm-without-token"
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [job, without]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["prometheus", "--config.file=%s" % (tmp_path / "prometheus.yml"), "--storage.tsdb.path=%s" % (tmp_path / "data"),
                             "--web.listen-address=127.0.0.1:%d" % port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def query(q):
            url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": q}))
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - test URL
                    return {r["metric"].get("job", ""): float(r["value"][1]) for r in json.load(resp)["data"]["result"]}
            except OSError:
                return {}
        up = {}
        for _attempt in range(60):
            up = query("up")
            if len(up) == 2:
                break
            time.sleep(1)
        assert up == {"rhoim-vllm": 1.0, "rhoim-vllm-without-token": 0.0}, up
        assert query('count({__name__=~"vllm:.+", job="rhoim-vllm"})').get("", 0) > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def readme_hardening_table():
    """{point: exposure} of the role README's table of what systemd-analyze security still flags."""
    path = os.path.join(os.path.dirname(os.path.dirname(SCENARIO)), "roles", "vllm_service", "README.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    section = text.split("### What `systemd-analyze security` still flags", 1)[1].split("\n## ", 1)[0]
    intro, _sep, _rest = section.partition("| point |")
    score = re.search(r"\*\*(\d\.\d)\*\* in a container host", " ".join(intro.split())).group(1)
    rows = {name.replace("\\|", "|"): exposure for name, exposure in
            re.findall(r"^\| `((?:[^`])+)` \| (\d\.\d) \|", section, re.M)}
    return score, rows


def test_systemd_analyze_flags_only_what_the_readme_explains(host):
    """Every point systemd-analyze still flags has a row in the role README saying why, and no row is stale."""
    # This host is a container: the role leaves ProtectProc= out, and says so in the unit.
    unit = host.file("/etc/systemd/system/rhoim-vllm@.service").content_string
    assert "ProtectProc=" not in re.sub(r"^#.*$", "", unit, flags=re.M)
    assert "# No ProtectProc=: this host is a container" in unit
    out = host.check_output("LANG=C.UTF-8 systemd-analyze security --no-pager %s" % UNIT)
    flagged = dict(re.findall(r"^\u2717 (\S+)\s.*?(\d\.\d)\s*$", out, re.M))
    score, rows = readme_hardening_table()
    assert len(rows) >= 10
    assert flagged == rows, out
    assert re.search(r"Overall exposure level for %s: %s " % (re.escape(UNIT), re.escape(score)), out), out


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


def test_check_mode_reports_a_change_and_makes_none(host, key_file_on_controller):
    before = (show(host, "MainPID"), host.file("/etc/rhoim/vllm/tiny.yaml").content_string)
    rc, out = run_converge(check=True)
    assert rc == 0, out[-4000:]
    assert re.search(r"changed=0\s", out), out[-2000:]
    rc, out = run_converge({"molecule_max_model_len": 64}, check=True)
    assert rc == 0, out[-4000:]
    assert_key_absent(out, key_file_on_controller, "ansible-playbook --check --diff -vvv output")
    assert re.search(r"changed=[1-9]", out), out[-2000:]
    assert "+max-model-len: 64" in out and "-max-model-len: 256" in out
    assert (show(host, "MainPID"), host.file("/etc/rhoim/vllm/tiny.yaml").content_string) == before


def refused(host, extra_models, *expected):
    """A run with these models fails before anything changes, with each expected phrase in its message."""
    tiny_pid = show(host, "MainPID")
    config = host.file("/etc/rhoim/vllm/tiny.yaml").content_string
    rc, out = run_converge({"molecule_extra_models": extra_models})
    assert rc != 0
    for phrase in expected:
        assert phrase in out, (phrase, out[-3000:])
    for model in extra_models:
        assert not host.file("/etc/rhoim/vllm/%s.yaml" % model["name"]).exists
    assert (show(host, "MainPID"), host.file("/etc/rhoim/vllm/tiny.yaml").content_string) == (tiny_pid, config)
    return out


def test_settings_that_bypass_or_leak_the_key_are_refused(host):
    refused(host, [{"name": "bypass", "port": 8004,
                    "extra": {"api-key": "x", "middleware": "m.M", "grpc": True, "grpc_port": 50051, "uvicorn_log_level": "debug"},
                    "environment": {"VLLM_API_KEY": "y", "VLLM_USE_RUST_FRONTEND": "1", "RHOIM_VLLM_AUTH_OPEN_PATHS": "/"}}],
            "model bypass: extra sets api-key", "extra sets middleware", "extra sets grpc:", "extra sets grpc_port",
            "extra sets uvicorn_log_level=debug", "environment sets VLLM_API_KEY", "environment sets VLLM_USE_RUST_FRONTEND",
            "environment sets RHOIM_VLLM_AUTH_OPEN_PATHS")


def test_an_api_key_with_blanks_is_refused_without_showing_it(host):
    out = refused(host, [{"name": "blank-key", "port": 8004, "api_key": "has a blank s3cr3t"}], "not so for the api_key of blank-key")
    assert "s3cr3t" not in out


def test_two_models_on_one_port_are_refused(host):
    refused(host, [{"name": "same-port", "port": 8000}], "models tiny and same-port both listen on port 8000")


def test_a_port_another_program_holds_is_refused(host):
    host.check_output("systemd-run --unit rhoim-test-holder python3 -m http.server 8005")
    try:
        for _attempt in range(20):
            if host.socket("tcp://0.0.0.0:8005").is_listening:
                break
            time.sleep(0.5)
        refused(host, [{"name": "held", "port": 8005}], "model held: port 8005 is held by python3", "rhoim-test-holder.service")
    finally:
        host.run("systemctl stop rhoim-test-holder")


def test_a_model_never_laid_down_fails_at_once(host):
    """No config.json: the run says so before starting anything, rather than waiting for a unit
    that systemd skips."""
    out = refused(host, [{"name": "never", "model": "/var/lib/rhoim/models/never", "port": 8006}],
                  "model never: /var/lib/rhoim/models/never/config.json does not exist")
    assert "waited" not in out
    assert host.check_output("systemctl show -P ActiveEnterTimestampMonotonic rhoim-vllm@never.service") == "0"


TLS_MODEL = {
    "name": "tiny-tls", "model": "/var/lib/rhoim/models/tiny/current", "port": 8443, "dtype": "float32",
    "max_model_len": 256, "cpu_kvcache_space": 1, "extra": {"enforce-eager": True},
    "tls_certfile": "/etc/rhoim/tls/tiny-tls.crt", "tls_keyfile": "/etc/rhoim/tls/tiny-tls.key",
}
TLS_UNIT = "rhoim-vllm@tiny-tls.service"
TLS_FILES = ("/etc/rhoim/vllm/tiny-tls.yaml", "/etc/rhoim/vllm/tiny-tls.env", "/etc/rhoim/credentials/tiny-tls.api_key",
             "/etc/systemd/system/rhoim-vllm@tiny-tls.service.d")
RESTART_PROPS = ("NRestarts", "MainPID", "ActiveEnterTimestamp")


def converge_restarting_tiny_once(host, key_file, extra_vars, max_len):
    """A run that changes tiny's max_model_len: tiny restarts exactly once (no crash-restart), the
    key stays out of the -vvv output, and tiny then serves with the new length."""
    before = {p: show(host, p) for p in RESTART_PROPS}
    mark = cursor(host)
    rc, out = run_converge(extra_vars)
    assert rc == 0, out[-4000:]
    assert_key_absent(out, key_file, "ansible-playbook -vvv output")
    assert re.search(r"changed=[1-9]", out), out[-2000:]
    # While vLLM starts, the run says it is waiting, not that something failed.
    assert "FAILED - RETRYING" not in out
    assert "(item=tiny: starting)" in out, out[-3000:]
    after = {p: show(host, p) for p in RESTART_PROPS}
    assert after["NRestarts"] == before["NRestarts"]
    assert after["MainPID"] != before["MainPID"]
    assert after["ActiveEnterTimestamp"] != before["ActiveEnterTimestamp"]
    assert started_since(host, mark) == 1
    status, body = curl(host, "/v1/models", auth=True)
    assert status == 200 and json.loads(body)["data"][0]["max_model_len"] == max_len


def test_config_change_restarts_once_while_a_second_model_starts_over_tls(host, key_file_on_controller):
    """One run: tiny's settings change (one restart) and a second unit starts over TLS beside it."""
    converge_restarting_tiny_once(host, key_file_on_controller,
                                  {"molecule_max_model_len": 128, "molecule_extra_models": [TLS_MODEL]}, 128)
    tiny_pid = show(host, "MainPID")
    assert host.service(TLS_UNIT).is_running and host.service(TLS_UNIT).is_enabled
    assert host.run("firewall-cmd --query-port=8443/tcp").rc == 0
    # The key file is root-only; the unit reads it as a credential and runs as the service user.
    assert host.file("/etc/rhoim/tls/tiny-tls.key").mode == 0o600
    assert host.check_output("systemctl show -P User %s" % TLS_UNIT) == USER
    auth = host.run('sh -c \'umask 077; printf "Authorization: Bearer %s\\n" "$(cat /etc/rhoim/credentials/tiny-tls.api_key)"'
                    ' > /root/.rhoim-test-tls-header\'')
    assert auth.rc == 0, auth.stderr
    body = json.dumps({"model": "tiny-tls", "prompt": "def hello(", "max_tokens": 4})
    done = host.run("curl -sS --max-time 120 --cacert /etc/rhoim/tls/tiny-tls.crt -H @/root/.rhoim-test-tls-header "
                    "-H 'Content-Type: application/json' --data-binary '%s' https://127.0.0.1:8443/v1/completions" % body)
    host.run("rm -f /root/.rhoim-test-tls-header")
    assert done.rc == 0, done.stderr
    assert json.loads(done.stdout)["usage"]["completion_tokens"] > 0
    # No plain HTTP on the TLS port, and the other model's key does not open it.
    assert host.run("curl -sS --max-time 10 http://127.0.0.1:8443/health").rc != 0
    other = host.run("curl -sS --max-time 30 -o /dev/null -w '%%{http_code}' --cacert /etc/rhoim/tls/tiny-tls.crt "
                     "-H @%s https://127.0.0.1:8443/v1/models" % HEADER)
    assert other.stdout == "401"
    # Serving the second model did not touch tiny again.
    assert show(host, "MainPID") == tiny_pid


def test_change_back_and_remove_the_tls_model_in_one_run(host, key_file_on_controller):
    """One run: tiny's settings change back (one restart) and state: absent removes the TLS model;
    a second removal run changes nothing and leaves tiny alone."""
    removed = {"molecule_extra_models": [{"name": "tiny-tls", "state": "absent"}]}
    converge_restarting_tiny_once(host, key_file_on_controller, removed, 256)
    tiny_pid = show(host, "MainPID")
    rc, out = run_converge(removed)
    assert rc == 0, out[-4000:]
    assert_key_absent(out, key_file_on_controller, "ansible-playbook -vvv output")
    assert re.search(r"changed=0\s", out), out[-2000:]
    assert host.run("systemctl is-active %s" % TLS_UNIT).stdout.strip() == "inactive"
    assert host.run("systemctl is-enabled %s" % TLS_UNIT).stdout.strip() != "enabled"
    for path in TLS_FILES:
        assert not host.file(path).exists, path
    assert not host.socket("tcp://0.0.0.0:8443").is_listening
    assert host.run("firewall-cmd --query-port=8443/tcp").rc != 0
    assert host.run("firewall-cmd --query-port=8000/tcp").rc == 0
    assert host.file("/var/lib/rhoim/models/tiny/current/config.json").exists
    assert show(host, "MainPID") == tiny_pid
    status, _body = curl(host, "/v1/completions", auth=True, body=BODIES["/v1/completions"])
    assert status == 200


def test_a_model_that_cannot_start_fails_the_run_with_its_journal(host, key_file_on_controller):
    tiny_pid = show(host, "MainPID")
    broken = {"name": "broken", "model": "/var/lib/rhoim/models/broken", "port": 8002, "cpu_kvcache_space": 1}
    rc, out = run_converge({"molecule_extra_models": [broken], "vllm_service_wait_timeout": 20})
    assert rc != 0
    assert "did not answer on /health" in out and "== rhoim-vllm@broken.service" in out, out[-4000:]
    # Only the journal of the unit that does not serve.
    assert "== rhoim-vllm@tiny.service" not in out
    # The unit's own lines, not only systemd's: vLLM said why it stopped.
    assert re.search(r"rhoim-vllm-serve\[\d+\]|vllm\[\d+\]|python3?\[\d+\]", out), out[-4000:]
    assert_key_absent(out, key_file_on_controller, "ansible-playbook -vvv output of a failed run")
    rc, out = run_converge({"molecule_extra_models": [{"name": "broken", "state": "absent"}]})
    assert rc == 0, out[-4000:]
    assert host.run("systemctl is-active rhoim-vllm@broken.service").stdout.strip() in ("inactive", "failed")
    assert not host.file("/etc/rhoim/vllm/broken.yaml").exists
    assert show(host, "MainPID") == tiny_pid


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
