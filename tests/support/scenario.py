"""ansible-playbook against a Molecule scenario's hosts, from the scenario's tests.

The same inventory (SSH through local_host.py's client configuration) and ansible.cfg that
Molecule's own converge uses, so a test's run is what an ops engineer's run would be.
"""

import json
import os
import subprocess
import sys
import tempfile


def _molecule(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError("%s is not set: run this from Molecule's verify step" % name)
    return value


def playbook_command(playbook, *args, extra_vars=None):
    """(argv, env) of ansible-playbook PLAYBOOK against the scenario's inventory.

    Extra vars travel in a file only root can read (-e @file), as ops pass secrets: on the
    command line they would show in every process list, and -vvvv prints them."""
    project = _molecule("MOLECULE_PROJECT_DIRECTORY")
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=os.path.join(_molecule("MOLECULE_EPHEMERAL_DIRECTORY"), "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=os.path.join(project, "build", "collections"),
        ANSIBLE_PIPELINING="true",
        ANSIBLE_FORCE_COLOR="false",
        ANSIBLE_NOCOLOR="1",
    )
    if "-vvv" in args:
        # SSH's own debug log joins the output, so that leak checks read what the connection logs too.
        env["ANSIBLE_SSH_VERBOSITY"] = "3"
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            "-i", os.path.dirname(_molecule("MOLECULE_INVENTORY_FILE"))]
    if extra_vars:
        fd, path = tempfile.mkstemp(prefix="extra-vars-", suffix=".json", dir=_molecule("MOLECULE_EPHEMERAL_DIRECTORY"))
        with os.fdopen(fd, "w") as f:
            json.dump(extra_vars, f)
        argv += ["-e", "@" + path]
    argv += [*args, playbook]
    return argv, env


def run_playbook(playbook, *args, extra_vars=None, env=None, timeout=1200):
    """Runs it to the end; returns (exit code, stdout and stderr together)."""
    argv, run_env = playbook_command(playbook, *args, extra_vars=extra_vars)
    run_env.update(env or {})
    try:
        # Not the test's own stdin: an ssh client run before may have left it non-blocking, which ansible refuses.
        proc = subprocess.run(argv, env=run_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, check=False)
    finally:
        remove_vars_files(argv)
    return proc.returncode, proc.stdout


def remove_vars_files(argv):
    """Removes the extra-vars files playbook_command wrote for argv (once the run has ended)."""
    for arg in argv:
        if arg.startswith("@") and os.path.basename(arg).startswith("extra-vars-"):
            os.unlink(arg[1:])
