"""Stand-in for bootc (bootc-dev/bootc 1.16), the verbs rhoim.inference.bootc runs, for hosts that cannot run bootc.

Models, as ../shared/reference/bootc.md records them from bootc's source:
- `bootc status --format=json` (and the legacy `--json`): the v1 document (apiVersion org.containers.bootc/v1,
  kind BootcHost, sorted keys, compact), spec.image = the staged image where one is staged else the booted one,
  status.booted/staged/rollback/rollbackQueued, the empty document (booted null) on a host that was never
  installed from an image; "This command must be executed as the root user" for others (exit 1).
- `bootc switch [--transport T] [--retain] [--enforce-container-sigpolicy] [--quiet] IMAGE`: an unchanged
  specification prints "Image specification is unchanged." and pulls nothing; otherwise the target is resolved
  to a digest and staged ("Queued for next boot: IMAGE", "  Version:", "  Digest:"), writing /run/reboot-required.
- `bootc upgrade [--check] [--quiet]`: --check prints "No changes in: IMAGE" or "Update available for: IMAGE" and
  records the cached update; plain: a digest equal to the staged one prints "Staged update present, not changed",
  equal to the booted one "No update available.", else stages as switch does.
- `bootc rollback`: "Next boot: rollback deployment"; run again, "notice: Reverting queued rollback state" and
  "Next boot: current deployment" (it toggles); "error: No rollback available" without one. Discards a staged
  deployment.
- Errors: "error: ..." on stderr, exit 1; usage errors exit 2 (clap); `--apply` is refused here (the module never
  uses it, and on bootc it never returns).
- `boot STATE_FILE` (not a bootc verb: what the harness runs at a reboot): the deployment bootc would boot
  becomes the booted one (the staged one, or the rollback when queued), the old booted one the rollback.
Does not model: ostree, pulling layers (the image is resolved to a digest only), signature verification,
`/etc` merges, kernel arguments, soft reboots, `--apply`, `edit`, `usr-overlay`, `install`, `container lint`
(accepted; it checks nothing).

State: a JSON file (RHOIM_BOOTC_STATE, default /run/rhoim-bootc/state.json, where the harness mounts a folder
it keeps outside the host). Images of the registry transport resolve to a digest as bootc resolves them, in the
registry itself (HTTP API v2, manifest by tag or digest), with the host's settings: a registry marked
`insecure = true` in /etc/containers/registries.conf(.d) is reached over plain HTTP, and its credentials come
from the first of /run/ostree/auth.json, /etc/ostree/auth.json, /usr/lib/ostree/auth.json (bootc's order);
only Basic authentication is modelled (the test registry's htpasswd). For the module's unit tests,
RHOIM_BOOTC_IMAGES names a JSON file {"<image reference>": {"digest": "sha256:...", "version": "..."}} used
instead (a reference missing from it is an image the registry does not have).
"""

import glob
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.request

API = {"apiVersion": "org.containers.bootc/v1", "kind": "BootcHost", "metadata": {"name": "host"}}


def load(path):
    if not os.path.exists(path):
        return {"spec": None, "booted": None, "staged": None, "rollback": None, "rollback_queued": False, "cached": None}
    with open(path) as handle:
        return json.load(handle)


def save(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(state, handle, sort_keys=True)
    os.replace(tmp, path)


def entry(deployment, cached=None):
    if deployment is None:
        return None
    ref = {"image": deployment["image"], "transport": deployment["transport"]}
    if deployment.get("signature"):
        ref["signature"] = deployment["signature"]
    image = {"image": ref, "imageDigest": deployment["digest"], "version": deployment.get("version"),
             "timestamp": None, "architecture": "amd64"}
    return {"image": image, "cachedUpdate": cached, "incompatible": False, "pinned": False, "softRebootCapable": False,
            "downloadOnly": False, "store": "ostreeContainer",
            "ostree": {"stateroot": "default", "checksum": deployment["digest"][7:71], "deploySerial": 0}}


def document(state):
    spec_from = state["staged"] or state["booted"]
    spec_image = None
    if spec_from is not None:
        spec_image = {"image": spec_from["image"], "transport": spec_from["transport"]}
        if spec_from.get("signature"):
            spec_image["signature"] = spec_from["signature"]
    cached = None
    if state.get("cached") and state["booted"] is not None:
        cached = {"image": {"image": state["booted"]["image"], "transport": state["booted"]["transport"]},
                  "imageDigest": state["cached"]["digest"], "version": state["cached"].get("version"),
                  "timestamp": None, "architecture": "amd64"}
    status = {"staged": entry(state["staged"]), "booted": entry(state["booted"], cached), "rollback": entry(state["rollback"]),
              "rollbackQueued": bool(state["rollback_queued"]),
              "type": "bootcHost" if state["booted"] is not None else None}
    doc = dict(API, spec={"image": spec_image, "bootOrder": "rollback" if state["rollback_queued"] else "default"},
               status=status)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


class Fail(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"])
AUTH_FILES = ("/run/ostree/auth.json", "/etc/ostree/auth.json", "/usr/lib/ostree/auth.json")


def insecure_registries():
    """Locations marked insecure in registries.conf and its drop-ins (the [[registry]] tables only)."""
    found, location = set(), None
    for path in ["/etc/containers/registries.conf", *sorted(glob.glob("/etc/containers/registries.conf.d/*.conf"))]:
        try:
            with open(path) as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line.startswith("["):
                location = None
            match = re.match(r'location\s*=\s*"([^"]+)"', line)
            if match:
                location = match.group(1)
            if re.match(r"insecure\s*=\s*true", line) and location:
                found.add(location)
    return found


def credentials(registry):
    for path in AUTH_FILES:
        if os.path.exists(path):
            with open(path) as handle:
                auths = json.load(handle).get("auths", {})
            entry = auths.get(registry)
            return entry.get("auth") if entry else None
    return None


def registry_get(registry, path, accept):
    scheme = "http" if registry in insecure_registries() else "https"
    request = urllib.request.Request("%s://%s%s" % (scheme, registry, path), headers={"Accept": accept})  # noqa: S310 - http(s) only
    auth = credentials(registry)
    if auth:
        request.add_header("Authorization", "Basic " + auth)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the host's own registry
            return response.read(), response.headers
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise Fail("reading manifest in %s: authentication required" % registry) from exc
        if exc.code == 404:
            raise Fail("reading manifest in %s: manifest unknown" % registry) from exc
        raise Fail("reading %s from %s: HTTP %d" % (path, registry, exc.code)) from exc
    except OSError as exc:
        raise Fail("pinging container registry %s: %s" % (registry, exc)) from exc


def resolve_in_registry(image):
    match = re.match(r"^([^/]+)/(.+?)(?:@(sha256:[0-9a-f]{64})|:([^:/@]+))?$", image)
    if not match or not ("." in match.group(1) or ":" in match.group(1) or match.group(1) == "localhost"):
        raise Fail("Invalid image reference %s: give registry/repository[:tag|@digest]" % image)
    registry, repository, digest, tag = match.groups()
    body, headers = registry_get(registry, "/v2/%s/manifests/%s" % (repository, digest or tag or "latest"), MANIFEST_TYPES)
    found = headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
    version = None
    config = json.loads(body).get("config", {}).get("digest")
    if config:
        blob = json.loads(registry_get(registry, "/v2/%s/blobs/%s" % (repository, config), "*/*")[0])
        version = ((blob.get("config") or {}).get("Labels") or {}).get("org.opencontainers.image.version")
    return {"digest": found, "version": version}


def resolve(image):
    path = os.environ.get("RHOIM_BOOTC_IMAGES", "")
    if not path:
        return resolve_in_registry(image)
    images = {}
    if os.path.exists(path):
        with open(path) as handle:
            images = json.load(handle)
    if image not in images:
        raise Fail("Switching: Pulling: Creating importer: failed to invoke method OpenImage: reading manifest %s: "
                   "manifest unknown" % image)
    return images[image]


def stage(state, image, transport, signature, out):
    found = resolve(image)
    deployment = {"image": image, "transport": transport, "signature": signature, "digest": found["digest"],
                  "version": found.get("version")}
    state["staged"] = deployment
    state["rollback_queued"] = False
    out.append("Queued for next boot: %s" % image)
    if deployment["version"]:
        out.append("  Version: %s" % deployment["version"])
    out.append("  Digest: %s" % deployment["digest"])
    try:
        with open(os.environ.get("RHOIM_BOOTC_REBOOT_REQUIRED", "/run/reboot-required"), "w"):
            pass
    except OSError:
        pass


def take_flags(args, flags, valued=()):
    found, rest = {}, []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in flags:
            found[arg] = True
        elif arg in valued:
            if i + 1 >= len(args):
                raise Fail("error: a value is required for '%s'" % arg, 2)
            found[arg] = args[i + 1]
            i += 1
        elif arg.startswith("--") and "=" in arg and arg.split("=", 1)[0] in valued:
            key, value = arg.split("=", 1)
            found[key] = value
        elif arg.startswith("-"):
            raise Fail("error: unexpected argument '%s' found" % arg, 2)
        else:
            rest.append(arg)
        i += 1
    return found, rest


def bootc(argv, state, out):
    if not argv:
        raise Fail("error: 'bootc' requires a subcommand", 2)
    verb, args = argv[0], argv[1:]
    if "--apply" in args:
        raise Fail("error: --apply is not modelled by this stand-in (on bootc it reboots and never returns)", 2)
    if verb == "status":
        flags, rest = take_flags(args, ("--json", "--booted", "-v"), ("--format", "--format-version"))
        if rest or flags.get("--format", "json") != "json":
            raise Fail("error: this stand-in prints JSON only", 2)
        out.append(document(state))
        return False
    if state["booted"] is None:
        raise Fail("Status: Booted deployment not found; is this a bootc host?")
    if verb == "switch":
        flags, rest = take_flags(args, ("--retain", "--enforce-container-sigpolicy", "--quiet"), ("--transport",))
        if len(rest) != 1:
            raise Fail("error: switch needs one image", 2)
        transport = flags.get("--transport", "registry")
        signature = "containerPolicy" if flags.get("--enforce-container-sigpolicy") else None
        current = state["staged"] or state["booted"]
        if (current["image"], current["transport"], current.get("signature")) == (rest[0], transport, signature):
            out.append("Image specification is unchanged.")
            return False
        stage(state, rest[0], transport, signature, out)
        return True
    if verb in ("upgrade", "update"):
        flags, rest = take_flags(args, ("--check", "--quiet"))
        if rest:
            raise Fail("error: unexpected argument '%s' found" % rest[0], 2)
        current = state["staged"] or state["booted"]
        found = resolve(current["image"])
        if flags.get("--check"):
            state["cached"] = found
            if found["digest"] == current["digest"]:
                out.append("No changes in: %s" % current["image"])
            else:
                out.append("Update available for: %s" % current["image"])
                out.append("  Digest: %s" % found["digest"])
            return True
        if state["staged"] is not None and found["digest"] == state["staged"]["digest"]:
            out.append("Staged update present, not changed")
            return False
        if state["staged"] is None and found["digest"] == state["booted"]["digest"]:
            out.append("No update available.")
            return False
        stage(state, current["image"], current["transport"], current.get("signature"), out)
        return True
    if verb == "rollback":
        if args:
            raise Fail("error: unexpected argument '%s' found" % args[0], 2)
        if state["rollback"] is None:
            raise Fail("No rollback available")
        state["staged"] = None
        if state["rollback_queued"]:
            out.append("notice: Reverting queued rollback state")
            state["rollback_queued"] = False
            out.append("Next boot: current deployment")
        else:
            state["rollback_queued"] = True
            out.append("Next boot: rollback deployment")
        return True
    raise Fail("error: unrecognized subcommand '%s'" % verb, 2)


def boot(state):
    """A reboot: what bootc would boot becomes the booted deployment."""
    if state["rollback_queued"]:
        state["booted"], state["rollback"] = state["rollback"], state["booted"]
    elif state["staged"] is not None:
        state["booted"], state["rollback"] = state["staged"], state["booted"]
    state["staged"] = None
    state["rollback_queued"] = False
    state["cached"] = None
    return state


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["boot"]:
        path = argv[1]
        save(path, boot(load(path)))
        return 0
    if argv[:2] == ["container", "lint"]:
        # An image build on a base that carries this stand-in (tests/support/bootc-base-kernel): nothing is checked.
        sys.stdout.write("Checks passed (bootc stand-in: container lint checks nothing)\n")
        return 0
    path = os.environ.get("RHOIM_BOOTC_STATE", "/run/rhoim-bootc/state.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.geteuid() != 0 and os.environ.get("RHOIM_BOOTC_ANY_USER") != "1":
        sys.stderr.write("error: This command must be executed as the root user\n")
        return 1
    state = load(path)
    out = []
    try:
        if bootc(argv, state, out):
            save(path, state)
    except Fail as exc:
        message = str(exc)
        sys.stderr.write(message if message.startswith("error: ") else "error: " + message)
        sys.stderr.write("\n")
        return exc.code
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
