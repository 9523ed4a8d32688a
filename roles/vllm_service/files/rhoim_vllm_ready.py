"""One poll of a vLLM instance on this host, for the vllm_service role's wait.

    python3 rhoim_vllm_ready.py UNIT BASE_URL KEY_FILE SERVED_NAME SECONDS

Waits up to SECONDS for the instance to be ready: /health answers 200 and /v1/models, asked
with the API key, lists SERVED_NAME. It stops early when systemd has given up on the unit (a
failed start condition, or failed for good after its restarts), since no wait helps then.
Prints one JSON object: {"ready": bool, "gave_up": str or null, "state": str}.

It runs on the host as root, so the key is read from its root-only file here and never travels
to the controller. The key file's first line is the key (the unit's middleware reads it the same
way). TLS certificates are not checked: the request goes to this host's own loopback.
"""

import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request


def unit_state(unit):
    out = subprocess.run(
        ["systemctl", "show", unit, "-p", "ActiveState,SubState,Result,ConditionResult,ConditionTimestampMonotonic"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False,
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {
        "active": props.get("ActiveState", ""),
        "sub": props.get("SubState", ""),
        "result": props.get("Result", ""),
        # "no" counts only once systemd has checked the conditions.
        "condition": props.get("ConditionResult", "") if props.get("ConditionTimestampMonotonic", "0") != "0" else "",
    }


def gave_up(state):
    """Why waiting is pointless, or None."""
    if state["condition"] == "no":
        return "systemd skipped the unit: a start condition failed (no config.json in the model folder, or no settings)"
    if state["active"] == "failed":
        return "the unit failed (%s) and systemd stopped restarting it" % (state["result"] or "unknown")
    return None


def get(url, headers, context):
    # The host's own loopback, http or https (built by the role).
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, ValueError):
        return None, b""


def ready(base, key_file, served, context):
    status, _body = get(base + "/health", {}, context)
    if status != 200:
        return False
    with open(key_file) as f:
        key = f.readline().rstrip("\r\n")
    status, body = get(base + "/v1/models", {"Authorization": "Bearer " + key}, context)
    if status != 200:
        return False
    try:
        names = [m.get("id") for m in json.loads(body).get("data", [])]
    except ValueError:
        return False
    return served in names


def main(argv):
    unit, base, key_file, served, seconds = argv[1], argv[2].rstrip("/"), argv[3], argv[4], float(argv[5])
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + seconds
    while True:
        state = unit_state(unit)
        why = gave_up(state)
        ok = why is None and ready(base, key_file, served, context)
        if ok or why or time.monotonic() >= deadline:
            break
        time.sleep(1)
    print(json.dumps({"ready": ok, "gave_up": why, "state": "%s/%s" % (state["active"], state["sub"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
