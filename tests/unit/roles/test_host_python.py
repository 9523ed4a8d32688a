"""rhoim.inference.host_python's choice of interpreter per distribution, rendered by Ansible's own
templating from the role's vars, as a play would render them."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import role_vars

ROLE = os.path.join(role_vars.ROLES, "host_python")


def load(*parts):
    return role_vars.load("host_python", *parts)


def render(expr, facts, **extra):
    variables = {**load("vars", "main.yml"), **load("defaults", "main.yml"), **extra}
    return role_vars.render(expr, {**variables, "ansible_facts": facts})


def facts(distribution, major, family):
    return {"distribution": distribution, "distribution_major_version": major, "os_family": family,
            "distribution_version": major}


@pytest.mark.parametrize(("host", "interpreter", "packages"), [
    # python3 is 3.9 on every EL 9: the stages take 3.11, which ships beside it.
    (facts("RedHat", "9", "RedHat"), "/usr/bin/python3.11", ["python3.11", "python3.11-pip"]),
    (facts("CentOS", "9", "RedHat"), "/usr/bin/python3.11", ["python3.11", "python3.11-pip"]),
    (facts("Rocky", "9", "RedHat"), "/usr/bin/python3.11", ["python3.11", "python3.11-pip"]),
    (facts("RedHat", "10", "RedHat"), "/usr/bin/python3", ["python3", "python3-pip"]),
    (facts("Fedora", "41", "RedHat"), "/usr/bin/python3", ["python3", "python3-pip"]),
    (facts("Debian", "12", "Debian"), "/usr/bin/python3", ["python3", "python3-venv"]),
    (facts("Debian", "13", "Debian"), "/usr/bin/python3", ["python3", "python3-venv"]),
])
def test_each_supported_distribution_has_its_interpreter_and_packages(host, interpreter, packages):
    assert render("{{ __host_python_path }}", host) == interpreter
    assert render("{{ __host_python_platform.packages }}", host) == packages


@pytest.mark.parametrize("host", [facts("Debian", "11", "Debian"), facts("Ubuntu", "22", "Debian"),
                                  facts("RedHat", "8", "RedHat")])
def test_a_distribution_without_a_package_at_the_floor_gets_none(host):
    # check.yml then refuses it unless host_python_interpreter names one.
    assert render("{{ __host_python_path }}", host) == ""
    assert render("{{ __host_python_platform | length }}", host) == 0


def test_a_named_interpreter_wins_over_the_distributions():
    host = facts("RedHat", "9", "RedHat")
    assert render("{{ __host_python_path }}", host, host_python_interpreter="/opt/py312/bin/python3") == "/opt/py312/bin/python3"


def test_the_floor_is_the_one_the_readme_states_and_vllm_needs():
    floor = load("vars", "main.yml")["__host_python_floor"]
    assert floor == "3.11"
    with open(os.path.join(ROLE, "README.md")) as f:
        assert "**Python %s**" % floor in f.read()


def test_every_platform_in_the_role_metadata_has_an_entry():
    majors = {"bookworm": "12", "trixie": "13"}
    for platform in load("meta", "main.yml")["galaxy_info"]["platforms"]:
        for version in platform["versions"]:
            if platform["name"] == "EL":
                host = facts("RedHat", version, "RedHat")
            elif platform["name"] == "Fedora":
                host = facts("Fedora", "41", "RedHat")
            else:
                host = facts(platform["name"], majors[version], platform["name"])
            assert render("{{ __host_python_path }}", host).startswith("/usr/bin/python3"), (platform, version)
