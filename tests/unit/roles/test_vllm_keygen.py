"""rhoim-vllm-keygen, the first-boot key maker of rhoim-vllm-key@<name>.service."""

import os
import re
import stat
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
KEYGEN = os.path.join(ROOT, "roles", "vllm_service", "files", "rhoim-vllm-keygen")


def keygen(path):
    return subprocess.run([KEYGEN, str(path)], capture_output=True, text=True, check=False)


def test_makes_a_private_key_of_48_letters_and_digits(tmp_path):
    path = tmp_path / "tiny.api_key"
    proc = keygen(path)
    assert proc.returncode == 0, proc.stderr
    key = path.read_text()
    assert re.fullmatch(r"[A-Za-z0-9]{48}\n", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The key is not printed, and no temporary file is left.
    assert key.strip() not in proc.stdout + proc.stderr
    assert os.listdir(tmp_path) == ["tiny.api_key"]


def test_two_hosts_get_different_keys(tmp_path):
    first, second = tmp_path / "a.api_key", tmp_path / "b.api_key"
    keygen(first)
    keygen(second)
    assert first.read_text() != second.read_text()


def test_a_key_that_exists_is_kept(tmp_path):
    path = tmp_path / "tiny.api_key"
    path.write_text("set-by-the-serve-stage\n")
    assert keygen(path).returncode == 0
    assert path.read_text() == "set-by-the-serve-stage\n"


def test_a_missing_folder_fails_the_unit(tmp_path):
    target = tmp_path / "missing" / "tiny.api_key"
    proc = keygen(target)
    assert proc.returncode != 0
    assert not target.exists()
