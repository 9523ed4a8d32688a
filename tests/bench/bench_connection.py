"""Seconds per task over SSH (the test ground's connection) against the podman connection (the baseline).

    .venv/bin/python tests/bench/bench_connection.py [--runs 3] [--tasks 50] [--keep]

One local test host (tests/support/local_host.py), one playbook of trivial tasks (`command: true`,
a `template`, a `stat`, in turn), run against the same host over both connections, alternating
SSH and podman, several times in one run. Each run is timed as a whole (ansible-playbook start to
exit, as a user waits for it); an empty playbook against the same host is timed the same way, so
the figures are given both with and without Ansible's own start-up. Prints seconds per task for
each connection and their ratio (the test ground's target: SSH at most a quarter of podman).
Not part of make test.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))

import local_host  # noqa: E402  (test support, not a package)

HOST = "rhoim-bench-connection"
NETWORK = "rhoim-bench"


def playbook(tasks):
    body = ["---", "- name: Trivial tasks", "  hosts: all", "  gather_facts: false", "  tasks:"]
    kinds = [
        ["    - name: Run true %d", "      ansible.builtin.command: 'true'", "      changed_when: false"],
        ["    - name: Write a file from a template %d", "      ansible.builtin.template:",
         "        src: bench.j2", "        dest: /tmp/rhoim-bench-%d.txt", "        mode: '0644'"],
        ["    - name: Stat a file %d", "      ansible.builtin.stat:", "        path: /etc/hostname"],
    ]
    for i in range(tasks):
        for line in kinds[i % len(kinds)]:
            body.append(line % i if "%d" in line else line)
    return "\n".join(body) + "\n"


def inventory(connection):
    if connection == "ssh":
        hostvars = {"ansible_user": "root", "ansible_ssh_common_args": local_host.ssh_common_args(),
                    "ansible_ssh_pipelining": True}
    else:
        hostvars = {"ansible_connection": "containers.podman.podman"}
    hostvars["ansible_python_interpreter"] = "/usr/bin/python3"
    return json.dumps({"all": {"hosts": {HOST: hostvars}}})


def timed_run(work, connection, book):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"), ANSIBLE_FORCE_COLOR="false")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", os.path.join(work, connection + ".json"),
            os.path.join(work, book)]
    start = time.monotonic()
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit("ansible-playbook over %s failed:\n%s" % (connection, proc.stdout[-3000:]))
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="leave the host running afterwards")
    args = parser.parse_args()

    local_host.up(HOST, network=NETWORK)
    try:
        with tempfile.TemporaryDirectory() as work:
            with open(os.path.join(work, "bench.j2"), "w") as f:
                f.write("{{ inventory_hostname }} {{ 6 * 7 }}\n")
            with open(os.path.join(work, "tasks.yml"), "w") as f:
                f.write(playbook(args.tasks))
            with open(os.path.join(work, "empty.yml"), "w") as f:
                f.write(playbook(0).replace("  tasks:\n", "  tasks: []\n"))
            for connection in ("ssh", "podman"):
                with open(os.path.join(work, connection + ".json"), "w") as f:
                    f.write(inventory(connection))
            # One warm-up each (connection set-up, Python's caches on the host), not counted.
            for connection in ("ssh", "podman"):
                timed_run(work, connection, "tasks.yml")
            runs = {c: {"tasks": [], "empty": []} for c in ("ssh", "podman")}
            for i in range(args.runs):
                for connection in (("ssh", "podman") if i % 2 == 0 else ("podman", "ssh")):
                    runs[connection]["empty"].append(timed_run(work, connection, "empty.yml"))
                    runs[connection]["tasks"].append(timed_run(work, connection, "tasks.yml"))
                    print("run %d %-6s %d tasks %6.1f s, empty playbook %5.1f s" % (
                        i + 1, connection, args.tasks, runs[connection]["tasks"][-1], runs[connection]["empty"][-1]), flush=True)
    finally:
        if not args.keep:
            local_host.down(HOST)

    per_task = {}
    print("\n%d trivial tasks, %d runs each, medians (baseline: the podman connection)" % (args.tasks, args.runs))
    print("%-8s %10s %12s %16s %18s" % ("", "whole run", "s per task", "start-up", "s per task, net"))
    for connection in ("ssh", "podman"):
        whole = statistics.median(runs[connection]["tasks"])
        empty = statistics.median(runs[connection]["empty"])
        per_task[connection] = (whole / args.tasks, (whole - empty) / args.tasks)
        print("%-8s %9.1fs %11.3fs %15.1fs %17.3fs" % (connection, whole, per_task[connection][0], empty, per_task[connection][1]))
    print("ratio ssh/podman: %.2f per task (%.2f net of start-up); target at most 0.25" % (
        per_task["ssh"][0] / per_task["podman"][0], per_task["ssh"][1] / per_task["podman"][1]))


if __name__ == "__main__":
    main()
