"""vLLM upgrades under running units, with the stand-in vLLM (tests/support/make_standin_vllm.py)."""

import json
import os
import re
import sys

SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(SCENARIO)), "tests", "support"))

from scenario import run_playbook  # noqa: E402  (test support, not a package)

UNIT = "rhoim-vllm@fake.service"
VENV = "/opt/rhoim/vllm"


def served_version(host):
    return json.loads(host.check_output("curl -fsS http://127.0.0.1:8000/version"))["version"]


def shims(host):
    return sorted(host.check_output("ls -d %s/lib/python3*/site-packages/vllm-*+cpu.dist-info | xargs -n1 basename" % VENV).split())


def starts(host):
    return len(re.findall(r"^Started rhoim-vllm@fake\.service", host.check_output("journalctl --no-pager -o cat -u %s" % UNIT), re.M))


def converge(version):
    rc, out = run_playbook(os.path.join(SCENARIO, "converge.yml"), extra_vars={"molecule_standin_version": version}, timeout=600)
    assert rc == 0, out[-3000:]
    return out


def test_the_first_version_serves_with_its_metadata_shim(host):
    assert host.service(UNIT).is_running
    assert served_version(host) == "1.0.0"
    assert shims(host) == ["vllm-1.0.0+cpu.dist-info"]


def test_a_new_version_restarts_the_unit_once_and_replaces_the_shim(host):
    before = starts(host)
    pid = host.check_output("systemctl show -P MainPID %s" % UNIT)
    out = converge("1.1.0")
    assert re.search(r"changed=[1-9]", out)
    # The new code runs: the unit restarted exactly once (not by a crash: NRestarts stays 0).
    assert served_version(host) == "1.1.0"
    assert starts(host) == before + 1
    assert host.check_output("systemctl show -P MainPID %s" % UNIT) != pid
    assert host.check_output("systemctl show -P NRestarts %s" % UNIT) == "0"
    assert shims(host) == ["vllm-1.1.0+cpu.dist-info"]
    assert host.check_output("%s/bin/python -c 'import importlib.metadata as m; print(m.version(\"vllm\"))'" % VENV) == "1.1.0+cpu"


def test_the_same_version_again_changes_and_restarts_nothing(host):
    before = starts(host)
    out = converge("1.1.0")
    assert re.search(r"changed=0\s", out), out[-2000:]
    assert starts(host) == before
