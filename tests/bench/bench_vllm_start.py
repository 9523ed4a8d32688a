"""Start time of rhoim-vllm@<name>.service against a bare ``vllm serve`` (not run by make test).

    .venv/bin/python tests/bench/bench_vllm_start.py [--host rhoim-vllm] [--model tiny] [--runs 3]

Needs a running local test host, reached over SSH, where the vllm_service role has converged (for example
``molecule converge -s vllm_service``, or the ``make demo`` host). On that host, alternately:

- unit: ``systemctl start rhoim-vllm@<name>.service`` until ``/health`` answers 200;
- bare: ``vllm serve --config /etc/rhoim/vllm/<name>.yaml`` as the service user, with the unit's
  environment file, the same cache folder (same cache state) and the same flags, until ``/health``
  answers 200.

Each run is timed inside the host (no connection latency) and its peak memory is the largest sum of
the RSS of the service user's processes, sampled every 0.5 s until one completion has been served. Prints both
medians, their ratio (target: at most 1.1) and the peak memory.
"""

import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests", "support"))

import local_host  # test support, not a package

SCRIPT = r"""
set -eu
mode=$1 unit=$2 model=$3 port=$4
rm -f /tmp/bench.peak; touch /tmp/bench.run
( peak=0; while [ -e /tmp/bench.run ]; do
    s=$(ps -u rhoim -o rss= | awk '{s+=$1} END {print s+0}')
    [ "$s" -gt "$peak" ] && peak=$s && echo "$peak" >/tmp/bench.peak
    sleep 0.5; done ) &
sampler=$!
t0=$(date +%s%N)
if [ "$mode" = unit ]; then
  systemctl reset-failed "$unit" 2>/dev/null || true
  systemctl start "$unit"
else
  cache=/var/cache/rhoim-vllm/$model
  setsid runuser -u rhoim -- env -i PATH=/usr/bin:/bin HOME=/var/lib/rhoim \
    $(grep -v '^#' /etc/rhoim/vllm/$model.env | tr -d '"' | grep -v '^RHOIM_') \
    sh -c "cd $cache && exec /opt/rhoim/vllm/bin/vllm serve --config /etc/rhoim/vllm/$model.yaml" \
    >/tmp/bench-bare.log 2>&1 &
  bare=$!
fi
until curl -fs -o /dev/null --max-time 2 http://127.0.0.1:$port/health; do sleep 0.2; done
t1=$(date +%s%N)
if [ "$mode" = unit ]; then
  curl -fs -o /dev/null -H "Authorization: Bearer $(cat /etc/rhoim/credentials/$model.api_key)" -H 'Content-Type: application/json' \
    -d '{"model":"'"$model"'","prompt":"def hello(","max_tokens":16}' http://127.0.0.1:$port/v1/completions
else
  curl -fs -o /dev/null -H 'Content-Type: application/json' \
    -d '{"model":"'"$model"'","prompt":"def hello(","max_tokens":16}' http://127.0.0.1:$port/v1/completions
fi
sleep 1
rm -f /tmp/bench.run; wait $sampler || true
if [ "$mode" = unit ]; then
  systemctl stop "$unit"
else
  # dash's kill takes no "--"; the process group of the setsid'd server.
  pg=$(ps -o pgid= -p "$bare" | tr -d ' ')
  [ -n "$pg" ] && [ "$pg" != "$(ps -o pgid= -p $$ | tr -d ' ')" ] || { echo "bare server has no own process group" >&2; exit 1; }
  kill -TERM -"$pg" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 -"$pg" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -"$pg" 2>/dev/null || true
fi
while curl -s -o /dev/null --max-time 1 http://127.0.0.1:$port/health; do sleep 0.5; done
echo "RESULT $(( (t1 - t0) / 1000000 )) $(cat /tmp/bench.peak)"
"""


def on_host(host, *command, check=True, **kw):
    return subprocess.run(local_host.ssh_argv(host, *command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=check, **kw)


def run(host, mode, unit, model, port):
    # The script travels on stdin, so the timing runs inside the host.
    proc = on_host(host, "sh", "-s", "--", mode, unit, model, str(port), input=SCRIPT, timeout=900, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            ms, peak_kib = line.split()[1:3]
            return int(ms) / 1000.0, int(peak_kib) / 1024.0 / 1024.0
    sys.exit("%s run failed (rc %d):\n%s" % (mode, proc.returncode, proc.stdout[-3000:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="rhoim-vllm", help="a local test host (tests/support/local_host.py)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    unit = "rhoim-vllm@%s.service" % args.model
    on_host(args.host, "systemctl", "stop", unit)
    times = {"unit": [], "bare": []}
    peaks = {"unit": [], "bare": []}
    for i in range(args.runs):
        for mode in ("unit", "bare") if i % 2 == 0 else ("bare", "unit"):
            seconds, peak = run(args.host, mode, unit, args.model, args.port)
            times[mode].append(seconds)
            peaks[mode].append(peak)
            print("run %d %-4s start to /health 200: %6.1f s, peak RSS %.2f GiB" % (i + 1, mode, seconds, peak), flush=True)
    on_host(args.host, "systemctl", "reset-failed", unit, check=False)
    on_host(args.host, "systemctl", "start", unit)
    unit_median = statistics.median(times["unit"])
    bare_median = statistics.median(times["bare"])
    print("median unit %.1f s, bare vllm serve %.1f s, ratio %.3f (target <= 1.1)" % (unit_median, bare_median, unit_median / bare_median))
    print("peak RSS (sum over vLLM processes): unit %.2f GiB, bare %.2f GiB" % (max(peaks["unit"]), max(peaks["bare"])))


if __name__ == "__main__":
    main()
