"""Wall time of a three-host rollout per batch size, against three single-host upgrades one after another
(the baseline).

    .venv/bin/python tests/bench/bench_upgrade.py [--keep]

Sets up what the `upgrade` scenario sets up (molecule create and prepare: a registry with the images 1.0, 1.1
and a broken one, three bootc hosts from tests/support/bootc_host.py serving the tiny model), then runs
playbooks/upgrade.yml, each run moving every host it touches to the other of 1.0 and 1.1, so that each is a
real upgrade (stage, reboot, a vLLM start, the gate's completion):
  baseline   each host alone (rhoim_upgrade_hosts=<host>), one after another: the sum of the three
  serial 1   the three hosts, batches of 1
  canary     a canary of 1, then a batch of 2 (the scenario's rollout)
  batch 3    the three hosts in one batch
Prints seconds for each and the ratio to the baseline. On this machine (2 cores, one vLLM CPU start takes most
of a core for half a minute) parallel batches gain less than on GPU hosts, where each host has its own
hardware. Ends with molecule destroy and cleanup unless --keep. Not part of make test.
"""

import argparse
import glob
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOSTS = ["rhoim-upgrade-1", "rhoim-upgrade-2", "rhoim-upgrade-3"]
IMAGE = "rhoim-upgrade-registry:5000/rhoim/inference:"


BIN = os.path.dirname(sys.executable)


def molecule(*args):
    # Molecule runs ansible-playbook from PATH: this venv's.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"),
               MOLECULE_GLOB="molecule/*/molecule.yml", PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "molecule"), *args, "-s", "upgrade"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def ephemeral():
    found = glob.glob(os.path.expanduser("~/.ansible/tmp/molecule.*.upgrade"))
    if len(found) != 1:
        sys.exit("bench_upgrade.py: expected one Molecule folder of the upgrade scenario, found %s" % found)
    return found[0]


def rollout(tag, hosts, canary, batch):
    """Seconds of one run of the upgrade playbook (start to exit, as an operator waits for it)."""
    eph = ephemeral()
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(eph, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"), ANSIBLE_PIPELINING="true",
               MOLECULE_EPHEMERAL_DIRECTORY=eph)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", os.path.join(eph, "inventory"),
            "-e", "rhoim_upgrade_hosts=%s rhoim_upgrade_canary=%d rhoim_upgrade_batch=%s" % (hosts, canary, batch),
            "-e", "bootc_host_image=%s%s" % (IMAGE, tag), "-e", "rhoim_upgrade_report_root=%s/bench-reports" % eph,
            "rhoim.inference.upgrade"]
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    took = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit("bench_upgrade.py: the rollout to %s failed:\n%s" % (tag, proc.stdout[-3000:]))
    return took


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keep", action="store_true", help="keep the hosts and the registry")
    args = parser.parse_args(argv)
    molecule("destroy")
    molecule("create")
    molecule("prepare")
    tag = "1.1"
    try:
        singles = []
        for host in HOSTS:
            singles.append(rollout(tag, host, 0, 1))
        baseline = sum(singles)
        figures = [("baseline: each host alone, one after another", baseline)]
        for label, canary, batch in (("serial 1", 0, 1), ("canary 1, then a batch of 2", 1, 2), ("batch 3", 0, 3)):
            tag = "1.0" if tag == "1.1" else "1.1"
            figures.append((label, rollout(tag, "all", canary, batch)))
    finally:
        if not args.keep:
            molecule("cleanup")
            molecule("destroy")
    print("single-host upgrades: %s s" % ", ".join("%.1f" % s for s in singles))
    width = max(len(figure[0]) for figure in figures)
    for label, seconds in figures:
        print("%s  %6.1f s  %.2f x baseline" % (label.ljust(width), seconds, seconds / baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
