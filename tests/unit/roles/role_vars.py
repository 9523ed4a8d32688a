"""A role's vars and defaults rendered by Ansible's own templating, as a play renders them (for the tests of
the roles' decisions)."""

import os

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))), "roles")


def load(role, *parts):
    with open(os.path.join(ROLES, role, *parts)) as f:
        return yaml.safe_load(f)


def trusted(value):
    """Values as Ansible trusts a role's own files: their strings are templates."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [trusted(v) for v in value]
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    return value


def render(expr, variables):
    return Templar(loader=DataLoader(), variables=trusted(variables)).template(trust_as_template(expr))
