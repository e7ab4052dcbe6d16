#!/usr/bin/env bash
# The integration tests against the running lab (make lab-test), in phases. Within a phase, the lanes run at the
# same time: each lane's tests touch lab hosts that no other lane of that phase touches, so their faults cannot
# meet (most of their time is spent waiting on the lab's intervals, not on this machine's CPU).
#
#   phase 1  alerts (gpu-node-1, gpu-node-2, ops-1's Prometheus)  |  gpu_health reactions (gpu-node-3; the longest
#            two lanes start together)
#   phase 2  GPUs, ledger, GPU faults (gpu-node-1)  |  network faults, game day interrupt (gpu-node-2)  |  node faults
#            (gpu-node-3)
#   phase 3  dry run, firewall, Slurm (drains gpu-node-3), the rolling driver upgrade (every node, nothing else may
#            run), then reboot
#
# A test file that exists but is in no phase fails the run, so a new file cannot be left out silently.
# Arguments are passed to every pytest (e.g. -x, -k). LAB_TEST_SERIAL=1 runs the lanes one after the other.
set -uo pipefail
cd "$(dirname "$0")/.."

phases=(
  "tests/integration/test_alerts.py | tests/integration/test_gpu_health.py"
  "tests/integration/test_gpus.py tests/integration/test_ledger_smoke.py tests/integration/test_faults_gpu.py | tests/integration/test_faults_network.py tests/integration/test_gameday.py | tests/integration/test_faults_node.py"
  "tests/integration/test_dry_run.py tests/integration/test_firewall.py tests/integration/test_slurm.py tests/integration/test_rolling_upgrade.py tests/integration/test_reboot.py"
)
logdir=${LAB_TEST_LOG_DIR:-.cache/lab-test-logs}
mkdir -p "$logdir"

listed=" $(printf '%s ' "${phases[@]}" | tr -s ' |' ' ') "
for file in tests/integration/test_*.py; do
  if [[ $listed != *" $file "* ]]; then
    echo "lab-test: $file is in no phase of scripts/lab-test.sh; add it to the lane of the hosts it uses" >&2
    exit 2
  fi
done

started=$(date +%s)
failed=0
for i in "${!phases[@]}"; do
  IFS='|' read -r -a lanes <<<"${phases[$i]}"
  pids=()
  names=()
  for j in "${!lanes[@]}"; do
    files=()
    for f in ${lanes[$j]}; do [ -f "$f" ] && files+=("$f"); done
    [ "${#files[@]}" -gt 0 ] || continue
    log="$logdir/phase$((i + 1))-lane$((j + 1)).log"
    echo "=== lab-test phase $((i + 1)) lane $((j + 1)): ${files[*]}"
    if [ "${LAB_TEST_SERIAL:-0}" = 1 ]; then
      pytest -p no:cacheprovider --durations=5 "$@" "${files[@]}" 2>&1 | tee "$log"
      [ "${PIPESTATUS[0]}" -eq 0 ] || failed=1
    else
      pytest -p no:cacheprovider --durations=5 "$@" "${files[@]}" >"$log" 2>&1 &
      pids+=($!)
      names+=("$log")
    fi
  done
  for k in "${!pids[@]}"; do
    if wait "${pids[$k]}"; then
      sed -n '/slowest/,$p' "${names[$k]}"
    else
      failed=1
      echo "=== FAILED: ${names[$k]}"
      cat "${names[$k]}"
    fi
  done
done
echo "lab-test: $(($(date +%s) - started)) s in all"
exit "$failed"
