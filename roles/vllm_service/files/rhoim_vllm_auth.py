"""API key middleware for the vLLM OpenAI-compatible server (rhoim.inference.vllm_service).

vLLM's own ``--api-key`` / ``VLLM_API_KEY`` check guards only paths under ``/v1``, ``/v2``,
``/inference`` and ``/cohere``: ``/invocations`` (a full completion), ``/tokenize``,
``/detokenize``, ``/pooling``, ``/score``, ``/rerank``, ``/docs`` and ``/openapi.json`` answer
without a key. This middleware denies by default instead: every HTTP and WebSocket request
needs ``Authorization: Bearer <key>`` except the paths in an explicit open list (default
``/health``, ``/metrics``, ``/version``) and CORS preflight requests (``OPTIONS`` with
``Origin`` and ``Access-Control-Request-Method``, answered by vLLM's CORS middleware without
touching the model).

Load it with ``vllm serve ... --middleware rhoim_vllm_auth.ApiKeyMiddleware``; vLLM imports the
module and, because it is a class, calls ``app.add_middleware(ApiKeyMiddleware)``. Added last, it
is the outermost middleware. The module has to be importable by the vLLM API server process
(the role's wrapper puts its directory on ``PYTHONPATH``).

The accepted key(s) are read once, at start, from the first of:

1. the file named by ``RHOIM_VLLM_API_KEY_FILE``;
2. ``$CREDENTIALS_DIRECTORY/api_key`` (systemd ``LoadCredential=api_key:...``), if it exists;
3. the environment variable ``VLLM_API_KEY``.

A key file holds the key on its first non-empty line (surrounding blanks are stripped).
Without any key the middleware refuses to start (fail closed).

``RHOIM_VLLM_AUTH_OPEN_PATHS`` (comma-separated exact paths) replaces the open list; set it to
an empty string to require the key everywhere, ``/health`` included.

Denied requests get ``401 {"error": "Unauthorized"}`` (the body vLLM's own check sends) with
``WWW-Authenticate: Bearer``; denied WebSocket handshakes are closed with code 1008 (the server
answers the handshake with 403). Other ASGI scope types (``lifespan``) pass through.

Pure ASGI, standard library only: it does not depend on the vLLM or Starlette version.
"""

import hashlib
import hmac
import os

__all__ = ["DEFAULT_OPEN_PATHS", "ApiKeyMiddleware", "load_keys"]

DEFAULT_OPEN_PATHS = ("/health", "/metrics", "/version")

_BODY = b'{"error":"Unauthorized"}'


def _digest(value):
    return hashlib.sha256(value).digest()


def _read_key_file(path):
    """The first non-empty line, stripped (as the rhoim-vllm-serve wrapper reads it)."""
    with open(path, "rb") as f:
        for line in f.read().splitlines():
            if line.strip():
                return [line.strip()]
    return []


def load_keys(environ=None):
    """Return the accepted key(s) as a list of bytes, from the sources in the module docstring."""
    env = os.environ if environ is None else environ
    path = env.get("RHOIM_VLLM_API_KEY_FILE")
    if path:
        return _read_key_file(path)
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds:
        path = os.path.join(creds, "api_key")
        if os.path.exists(path):
            return _read_key_file(path)
    key = env.get("VLLM_API_KEY", "").strip()
    return [key.encode("utf-8")] if key else []


def _open_paths(environ=None):
    env = os.environ if environ is None else environ
    value = env.get("RHOIM_VLLM_AUTH_OPEN_PATHS")
    if value is None:
        return frozenset(DEFAULT_OPEN_PATHS)
    return frozenset(p.strip() for p in value.split(",") if p.strip())


class ApiKeyMiddleware:
    """ASGI middleware: ``Authorization: Bearer <key>`` on every route but the open list."""

    def __init__(self, app, keys=None, open_paths=None):
        self.app = app
        if keys is None:
            keys = load_keys()
        keys = [k.encode("utf-8") if isinstance(k, str) else k for k in keys]
        if not keys:
            raise RuntimeError("rhoim_vllm_auth: no API key (set RHOIM_VLLM_API_KEY_FILE, provide the api_key credential, or set VLLM_API_KEY)")
        # Compare SHA-256 digests so that hmac.compare_digest sees equal lengths and the
        # comparison time tells nothing about the key's length or content.
        self._digests = [_digest(k) for k in keys]
        self.open_paths = _open_paths() if open_paths is None else frozenset(open_paths)

    def _authorized(self, headers):
        values = [v for k, v in headers if k.lower() == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _sep, token = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        token = token.strip()
        if not token:
            return False
        candidate = _digest(token)
        ok = False
        for d in self._digests:  # no early exit
            ok |= hmac.compare_digest(candidate, d)
        return ok

    def _route_path(self, scope):
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        return path

    @staticmethod
    def _is_cors_preflight(scope):
        if scope.get("method") != "OPTIONS":
            return False
        names = {k.lower() for k, _value in scope.get("headers", ())}
        return b"origin" in names and b"access-control-request-method" in names

    async def __call__(self, scope, receive, send):
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            # lifespan and any future non-request scope: nothing to authenticate.
            await self.app(scope, receive, send)
            return
        if self._route_path(scope) in self.open_paths or (kind == "http" and self._is_cors_preflight(scope)) or self._authorized(scope.get("headers", ())):
            await self.app(scope, receive, send)
            return
        if kind == "http":
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_BODY)).encode("ascii")),
                        (b"www-authenticate", b"Bearer"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _BODY})
        else:
            message = await receive()
            if message.get("type") == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008})
