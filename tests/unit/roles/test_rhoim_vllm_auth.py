"""The API key middleware that the vllm_service role loads into vLLM (--middleware).

Plain ASGI calls, no server: what gets through, what gets 401, where the key comes from.
"""

import asyncio
import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "vllm_service", "files", "rhoim_vllm_auth.py")
_SPEC = importlib.util.spec_from_file_location("rhoim_vllm_auth", os.path.abspath(_PATH))
m = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(m)

AUTH = (b"authorization", b"Bearer k1")


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


@pytest.fixture
def mw():
    return m.ApiKeyMiddleware(_app, keys=["k1"])


@pytest.mark.parametrize("path", ["/health", "/metrics", "/version"])
def test_open_paths_need_no_key(mw, path):
    assert status(mw, http(path)) == 200


def test_invocations_need_the_key(mw):
    assert status(mw, http("/invocations", method="POST")) == 401
    assert status(mw, http("/invocations", [AUTH], method="POST")) == 200


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ((b"Authorization", b"bearer  k1 "), 200),
        ((b"authorization", b"Bearer k2"), 401),
        ((b"authorization", b"Basic k1"), 401),
        ((b"authorization", b"Bearer "), 401),
        ((b"authorization", b"Bearer k1k1"), 401),
    ],
)
def test_authorization_header_forms(mw, header, expected):
    assert status(mw, http("/x", [header])) == expected


def test_two_authorization_headers_are_refused(mw):
    assert status(mw, http("/x", [AUTH, (b"authorization", b"Bearer k2")])) == 401


def test_root_path_is_stripped_before_matching(mw):
    assert status(mw, http("/api/health", root="/api")) == 200
    assert status(mw, http("/api/v1/models", root="/api")) == 401


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


def test_empty_open_list_closes_health():
    assert status(m.ApiKeyMiddleware(_app, keys=["k1"], open_paths=()), http("/health")) == 401


def test_key_sources_in_order(tmp_path):
    keyfile = tmp_path / "api_key"
    keyfile.write_text("\n  fromcred \n")
    assert m.load_keys({"CREDENTIALS_DIRECTORY": str(tmp_path), "VLLM_API_KEY": "env"}) == [b"fromcred"]
    assert m.load_keys({"CREDENTIALS_DIRECTORY": "/nonexistent", "VLLM_API_KEY": " env "}) == [b"env"]
    assert m.load_keys({"RHOIM_VLLM_API_KEY_FILE": str(keyfile), "VLLM_API_KEY": "env"}) == [b"fromcred"]
    assert m.load_keys({}) == []


def test_open_paths_from_the_environment():
    assert m._open_paths({"RHOIM_VLLM_AUTH_OPEN_PATHS": "/health, /x"}) == {"/health", "/x"}
    assert m._open_paths({"RHOIM_VLLM_AUTH_OPEN_PATHS": ""}) == frozenset()


def test_fails_closed_without_a_key(monkeypatch):
    for name in ("VLLM_API_KEY", "CREDENTIALS_DIRECTORY", "RHOIM_VLLM_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="no API key"):
        m.ApiKeyMiddleware(_app)


def test_key_from_the_environment(monkeypatch):
    for name in ("CREDENTIALS_DIRECTORY", "RHOIM_VLLM_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VLLM_API_KEY", "envkey")
    assert status(m.ApiKeyMiddleware(_app), http("/x", [(b"authorization", b"Bearer envkey")])) == 200
