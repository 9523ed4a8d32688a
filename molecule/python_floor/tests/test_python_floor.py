"""The stages' Python floor (rhoim.inference.host_python), on a Debian 11 host whose python3 is 3.9
and a Debian 12 host whose python3 is 3.11."""

import os
import re
import subprocess
import sys

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")
sys.path.insert(0, os.path.join(PROJECT, "tests", "support"))
from scenario import run_playbook  # noqa: E402

OLD = "rhoim-python-bullseye"
NEW = "rhoim-python-bookworm"
SITE = os.path.join(PROJECT, "playbooks", "site.yml")
ROLE_ALONE = os.path.join(PROJECT, "molecule", "python_floor", "host_python.yml")
MODELS = {
    "model_models": [{"name": "tiny", "repo_id": "rhoim/tiny"}],
    "vllm_service_models": [{"name": "tiny", "port": 8000}],
}


def flat(text):
    return " ".join(text.split())


def on(host, *argv):
    return subprocess.run(["podman", "exec", host, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)


def recap(out, host):
    return re.search(r"^%s\s*:.*$" % re.escape(host), out, re.M).group(0)


def test_the_old_host_really_has_python_3_9():
    assert on(OLD, "python3", "-c", "import sys; print(sys.version_info[:2])").stdout.strip() == "(3, 9)"


def test_site_refuses_a_host_without_the_floor_before_any_change():
    rc, out = run_playbook(SITE, "-l", OLD, extra_vars=MODELS)
    assert rc == 2, out
    text = flat(out)
    assert ("no package of Python 3.11 or newer is known for this distribution, and its Ansible Python is 3.9"
            in text), out
    assert "install one" in text and "set host_python_interpreter to its path" in text
    assert "changed=0" in recap(out, OLD) and "failed=1" in recap(out, OLD)
    # Nothing of either stage reached the host: no account, no folders, no venv.
    for path in ("/etc/sysusers.d/rhoim.conf", "/var/lib/rhoim", "/opt/rhoim"):
        assert on(OLD, "test", "-e", path).returncode == 1, path
    assert on(OLD, "getent", "passwd", "rhoim").returncode == 2


def test_a_named_interpreter_below_the_floor_is_refused():
    rc, out = run_playbook(SITE, "-l", OLD, extra_vars={**MODELS, "host_python_interpreter": "/usr/bin/python3.9"})
    assert rc == 2, out
    assert re.search(r"host_python_interpreter /usr/bin/python3\.9 is Python 3\.9\.\d+, below the stages' floor of 3\.11",
                     flat(out)), out


def test_the_new_host_passes_the_same_check_with_its_own_python():
    rc, out = run_playbook(SITE, "-l", NEW, "--check", extra_vars={"model_models": [], "vllm_service_models": []})
    assert rc == 0, out
    assert re.search(r"the model and serving stages make their virtual environments with /usr/bin/python3 "
                     r"\(Python 3\.11\.\d+\)", flat(out)), out


def test_the_role_publishes_the_interpreter_it_found():
    rc, out = run_playbook(ROLE_ALONE, "-l", NEW)
    assert rc == 0, out
    assert "host_python_path=/usr/bin/python3" in out
    assert "changed=0" in recap(out, NEW)


def test_a_named_interpreter_is_used_as_given():
    rc, out = run_playbook(ROLE_ALONE, "-l", NEW, extra_vars={"host_python_interpreter": "/usr/bin/python3.11"})
    assert rc == 0, out
    assert "host_python_path=/usr/bin/python3.11" in out


def test_a_named_interpreter_that_does_not_exist_is_refused_not_installed():
    rc, out = run_playbook(ROLE_ALONE, "-l", NEW, extra_vars={"host_python_interpreter": "/opt/python3.12/bin/python3"})
    assert rc == 2, out
    assert "host_python_interpreter /opt/python3.12/bin/python3 does not exist." in flat(out), out
    assert "set host_python_interpreter to its path" in flat(out), out
    assert "changed=0" in recap(out, NEW)


def test_a_relative_interpreter_is_refused():
    rc, out = run_playbook(ROLE_ALONE, "-l", NEW, extra_vars={"host_python_interpreter": "python3.11"})
    assert rc == 2, out
    assert "host_python_interpreter must be empty or an absolute path (found python3.11)" in flat(out), out
