"""Every module test ends a module's run at exit_json or fail_json (module_harness.Exit)."""

import pytest
from ansible.module_utils import basic

from module_harness import Exit


@pytest.fixture(autouse=True)
def _exits(monkeypatch):
    def exit_json(self, **kw):
        raise Exit(kw, False)

    def fail_json(self, msg, **kw):
        kw["msg"] = msg
        raise Exit(kw, True)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
