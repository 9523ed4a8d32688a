"""The API key middleware that the vllm_service role loads into vLLM (--middleware).

Plain ASGI calls, no server: what gets through, what gets 401, where the secrets come from and
which secret files are refused.
"""

import asyncio
import importlib.util
import os
import re
import traceback

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "vllm_service", "files", "rhoim_vllm_auth.py")
_SPEC = importlib.util.spec_from_file_location("rhoim_vllm_auth", os.path.abspath(_PATH))
m = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(m)

AUTH = (b"authorization", b"Bearer k1")
METRICS_AUTH = (b"authorization", b"Bearer m1")
# Letters and digits that no error message contains by chance.
KEY = "Zq7Xw9Kp2Vj4"
ENV_NAMES = ("CREDENTIALS_DIRECTORY", "RHOIM_VLLM_API_KEY_FILE", "RHOIM_VLLM_METRICS_TOKEN_FILE", "RHOIM_VLLM_AUTH_OPEN_PATHS", "VLLM_API_KEY")


async def _app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
    else:
        _app.seen = scope["type"]


def call(mw, scope):
    sent = []

    async def receive():
        return {"type": "websocket.connect"} if scope["type"] == "websocket" else {"type": "http.request", "body": b""}

    async def send(msg):
        sent.append(msg)

    asyncio.run(mw(scope, receive, send))
    return sent


def http(path, headers=(), method="GET", root=""):
    return {"type": "http", "path": path, "root_path": root, "method": method, "headers": list(headers)}


def status(mw, scope):
    return call(mw, scope)[0]["status"]


def bearer(value):
    return [(b"authorization", value)]


@pytest.fixture
def mw():
    return m.ApiKeyMiddleware(_app, api_key="k1", metrics_token=b"m1")


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment with an api_key credential holding KEY; returns the credentials folder."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "api_key").write_text(KEY + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    return tmp_path


def refusal(data, tmp_path):
    """The RuntimeError (with its whole traceback) that a key file holding ``data`` gets."""
    path = tmp_path / "api_key"
    path.write_bytes(data)
    with pytest.raises(RuntimeError) as info:
        m.read_secret_file(str(path), "API key")
    return info.value, "".join(traceback.format_exception(info.type, info.value, info.tb))


# Routes and the open list.


@pytest.mark.parametrize("path", ["/health", "/version"])
def test_open_paths_need_no_key(mw, path):
    assert status(mw, http(path)) == 200


def test_the_default_open_list_is_health_and_version(env):
    assert m.DEFAULT_OPEN_PATHS == ("/health", "/version")
    assert m.ApiKeyMiddleware(_app).open_paths == {"/health", "/version"}


def test_invocations_need_the_key(mw):
    assert status(mw, http("/invocations", method="POST")) == 401
    assert status(mw, http("/invocations", [AUTH], method="POST")) == 200


def test_root_path_is_stripped_before_matching(mw):
    assert status(mw, http("/api/health", root="/api")) == 200
    assert status(mw, http("/api/v1/models", root="/api")) == 401
    assert status(mw, http("/api/metrics", [METRICS_AUTH], root="/api")) == 200


def test_denial_body_and_header(mw):
    start, body = call(mw, http("/v1/models"))
    assert body["body"] == b'{"error":"Unauthorized"}'
    assert (b"www-authenticate", b"Bearer") in start["headers"]


def test_cors_preflight_passes_but_bare_options_does_not(mw):
    preflight = [(b"origin", b"h"), (b"access-control-request-method", b"POST")]
    assert status(mw, http("/v1/x", preflight, method="OPTIONS")) == 200
    assert status(mw, http("/v1/x", method="OPTIONS")) == 401


def test_websocket_needs_the_key(mw):
    assert call(mw, {"type": "websocket", "path": "/v1/realtime", "headers": []}) == [{"type": "websocket.close", "code": 1008}]
    assert call(mw, {"type": "websocket", "path": "/v1/realtime", "headers": [AUTH]}) == [{"type": "websocket.accept"}]


def test_lifespan_passes_through(mw):
    call(mw, {"type": "lifespan"})
    assert _app.seen == "lifespan"


@pytest.mark.parametrize("kind", ["webtransport", "", None])
def test_unknown_scope_types_are_refused(mw, kind):
    _app.seen = None
    with pytest.raises(RuntimeError, match="unknown ASGI scope type"):
        call(mw, {"type": kind, "path": "/health", "headers": [AUTH]})
    assert _app.seen is None


def test_empty_open_list_closes_health():
    assert status(m.ApiKeyMiddleware(_app, api_key="k1", open_paths=()), http("/health")) == 401


def test_open_paths_from_the_environment():
    assert m.open_paths_from_env({"RHOIM_VLLM_AUTH_OPEN_PATHS": "/health, /x"}) == {"/health", "/x"}
    assert m.open_paths_from_env({"RHOIM_VLLM_AUTH_OPEN_PATHS": ""}) == frozenset()
    assert m.open_paths_from_env({}) == {"/health", "/version"}


@pytest.mark.parametrize("entry", ["health", "metrics", "*", " x"])
def test_open_paths_must_start_with_a_slash(env, monkeypatch, entry):
    named = re.escape(repr(entry.strip()))
    with pytest.raises(RuntimeError, match="open path %s .*does not start with '/'" % named):
        m.ApiKeyMiddleware(_app, api_key="k1", open_paths=["/health", entry.strip()])
    monkeypatch.setenv("RHOIM_VLLM_AUTH_OPEN_PATHS", "/health," + entry)
    with pytest.raises(RuntimeError, match=r"open path %s \(from RHOIM_VLLM_AUTH_OPEN_PATHS\)" % named):
        m.ApiKeyMiddleware(_app)


# The header rule.


@pytest.mark.parametrize("value", [b"Bearer k1", b"bearer k1", b"BEARER k1", b"bEaReR k1"])
def test_the_scheme_is_case_insensitive(mw, value):
    assert status(mw, http("/x", [(b"Authorization", value)])) == 200


@pytest.mark.parametrize("value", [b"Bearer k2", b"Basic k1", b"Bearer ", b"Bearer", b"Bearer k1k1", b"k1", b""])
def test_wrong_tokens_and_schemes_are_refused(mw, value):
    assert status(mw, http("/x", bearer(value))) == 401


def test_two_spaces_after_bearer_are_refused(mw):
    assert status(mw, http("/v1/models", bearer(b"Bearer  k1"))) == 401


def test_a_tab_after_bearer_is_refused(mw):
    assert status(mw, http("/v1/models", bearer(b"Bearer\tk1"))) == 401


def test_a_space_then_a_tab_after_bearer_is_refused(mw):
    assert status(mw, http("/v1/models", bearer(b"Bearer \tk1"))) == 401


@pytest.mark.parametrize("value", [b"Bearer k1 ", b"Bearer k1\t", b" Bearer k1", b"\tBearer k1", b"Bearer k1\r"])
def test_blanks_before_or_after_the_credentials_are_refused(mw, value):
    assert status(mw, http("/v1/models", bearer(value))) == 401


def test_two_authorization_headers_are_refused(mw):
    assert status(mw, http("/x", [AUTH, (b"authorization", b"Bearer k2")])) == 401
    assert status(mw, http("/x", [AUTH, AUTH])) == 401


# /metrics.


def test_metrics_needs_its_own_token(mw):
    assert status(mw, http("/metrics")) == 401
    assert status(mw, http("/metrics", [AUTH])) == 401
    assert status(mw, http("/metrics", [METRICS_AUTH])) == 200


@pytest.mark.parametrize("path", ["/metrics/", "/metricsx", "/metrics/foo"])
def test_every_path_vllm_serves_metrics_on_needs_the_metrics_token(mw, path):
    # vLLM mounts its metrics on ^/metrics(?P<path>.*)$: the API key must not open them there either.
    assert status(mw, http(path, [AUTH])) == 401
    assert status(mw, http(path, [METRICS_AUTH])) == 200


@pytest.mark.parametrize("path", ["/v1/models", "/invocations", "/tokenize"])
def test_the_metrics_token_opens_nothing_else(mw, path):
    assert status(mw, http(path, [METRICS_AUTH], method="POST")) == 401
    assert status(mw, http(path, [AUTH], method="POST")) == 200


def test_the_metrics_token_opens_no_websocket(mw):
    assert call(mw, {"type": "websocket", "path": "/v1/realtime", "headers": [METRICS_AUTH]}) == [{"type": "websocket.close", "code": 1008}]


def test_metrics_without_a_token_file_is_closed(env):
    mw = m.ApiKeyMiddleware(_app)
    assert status(mw, http("/metrics")) == 401
    assert status(mw, http("/metrics", bearer(b"Bearer " + KEY.encode()))) == 401
    assert status(mw, http("/v1/models", bearer(b"Bearer " + KEY.encode()))) == 200


def test_metrics_can_be_opened_with_the_open_list(env, monkeypatch):
    monkeypatch.setenv("RHOIM_VLLM_AUTH_OPEN_PATHS", "/health,/version,/metrics")
    assert status(m.ApiKeyMiddleware(_app), http("/metrics")) == 200


def test_the_metrics_token_comes_from_its_credential(env):
    (env / "metrics_token").write_text("m1\n")
    mw = m.ApiKeyMiddleware(_app)
    assert status(mw, http("/metrics", [METRICS_AUTH])) == 200
    assert status(mw, http("/v1/models", [METRICS_AUTH])) == 401


def test_the_metrics_token_file_override_replaces_the_credential_path(env, monkeypatch, tmp_path):
    (env / "metrics_token").write_text("m1\n")
    other = tmp_path / "elsewhere"
    other.write_text("m2\n")
    monkeypatch.setenv("RHOIM_VLLM_METRICS_TOKEN_FILE", str(other))
    mw = m.ApiKeyMiddleware(_app)
    assert status(mw, http("/metrics", [METRICS_AUTH])) == 401
    assert status(mw, http("/metrics", bearer(b"Bearer m2"))) == 200


def test_a_missing_metrics_token_override_is_refused(env, monkeypatch):
    monkeypatch.setenv("RHOIM_VLLM_METRICS_TOKEN_FILE", str(env / "nonexistent"))
    with pytest.raises(RuntimeError, match=r"cannot read the metrics token file .*nonexistent"):
        m.ApiKeyMiddleware(_app)


def test_a_malformed_metrics_token_file_is_refused(env):
    (env / "metrics_token").write_text(" m1\n")
    with pytest.raises(RuntimeError, match=r"metrics token file .*metrics_token is not valid"):
        m.ApiKeyMiddleware(_app)


def test_a_metrics_token_equal_to_the_api_key_is_refused(env):
    (env / "metrics_token").write_text(KEY + "\r\n")
    with pytest.raises(RuntimeError, match="metrics token equals the API key") as info:
        m.ApiKeyMiddleware(_app)
    assert KEY not in str(info.value)
    with pytest.raises(RuntimeError, match="must differ"):
        m.ApiKeyMiddleware(_app, api_key=b"k1", metrics_token=b"k1")


# Where the API key comes from.


def test_the_key_comes_from_the_api_key_credential(env):
    assert m.load_secrets() == (KEY.encode(), None)
    mw = m.ApiKeyMiddleware(_app)
    assert status(mw, http("/v1/models", bearer(b"Bearer " + KEY.encode()))) == 200


def test_the_key_file_override_replaces_the_credential_path(env, monkeypatch, tmp_path):
    other = tmp_path / "elsewhere"
    other.write_text("k9\n")
    monkeypatch.setenv("RHOIM_VLLM_API_KEY_FILE", str(other))
    assert m.load_secrets() == (b"k9", None)
    assert m.load_secrets({"RHOIM_VLLM_API_KEY_FILE": str(other)}) == (b"k9", None)


def test_vllm_api_key_is_not_a_key_source(env, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    monkeypatch.setenv("VLLM_API_KEY", "envkey")
    with pytest.raises(RuntimeError, match="no API key file"):
        m.ApiKeyMiddleware(_app)
    assert m.load_secrets({"CREDENTIALS_DIRECTORY": str(env), "VLLM_API_KEY": "envkey"}) == (KEY.encode(), None)


def test_fails_closed_without_a_key(env, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(RuntimeError, match="no API key file: load the api_key credential"):
        m.ApiKeyMiddleware(_app)


def test_a_missing_api_key_credential_is_refused_with_its_path(env):
    (env / "api_key").unlink()
    with pytest.raises(RuntimeError, match="cannot read the API key file %s" % os.path.join(str(env), "api_key")):
        m.ApiKeyMiddleware(_app)


def test_loading_the_key_leaves_the_environment_alone(env):
    before = dict(os.environ)
    m.ApiKeyMiddleware(_app)
    assert dict(os.environ) == before
    assert not any(KEY in value for value in os.environ.values())


# The secret file rule.


@pytest.mark.parametrize("data", [b"k1", b"k1\n", b"k1\r\n", b"k1\n\n", b"k1\r\n\r\n", b"k1\n\r\n\n", b"!~Az09{}"])
def test_well_formed_key_files_are_accepted(tmp_path, data):
    path = tmp_path / "api_key"
    path.write_bytes(data)
    assert m.read_secret_file(str(path)) == data.split(b"\n")[0].rstrip(b"\r")


def test_a_key_file_starting_with_a_vertical_tab_is_refused(tmp_path):
    exc, text = refusal(b"\x0bk1\n", tmp_path)
    assert "starts with a character that is not visible ASCII" in str(exc)
    assert "k1" not in text


def test_a_key_file_starting_with_a_carriage_return_is_refused(tmp_path):
    exc, text = refusal(b"\rk1\n", tmp_path)
    assert "starts with a character that is not visible ASCII" in str(exc)
    assert "k1" not in text


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "first line is empty"),
        (b"\n", "first line is empty"),
        (b"\r\n", "first line is empty"),
        (b"\nk1\n", "first line is empty"),
        (b" k1\n", "starts with"),
        (b"\tk1\n", "starts with"),
        (b"k1 \n", "ends with"),
        (b"k1\t\n", "ends with"),
        (b"k1\r", "ends with"),
        (b"k1\r\r\n", "ends with"),
        (b"k1\x0b\n", "ends with"),
        (b"k 1\n", "contains"),
        (b"k\r1\n", "contains"),
        (b"k\x001\n", "contains"),
        ("kë1\n".encode(), "contains"),
        (b"k1\nk2\n", "only empty lines may follow"),
        (b"k1\n \n", "only empty lines may follow"),
        (b"k1\n\r", "only empty lines may follow"),
        (b"k1\n\x0b\n", "only empty lines may follow"),
    ],
)
def test_malformed_key_files_are_refused(tmp_path, data, reason):
    exc, text = refusal(data, tmp_path)
    assert reason in str(exc)
    assert "not valid" in str(exc) and str(tmp_path / "api_key") in str(exc)
    assert "Write the API key alone on the first line" in str(exc)
    assert "k1" not in text


@pytest.mark.parametrize(
    "data",
    [" {s}\n", "{s} \n", "\x0b{s}\n", "\r{s}", "{s}\r", "{s}\t\n", "{s}\n{s}\n", "\n{s}\n", "{h}\x0b{t}\n", "{h} {t}\n", "{h}é{t}\n", "{s}\nx"],
)
def test_key_file_refusals_never_contain_the_secret(tmp_path, data):
    half = len(KEY) // 2
    exc, text = refusal(data.format(s=KEY, h=KEY[:half], t=KEY[half:]).encode(), tmp_path)
    assert isinstance(exc, RuntimeError)
    # No piece of the secret of 4 characters or more, in the message or the whole traceback.
    for start in range(len(KEY) - 3):
        assert KEY[start : start + 4] not in text


def test_the_api_key_middleware_refuses_a_bad_key_file_at_start(env):
    (env / "api_key").write_bytes(b"\x0b" + KEY.encode() + b"\n")
    with pytest.raises(RuntimeError, match=r"API key file .*api_key is not valid: the secret starts with") as info:
        m.ApiKeyMiddleware(_app)
    assert KEY not in str(info.value)


def test_a_bad_key_argument_is_refused_without_quoting_it():
    with pytest.raises(RuntimeError, match="API key is not valid: the secret contains") as info:
        m.ApiKeyMiddleware(_app, api_key=KEY[:4] + " " + KEY[4:])
    assert KEY[:4] not in str(info.value)
