"""Node faults on gpu-node-3, through faultcheck: each injected, seen on the host, reverted by the rollback, by
`chaosgpu cleanup` and by the host's deadline after the controller is killed, and the host as before each time.
Faults the host refuses leave nothing. Last, power: off and on again (docker driver), the controller-side guard
powering a host on after the controller died, and a reboot that waits for the new boot; every service back."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from faultcheck import (
    CONFIGURATION,
    FaultCase,
    check_cleanup,
    check_deadline_after_sigkill,
    check_rollback,
    differences,
    snapshot,
)
from labhosts import ROOT, Host, Lab, wait_for

NODE = "gpu-node-3"
DEADLINE_S = 15
FILL_DIR = "/var/tmp"  # noqa: S108 - a directory on the lab node, the fill fault's target
# What node faults leave besides faultcheck's snapshot: state files, chaosgpu's units (the stress services and the
# deadline timers), fill files, load generator processes.
EXTRA = {
    "node state": "sudo ls -A /var/lib/chaosgpu/state 2>/dev/null || true",
    "chaosgpu units": "systemctl list-units --all --no-legend --plain 'chaosgpu-*' | awk '{print $1}'",
    "fill files": f"ls -A {FILL_DIR} | grep '^chaosgpu-' || true",
    "load generators": "pgrep -af 'chaosgpu-stress' | grep -v pgrep || true",
}
CHECKS = {"rollback": check_rollback, "cleanup": check_cleanup, "deadline": check_deadline_after_sigkill}
# Power: how long a lab node may take to boot and answer SSH, and then to have every unit started.
BACK_S = 120
SETTLE_S = 90


@pytest.fixture(scope="module")
def node(lab: Lab) -> Host:
    assert NODE in lab.hosts, f"the lab inventory has no {NODE}"
    host = lab.hosts[NODE]
    left = host.check("sudo ls -A /var/lib/chaosgpu/faults 2>/dev/null || true").split()
    assert not left, f"{NODE} has faults in its ledger before the tests start: {left}"
    return host


def main_pid(node: Host, unit: str) -> str:
    return node.check(f"systemctl show -p MainPID --value {shlex.quote(unit)}").strip()


def stress_pids(node: Host, mode: str) -> list[str]:
    return node.run(f"pgrep -f 'chaosgpu-stress {mode} '").stdout.split()


def cpu_seconds(node: Host, pids: list[str]) -> float:
    """CPU seconds (user + system) the processes have used so far, on the host's clock ticks."""
    script = (
        "import os, sys; t = 0\n"
        "for p in sys.argv[1:]:\n"
        "    try: f = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split(); t += int(f[11]) + int(f[12])\n"
        "    except OSError: pass\n"
        "print(t / os.sysconf('SC_CLK_TCK'))\n"
    )
    return float(node.check(f"python3 -c {shlex.quote(script)} {' '.join(pids)}"))


def cpu_share(node: Host, seconds: float = 2.0) -> float:
    """CPU the CPU load generator used per wall second, over ``seconds``."""
    pids = stress_pids(node, "cpu")
    if not pids:
        return 0.0
    before, started = cpu_seconds(node, pids), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(node, pids) - before) / (time.monotonic() - started)


def resident_mib(node: Host) -> float:
    pids = stress_pids(node, "memory")
    if not pids:
        return 0.0
    rss = node.check(f"awk '/^VmRSS:/ {{s += $2}} END {{print s + 0}}' {' '.join(f'/proc/{p}/status' for p in pids)}")
    return float(rss) / 1024


def _killed(node: Host, unit: str, action: str, arguments: dict[str, Any]) -> FaultCase:
    """A kill fault on ``unit``'s process: seen as a main process other than the one running now (or none)."""
    pid = main_pid(node, unit)
    return FaultCase(
        "chaosgpu.node.actions",
        action,
        {"pattern": NODE, **arguments},
        node,
        lambda n: main_pid(n, unit) != pid,
        extra=EXTRA,
        deadline_s=DEADLINE_S,
    )


# Each fault: how to call it on NODE, and how to see it there. Built right before each check (a kill fault is seen
# as a main process other than the one running when the case was built).
CASES: dict[str, Callable[[Host], FaultCase]] = {
    "stop_service": lambda node: FaultCase(
        "chaosgpu.node.actions",
        "stop_service",
        {"pattern": NODE, "service": "node_exporter"},
        node,
        lambda n: n.run("systemctl is-active node_exporter").stdout.strip() == "inactive",
        extra=EXTRA,
        deadline_s=DEADLINE_S,
    ),
    "kill_service": lambda node: _killed(
        node, "node_exporter", "kill_service", {"service": "node_exporter", "signal": "SIGTERM"}
    ),
    "kill_process": lambda node: _killed(
        node,
        "dcgm-exporter",
        "kill_process",
        {"process": "/usr/local/bin/dcgm-exporter", "full_command_line": True, "signal": "TERM"},
    ),
    # One worker at 50 %: seen when it uses at least half of that (a budget from the configured load, on a
    # shared machine).
    "stress_cpu": lambda node: FaultCase(
        "chaosgpu.node.actions",
        "stress_cpu",
        {"pattern": NODE, "workers": 1, "load_percent": 50},
        node,
        lambda n: cpu_share(n) >= 0.5 * 0.5,
        extra=EXTRA,
        deadline_s=DEADLINE_S,
    ),
    "stress_memory": lambda node: FaultCase(
        "chaosgpu.node.actions",
        "stress_memory",
        {"pattern": NODE, "size_mb": 128},
        node,
        lambda n: resident_mib(n) >= 128,
        extra=EXTRA,
        deadline_s=DEADLINE_S,
    ),
    "fill_disk": lambda node: FaultCase(
        "chaosgpu.node.actions",
        "fill_disk",
        {"pattern": NODE, "path": FILL_DIR, "size_mb": 64},
        node,
        lambda n: n.run(f"du -k {FILL_DIR}/chaosgpu-fill-disk-* | awk '{{print $1}}'").stdout.split() == ["65536"],
        extra=EXTRA,
        deadline_s=DEADLINE_S,
    ),
}


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("fault", list(CASES))
def test_fault_is_seen_and_reverted(node: Host, fault: str, check: str) -> None:
    CHECKS[check](CASES[fault](node))


REFUSED_ON_THE_HOST = [
    ("stop_service", {"service": "no-such-unit"}, "no-such-unit.service is not a loaded unit on gpu-node-3"),
    ("kill_process", {"process": "no-such-process-x"}, "no process on gpu-node-3 matches"),
    ("stress_memory", {"size_mb": 1 << 24}, "below the margin (min_available_mb=1024, min_available_percent=10)"),
    ("fill_disk", {"path": FILL_DIR, "size_mb": 1, "min_free_percent": 99.9}, "below the margin"),
    ("fill_disk", {"path": "/nonexistent", "size_mb": 1}, "/nonexistent is not a directory on gpu-node-3"),
]


def test_faults_the_host_refuses_leave_nothing(node: Host) -> None:
    """Each refused by the host itself (what it checks right before acting), each saying why; one snapshot before
    and after them all."""
    from chaosgpu.node import actions  # noqa: PLC0415 - the package under test, imported late

    before = snapshot(node, EXTRA)
    for action, arguments, said in REFUSED_ON_THE_HOST:
        with pytest.raises(ActivityFailed, match="reverted at once, nothing is left") as refused:
            getattr(actions, action)(pattern=NODE, **arguments, duration_s=60, configuration=CONFIGURATION)
        assert said in str(refused.value), f"{action} {arguments}: {refused.value}"
    left = differences(before, snapshot(node, EXTRA))
    assert not left, f"the refused faults left {NODE} different: {left}"


# --- power ------------------------------------------------------------------------------------------------------


@pytest.fixture
def power_configuration(tmp_path: Path) -> dict[str, Any]:
    return {**CONFIGURATION, "chaosgpu_power_guard_dir": str(tmp_path / "guard")}


@pytest.fixture
def powered(node: Host, power_configuration: dict[str, Any]) -> Iterator[dict[str, str]]:
    """The node's state before a power test; whatever happens, the node is powered on again afterwards and the
    test waits until it has booted."""
    from chaosgpu.node import actions  # noqa: PLC0415

    settled = node.run(f"timeout {SETTLE_S} systemctl is-system-running --wait", timeout=SETTLE_S + 15)
    assert settled.stdout.strip() == "running", f"{NODE} is not settled before the power test: {settled.stdout}"
    yield booted_snapshot(node)
    actions.power_on(pattern=NODE, wait_s=BACK_S, configuration=power_configuration)


def reachable(configuration: dict[str, Any]) -> bool:
    from chaosgpu.node.probes import host_reachable  # noqa: PLC0415

    return host_reachable(pattern=NODE, timeout_s=5, configuration=configuration)[NODE]


# Docker's embedded DNS (127.0.0.11) gets new source ports each time a container starts: the one rule a boot may
# change that is not the host's own.
_DOCKER_DNS_PORT = re.compile(r"(ip saddr 127\.0\.0\.11 (?:tcp|udp) sport )\d+")


def booted_snapshot(node: Host) -> dict[str, str]:
    """faultcheck's snapshot (and EXTRA), with the ports of Docker's DNS rules left out."""
    state = snapshot(node, EXTRA)
    state["nftables"] = _DOCKER_DNS_PORT.sub(r"\1<port>", state["nftables"])
    return state


def assert_back_as_before(node: Host, before: dict[str, str], configuration: dict[str, Any]) -> None:
    """Reachable, booted, every service running as before, no unit failed, no power guard left."""
    from chaosgpu.node import power_guard  # noqa: PLC0415
    from chaosgpu.node.probes import service_active  # noqa: PLC0415

    assert reachable(configuration), f"{NODE} does not answer SSH"
    booted = node.run(f"timeout {SETTLE_S} systemctl is-system-running --wait", timeout=SETTLE_S + 15)
    assert booted.stdout.strip() == "running", f"{NODE} after power on: systemd is {booted.stdout.strip()!r}"
    left: dict[str, tuple[str, str]] = {}

    def same() -> bool:
        nonlocal left
        left = differences(before, booted_snapshot(node))
        return not left

    wait_for(same, SETTLE_S, 2)
    assert not left, f"{NODE} differs after power on: {left}"
    states = service_active(service="node_exporter", pattern=NODE, configuration=configuration)
    assert states == {NODE: "active"}
    assert power_guard.pending(power_guard.guard_dir(configuration)) == []


def test_power_off_then_power_on(node: Host, powered: dict[str, str], power_configuration: dict[str, Any]) -> None:
    from chaosgpu.node import actions, power_guard  # noqa: PLC0415

    off = actions.power_off(pattern=NODE, duration_s=300, configuration=power_configuration)
    assert off["hosts"] == {NODE: "docker stop -t 30 gpuops-lab-gpu-node-3"}
    assert not reachable(power_configuration), f"{NODE} still answers SSH after power_off"
    assert [g.hosts for g in power_guard.pending(power_guard.guard_dir(power_configuration))] == [(NODE,)]

    on = actions.power_on(pattern=NODE, wait_s=BACK_S, configuration=power_configuration)
    assert on["disarmed"] == [off["guard"]]
    assert NODE in on["back_after_s"]
    assert_back_as_before(node, powered, power_configuration)


def test_the_guard_powers_the_host_on_after_the_controller_died(
    node: Host, powered: dict[str, str], power_configuration: dict[str, Any]
) -> None:
    deadline_s = 10
    program = (
        "import json, sys, time\n"
        "from chaosgpu.node.actions import power_off\n"
        "power_off(pattern=sys.argv[1], force=True, duration_s=float(sys.argv[2]), "
        "configuration=json.loads(sys.argv[3]))\n"
        "print('off', flush=True)\n"
        "time.sleep(3600)\n"
    )
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-c", program, NODE, str(deadline_s), json.dumps(power_configuration)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "off", (
            f"power_off in the child failed: {line}{child.stderr.read() if child.stderr else ''}"
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert not reachable(power_configuration), f"{NODE} answers SSH right after a forced power_off"
    back, _ = wait_for(lambda: reachable(power_configuration), deadline_s + BACK_S, 2)
    assert back, f"{NODE} was not powered on by its guard within {deadline_s} s + {BACK_S} s"
    assert time.monotonic() - started >= deadline_s - 1, "the guard powered the host on before its deadline"
    assert_back_as_before(node, powered, power_configuration)


def test_reboot_waits_for_the_new_boot(
    node: Host, powered: dict[str, str], power_configuration: dict[str, Any]
) -> None:
    from chaosgpu.node import actions  # noqa: PLC0415
    from chaosgpu.node.reach import BOOT_IDENTITY  # noqa: PLC0415

    boot = node.check(BOOT_IDENTITY)
    done = actions.reboot(pattern=NODE, wait_s=BACK_S, configuration=power_configuration)
    assert done["hosts"] == {NODE: "docker restart -t 30 gpuops-lab-gpu-node-3"}
    assert NODE in done["back_after_s"]
    assert node.check(BOOT_IDENTITY) != boot, "reboot returned but the host has not booted again"
    assert_back_as_before(node, powered, power_configuration)
