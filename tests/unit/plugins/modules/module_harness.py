"""A module's main() run in-process by the module tests: its exit_json and fail_json end the run as an Exit that
carries the result (tests/unit/plugins/modules/conftest.py patches them for every test here)."""

import pytest
from ansible.module_utils.testing import patch_module_args


class Exit(Exception):
    def __init__(self, result, failed):
        super().__init__(result)
        self.result = result
        self.failed = failed


def run_main(main, args, check_mode=False, diff=False):
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with patch_module_args(args):
        with pytest.raises(Exit) as ei:
            main()
    return ei.value
