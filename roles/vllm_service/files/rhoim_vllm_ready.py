"""One poll of a vLLM instance on this host, for the vllm_service role's wait, or the health of
every enabled instance, for its health entry point (tasks/health.yml).

    python3 rhoim_vllm_ready.py UNIT BASE_URL KEY_FILE SERVED_NAME SECONDS
    python3 rhoim_vllm_ready.py --enabled CONFIG_DIR CREDENTIALS_DIR UNIT_PREFIX SECONDS MAX_RESTARTS

Waits up to SECONDS for the instance to be ready: /health answers 200 and /v1/models, asked
with the API key, lists SERVED_NAME. It stops early when systemd has given up on the unit (a
failed start condition, or failed for good after its restarts), since no wait helps then.
Prints one JSON object: {"ready": bool, "gave_up": str or null, "state": str}.

It runs on the host as root, so the key is read from its root-only file here and never travels
to the controller. The key file's first line is the key (the unit's middleware reads it the same
way). TLS certificates are not checked: the request goes to this host's own loopback.

--enabled checks every instance whose CONFIG_DIR/NAME.yaml exists and whose unit
UNIT_PREFIX@NAME.service is enabled, all within SECONDS: the unit active, /health 200, /v1/models
with the key listing the served name, and a one-token completion answered with choices. It gives
up on an instance when systemd has, or when the unit has restarted MAX_RESTARTS times (0: never),
since a crash-looping server is broken. Prints one JSON object, {"healthy": bool, "instances":
[{"name", "unit", "healthy", "state", "why", "seconds"}]}, and exits 0 whatever it found (the
caller decides); 2 on wrong arguments.
"""

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request


def unit_state(unit):
    out = subprocess.run(
        ["systemctl", "show", unit, "-p", "ActiveState,SubState,Result,ConditionResult,ConditionTimestampMonotonic,NRestarts"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False,
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {
        "active": props.get("ActiveState", ""),
        "sub": props.get("SubState", ""),
        "result": props.get("Result", ""),
        # "no" counts only once systemd has checked the conditions.
        "condition": props.get("ConditionResult", "") if props.get("ConditionTimestampMonotonic", "0") != "0" else "",
        "restarts": int(props["NRestarts"]) if props.get("NRestarts", "").isdigit() else 0,
    }


def gave_up(state):
    """Why waiting is pointless, or None."""
    if state["condition"] == "no":
        return "systemd skipped the unit: a start condition failed (no config.json in the model folder, or no settings)"
    if state["active"] == "failed":
        return "the unit failed (%s) and systemd stopped restarting it" % (state["result"] or "unknown")
    return None


def get(url, headers, context, data=None, timeout=5):
    # The host's own loopback, http or https (built by the role); data makes it a POST.
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
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


def scalar(text):
    """A YAML scalar as to_nice_yaml writes one: plain, 'single' or "double" (JSON-style) quoted."""
    text = text.strip()
    if text.startswith('"'):
        try:
            return json.loads(text)
        except ValueError:
            return text.strip('"')
    if text.startswith("'") and text.endswith("'") and len(text) > 1:
        return text[1:-1].replace("''", "'")
    text = text.split(" #", 1)[0].strip()
    return None if text in ("", "~", "null", "Null", "NULL") else text


def parse_config(text):
    """The top-level keys of a vLLM config file (dashes for underscores): a scalar each, or a list
    of scalars for a key whose "- item" lines follow it. Nested mappings are left out: the host's
    Python may lack PyYAML, and the health check needs a few plain keys only."""
    conf, current = {}, None
    for line in text.splitlines():
        body = line.strip()
        if not body or body.startswith("#") or body in ("---", "..."):
            continue
        if body.startswith("- ") or body == "-":
            if current is not None:
                conf[current].append(scalar(body[1:]))
            continue
        if line[0] in " \t":
            # A nested mapping: not one of ours, and its lists are not the key's.
            if current is not None and not conf[current]:
                del conf[current]
            current = None
            continue
        key, sep, value = body.partition(":")
        if not sep:
            current = None
            continue
        key = key.strip().strip("'\"").replace("_", "-")
        value = value.strip()
        if value == "":
            conf[key], current = [], key
        elif value.startswith("[") and value.endswith("]"):
            conf[key], current = [scalar(v) for v in value[1:-1].split(",") if v.strip()], None
        else:
            conf[key], current = scalar(value), None
    return conf


def endpoint(conf, name):
    """(base URL, served name) of an instance from its parsed config. Like vLLM: the served name is
    the first served-model-name, else the model; a wildcard address is reached on loopback."""
    host = conf.get("host")
    host = "127.0.0.1" if host in (None, "", "0.0.0.0", "::", []) else str(host)  # noqa: S104
    if ":" in host:
        host = "[%s]" % host
    scheme = "https" if conf.get("ssl-certfile") else "http"
    port = conf.get("port") or 8000
    served = conf.get("served-model-name")
    if isinstance(served, list):
        served = served[0] if served else None
    return "%s://%s:%s" % (scheme, host, port), str(served or conf.get("model") or name)


def unit_enabled(unit):
    out = subprocess.run(
        ["systemctl", "is-enabled", unit], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False,
    ).stdout
    return out.strip() == "enabled"


def discover(config_dir, credentials_dir, prefix):
    """The instances to check: a NAME.yaml in config_dir and the unit PREFIX@NAME.service enabled."""
    try:
        files = sorted(f for f in os.listdir(config_dir) if f.endswith(".yaml"))
    except OSError:
        return []
    found = []
    for file in files:
        name = file[:-len(".yaml")]
        unit = "%s@%s.service" % (prefix, name)
        if not name or not unit_enabled(unit):
            continue
        try:
            with open(os.path.join(config_dir, file)) as f:
                conf = parse_config(f.read())
        except (OSError, UnicodeDecodeError):
            conf = {}
        base, served = endpoint(conf, name)
        found.append({"name": name, "unit": unit, "base": base, "served": served,
                      "key_file": os.path.join(credentials_dir, name + ".api_key")})
    return found


def completion_ok(body):
    try:
        choices = json.loads(body).get("choices")
    except (ValueError, AttributeError):
        return False
    return isinstance(choices, list) and len(choices) > 0


def probe(inst, context, timeout):
    """None when the instance answers all three requests, else the step that did not (no key in it)."""
    status, _body = get(inst["base"] + "/health", {}, context)
    if status != 200:
        return "/health answered %s" % (status or "nothing")
    try:
        with open(inst["key_file"]) as f:
            key = f.readline().rstrip("\r\n")
    except OSError:
        return "no readable API key file %s" % inst["key_file"]
    auth = {"Authorization": "Bearer " + key}
    status, body = get(inst["base"] + "/v1/models", auth, context)
    if status != 200:
        return "/v1/models answered %s" % (status or "nothing")
    try:
        names = [m.get("id") for m in json.loads(body).get("data", [])]
    except (ValueError, AttributeError):
        names = []
    if inst["served"] not in names:
        return "/v1/models does not list %s" % inst["served"]
    # One token: proof that the engine answers, at the least cost to a serving host.
    request = json.dumps({"model": inst["served"], "prompt": "Hello", "max_tokens": 1}).encode()
    auth["Content-Type"] = "application/json"
    status, body = get(inst["base"] + "/v1/completions", auth, context, data=request, timeout=timeout)
    if status != 200:
        return "the completion (POST /v1/completions) answered %s" % (status or "nothing")
    if not completion_ok(body):
        return "the completion (POST /v1/completions) answered 200 without choices"
    return None


def check(inst, context, max_restarts, timeout):
    """(done, healthy, why, state) after one look at an instance."""
    state = unit_state(inst["unit"])
    shown = "%s/%s" % (state["active"], state["sub"])
    why = gave_up(state)
    if why:
        return True, False, "gave up: " + why, shown
    if max_restarts > 0 and state["restarts"] >= max_restarts:
        return True, False, "gave up: the unit restarted %d times (at most %d): it crash-loops" % (state["restarts"], max_restarts), shown
    if state["active"] != "active":
        return False, False, "the unit is %s" % shown, shown
    why = probe(inst, context, timeout)
    return why is None, why is None, why, shown


def health(instances, seconds, max_restarts, context):
    start = time.monotonic()
    deadline = start + seconds
    results = {i["name"]: {"name": i["name"], "unit": i["unit"], "healthy": False, "state": "", "why": None, "seconds": 0.0}
               for i in instances}
    pending = list(instances)
    while pending:
        for inst in list(pending):
            # A slow completion (a CPU server's first one) may take longer than a GET, never past the deadline.
            timeout = max(1.0, min(30.0, deadline - time.monotonic()))
            done, ok, why, shown = check(inst, context, max_restarts, timeout)
            res = results[inst["name"]]
            res.update(healthy=ok, why=why, state=shown, seconds=round(time.monotonic() - start, 1))
            if done:
                pending.remove(inst)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(1)
    for inst in pending:
        res = results[inst["name"]]
        res["why"] = "timed out after %g s: %s" % (seconds, res["why"])
    out = [results[i["name"]] for i in instances]
    return {"healthy": all(r["healthy"] for r in out), "instances": out}


USAGE = "usage: rhoim_vllm_ready.py --enabled CONFIG_DIR CREDENTIALS_DIR UNIT_PREFIX SECONDS MAX_RESTARTS"


def main_enabled(args):
    try:
        config_dir, credentials_dir, prefix, seconds, max_restarts = args
        seconds, max_restarts = float(seconds), int(max_restarts)
        if seconds < 0 or max_restarts < 0:
            raise ValueError
    except ValueError:
        print(USAGE, file=sys.stderr)
        return 2
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    print(json.dumps(health(discover(config_dir, credentials_dir, prefix), seconds, max_restarts, context)))
    return 0


def main(argv):
    if len(argv) > 1 and argv[1] == "--enabled":
        return main_enabled(argv[2:])
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
