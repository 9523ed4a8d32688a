"""images/inference/build/selinux-contexts: the model and cache folders' SELinux types go into the image's
policy where the base has SELinux (semanage is a recorder here: this machine has no SELinux policy), the
models' type is the one the model role gives them, and a base without SELinux has nothing to declare."""

import os
import subprocess

import yaml

from test_check_kernel_modules import ROOT

SCRIPT = os.path.join(ROOT, "images", "inference", "build", "selinux-contexts")


def run(tmp_path, selinux, semanage):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    if selinux:
        (root / "etc" / "selinux").mkdir()
        (root / "etc" / "selinux" / "config").write_text("SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "semanage.log"
    if semanage:
        (bin_dir / "semanage").write_text('#!/bin/sh\necho "$*" >>"%s"\n' % log)
        (bin_dir / "semanage").chmod(0o755)
    env = dict(os.environ, RHOIM_ROOT=str(root), PATH="%s:/usr/bin:/bin" % bin_dir)
    proc = subprocess.run([SCRIPT], env=env, capture_output=True, text=True, check=False)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_the_folders_get_their_types_in_the_policy(tmp_path):
    proc, calls = run(tmp_path, selinux=True, semanage=True)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(ROOT, "roles", "model", "defaults", "main.yml")) as f:
        model = yaml.safe_load(f)
    assert calls == ["fcontext -a -t %s %s(/.*)?" % (model["model_selinux_setype"], model["model_root"]),
                     "fcontext -a -t container_file_t /var/cache/rhoim-vllm(/.*)?"]


def test_a_base_without_selinux_has_nothing_to_declare(tmp_path):
    proc, calls = run(tmp_path, selinux=False, semanage=True)
    assert proc.returncode == 0 and "no SELinux policy" in proc.stdout
    assert calls == []


def test_a_base_with_selinux_and_no_semanage_fails_the_build(tmp_path):
    proc = run(tmp_path, selinux=True, semanage=False)[0]
    assert proc.returncode == 1 and "semanage is missing (policycoreutils-python-utils)" in proc.stderr
