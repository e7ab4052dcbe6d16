#!/usr/bin/env bash
# The game day against the lab (`make gameday`, after `make lab` has brought the lab up and converged it):
# `chaosgpu gameday` runs the suite with progress on the terminal and writes reports/<UTC>/ (reports/latest), then
# the summary table is printed. Exit status: chaosgpu gameday's (0 only when every experiment ran, met its objectives
# and left no fault behind; 1 failed; 2 bad input; 3 pre-flight; 130 interrupted).
#
#   GAMEDAY_SUITE   directory of experiments (default experiments/lab)
#   GAMEDAY_ONLY    a subset, e.g. "01,11" (file name prefixes or globs; default: the whole suite)
#   GAMEDAY_ARGS    more `chaosgpu gameday` options, e.g. --stop-on-failure
#   GAMEDAY_PREFLIGHT_WAIT  seconds the pre-flight hypothesis may take to hold (default 180)
#   LAB_INVENTORY   the lab inventory (default inventories/lab)
set -uo pipefail
cd "$(dirname "$0")/.."

inventory=${LAB_INVENTORY:-inventories/lab}
suite=${GAMEDAY_SUITE:-experiments/lab}
reports=${GAMEDAY_REPORTS:-reports}
# A lab just brought up or just tested settles (first scrapes, nodes back from reboots): the suite's pre-flight
# hypothesis is asked again for up to this long before the game day gives up (the ledger check never waits).
args=(gameday --inventory "$inventory" --suite "$suite" --reports "$reports"
  --preflight-wait "${GAMEDAY_PREFLIGHT_WAIT:-180}")
[ -z "${GAMEDAY_ONLY:-}" ] || args+=(--only "$GAMEDAY_ONLY")
# shellcheck disable=SC2206 # GAMEDAY_ARGS is a list of options, split on purpose
[ -z "${GAMEDAY_ARGS:-}" ] || args+=(${GAMEDAY_ARGS})

# One user of the lab at a time (the lab tests take the same lock); wait at most 30 minutes for it.
lock=${GPUOPS_LAB_LOCK:-/tmp/gpuops-lab.lock}
if command -v flock >/dev/null; then
  exec 9>"$lock"
  flock -w 1800 9 || {
    echo "gameday: the lab is busy (another lab run holds $lock)" >&2
    exit 3
  }
fi

chaosgpu "${args[@]}"
rc=$?
summary=$reports/latest/summary.md
if [ -f "$summary" ] && [ "$rc" -ne 2 ] && [ "$rc" -ne 3 ]; then
  echo
  sed -n '/^| #/,/^$/p' "$summary"
  echo "Report: $reports/latest/report.html (summary.json, summary.md, junit.xml, one journal per experiment)"
fi
exit "$rc"
