#!/usr/bin/env bash
# Run `molecule test -s NAME` for every scenario named on the command line, MOLECULE_JOBS at a time, and print
# each scenario's wall time.
#
#   MOLECULE_JOBS=1 (default)  one after the other, Molecule's output streamed as it comes
#   MOLECULE_JOBS=N            N scenarios at once (each has its own container, molecule-<scenario>); their
#                              output goes to $MOLECULE_LOG_DIR/<scenario>.log and a failing scenario's log is
#                              printed whole. After a failure no new scenario starts; the running ones finish.
#                              The longest scenarios start first (their last wall times, kept in
#                              $MOLECULE_DURATIONS, default $MOLECULE_LOG_DIR/durations.tsv, else the committed
#                              molecule/durations.tsv; an unknown one counts as longest), so that no long one starts
#                              last and runs alone. The file only orders the queue; a missing or odd one leaves the
#                              order as given.
# Exit status: 0 when every scenario passed, 1 otherwise (the failed ones are named).
set -uo pipefail

jobs=${MOLECULE_JOBS:-1}
logdir=${MOLECULE_LOG_DIR:-.cache/molecule-logs}
if ! [[ $jobs =~ ^[1-9][0-9]*$ ]]; then
  echo "molecule-run: MOLECULE_JOBS must be a positive integer, got '$jobs'" >&2
  exit 2
fi
if [ "$#" -eq 0 ]; then
  echo "molecule-run: no scenario named" >&2
  exit 2
fi
for s in "$@"; do
  if [ ! -f "molecule/$s/molecule.yml" ]; then
    echo "molecule-run: no scenario '$s' (molecule/$s/molecule.yml does not exist)" >&2
    exit 2
  fi
done
mkdir -p "$logdir"
durations=${MOLECULE_DURATIONS:-$logdir/durations.tsv}
seed=molecule/durations.tsv # committed: the last measured times, for a fresh clone

# Longest first by the recorded wall times (scenario<TAB>seconds); unknown ones first of all.
if [ "$jobs" -gt 1 ] && [ "$#" -gt 1 ]; then
  mapfile -t ordered < <(
    for s in "$@"; do
      known=$durations
      [ -s "$known" ] || known=$seed
      t=$(awk -F'\t' -v s="$s" '$1 == s && $2 ~ /^[0-9]+$/ {t = $2} END {print (t == "" ? 999999 : t)}' \
        "$known" 2>/dev/null || echo 999999)
      printf '%s\t%s\n' "${t:-999999}" "$s"
    done | sort -t$'\t' -k1,1nr -k2,2 | cut -f2
  )
  [ "${#ordered[@]}" -eq "$#" ] && set -- "${ordered[@]}"
fi
record_duration() { # scenario seconds
  local tmp
  tmp=$(mktemp "$(dirname "$durations")/.durations.XXXXXX") || return 0
  { awk -F'\t' -v s="$1" '$1 != s' "$durations" 2>/dev/null; printf '%s\t%s\n' "$1" "$2"; } >"$tmp" \
    && mv -f "$tmp" "$durations" || rm -f "$tmp"
}

started=$(date +%s)
failed=()
declare -A pid_scenario=() scenario_start=()

report() { # scenario status
  local s=$1 rc=$2 took=$(($(date +%s) - ${scenario_start[$1]}))
  if [ "$rc" -eq 0 ]; then
    record_duration "$s" "$took"
    echo "--- molecule scenario $s passed in ${took} s"
  else
    failed+=("$s")
    if [ "$jobs" -gt 1 ]; then
      echo "=== output of molecule scenario $s ($logdir/$s.log)"
      cat "$logdir/$s.log"
    fi
    echo "--- molecule scenario $s FAILED after ${took} s"
  fi
}

if [ "$jobs" -eq 1 ]; then
  for s in "$@"; do
    echo "=== molecule test -s $s"
    scenario_start[$s]=$(date +%s)
    molecule test -s "$s"
    rc=$?
    report "$s" "$rc"
    [ "$rc" -eq 0 ] || break
  done
else
  queue=("$@")
  while [ "${#queue[@]}" -gt 0 ] || [ "${#pid_scenario[@]}" -gt 0 ]; do
    while [ "${#failed[@]}" -eq 0 ] && [ "${#queue[@]}" -gt 0 ] && [ "${#pid_scenario[@]}" -lt "$jobs" ]; do
      s=${queue[0]}
      queue=("${queue[@]:1}")
      echo "=== molecule test -s $s (log: $logdir/$s.log)"
      scenario_start[$s]=$(date +%s)
      molecule test -s "$s" >"$logdir/$s.log" 2>&1 &
      pid_scenario[$!]=$s
    done
    [ "${#failed[@]}" -eq 0 ] || queue=()
    [ "${#pid_scenario[@]}" -gt 0 ] || break
    wait -n -p done_pid
    rc=$?
    s=${pid_scenario[$done_pid]}
    unset "pid_scenario[$done_pid]"
    report "$s" "$rc"
  done
fi

echo "molecule-run: $# scenario(s), ${#failed[@]} failed, $(($(date +%s) - started)) s in all (MOLECULE_JOBS=$jobs)"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "molecule-run: FAILED: ${failed[*]}"
  exit 1
fi
