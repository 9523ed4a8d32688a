"""API key middleware for the vLLM OpenAI-compatible server (rhoim.inference.vllm_service).

vLLM's own ``--api-key`` / ``VLLM_API_KEY`` check guards only paths under ``/v1``, ``/v2``,
``/inference`` and ``/cohere``: ``/invocations`` (a full completion), ``/tokenize``,
``/detokenize``, ``/pooling``, ``/score``, ``/rerank``, ``/docs`` and ``/openapi.json`` answer
without a key. This middleware is the only check (the role's wrapper refuses to start with
``VLLM_API_KEY`` set, so vLLM's check never runs) and denies by default:

* ASGI ``http`` and ``websocket`` scopes are authenticated, ``lifespan`` passes through, and any
  other scope type raises ``RuntimeError`` without reaching vLLM (the ASGI spec asks an app to
  raise on a scope type it does not know).
* Paths in the open list (exact match after ``root_path`` is removed; default ``/health`` and
  ``/version``) and CORS preflight requests (``OPTIONS`` with ``Origin`` and
  ``Access-Control-Request-Method``, answered by vLLM's CORS middleware without touching the
  model) need no credential.
* ``/metrics`` needs ``Authorization: Bearer <metrics token>``, and so does every path that starts
  with ``/metrics`` (vLLM serves the metrics on all of them). The API key does not open them and the
  metrics token opens nothing else. Without a metrics token file it answers 401
  to everyone, unless ``/metrics`` is in the open list.
* Every other path needs ``Authorization: Bearer <API key>``.

The header rule: exactly one ``Authorization`` header whose value is ``Bearer`` (ASCII case
insensitive), one space (0x20) and the token, with nothing before or after: no tab, no second
space, no trailing blank. Tokens are compared through their SHA-256 digests with
``hmac.compare_digest``.

Secrets are read once, at start, from files (the key never enters a process environment):

* API key: ``$CREDENTIALS_DIRECTORY/api_key`` (systemd ``LoadCredential=api_key:...``), or the
  file named by ``RHOIM_VLLM_API_KEY_FILE`` when that is set. Required.
* Metrics token: ``$CREDENTIALS_DIRECTORY/metrics_token``, or the file named by
  ``RHOIM_VLLM_METRICS_TOKEN_FILE`` when that is set (then the file must exist). Optional; it must
  differ from the API key.

A secret file holds the secret alone on its first line: 1 or more visible ASCII characters
(0x21-0x7e), optionally followed by ``\\n`` or ``\\r\\n`` and nothing else but further empty
lines. Any other content (an empty file, blanks or control characters around or inside the
secret, non-ASCII characters, a second line) makes the middleware refuse to start with a
``RuntimeError`` that names the file and never quotes its content.

``RHOIM_VLLM_AUTH_OPEN_PATHS`` (comma-separated exact paths, each starting with ``/``) replaces
the open list: ``/health,/version,/metrics`` opens the metrics too, an empty string requires a
credential everywhere, ``/health`` included. An entry without a leading ``/`` (which could never
match a request path) makes the middleware refuse to start.

Denied requests get ``401 {"error": "Unauthorized"}`` (the body vLLM's own check sends) with
``WWW-Authenticate: Bearer``; denied WebSocket handshakes are closed with code 1008 (the server
answers the handshake with 403).

Load it with ``vllm serve ... --middleware rhoim_vllm_auth.ApiKeyMiddleware``; vLLM imports the
module and, because it is a class, calls ``app.add_middleware(ApiKeyMiddleware)``. Added last, it
is the outermost middleware. The module has to be importable by the vLLM API server process
(the role's wrapper puts its directory on ``PYTHONPATH``). Pure ASGI, standard library only: it
does not depend on the vLLM or Starlette version.
"""

import hashlib
import hmac
import os
import re

__all__ = [
    "DEFAULT_OPEN_PATHS",
    "METRICS_PATH",
    "ApiKeyMiddleware",
    "load_secrets",
    "open_paths_from_env",
    "parse_secret",
    "read_secret_file",
]

DEFAULT_OPEN_PATHS = ("/health", "/version")
METRICS_PATH = "/metrics"

_BODY = b'{"error":"Unauthorized"}'
_SCHEME = b"bearer "
_VISIBLE = re.compile(rb"[\x21-\x7e]+")
_EMPTY_LINES = re.compile(rb"(?:\r?\n)*")
_NOT_VISIBLE = (
    "a character that is not visible ASCII (0x21-0x7e): a blank, a control character"
    " such as a tab, a vertical tab or a carriage return, or a non-ASCII character"
)


def _digest(value):
    return hashlib.sha256(value).digest()


def parse_secret(data):
    """Return the secret held by ``data`` (bytes) under the rule in the module docstring.

    Raise ``ValueError`` saying what is wrong; the message never quotes ``data``.
    """
    line, newline, rest = data.partition(b"\n")
    if newline and line.endswith(b"\r"):
        line = line[:-1]
    if not line:
        raise ValueError("its first line is empty")
    if not _VISIBLE.fullmatch(line):
        # Where the offending character is (edge or inside) tells how to fix the file without
        # showing any of the secret.
        if not _VISIBLE.fullmatch(line[:1]):
            raise ValueError("the secret starts with " + _NOT_VISIBLE)
        if not _VISIBLE.fullmatch(line[-1:]):
            raise ValueError("the secret ends with " + _NOT_VISIBLE)
        raise ValueError("the secret contains " + _NOT_VISIBLE)
    if not _EMPTY_LINES.fullmatch(rest):
        raise ValueError("only empty lines may follow the secret")
    return line


def read_secret_file(path, what="secret"):
    """Return the secret in the file ``path``; ``RuntimeError`` naming the file if it breaks the rule."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise RuntimeError("rhoim_vllm_auth: cannot read the %s file %s (%s)" % (what, path, exc.strerror)) from None
    try:
        return parse_secret(data)
    except ValueError as exc:
        raise RuntimeError(
            "rhoim_vllm_auth: the %s file %s is not valid: %s. Write the %s alone on the first line"
            " (1 or more visible ASCII characters, then nothing but line breaks)" % (what, path, exc, what)
        ) from None


def load_secrets(environ=None):
    """Return ``(api_key, metrics_token or None)`` as bytes, read from the files in the module docstring."""
    env = os.environ if environ is None else environ
    creds = env.get("CREDENTIALS_DIRECTORY")
    key_path = env.get("RHOIM_VLLM_API_KEY_FILE") or (creds and os.path.join(creds, "api_key"))
    if not key_path:
        raise RuntimeError("rhoim_vllm_auth: no API key file: load the api_key credential (systemd LoadCredential=api_key:PATH) or set RHOIM_VLLM_API_KEY_FILE")
    api_key = read_secret_file(key_path, "API key")
    token_path = env.get("RHOIM_VLLM_METRICS_TOKEN_FILE")
    if not token_path and creds:
        token_path = os.path.join(creds, "metrics_token")
        # The credential is optional; lexists so that a dangling link is reported, not ignored.
        if not os.path.lexists(token_path):
            token_path = None
    metrics_token = read_secret_file(token_path, "metrics token") if token_path else None
    return api_key, metrics_token


def open_paths_from_env(environ=None):
    """The open list from ``RHOIM_VLLM_AUTH_OPEN_PATHS``, or the default one when that is unset."""
    env = os.environ if environ is None else environ
    value = env.get("RHOIM_VLLM_AUTH_OPEN_PATHS")
    if value is None:
        return frozenset(DEFAULT_OPEN_PATHS)
    return frozenset(p.strip() for p in value.split(",") if p.strip())


def _as_secret(value, what):
    if isinstance(value, str):
        value = value.encode("utf-8")
    try:
        return parse_secret(value)
    except ValueError as exc:
        raise RuntimeError("rhoim_vllm_auth: the %s is not valid: %s" % (what, exc)) from None


class ApiKeyMiddleware:
    """ASGI middleware: the API key on every route but the open list and ``/metrics`` (metrics token).

    Without ``api_key``, the API key and the metrics token are read from the environment's files
    (``load_secrets``) and ``metrics_token`` is ignored; with it, both come from the arguments.
    ``open_paths`` defaults to ``open_paths_from_env()``.
    """

    def __init__(self, app, api_key=None, metrics_token=None, open_paths=None):
        self.app = app
        if api_key is None:
            api_key, metrics_token = load_secrets()
        # Digests: hmac.compare_digest then sees equal lengths, and the comparison time tells
        # nothing about a secret's length or content.
        self._key_digest = _digest(_as_secret(api_key, "API key"))
        self._metrics_digest = None
        if metrics_token is not None:
            self._metrics_digest = _digest(_as_secret(metrics_token, "metrics token"))
            if hmac.compare_digest(self._metrics_digest, self._key_digest):
                raise RuntimeError("rhoim_vllm_auth: the metrics token equals the API key; they must differ: give /metrics a token of its own")
        if open_paths is None:
            open_paths, source = open_paths_from_env(), "RHOIM_VLLM_AUTH_OPEN_PATHS"
        else:
            source = "the open_paths argument"
        for entry in open_paths:
            if not entry.startswith("/"):
                raise RuntimeError(
                    "rhoim_vllm_auth: open path %r (from %s) does not start with '/': list exact request paths such as /health" % (entry, source)
                )
        self.open_paths = frozenset(open_paths)

    @staticmethod
    def _bearer_matches(headers, digest):
        values = [v for k, v in headers if k.lower() == b"authorization"]
        if len(values) != 1:
            return False
        value = values[0]
        # Exactly "Bearer", one space and the token: any other blank makes the token differ
        # from the secret, which holds visible characters only.
        scheme_ok = value[: len(_SCHEME)].lower() == _SCHEME
        token_ok = hmac.compare_digest(_digest(value[len(_SCHEME) :]), digest)
        return scheme_ok and token_ok

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
        names = {header[0].lower() for header in scope.get("headers", ())}
        return b"origin" in names and b"access-control-request-method" in names

    def _allowed(self, scope, kind):
        path = self._route_path(scope)
        if path in self.open_paths or (kind == "http" and self._is_cors_preflight(scope)):
            return True
        headers = scope.get("headers", ())
        # vLLM serves its metrics on every path that starts with /metrics (/metrics/, /metricsX ...).
        if path.startswith(METRICS_PATH):
            if METRICS_PATH in self.open_paths:
                return True
            # Closed to everyone when no metrics token was given.
            return self._metrics_digest is not None and self._bearer_matches(headers, self._metrics_digest)
        return self._bearer_matches(headers, self._key_digest)

    async def __call__(self, scope, receive, send):
        kind = scope.get("type")
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            raise RuntimeError("rhoim_vllm_auth: refused the unknown ASGI scope type %r" % (kind,))
        if self._allowed(scope, kind):
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
