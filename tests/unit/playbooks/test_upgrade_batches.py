"""The rollout's batches and failure budget, as Ansible applies them to playbooks/upgrade.yml's play keywords.

The upgrade play's own `hosts`, `serial` and `max_fail_percentage` (read from the playbook) drive a play of
stand-in hosts (local connection) whose per-host work fails where a test says, ending in `fail` from `rescue`
as rhoim.inference.bootc_host does. Each host records the batch it ran in and whether it got past its work.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HOSTS = ["gpu-%02d" % i for i in range(1, 9)]


def upgrade_play():
    with open(os.path.join(ROOT, "playbooks", "upgrade.yml")) as handle:
        plays = yaml.safe_load(handle)
    play, = [p for p in plays if p["hosts"] != "localhost"]
    return play


@pytest.fixture(scope="module")
def playbook(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batches")
    play = upgrade_play()
    stand_in = {
        "name": "The upgrade play's batches, with stand-in work",
        "hosts": play["hosts"],
        "gather_facts": False,
        "serial": play["serial"],
        "max_fail_percentage": play["max_fail_percentage"],
        "tasks": [{
            "name": "Work, failing where told",
            "block": [
                {"name": "Record the batch", "ansible.builtin.copy": {
                    "content": "{{ ansible_play_batch | to_json }}", "dest": str(folder) + "/{{ inventory_hostname }}.batch",
                    "mode": "0600"}},
                {"name": "Fail where told", "ansible.builtin.fail": {"msg": "told to"},
                 "when": "inventory_hostname in (fail_hosts | default([]))"},
                {"name": "Record the success", "ansible.builtin.copy": {
                    "content": "ok", "dest": str(folder) + "/{{ inventory_hostname }}.ok", "mode": "0600"}},
            ],
            "rescue": [{"name": "Fail the host, as the role does after a rollback", "ansible.builtin.fail": {"msg": "rolled back"}}],
        }],
    }
    path = folder / "batches.yml"
    path.write_text(yaml.safe_dump([stand_in], sort_keys=False))
    inventory = folder / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"inference": {"hosts": {h: None for h in HOSTS}}},
                                                 "vars": {"ansible_connection": "local",
                                                          "ansible_python_interpreter": sys.executable}}}))
    return folder, path, inventory


def rollout(playbook, **extra):
    folder, path, inventory = playbook
    for name in os.listdir(folder):
        if name.endswith((".batch", ".ok")):
            os.unlink(os.path.join(folder, name))
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory),
                           "-e", json.dumps(extra), str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
    batches, ok = [], set()
    for host in HOSTS:
        batch_file = os.path.join(folder, host + ".batch")
        if os.path.exists(batch_file):
            with open(batch_file) as handle:
                batch = json.load(handle)
            if batch not in batches:
                batches.append(batch)
        if os.path.exists(os.path.join(folder, host + ".ok")):
            ok.add(host)
    return proc.returncode, batches, ok, proc.stdout


def test_a_canary_then_batches_of_a_quarter(playbook):
    code, batches, ok, out = rollout(playbook)
    assert code == 0, out
    # 25% of 8 hosts is 2; the last size repeats until the hosts run out.
    assert batches == [HOSTS[:1], HOSTS[1:3], HOSTS[3:5], HOSTS[5:7], HOSTS[7:]]
    assert ok == set(HOSTS)


def test_no_canary_and_a_fixed_batch_size(playbook):
    code, batches, _ok, out = rollout(playbook, rhoim_upgrade_canary=0, rhoim_upgrade_batch=3)
    assert code == 0, out
    assert batches == [HOSTS[:3], HOSTS[3:6], HOSTS[6:]]


def test_by_default_one_failed_host_ends_the_rollout_and_later_batches_are_never_touched(playbook):
    code, batches, ok, out = rollout(playbook, fail_hosts=["gpu-02"])
    assert code != 0
    assert batches == [HOSTS[:1], HOSTS[1:3]]
    # The failed host's batch mate finished its work; nothing after that batch ran.
    assert ok == {"gpu-01", "gpu-03"}
    assert "NO MORE HOSTS LEFT" in out


def test_the_budget_applies_per_batch_and_only_when_strictly_exceeded(playbook):
    budget = {"rhoim_upgrade_canary": 0, "rhoim_upgrade_batch": 4, "rhoim_upgrade_max_fail_percentage": 50}
    # Two of four in one batch is 50%: not more than the budget, the rollout goes on.
    code, batches, ok, out = rollout(playbook, fail_hosts=["gpu-01", "gpu-02"], **budget)
    assert batches == [HOSTS[:4], HOSTS[4:]], out
    assert ok == set(HOSTS) - {"gpu-01", "gpu-02"}
    assert code != 0  # the run still reports its failed hosts
    # Failures in different batches are not added up: two in each batch still goes on.
    code, batches, ok, out = rollout(playbook, fail_hosts=["gpu-01", "gpu-02", "gpu-05", "gpu-06"], **budget)
    assert batches == [HOSTS[:4], HOSTS[4:]], out
    # Three of four exceed it: the rollout stops after that batch.
    code, batches, ok, out = rollout(playbook, fail_hosts=["gpu-01", "gpu-02", "gpu-03"], **budget)
    assert batches == [HOSTS[:4]], out
    assert ok == {"gpu-04"}
