"""A real OCI registry for the image stages: Debian's docker-registry (distribution 2.8) in a container.

Models: the registry images are pushed to and hosts pull from. It runs in its own container on a test
network, where hosts reach it as NAME:5000, and its port is published on 127.0.0.1 only, where the
controller (podman push, skopeo) reaches it. Plain HTTP (clients use --tls-verify=false), no
authentication, storage inside the container (a new registry starts empty), access log on stdout.
Does not model: TLS, logins, quotas, signature stores, a registry on the internet.

  registry.py up [--name N] [--network NET] [--port P]   start one (or reuse a running one); prints 127.0.0.1:P
  registry.py log [--name N]                             print its access log
  registry.py down [--name N]
"""

import argparse
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import local_host

BINARY = "/usr/bin/docker-registry"
CONFIG = """version: 0.1
log:
  accesslog:
    disabled: false
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/rhoim-registry
  delete:
    enabled: true
http:
  addr: 0.0.0.0:5000
"""


def up(name="rhoim-registry", network=local_host.DEFAULT_NETWORK, port=15000, timeout=30):
    if not os.path.exists(BINARY):
        raise local_host.HostError("%s is missing: run make setup (it installs docker-registry)" % BINARY)
    running = local_host.podman("ps", "-q", "--filter", "name=^%s$" % name, check=False).stdout.strip()
    if not running:
        local_host.podman("rm", "-f", name, check=False)
        local_host.ensure_network(network)
        config = os.path.join(local_host.CACHE, "registry.yml")
        os.makedirs(local_host.CACHE, exist_ok=True)
        with open(config, "w") as handle:
            handle.write(CONFIG)
        local_host.podman(
            "run", "-d", "--name", name, "--network", network, "--label", local_host.LABEL,
            "-p", "127.0.0.1:%d:5000" % port,
            "-v", "%s:/usr/local/bin/docker-registry:ro" % BINARY, "-v", "%s:/etc/rhoim-registry.yml:ro" % config,
            local_host.DEFAULT_IMAGE, "/usr/local/bin/docker-registry", "serve", "/etc/rhoim-registry.yml")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/v2/" % port, timeout=2):  # noqa: S310 - test URL
                break
        except OSError as exc:
            if time.monotonic() > deadline:
                logs = local_host.podman("logs", name, check=False)
                raise local_host.HostError("the registry %s does not answer on 127.0.0.1:%d (%s): %s"
                                           % (name, port, exc, (logs.stdout + logs.stderr)[-500:])) from exc
            time.sleep(0.5)
    return "127.0.0.1:%d" % port


def access_log(name="rhoim-registry"):
    logs = local_host.podman("logs", name)
    return logs.stdout + logs.stderr


def down(name="rhoim-registry"):
    local_host.podman("rm", "-f", "-t", "0", name, check=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd in ("up", "log", "down"):
        p = sub.add_parser(cmd)
        p.add_argument("--name", default="rhoim-registry")
        if cmd == "up":
            p.add_argument("--network", default=local_host.DEFAULT_NETWORK)
            p.add_argument("--port", type=int, default=15000)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            print(up(args.name, args.network, args.port))
        elif args.cmd == "log":
            sys.stdout.write(access_log(args.name))
        else:
            down(args.name)
    except local_host.HostError as exc:
        sys.exit("registry.py: %s" % exc)


if __name__ == "__main__":
    main()
