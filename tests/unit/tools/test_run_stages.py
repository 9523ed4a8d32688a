"""make test's stage runner (tools/run_stages.py): stage and scenario times, the warning mark and
the stop mark, with a Makefile of stand-in stages and marks of seconds."""

import os
import subprocess
import sys
import time

import pytest

RUNNER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                      "tools", "run_stages.py")

MAKEFILE = """\
fast:
\t@echo fast ran
scenarios:
\t@printf 'model\\t300\\tok\\n' >>$$RHOIM_TEST_TIMES
\t@printf 'hosts\\t40\\tok\\n' >>$$RHOIM_TEST_TIMES
\t@printf 'vllm_service\\t900\\tok\\n' >>$$RHOIM_TEST_TIMES
\t@echo e2e >$$RHOIM_TEST_TIMES.running
slow:
\t@sleep 60; touch slow-finished
broken:
\t@exit 3
never:
\t@touch never-ran
"""


def run(tmp_path, *stages, warn="60", stop="80"):
    (tmp_path / "Makefile").write_text(MAKEFILE)
    env = dict(os.environ, RHOIM_TEST_WARN_MINUTES=warn, RHOIM_TEST_STOP_MINUTES=stop,
               RHOIM_TEST_TIMES=str(tmp_path / "times.tsv"))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, RUNNER, *stages], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    return proc, time.monotonic() - start


def test_stage_and_scenario_times_are_printed(tmp_path):
    proc, _secs = run(tmp_path, "fast", "scenarios")
    assert proc.returncode == 0, proc.stderr
    assert "fast ran" in proc.stdout
    lines = proc.stdout.splitlines()
    report = lines[lines.index("=== stage times"):]
    assert report[1].split()[::2] == ["fast", "ok"] and report[2].split()[::2] == ["scenarios", "ok"]
    scenarios = lines[lines.index("=== scenario times (slowest first)") + 1:][:3]
    assert [row.split()[0] for row in scenarios] == ["vllm_service", "model", "hosts"]
    assert lines[-1].startswith("total")


def test_a_failed_stage_stops_the_run(tmp_path):
    proc, _secs = run(tmp_path, "broken", "never")
    # make exits 2 when a recipe fails.
    assert proc.returncode == 2
    assert "stage 'broken' failed (exit 2)" in proc.stderr
    assert not (tmp_path / "never-ran").exists()


def test_past_the_warning_mark_it_names_the_slowest_scenarios(tmp_path):
    # Warn after 1.2 s, stop after 3 s: the slow stage is stopped too.
    proc, _secs = run(tmp_path, "scenarios", "slow", warn="0.02", stop="0.05")
    assert "WARNING" in proc.stderr
    warning = next(line for line in proc.stderr.splitlines() if "WARNING" in line)
    assert "vllm_service (900 s), model (300 s), hosts (40 s), e2e (running)" in warning


def test_past_the_stop_mark_it_stops_the_running_stage_with_a_clear_message(tmp_path):
    proc, secs = run(tmp_path, "slow", "never", warn="0.01", stop="0.05")
    assert proc.returncode == 124
    assert "STOPPED after 0 min, past the 0 min budget (CI stops at 90), in stage 'slow'" in proc.stderr
    assert secs < 30
    assert "slow" in proc.stdout and "STOPPED" in proc.stdout
    # The stage's own processes were stopped with it; nothing after it ran.
    time.sleep(1)
    assert not (tmp_path / "slow-finished").exists()
    assert not (tmp_path / "never-ran").exists()


@pytest.mark.parametrize("value", ["soon", "1h"])
def test_a_mark_that_is_not_minutes_is_a_clear_error(tmp_path, value):
    proc, _secs = run(tmp_path, "fast", warn=value)
    assert proc.returncode != 0
    assert "RHOIM_TEST_WARN_MINUTES=%r is not a number of minutes" % value in proc.stderr
