"""What every fault's integration test proves: injected -> observable on the host -> reverted three ways -> the
host as it was before.

The three ways a fault must revert:
1. rollback: ``chaosgpu.fleet.actions.revert_faults`` (what an experiment's rollbacks call), in this process;
2. ``chaosgpu cleanup -i inventories/lab -l <host>`` (the operator's command), in a separate process;
3. the host's own deadline: the action runs in a child process that is then killed with SIGKILL, as if the
   controller died mid-experiment; the transient timer on the host must revert it at the deadline.

"As it was before" is a snapshot of what faults change: the nftables ruleset (without counters), the tc qdiscs,
the running services, failed units, the simulated GPUs' state (stable fields), the fault ledger, DNS and hosts
files, and leftover load processes. A test may add its own probes of state through ``extra``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labhosts import INVENTORY, ROOT, Host, wait_for

CONFIGURATION: dict[str, Any] = {"chaosgpu_inventory": str(INVENTORY)}

# Every command must print the same thing before a fault and after its revert.
SNAPSHOT: dict[str, str] = {
    "nftables": "sudo nft -s list ruleset",
    "qdiscs": "sudo tc qdisc show",
    "services": "systemctl list-units --type=service --state=running --no-legend --plain | awk '{print $1}' | sort",
    "failed units": "systemctl list-units --state=failed --no-legend --plain",
    "gpus": (
        'sudo python3 -c \'import json; d = json.load(open("/var/lib/gpusim/state.json")); '
        'print(json.dumps([{k: g.get(k) for k in ("index", "lost", "compute_mode", "ecc", "remap", "retired", '
        '"last_xid", "persistence_forced", "overrides")} for g in d["gpus"]], sort_keys=True))\''
    ),
    "gpu processes": "nvidia-smi --query-compute-apps=pid,process_name --format=csv,noheader",
    "ledger": "sudo ls -A /var/lib/chaosgpu/faults 2>/dev/null || true",
    "dns": "sha256sum /etc/resolv.conf /etc/hosts /etc/nsswitch.conf",
    "load processes": "pgrep -a -f 'stress-ng|gpusim-hog|chaosgpu-fill' | grep -v pgrep || true",
}


def snapshot(host: Host, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every snapshot command's stdout, all in one SSH call (each between marker lines of its own)."""
    commands = {**SNAPSHOT, **(extra or {})}
    marker = f"@@faultcheck-{uuid.uuid4().hex}"
    script = "".join(
        f"printf '%s\\n' '{marker} {i}'; {{ {command} ; }} 2>/dev/null; printf '\\n'; "
        for i, command in enumerate(commands.values())
    )
    result = host.run(script + f"printf '%s\\n' '{marker} end'")
    parts = re.split(rf"^{marker} (\d+|end)\n", result.stdout, flags=re.MULTILINE)
    outputs = {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2) if parts[i] != "end"}
    assert len(outputs) == len(commands), f"{host.name}: snapshot incomplete (rc {result.returncode}): {result.stderr}"
    return {name: outputs[i] for i, name in enumerate(commands)}


def differences(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    return {name: (before[name], after.get(name, "")) for name in before if before[name] != after.get(name, "")}


def chaosgpu_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chaosgpu.cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class FaultCase:
    """One fault: the action to call (module, function, keyword arguments without configuration/secrets), the
    host it lands on, and how to see it there."""

    module: str
    action: str
    arguments: dict[str, Any]
    host: Host
    injected: Callable[[Host], bool]
    extra: dict[str, str] = field(default_factory=dict)
    # The deadline given to the fault in the SIGKILL case (the action must take ``duration_s``).
    deadline_s: float = 20
    configuration: dict[str, Any] = field(default_factory=lambda: dict(CONFIGURATION))

    def call(self, **override: Any) -> Any:
        module = __import__(self.module, fromlist=[self.action])
        return getattr(module, self.action)(**{**self.arguments, **override}, configuration=self.configuration)


def _settle(case: FaultCase, before: Mapping[str, str], deadline_s: float) -> dict[str, tuple[str, str]]:
    """Wait (bounded) for the host to be as before; the differences left when the time is up."""
    left: dict[str, tuple[str, str]] = {}

    def same() -> bool:
        nonlocal left
        left = differences(before, snapshot(case.host, case.extra))
        return not left

    wait_for(same, deadline_s, interval_s=1.0)
    return left


def check_rollback(case: FaultCase) -> None:
    from chaosgpu.fleet.actions import revert_faults  # noqa: PLC0415 - the package under test, imported late

    before = snapshot(case.host, case.extra)
    case.call()
    try:
        assert case.injected(case.host), f"{case.action}: not observable on {case.host.name} after injection"
    finally:
        reverted = revert_faults(pattern=case.host.name, configuration=case.configuration)
    assert reverted, f"{case.action}: the rollback found nothing of this run to revert on {case.host.name}"
    left = _settle(case, before, 15)
    assert not left, f"{case.action}: {case.host.name} differs after the rollback: {left}"


def check_cleanup(case: FaultCase) -> None:
    before = snapshot(case.host, case.extra)
    case.call()
    try:
        assert case.injected(case.host), f"{case.action}: not observable on {case.host.name} after injection"
    finally:
        result = chaosgpu_cli("cleanup", "-i", str(INVENTORY), "-l", case.host.name)
    assert result.returncode == 0, f"chaosgpu cleanup exited {result.returncode}: {result.stdout}{result.stderr}"
    left = _settle(case, before, 15)
    assert not left, f"{case.action}: {case.host.name} differs after chaosgpu cleanup: {left}"


def check_deadline_after_sigkill(case: FaultCase) -> None:
    """The controller process dies (SIGKILL) with the fault in place; the host reverts it at the deadline."""
    before = snapshot(case.host, case.extra)
    program = (
        "import json, sys, time\n"
        f"module = __import__({case.module!r}, fromlist=[{case.action!r}])\n"
        f"getattr(module, {case.action!r})(**json.loads(sys.argv[1]), configuration=json.loads(sys.argv[2]))\n"
        "print('injected', flush=True)\n"
        "time.sleep(3600)\n"
    )
    arguments = {**case.arguments, "duration_s": case.deadline_s}
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-c", program, json.dumps(arguments), json.dumps(case.configuration)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # blocks until the action returned (or the child died)
        assert line.strip() == "injected", (
            f"{case.action} in the child failed: {line}{child.stderr.read() if child.stderr else ''}"
        )
        assert case.injected(case.host), f"{case.action}: not observable on {case.host.name} after injection"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    # Right after the kill the fault is still there: nothing but the host's timer can revert it now.
    assert case.injected(case.host), f"{case.action}: gone from {case.host.name} before its deadline"
    remaining = case.deadline_s - (time.monotonic() - started)
    left = _settle(case, before, max(remaining, 0) + 20)
    assert not left, f"{case.action}: {case.host.name} differs {case.deadline_s:g} s + 20 s after the kill: {left}"
