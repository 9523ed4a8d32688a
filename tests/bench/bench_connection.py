"""Seconds per task over SSH (the test ground's connection) against the podman connection (the baseline).

    .venv/bin/python tests/bench/bench_connection.py [--runs 3] [--tasks 50] [--keep]

One local test host (tests/support/local_host.py), one playbook of trivial tasks (`command: true`,
a `template`, a `stat`, in turn), run against the same host over both connections, alternating
SSH and podman, several times in one run. Each run is timed as a whole (ansible-playbook start to
exit, as a user waits for it); an empty playbook against the same host is timed the same way, so
the figures are given both with and without Ansible's own start-up. Prints seconds per task for
each connection and their ratio (the test ground's target: SSH at most a quarter of podman).

It also times, inside the host, one module's own run (`python3 AnsiballZ_ping.py`, kept on the host
for that): the floor both connections stand on, whatever the transport. A `command` or `stat` task
runs one module, a `template` two (stat, then file for the mode).
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
CONNECTIONS = ("ssh", "podman")
MODULE_RUNS_PER_TASK = 4 / 3
NETWORK = "rhoim-bench"


def playbook(tasks):
    body = ["---", "- name: Trivial tasks", "  hosts: all", "  gather_facts: false", "  tasks:"]
    kinds = [
        ["    - name: Run true %d", "      ansible.builtin.command: 'true'", "      changed_when: false"],
        ["    - name: Write a file from a template %d", "      ansible.builtin.template:",
         "        src: bench.j2", "        dest: '{{ bench_dest }}/rhoim-bench-%d.txt'", "        mode: '0644'"],
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
    hostvars.update(ansible_python_interpreter="/usr/bin/python3", bench_dest="/tmp")
    return json.dumps({"all": {"hosts": {HOST: hostvars}}})


def timed_run(work, connection, book, **env_extra):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"), ANSIBLE_FORCE_COLOR="false",
               **env_extra)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", os.path.join(work, connection + ".json"),
            os.path.join(work, book)]
    start = time.monotonic()
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit("ansible-playbook over %s failed:\n%s" % (connection, proc.stdout[-3000:]))
    return elapsed


def module_run_seconds(work, runs=10):
    """One ping module's own run on the host, timed there: the floor under every task."""
    with open(os.path.join(work, "ping.yml"), "w") as f:
        f.write(playbook(0).replace("  tasks:\n", "  tasks:\n    - name: Ping\n      ansible.builtin.ping:\n"))
    # Without pipelining the payload is written to a file on the host; keep it there.
    timed_run(work, "ssh", "ping.yml", ANSIBLE_KEEP_REMOTE_FILES="1", ANSIBLE_PIPELINING="false",
              ANSIBLE_SSH_PIPELINING="false")
    script = ("f=$(ls -t /root/.ansible/tmp/*/AnsiballZ_ping.py | head -n1); t0=$(date +%%s%%N); "
              "for i in $(seq %d); do python3 \"$f\" >/dev/null; done; echo $(( ($(date +%%s%%N) - t0) / %d ))") % (runs, runs)
    out = subprocess.run(local_host.ssh_argv(HOST, script), stdout=subprocess.PIPE, text=True, check=True).stdout
    return int(out.strip()) / 1e9


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
            for connection in CONNECTIONS:
                with open(os.path.join(work, connection + ".json"), "w") as f:
                    f.write(inventory(connection))
            # One warm-up each (connection set-up, Python's caches on the host), not counted.
            for connection in CONNECTIONS:
                timed_run(work, connection, "tasks.yml")
            runs = {c: {"tasks": [], "empty": []} for c in CONNECTIONS}
            for i in range(args.runs):
                for connection in (CONNECTIONS if i % 2 == 0 else CONNECTIONS[::-1]):
                    runs[connection]["empty"].append(timed_run(work, connection, "empty.yml"))
                    runs[connection]["tasks"].append(timed_run(work, connection, "tasks.yml"))
                    print("run %d %-6s %d tasks %6.1f s, empty playbook %5.1f s" % (
                        i + 1, connection, args.tasks, runs[connection]["tasks"][-1], runs[connection]["empty"][-1]), flush=True)
            module_run = module_run_seconds(work)
    finally:
        if not args.keep:
            local_host.down(HOST)

    per_task = {}
    print("\n%d trivial tasks, %d runs each, medians (baseline: the podman connection)" % (args.tasks, args.runs))
    print("%-8s %10s %12s %16s %18s" % ("", "whole run", "s per task", "start-up", "s per task, net"))
    for connection in CONNECTIONS:
        whole = statistics.median(runs[connection]["tasks"])
        empty = statistics.median(runs[connection]["empty"])
        per_task[connection] = (whole / args.tasks, (whole - empty) / args.tasks)
        print("%-8s %9.1fs %11.3fs %15.1fs %17.3fs" % (connection, whole, per_task[connection][0], empty, per_task[connection][1]))
    print("ratio ssh/podman: %.2f per task (%.2f net of start-up); target at most 0.25" % (
        per_task["ssh"][0] / per_task["podman"][0], per_task["ssh"][1] / per_task["podman"][1]))
    floor = module_run * MODULE_RUNS_PER_TASK
    print("floor: one module's own run on the host %.3f s, %.2f runs a task here: %.3f s a task, whatever the transport" % (
        module_run, MODULE_RUNS_PER_TASK, floor))
    print("above the floor: ssh %.3f s a task, podman %.3f s a task (ratio %.2f)" % (
        per_task["ssh"][1] - floor, per_task["podman"][1] - floor, (per_task["ssh"][1] - floor) / (per_task["podman"][1] - floor)))


if __name__ == "__main__":
    main()
