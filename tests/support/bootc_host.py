"""Stand-ins for bootc hosts: local test hosts booted from images in a registry, whose reboots bootc decides.

Models, on top of tests/support/local_host.py's hosts (systemd, SSH, a fixed address):
- bootc on the host's PATH (tests/support/bootc_standin.py), its deployment state (booted, staged, rollback,
  rollbackQueued) in a folder outside the host, $RHOIM_CACHE/bootc-hosts/NAME/run, mounted at /run/rhoim-bootc;
- a reboot (`systemctl reboot`, `shutdown -r`, what ansible.builtin.reboot runs): with CAP_SYS_BOOT the kernel
  ends the host's init with SIGHUP (podman: exit code 129); a supervisor on the controller (`supervise`, started
  by `up`, gone once no such host is left) then runs the stand-in's `boot` transition and recreates the host from
  the image bootc would boot (the staged one, else the booted one; the rollback when queued), pulled by digest;
  a power-off (SIGINT, 130) leaves the host down, as it would a machine;
- /var on a named volume (rhoim-var-NAME): filled from the first image when new, kept across reboots and
  deployments, as bootc keeps /var;
- each deployment's own /etc: at a reboot the files of /etc that differ from the image (added or changed, as
  `podman diff` sees them) are saved for the deployment being left; a new deployment starts from its image's /etc
  plus those files, a rollback gets back the files its deployment had when it was left. SSH host keys and the
  machine ID live in /etc, so they survive like on a real host.
Does not model: ostree's three-way merge at file level beyond "a locally changed file wins" (a file deleted on
the host comes back from the new image; bootc would keep it deleted), a kernel (every host shares the machine's:
/proc/sys/kernel/random/boot_id never changes, so ansible.builtin.reboot needs another boot marker, such as
PID 1's start time), bootloaders, kernel arguments, soft reboots, greenboot's boot counter.

  bootc_host.py up NAME --image REF --registry HOST_VIEW=CONTROLLER_VIEW [--network NET]
      first install of a host from REF (the image reference as the host sees it, e.g.
      rhoim-registry:5000/rhoim/inference:1.0; the controller pulls it through CONTROLLER_VIEW, e.g.
      127.0.0.1:15002): fresh /var and state; waits until it answers over SSH
  bootc_host.py down NAME      remove the host, its /var volume and its state
  bootc_host.py state NAME     print its deployment state (JSON)
  bootc_host.py supervise      the reboot supervisor (up starts it; one per machine)
"""

import argparse
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bootc_standin
import local_host

ROOT = os.path.join(local_host.CACHE, "bootc-hosts")
STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootc_standin.py")
LABEL = "org.rhoim.bootc-host=1"
REBOOT_EXIT = 128 + 1  # SIGHUP: the kernel's reboot of a PID namespace's init
POWEROFF_EXIT = 128 + 2  # SIGINT
IDLE_EXIT_SECONDS = 30


def host_dir(name):
    return os.path.join(ROOT, name)


def state_file(name):
    return os.path.join(host_dir(name), "run", "state.json")


def volume(name):
    return "rhoim-var-" + name


def read_config(name):
    with open(os.path.join(host_dir(name), "host.json")) as handle:
        return json.load(handle)


def controller_ref(image, registries):
    """The reference the controller pulls for an image reference as the host sees it."""
    for host_view, controller_view in registries.items():
        if image.startswith(host_view + "/"):
            return controller_view + image[len(host_view):]
    return image


def repository(image):
    """registry/repo of registry/repo[:tag|@digest]."""
    image = image.split("@", 1)[0]
    head, _sep, last = image.rpartition("/")
    return head + "/" + last.split(":", 1)[0]


def pull(image, registries, digest=None):
    """Pulls IMAGE (a digest when given) through the controller's view; returns (local reference, digest, version).

    The digest is the registry's (what bootc records), read with skopeo: local storage may know the same image by
    another manifest."""
    ref = controller_ref(image, registries)
    if digest:
        ref = repository(ref) + "@" + digest
    found = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "docker://" + ref], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, check=False)
    if found.returncode != 0:
        raise local_host.HostError("the registry has no %s: %s" % (ref, found.stderr.strip()))
    info = json.loads(found.stdout)
    ref = repository(ref) + "@" + info["Digest"]
    local_host.podman("pull", "-q", "--tls-verify=false", ref)
    return ref, info["Digest"], (info.get("Labels") or {}).get("org.opencontainers.image.version")


def wrapper_path():
    """bootc on the hosts' PATH: the stand-in, run by the host's Python."""
    path = os.path.join(ROOT, "bootc")
    text = '#!/bin/sh\nexec python3 /usr/lib/rhoim-standin/bootc_standin.py "$@"\n'
    if not os.path.exists(path) or open(path).read() != text:
        os.makedirs(ROOT, exist_ok=True)
        with open(path + ".tmp", "w") as handle:
            handle.write(text)
        os.chmod(path + ".tmp", 0o700)  # run by root in the hosts (rootful podman)
        os.replace(path + ".tmp", path)
    return path


def podman_args(name):
    return ["--cap-add=SYS_BOOT", "--label", LABEL,
            "-v", "%s:/run/rhoim-bootc" % os.path.join(host_dir(name), "run"),
            "-v", "%s:/var" % volume(name),
            "-v", "%s:/usr/lib/rhoim-standin/bootc_standin.py:ro" % STANDIN,
            "-v", "%s:/usr/local/bin/bootc:ro" % wrapper_path()]


def up(name, image, registries, network=local_host.DEFAULT_NETWORK):
    """First install of NAME from IMAGE: a new /var, a state with one booted deployment."""
    down(name)
    ref, digest, version = pull(image, registries)
    os.makedirs(os.path.join(host_dir(name), "run"), mode=0o700)
    os.makedirs(os.path.join(host_dir(name), "etc"), mode=0o700)
    with open(os.path.join(host_dir(name), "host.json"), "w") as handle:
        json.dump({"registries": registries, "network": network}, handle)
    state = bootc_standin.load(state_file(name))
    state["booted"] = {"image": image, "transport": "registry", "signature": None, "digest": digest, "version": version}
    bootc_standin.save(state_file(name), state)
    address = local_host.up(name, ref, network, "systemd", podman_args(name))
    start_supervisor()
    return address


def down(name):
    local_host.down(name)
    local_host.podman("volume", "rm", "-f", volume(name), check=False)
    shutil.rmtree(host_dir(name), ignore_errors=True)


def id_map(tar, path):
    """name -> id from the passwd or group file inside a tar of /etc."""
    try:
        text = tar.extractfile(path).read().decode()
    except (KeyError, AttributeError):
        return {}
    return {fields[0]: int(fields[2]) for fields in (line.split(":") for line in text.splitlines()) if len(fields) > 2}


def etc_changes(name):
    """A tar of the files in NAME's /etc that differ from its image (the container may be stopped).

    podman cp writes root's IDs into the tar it exports, but the right owner and group names: the IDs come back
    from the host's own passwd and group files."""
    diff = json.loads(local_host.podman("diff", "--format", "json", name).stdout or "{}")
    wanted = {p.lstrip("/") for p in (diff.get("changed") or []) + (diff.get("added") or []) if p.startswith("/etc/")}
    out = io.BytesIO()
    raw = subprocess.run(["podman", "cp", name + ":/etc", "-"], stdout=subprocess.PIPE, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        users, groups = id_map(src, "etc/passwd"), id_map(src, "etc/group")
        for member in src.getmembers():
            if member.name in wanted and (member.isfile() or member.issym() or member.isdir()):
                member.uid = users.get(member.uname, member.uid)
                member.gid = groups.get(member.gname, member.gid)
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def put_etc(name, data):
    if data:
        subprocess.run(["podman", "cp", "--archive=false", "-", name + ":/"], input=data, check=True, stdout=subprocess.DEVNULL)


def etc_store(name, digest):
    return os.path.join(host_dir(name), "etc", digest.replace(":", "-") + ".tar")


def reboot(name, log):
    """What the machine does at a reboot: bootc's next deployment boots, with its /etc and the kept /var."""
    config = read_config(name)
    state = bootc_standin.load(state_file(name))
    leaving, queued = state["booted"], state["rollback_queued"]
    if queued and not os.path.exists(etc_store(name, state["rollback"]["digest"])):
        # Booting it with the image's /etc would lose the host's SSH keys and API key: a harness fault, said loudly.
        raise local_host.HostError("rollback to %s: no /etc was kept for that deployment; not booting it"
                                   % state["rollback"]["digest"][:19])
    changes = etc_changes(name)
    with open(etc_store(name, leaving["digest"]), "wb") as handle:
        handle.write(changes)
    state = bootc_standin.boot(state)
    bootc_standin.save(state_file(name), state)
    booted = state["booted"]
    if queued:
        with open(etc_store(name, booted["digest"]), "rb") as handle:
            changes = handle.read()
    ref = pull(booted["image"], config["registries"], booted["digest"])[0]
    local_host.up(name, ref, config["network"], "systemd", podman_args(name),
                  before_start=lambda host: put_etc(host, changes), wait=False)
    log("%s rebooted into %s (%s)" % (name, booted["digest"][:19], "rollback" if queued else
                                      "staged" if booted["digest"] != leaving["digest"] else "same deployment"))


def supervise():
    """Watches the bootc hosts; reboots the ones whose init ended for a reboot. Exits once none is left."""
    os.makedirs(ROOT, exist_ok=True)
    lock = open(os.path.join(ROOT, "supervisor.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # one runs already

    def log(message):
        sys.stdout.write("%s %s\n" % (time.strftime("%H:%M:%S"), message))
        sys.stdout.flush()

    handled, idle_since = set(), time.monotonic()
    while True:
        hosts = json.loads(local_host.podman("ps", "-a", "--filter", "label=" + LABEL, "--format", "json").stdout or "[]")
        if hosts:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > IDLE_EXIT_SECONDS:
            return 0
        for host in hosts:
            if host.get("State") != "exited" or host["Id"] in handled:
                continue
            handled.add(host["Id"])
            name = host["Names"][0]
            if host.get("ExitCode") == REBOOT_EXIT and os.path.exists(state_file(name)):
                try:
                    reboot(name, log)
                except (local_host.HostError, subprocess.CalledProcessError, OSError, KeyError) as exc:
                    log("%s: reboot failed: %s" % (name, exc))
            else:
                log("%s is down (exit code %s): left as it is" % (name, host.get("ExitCode")))
        time.sleep(0.5)


def start_supervisor():
    os.makedirs(ROOT, exist_ok=True)
    with open(os.path.join(ROOT, "supervisor.log"), "a") as log:
        subprocess.Popen([sys.executable, os.path.abspath(__file__), "supervise"], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, start_new_session=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="install a host from an image and wait until it answers over SSH")
    p_up.add_argument("name")
    p_up.add_argument("--image", required=True)
    p_up.add_argument("--registry", action="append", default=[], metavar="HOST_VIEW=CONTROLLER_VIEW")
    p_up.add_argument("--network", default=local_host.DEFAULT_NETWORK)
    p_down = sub.add_parser("down", help="remove a host, its /var and its state")
    p_down.add_argument("name")
    p_state = sub.add_parser("state", help="print a host's deployment state")
    p_state.add_argument("name")
    sub.add_parser("supervise", help="reboot the hosts whose init ended for a reboot")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            registries = dict(item.split("=", 1) for item in args.registry)
            print("%s %s" % (args.name, up(args.name, args.image, registries, args.network)))
        elif args.cmd == "down":
            down(args.name)
        elif args.cmd == "state":
            print(json.dumps(bootc_standin.load(state_file(args.name)), indent=2, sort_keys=True))
        else:
            return supervise()
    except (local_host.HostError, subprocess.CalledProcessError) as exc:
        sys.exit("bootc_host.py: %s" % exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
