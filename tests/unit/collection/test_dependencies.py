"""galaxy.yml's dependencies are exactly the collections the roles, playbooks and plugins use: a module of a
collection missing there fails only on the machine that installs from Galaxy; one listed and unused is pulled
for nothing."""

import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OWN = {"ansible.builtin", "rhoim.inference"}
MODULE = re.compile(r"^([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*$")
# Filters, lookups and tests named by their FQCN inside templates.
PLUGIN = re.compile(r"(?:\|\s*|lookup\(\s*['\"]|query\(\s*['\"]|\bis\s+(?:not\s+)?)([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*")


def task_modules(data):
    """The FQCN modules of every task (ansible-lint's production profile names every task)."""
    if isinstance(data, list):
        for item in data:
            yield from task_modules(item)
    elif isinstance(data, dict):
        if "name" in data:
            for key in data:
                match = MODULE.match(str(key))
                if match:
                    yield match.group(1)
        for value in data.values():
            yield from task_modules(value)


class Loader(yaml.SafeLoader):
    """Reads vault-encrypted values as plain text."""


Loader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))


def used_collections():
    used = {}
    for top in ("roles", "playbooks", "plugins"):
        for folder, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                if not name.endswith((".yml", ".yaml", ".j2")):
                    continue
                with open(path) as stream:
                    text = stream.read()
                found = set(PLUGIN.findall(text))
                if name.endswith((".yml", ".yaml")) and "/meta/" not in path:
                    found |= set(task_modules(yaml.load(text, Loader=Loader)))  # noqa: S506  (a SafeLoader with one more tag)
                for collection in found - OWN:
                    used.setdefault(collection, os.path.relpath(path, ROOT))
    return used


def test_galaxy_dependencies_are_the_collections_used():
    with open(os.path.join(ROOT, "galaxy.yml")) as stream:
        declared = set((yaml.safe_load(stream).get("dependencies") or {}))
    used = used_collections()
    missing = {c: p for c, p in used.items() if c not in declared}
    assert not missing, "used but not in galaxy.yml's dependencies: %s" % missing
    assert declared <= set(used), "in galaxy.yml's dependencies but unused: %s" % sorted(declared - set(used))
    # What the scan found today, so that a scan that finds nothing cannot pass.
    assert {"ansible.posix", "community.general", "community.libvirt"} <= set(used)
