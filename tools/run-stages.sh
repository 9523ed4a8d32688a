#!/usr/bin/env bash
# Runs `make STAGE` for each stage in order, stops at the first failure, and prints what
# each stage cost.
set -uo pipefail
report=()
total_start=$SECONDS
for stage in "$@"; do
  start=$SECONDS
  echo "=== make $stage"
  make --no-print-directory "$stage"
  rc=$?
  report+=("$(printf '%-10s %5ss  %s' "$stage" $((SECONDS - start)) "$([ $rc -eq 0 ] && echo ok || echo FAILED)")")
  if [ $rc -ne 0 ]; then
    printf '%s\n' "=== stage times" "${report[@]}"
    echo "make test: stage '$stage' failed (exit $rc)" >&2
    exit $rc
  fi
done
printf '%s\n' "=== stage times" "${report[@]}" "$(printf '%-10s %5ss' total $((SECONDS - total_start)))"
