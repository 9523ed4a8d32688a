"""A real OCI registry for the image stages: Debian's docker-registry (distribution 2.8) in a container.

Models: the registry images are pushed to and hosts pull from. It runs in its own container on a test
network, where hosts reach it as NAME:5000, and its port is published on 127.0.0.1 only, where the
controller (podman push, skopeo) reaches it. Plain HTTP (clients use --tls-verify=false), storage
inside the container (a new registry starts empty), access log on stdout. Without credentials anyone may
push and pull; with them (up(..., credentials=(user, password)), or --user and RHOIM_REGISTRY_PASSWORD),
the registry's own htpasswd authentication (bcrypt) asks for them on every request, as a private registry does.
Does not model: TLS, token authentication, quotas, signature stores, a registry on the internet.

  registry.py up [--name N] [--network NET] [--port P] [--user U]   start one (or reuse a running one); prints 127.0.0.1:P
  registry.py log [--name N]                             print its access log
  registry.py down [--name N]
"""

import argparse
import os
import warnings
import sys
import time
import urllib.error
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


HTPASSWD = """auth:
  htpasswd:
    realm: rhoim-test-registry
    path: /etc/rhoim-registry.htpasswd
"""


def bcrypt(password):
    """The registry reads bcrypt entries only; glibc's crypt (libxcrypt) makes them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))  # noqa: S324 - bcrypt, not a weak hash


def up(name="rhoim-registry", network=local_host.DEFAULT_NETWORK, port=15000, timeout=30, credentials=None):
    if not os.path.exists(BINARY):
        raise local_host.HostError("%s is missing: run make setup (it installs docker-registry)" % BINARY)
    running = local_host.podman("ps", "-q", "--filter", "name=^%s$" % name, check=False).stdout.strip()
    if not running:
        local_host.podman("rm", "-f", name, check=False)
        local_host.ensure_network(network)
        os.makedirs(local_host.CACHE, exist_ok=True)
        config = os.path.join(local_host.CACHE, "%s.yml" % name)
        mounts = ["-v", "%s:/usr/local/bin/docker-registry:ro" % BINARY, "-v", "%s:/etc/rhoim-registry.yml:ro" % config]
        with open(config, "w") as handle:
            handle.write(CONFIG + (HTPASSWD if credentials else ""))
        if credentials:
            htpasswd = os.path.join(local_host.CACHE, "%s.htpasswd" % name)
            fd = os.open(htpasswd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write("%s:%s\n" % (credentials[0], bcrypt(credentials[1])))
            mounts += ["-v", "%s:/etc/rhoim-registry.htpasswd:ro" % htpasswd]
        local_host.podman(
            "run", "-d", "--name", name, "--network", network, "--label", local_host.LABEL,
            "-p", "127.0.0.1:%d:5000" % port, *mounts,
            local_host.DEFAULT_IMAGE, "/usr/local/bin/docker-registry", "serve", "/etc/rhoim-registry.yml")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/v2/" % port, timeout=2):  # noqa: S310 - test URL
                break
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and credentials:
                break
            raise local_host.HostError("the registry %s answers %d on 127.0.0.1:%d" % (name, exc.code, port)) from exc
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
            p.add_argument("--user", help="ask for this user and the password in RHOIM_REGISTRY_PASSWORD")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            credentials = (args.user, os.environ["RHOIM_REGISTRY_PASSWORD"]) if args.user else None
            print(up(args.name, args.network, args.port, credentials=credentials))
        elif args.cmd == "log":
            sys.stdout.write(access_log(args.name))
        else:
            down(args.name)
    except local_host.HostError as exc:
        sys.exit("registry.py: %s" % exc)


if __name__ == "__main__":
    main()
