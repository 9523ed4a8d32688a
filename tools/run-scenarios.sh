#!/usr/bin/env bash
# make molecule: runs `molecule test -s NAME` for each scenario in order, stops at the first
# failure, and prints what each cost. Each result is appended to $RHOIM_TEST_TIMES (name,
# seconds, result; tab-separated), which make test's budget reads (tools/run_stages.py).
set -uo pipefail
times=${RHOIM_TEST_TIMES:-build/test-times.tsv}
mkdir -p "$(dirname "$times")"
for scenario in "$@"; do
  echo "=== molecule test -s $scenario"
  echo "$scenario" >"$times.running"
  start=$SECONDS
  molecule test -s "$scenario"
  rc=$?
  rm -f "$times.running"
  result=$([ $rc -eq 0 ] && echo ok || echo FAILED)
  printf '%s\t%s\t%s\n' "$scenario" $((SECONDS - start)) "$result" >>"$times"
  echo "=== scenario $scenario: $((SECONDS - start)) s, $result"
  [ $rc -eq 0 ] || exit $rc
done
