"""make test: runs `make STAGE` for each stage in order, stops at the first failure, and keeps to
a time budget.

Prints what each stage and each Molecule scenario cost (scenarios report through the file named
by RHOIM_TEST_TIMES, which tools/run-scenarios.sh appends to). Past the warning mark (60 minutes)
it names the slowest scenarios so far; past the stop mark (80 minutes) it stops the running stage
and says so, rather than being killed by CI's own limit (90 minutes). Both marks can be set in
minutes: RHOIM_TEST_WARN_MINUTES, RHOIM_TEST_STOP_MINUTES.

    python3 tools/run_stages.py STAGE...
"""

import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def minutes(name, default):
    value = os.environ.get(name, "")
    try:
        return float(value) * 60 if value else default * 60
    except ValueError:
        sys.exit("run_stages.py: %s=%r is not a number of minutes" % (name, value))


def scenario_times(path):
    """[(seconds, scenario, result)] from the times file, slowest first."""
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3 and parts[1].isdigit():
                    rows.append((int(parts[1]), parts[0], parts[2]))
    return sorted(rows, reverse=True)


def slowest(path, running=None, count=3):
    rows = scenario_times(path)[:count]
    names = ["%s (%d s)" % (name, secs) for secs, name, _result in rows]
    if running:
        names.append("%s (running)" % running)
    return ", ".join(names) if names else "none finished yet"


def running_scenario(path):
    """The scenario tools/run-scenarios.sh has started and not yet finished, if any."""
    marker = path + ".running"
    if os.path.exists(marker):
        with open(marker) as f:
            return f.read().strip() or None
    return None


def stop(proc):
    """SIGTERM to the stage's process group, SIGKILL after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def main(stages):
    warn_at = minutes("RHOIM_TEST_WARN_MINUTES", 60)
    stop_at = minutes("RHOIM_TEST_STOP_MINUTES", 80)
    times = os.environ.setdefault("RHOIM_TEST_TIMES", os.path.join(ROOT, "build", "test-times.tsv"))
    os.makedirs(os.path.dirname(times), exist_ok=True)
    for stale in (times, times + ".running"):
        if os.path.exists(stale):
            os.unlink(stale)
    report = []
    started = time.monotonic()
    warned = False
    rc = 0
    for stage in stages:
        print("=== make %s" % stage, flush=True)
        stage_start = time.monotonic()
        # Its own process group, so that a stop takes Molecule, pytest and ansible-playbook with it.
        proc = subprocess.Popen(["make", "--no-print-directory", stage], start_new_session=True)
        while True:
            try:
                rc = proc.wait(timeout=1)
                break
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - started
            if not warned and elapsed > warn_at:
                warned = True
                print("make test: WARNING: %d min spent, past the %d min mark (CI stops at 90); slowest scenarios: %s"
                      % (elapsed // 60, warn_at // 60, slowest(times, running_scenario(times))), file=sys.stderr, flush=True)
            if elapsed > stop_at:
                running = running_scenario(times)
                stop(proc)
                report.append((stage, time.monotonic() - stage_start, "STOPPED"))
                print_report(report, times, started)
                print("make test: STOPPED after %d min, past the %d min budget (CI stops at 90), in stage '%s'%s; "
                      "slowest scenarios: %s. Make the slow scenarios faster or split them; a scenario's "
                      "hosts may be left running (the next run's destroy step removes them)."
                      % (elapsed // 60, stop_at // 60, stage, " (scenario %s)" % running if running else "",
                         slowest(times, running)), file=sys.stderr, flush=True)
                return 124
        report.append((stage, time.monotonic() - stage_start, "ok" if rc == 0 else "FAILED"))
        if rc != 0:
            print_report(report, times, started)
            print("make test: stage '%s' failed (exit %d)" % (stage, rc), file=sys.stderr, flush=True)
            return rc
    print_report(report, times, started)
    return 0


def print_report(report, times, started):
    print("=== stage times")
    for stage, secs, result in report:
        print("%-10s %5ds  %s" % (stage, secs, result))
    rows = scenario_times(times)
    if rows:
        print("=== scenario times (slowest first)")
        for secs, name, result in rows:
            print("%-20s %5ds  %s" % (name, secs, result))
    print("%-10s %5ds" % ("total", time.monotonic() - started), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: run_stages.py STAGE...")
    sys.exit(main(sys.argv[1:]))
