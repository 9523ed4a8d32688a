"""The fleet upgrade on three bootc hosts: converge rolled them onto 1.1 (a canary, then a batch of two) and
Molecule's idempotence step ran it again; these tests read what that left, then run check mode, a broken
image and a power-off.

The hosts are tests/support/bootc_host.py's: their reboots boot what bootc (the stand-in) staged, from the
registry, with /var kept and each deployment's own /etc.
"""

import glob
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time

PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]
EPHEMERAL = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
sys.path.insert(0, os.path.join(PROJECT, "tests", "support"))
import bootc_host  # noqa: E402  (test support, not a package)
import local_host  # noqa: E402
from scenario import run_playbook  # noqa: E402

HOSTS = ["rhoim-upgrade-1", "rhoim-upgrade-2", "rhoim-upgrade-3"]
IMAGE = "rhoim-upgrade-registry:5000/rhoim/inference"
KEY = "/etc/rhoim/credentials/tiny.api_key"
HOOKS = os.path.join(PROJECT, "molecule", "upgrade", "tasks", "hooks.yml")
ROLLOUT = {"rhoim_upgrade_hosts": "all", "rhoim_upgrade_canary": 1, "rhoim_upgrade_batch": 2,
           "bootc_host_drain_tasks": HOOKS, "bootc_host_undrain_tasks": HOOKS}


def on(name, command, check=True):
    proc = subprocess.run(local_host.ssh_argv(name, command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, check=False)
    if check:
        assert proc.returncode == 0, (name, command, proc.stderr)
    return proc.stdout.strip()


def digest(tag):
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "docker://127.0.0.1:15002/rhoim/inference:" + tag],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out)["Digest"]


def status(name):
    return json.loads(on(name, "bootc status --format=json"))["status"]


def booted(name):
    return status(name)["booted"]["image"]["imageDigest"]


def boot_marker(name):
    return on(name, "cut -d ' ' -f 22 /proc/1/stat")


def completion(name):
    return on(name, "curl -s -o /dev/null -w '%{http_code}' -H \"Authorization: Bearer $(head -n 1 " + KEY + ")\" "
                    "-H 'Content-Type: application/json' -d '{\"model\": \"tiny\", \"prompt\": \"def\", \"max_tokens\": 2}' "
                    "http://127.0.0.1:8000/v1/completions")


def reports():
    """Each rollout's report.json, oldest first."""
    found = []
    for path in sorted(glob.glob(os.path.join(EPHEMERAL, "reports", "*", "report.json"))):
        with open(path) as handle:
            found.append(json.load(handle))
    return found


def test_every_host_boots_and_serves_the_new_image():
    new, old = digest("1.1"), digest("1.0")
    for name in HOSTS:
        host = status(name)
        assert host["booted"]["image"]["imageDigest"] == new
        assert host["booted"]["image"]["image"]["image"] == IMAGE + ":1.1"
        assert host["rollback"]["image"]["imageDigest"] == old
        assert host["staged"] is None and host["rollbackQueued"] is False
        assert on(name, "cat /usr/lib/rhoim-release") == "1.1"
        assert completion(name) == "200"


def test_the_rollout_went_canary_first_then_a_batch_of_two():
    first = reports()[0]
    assert [r["host"] for r in first] == HOSTS
    assert {r["result"] for r in first} == {"upgraded"}
    assert {(r["digest_before"], r["digest_after"]) for r in first} == {(digest("1.0"), digest("1.1"))}
    canary, *batch = sorted(first, key=lambda r: r["started"])
    assert canary["host"] == HOSTS[0]
    assert canary["finished"] <= min(r["started"] for r in batch)
    # The batch of two went together.
    assert max(r["started"] for r in batch) < min(r["finished"] for r in batch)


def hooks(name):
    """(boot marker, release, time) of each drain and undrain hook call on NAME, in order."""
    with open(os.path.join(EPHEMERAL, "hooks", name + ".log")) as handle:
        return [line.split() for line in handle.read().splitlines()]


def test_each_host_was_drained_before_its_reboot_and_undrained_once_its_new_image_served():
    first = {r["host"]: r for r in reports()[0]}
    for name in HOSTS:
        drain, undrain = hooks(name)[:2]
        assert drain[1] == "1.0" and undrain[1] == "1.1"
        assert drain[0] != undrain[0]
        assert first[name]["started"] < float(drain[2]) < float(undrain[2]) <= first[name]["finished"]


def test_the_gate_waited_for_greenboot_green_verdict():
    for name in HOSTS:
        assert on(name, "systemctl is-active greenboot-healthcheck.service") == "active"
        assert "rhoim-vllm: tiny is healthy" in on(name, "journalctl -b -o cat -u greenboot-healthcheck.service")


def test_a_finished_rollout_run_again_changes_nothing():
    # Molecule's idempotence step ran converge again (and checked changed=0): its report says why.
    second = reports()[1]
    assert {r["result"] for r in second} == {"unchanged"}
    assert {(r["digest_before"], r["digest_after"]) for r in second} == {(digest("1.1"), digest("1.1"))}


def test_bootc_own_update_timer_is_masked():
    for name in HOSTS:
        assert on(name, "systemctl is-enabled bootc-fetch-apply-updates.timer", check=False) == "masked"


def test_each_host_kept_its_etc_and_var_across_the_upgrade():
    """The API key the host made before (in the 1.0 deployment's /etc, saved when it was left) is the one it
    serves with now; the model stayed on /var; each host has its own key."""
    keys = set()
    for name in HOSTS:
        saved = bootc_host.etc_store(name, digest("1.0"))
        with tarfile.open(saved) as tar:
            before = tar.extractfile(KEY.lstrip("/")).read()
        assert hashlib.sha256(before).hexdigest() == on(name, "sha256sum " + KEY).split()[0]
        keys.add(before)
        assert on(name, "readlink -f /var/lib/rhoim/models/tiny/5eed0000000000000000000000000000000000e1/config.json")
    assert len(keys) == len(HOSTS)


def test_check_mode_stages_nothing_and_reboots_nothing():
    markers = {name: boot_marker(name) for name in HOSTS}
    code, out = run_playbook("rhoim.inference.upgrade", "--check", extra_vars=dict(ROLLOUT, bootc_host_image=IMAGE + ":broken"))
    assert code == 0, out[-3000:]
    assert {r["result"] for r in reports()[-1]} == {"would_upgrade"}
    for name in HOSTS:
        assert status(name)["staged"] is None
        assert boot_marker(name) == markers[name]


def test_a_broken_image_stops_after_the_canary_which_is_rolled_back_and_serves_again():
    markers = {name: boot_marker(name) for name in HOSTS}
    started = time.monotonic()
    code, out = run_playbook("rhoim.inference.upgrade", extra_vars=dict(ROLLOUT, bootc_host_image=IMAGE + ":broken"))
    took = time.monotonic() - started
    assert code != 0, out[-3000:]
    assert "NO MORE HOSTS LEFT" in out
    report = reports()[-1]
    assert [r["host"] for r in report] == [HOSTS[0]], report
    canary = report[0]
    assert canary["result"] == "rolled_back"
    assert canary["digest_before"] == canary["digest_after"] == digest("1.1")
    assert canary["message"].startswith("gate: ") and "rhoim-vllm@tiny.service" in canary["message"], canary["message"]
    for name in HOSTS:
        assert on(name, "head -n 1 " + KEY) not in out
    # The table in the output.
    assert "HOST" in out and "RESULT" in out and "rolled_back" in out
    # The canary is back on 1.1, serving; bootc still has the broken image as its rollback.
    host = status(HOSTS[0])
    assert host["booted"]["image"]["imageDigest"] == digest("1.1") and host["staged"] is None
    assert host["rollback"]["image"]["imageDigest"] == digest("broken")
    assert boot_marker(HOSTS[0]) != markers[HOSTS[0]]
    assert completion(HOSTS[0]) == "200"
    # The others were never touched.
    for name in HOSTS[1:]:
        assert boot_marker(name) == markers[name]
        assert status(name)["staged"] is None and booted(name) == digest("1.1")
    # The gate found the crash-looping vLLM well before its 300 s timeout.
    print("broken rollout: %.0f s, canary %.0f s" % (took, canary["seconds"]))
    assert canary["seconds"] < 240


def test_a_boot_greenboot_finds_red_fails_the_gate_and_is_rolled_back():
    name = HOSTS[0]
    code, out = run_playbook("rhoim.inference.upgrade", extra_vars=dict(ROLLOUT, bootc_host_image=IMAGE + ":red"))
    assert code != 0, out[-3000:]
    canary, = reports()[-1]
    assert canary["host"] == name and canary["result"] == "rolled_back"
    assert "greenboot's required checks did not pass" in canary["message"]
    assert "90-red.sh failed" in canary["message"], canary["message"]
    host = status(name)
    assert host["booted"]["image"]["imageDigest"] == digest("1.1") and host["rollback"]["image"]["imageDigest"] == digest("red")
    assert completion(name) == "200"
    assert on(name, "systemctl is-active greenboot-healthcheck.service") == "active"
    # Drained before the reboot into red, undrained once 1.1 served again after the rollback.
    drain, undrain = hooks(name)[-2:]
    assert drain[1] == "1.1" and undrain[1] == "1.1" and drain[0] != undrain[0]


def test_an_image_with_the_nvidia_driver_on_a_host_without_gpus_fails_the_gate_and_is_rolled_back():
    name = HOSTS[0]
    code, out = run_playbook("rhoim.inference.upgrade", extra_vars=dict(ROLLOUT, bootc_host_image=IMAGE + ":nogpu"))
    assert code != 0, out[-3000:]
    canary, = reports()[-1]
    assert canary["host"] == name and canary["result"] == "rolled_back", canary
    assert "shows 0 GPU(s)" in canary["message"] and "No devices were found" in canary["message"], canary["message"]
    assert booted(name) == digest("1.1") and completion(name) == "200"


def test_an_image_the_registry_does_not_have_fails_before_any_drain_or_reboot():
    name = HOSTS[0]
    marker, calls = boot_marker(name), len(hooks(name))
    code, out = run_playbook("rhoim.inference.upgrade", extra_vars=dict(ROLLOUT, bootc_host_image=IMAGE + ":missing"))
    assert code != 0, out[-3000:]
    canary, = reports()[-1]
    assert canary["result"] == "failed" and canary["message"].startswith("stage: "), canary
    assert "manifest unknown" in canary["message"]
    assert boot_marker(name) == marker and len(hooks(name)) == calls
    assert status(name)["staged"] is None and completion(name) == "200"


def test_a_power_off_leaves_the_host_down_and_a_reboot_brings_it_back():
    name = HOSTS[2]
    marker = boot_marker(name)
    subprocess.run(local_host.ssh_argv(name, "systemctl reboot"), check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Until the host answers from its next boot (the old one may still answer while it shuts down).
    deadline = time.monotonic() + 120
    while on(name, "cut -d ' ' -f 22 /proc/1/stat", check=False) in ("", marker):
        assert time.monotonic() < deadline, "no new boot of %s within 120 s" % name
        subprocess.run(["ssh", "-F", local_host.ensure_ssh_config(), "-O", "exit", name], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
    assert booted(name) == digest("1.1")
    subprocess.run(local_host.ssh_argv(name, "systemctl poweroff"), check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(15)
    state = subprocess.run(["podman", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name], stdout=subprocess.PIPE,
                           text=True, check=True).stdout.split()
    assert state == ["exited", str(bootc_host.POWEROFF_EXIT)]


def test_a_rollout_to_a_digest_pins_the_host_to_that_image():
    """What an AWX / AAP workflow hands the upgrade job from the build job: the image by digest."""
    name, pinned = HOSTS[1], IMAGE + "@" + digest("1.1")
    code, out = run_playbook("rhoim.inference.upgrade", extra_vars=dict(ROLLOUT, rhoim_upgrade_hosts=name, bootc_host_image=pinned))
    assert code == 0, out[-3000:]
    host, = reports()[-1]
    assert host["host"] == name and host["result"] == "upgraded", host
    booted_image = status(name)["booted"]["image"]
    assert booted_image["image"]["image"] == pinned and booted_image["imageDigest"] == digest("1.1")
    assert completion(name) == "200"
    # Pinned: a plain upgrade (no bootc_host_image: each host follows its own reference) leaves it where it is.
    marker = boot_marker(name)
    code, out = run_playbook("rhoim.inference.upgrade", extra_vars=dict(ROLLOUT, rhoim_upgrade_hosts=name))
    assert code == 0, out[-3000:]
    assert reports()[-1][0]["result"] == "unchanged" and boot_marker(name) == marker


def test_no_secret_in_the_report_or_the_output():
    for name in HOSTS[:2]:
        key = on(name, "head -n 1 " + KEY)
        for path in glob.glob(os.path.join(EPHEMERAL, "reports", "*", "**", "*.json"), recursive=True):
            with io.open(path) as handle:
                assert key not in handle.read()
