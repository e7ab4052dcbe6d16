"""The GPU faults on the lab's gpu-node-1 (simulated GPUs): each revertible fault injected -> observable on the node
-> reverted three ways (rollback, `chaosgpu cleanup`, the node's deadline after the controller is SIGKILLed) -> the
node as before (faultcheck). The faults that cannot be undone (a killed process, a kernel-log line, an XID where no
recovery command is set) are observable, in the ledger with a recorded no-op revert until the rollback, and leave
nothing in the ledger after it; `gpusim boot` brings the GPUs back. The probes read the same faults, and Prometheus
fires the XID alert within a budget derived from the configured intervals.

gpu-node-1 only, and its GPUs 4-7 where a fault needs a GPU (the alert test elsewhere uses GPU 0). The XIDs fire the
lab's GpuXidFatal alert for gpu-node-1 for a few minutes, as real ones would.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from faultcheck import (
    CONFIGURATION,
    FaultCase,
    check_cleanup,
    check_deadline_after_sigkill,
    check_rollback,
    snapshot,
)
from labhosts import Host, Lab, unit_option_s, wait_for
from labmonitoring import Monitoring

from chaosgpu.activity import get_inventory, get_transport
from chaosgpu.fleet.actions import revert_faults
from chaosgpu.fleet.probes import active_faults
from chaosgpu.gpu import actions, commands, probes
from chaosgpu.ledger import apply_fault, revert_fault

NODE = "gpu-node-1"
PROMETHEUS = "http://127.0.0.1:19090"
DEADLINE_S = 15
# What every GPU fault may leave behind besides faultcheck's snapshot: saved previous states, load units.
EXTRA = {
    "gpu saved state": "sudo ls -A /var/lib/chaosgpu/gpu 2>/dev/null || true",
    "gpu load units": "systemctl list-units --all --no-legend --plain 'chaosgpu-gpuload-*' | awk '{print $1}'",
}


@pytest.fixture(scope="module")
def node(lab: Lab) -> Host:
    return lab.hosts[NODE]


@pytest.fixture
def fresh(node: Host) -> Iterator[Host]:
    """The node after `gpusim boot` (no XID, no GPU lost, volatile counters clear) with an empty fault ledger, so a
    fault's effect is new and the snapshot taken before it is the one its revert must return to."""
    node.check("sudo gpusim boot")
    leftover = node.run("sudo ls -A /var/lib/chaosgpu/faults 2>/dev/null").stdout.split()
    assert not leftover, f"{NODE}'s ledger holds faults before the test: {leftover}"
    yield node
    node.run("sudo gpusim boot")


def smi(node: Host, fields: str, gpu: int) -> str:
    return node.run(f"nvidia-smi --query-gpu={fields} --format=csv,noheader,nounits -i {gpu}").stdout.strip()


def bus_id(node: Host, gpu: int) -> str:
    return smi(node, "pci.bus_id", gpu)  # 00000000:DB:00.0


def lost(node: Host, gpu_bus: str) -> bool:
    listing = node.run("nvidia-smi -L")
    return listing.returncode == 15 and f"GPU {gpu_bus[4:]}: GPU is lost" in listing.stdout


def case(action: str, arguments: dict[str, Any], node: Host, injected: Callable[[Host], bool]) -> FaultCase:
    return FaultCase(
        "chaosgpu.gpu.actions", action, {"pattern": NODE, **arguments}, node, injected, dict(EXTRA), DEADLINE_S
    )


def revertible_cases(node: Host) -> dict[str, FaultCase]:
    xid_bus = bus_id(node, 7)
    return {
        "xid-79-through-dcgm": case("inject_xid", {"xid": 79, "gpus": [7]}, node, lambda n: lost(n, xid_bus)),
        "dbe": case(
            "inject_memory_error",
            {"event": "dbe", "gpus": [5], "errors": 2},
            node,
            lambda n: (
                smi(n, "ecc.errors.uncorrected.volatile.total,ecc.errors.uncorrected.aggregate.total", 5) == "2, 2"
            ),
        ),
        "row-remap-uncorrectable": case(
            "inject_memory_error",
            {"event": "remap-uncorrectable", "gpus": [6]},
            node,
            lambda n: smi(n, "remapped_rows.uncorrectable,remapped_rows.pending", 6) == "1, Yes",
        ),
        "compute-mode": case(
            "set_compute_mode",
            {"mode": "EXCLUSIVE_PROCESS", "gpus": [5, 6]},
            node,
            lambda n: [smi(n, "compute_mode", g) for g in (5, 6)] == ["Exclusive_Process"] * 2,
        ),
        "memory-pressure": case(
            "pressure_gpu_memory",
            {"gpus": [5], "memory_fraction": 0.5},
            node,
            lambda n: int(smi(n, "memory.used", 5) or 0) >= int(smi(n, "memory.total", 5)) // 2,
        ),
        "compute-burn": case(
            "burn_gpu_compute", {"gpus": [6], "memory_mib": 2048}, node, lambda n: smi(n, "utilization.gpu", 6) == "100"
        ),
        "services": case(
            "stop_gpu_services",
            {"services": ["dcgm-exporter", "nvidia-dcgm"]},
            node,
            lambda n: n.run("systemctl is-active dcgm-exporter nvidia-dcgm").stdout.split() == ["inactive"] * 2,
        ),
    }


# Every revertible action, proven all three ways; a second memory event (same commands, other DCGM fields) by rollback.
REVERTIBLE = ["xid-79-through-dcgm", "dbe", "compute-mode", "memory-pressure", "compute-burn", "services"]


@pytest.mark.parametrize("name", [*REVERTIBLE, "row-remap-uncorrectable"])
def test_fault_reverts_by_rollback(fresh: Host, name: str) -> None:
    check_rollback(revertible_cases(fresh)[name])


@pytest.mark.parametrize("name", REVERTIBLE)
def test_fault_reverts_by_chaosgpu_cleanup(fresh: Host, name: str) -> None:
    check_cleanup(revertible_cases(fresh)[name])


@pytest.mark.parametrize("name", REVERTIBLE)
def test_fault_reverts_at_its_deadline_after_the_controller_is_killed(fresh: Host, name: str) -> None:
    check_deadline_after_sigkill(revertible_cases(fresh)[name])


# --- faults that cannot be undone ---------------------------------------------------------------------------------


def ledger_ids(node: Host) -> list[str]:
    return sorted(
        name.removesuffix(".json")
        for name in node.run("sudo ls -A /var/lib/chaosgpu/faults 2>/dev/null").stdout.split()
        if name.endswith(".json")
    )


def compute_pids(node: Host) -> list[str]:
    return node.run("nvidia-smi --query-compute-apps=pid --format=csv,noheader").stdout.split()


@pytest.fixture
def hog(fresh: Host) -> Iterator[Callable[[], str]]:
    """Starts a CUDA job stand-in on GPU 4 (gpusim-hog in a transient unit) and returns its unit's name; every one
    started is stopped afterwards."""
    units: list[str] = []

    def start() -> str:
        unit = f"chaosgpu-test-hog-{secrets.token_hex(3)}"
        units.append(unit)
        fresh.check(
            f"sudo systemd-run --unit {unit} --collect --quiet gpusim-hog --gpu 4 --memory-mib 100 --name {unit}"
        )
        started, _ = wait_for(lambda: any(unit in line for line in apps(fresh)), 10, interval_s=0.2)
        assert started, f"{unit} does not hold GPU 4: {apps(fresh)}"
        return unit

    yield start
    for unit in units:
        fresh.run(f"sudo systemctl stop {unit}")


def apps(node: Host) -> list[str]:
    return node.run("nvidia-smi --query-compute-apps=pid,process_name --format=csv,noheader").stdout.splitlines()


def test_killed_gpu_processes_stay_killed_and_leave_nothing_in_the_ledger(fresh: Host, hog: Callable[[], str]) -> None:
    before = snapshot(fresh, EXTRA)
    job = hog()
    faults = actions.kill_gpu_processes(NODE, gpus=[4], duration_s=120, configuration=CONFIGURATION)

    assert not any(job in line for line in apps(fresh)), "the process is still on GPU 4"
    assert fresh.run(f"systemctl is-active {job}").stdout.strip() in ("inactive", "failed", "unknown")
    recorded = [f for f in active_faults(NODE, configuration=CONFIGURATION) if f["id"] == faults[0]["id"]]
    assert recorded, "the kill is not in the ledger"
    assert recorded[0]["kind"] == "gpu-process-kill"
    assert "not revertible" in recorded[0]["description"]

    reverted = revert_faults(NODE, configuration=CONFIGURATION)
    assert [f["id"] for f in reverted] == [faults[0]["id"]]
    assert ledger_ids(fresh) == []
    assert not any(job in line for line in apps(fresh)), "a no-op revert brings nothing back"
    assert snapshot(fresh, EXTRA) == before


def test_kill_refuses_sshd_on_a_gpu_and_kills_nothing(fresh: Host, hog: Callable[[], str]) -> None:
    job = hog()
    sshd = fresh.check("pgrep -o -x sshd").strip()
    record = json.dumps({"pid": int(sshd), "name": "sshd", "gpus": [4], "used_memory_mib": 1, "util": 0})
    fresh.check(f"printf '%s' '{record}' >/var/lib/gpusim/procs/{sshd}.json")
    try:
        assert sshd in compute_pids(fresh), "the stand-in does not list sshd on GPU 4"
        with pytest.raises(Exception, match=rf"refusing to kill pid {sshd} \(sshd\)"):
            actions.kill_gpu_processes(NODE, gpus=[4], duration_s=60, configuration=CONFIGURATION)
        assert any(job in line for line in apps(fresh)), "the refusal killed the job too"
        assert fresh.run(f"kill -0 {sshd} 2>/dev/null || sudo kill -0 {sshd}").returncode == 0
        assert ledger_ids(fresh) == []
    finally:
        fresh.run(f"rm -f /var/lib/gpusim/procs/{sshd}.json")


def test_a_kernel_log_xid_is_seen_and_its_no_op_revert_leaves_the_gpus_alone(fresh: Host) -> None:
    before = snapshot(fresh, EXTRA)
    start = float(fresh.check("date +%s.%N"))
    faults = actions.log_xid(NODE, xid=48, gpus=[4, 5], duration_s=120, configuration=CONFIGURATION)

    seen = probes.xid_seen(NODE, xid=48, since=str(start), configuration=CONFIGURATION)[NODE]
    buses = [bus_id(fresh, g)[4:-2].lower() for g in (4, 5)]
    assert [line["pci"] for line in seen] == buses
    assert all("An uncorrectable double bit error (DBE)" in line["line"] for line in seen)
    assert ledger_ids(fresh) == [faults[0]["id"]]
    during = snapshot(fresh, EXTRA)
    assert {**during, "ledger": ""} == {**before, "ledger": ""}, "a kernel-log line, nothing else"

    assert [f["id"] for f in revert_faults(NODE, configuration=CONFIGURATION)] == [faults[0]["id"]]
    assert ledger_ids(fresh) == []
    assert snapshot(fresh, EXTRA) == before
    assert len(probes.xid_seen(NODE, xid=48, since=str(start), configuration=CONFIGURATION)[NODE]) == 2


def test_without_a_recovery_command_an_xid_stays_until_gpusim_boot(fresh: Host) -> None:
    """Production's XID revert (no chaosgpu_xid_recovery_command): the ledger records it and the rollback removes
    it, but the GPU stays lost, as a real one would until gpu_health recovers it; `gpusim boot` (a reboot) does."""
    host = get_inventory(CONFIGURATION).hosts[NODE]
    inject, revert = commands.xid_dcgm_commands([7], 79, recovery="")
    xid_bus = bus_id(fresh, 7)
    record = apply_fault(get_transport(), host, "gpu-xid", inject, revert, 120, "XID 79 without a recovery command")
    assert lost(fresh, xid_bus)
    assert ledger_ids(fresh) == [record.id]

    assert revert_fault(get_transport(), host, record.id) is True
    assert ledger_ids(fresh) == []
    assert lost(fresh, xid_bus), "the no-op revert must not pretend to recover the GPU"

    fresh.check("sudo gpusim boot")
    assert fresh.run("nvidia-smi -L").stdout.count("GPU ") == 8


# --- probes -----------------------------------------------------------------------------------------------------


def test_probes_see_a_lost_gpu(fresh: Host) -> None:
    assert probes.gpu_count(NODE, configuration=CONFIGURATION) == {NODE: 8}
    assert probes.gpu_health(NODE, configuration=CONFIGURATION)[NODE]["ok"] is True
    assert probes.dcgm_health(NODE, configuration=CONFIGURATION)[NODE]["overall"] == "Healthy"
    xid_bus = bus_id(fresh, 7)
    start = float(fresh.check("date +%s.%N"))

    actions.inject_xid(NODE, xid=79, gpus=[7], duration_s=120, configuration=CONFIGURATION)
    try:
        assert probes.gpu_count(NODE, configuration=CONFIGURATION) == {NODE: 7}
        health = probes.gpu_health(NODE, configuration=CONFIGURATION)[NODE]
        assert (health["ok"], health["lost"]) == (False, [xid_bus[4:]])
        dcgm = probes.dcgm_health(NODE, configuration=CONFIGURATION)[NODE]
        assert dcgm["overall"] == "Failure"
        assert dcgm["gpus"]["7"]["health"] == "Failure"
        seen = probes.xid_seen(NODE, xid=79, since=str(start), configuration=CONFIGURATION)[NODE]
        assert [line["pci"] for line in seen] == [xid_bus[4:-2].lower()]
    finally:
        revert_faults(NODE, configuration=CONFIGURATION)
    assert probes.gpu_count(NODE, configuration=CONFIGURATION) == {NODE: 8}
    assert ledger_ids(fresh) == []


def test_prometheus_fires_the_xid_alert_within_its_budget(fresh: Host, ops: Host) -> None:
    """XID 74 (NVLink, fatal) on GPU 6, which no other test here uses, so a firing alert is this test's own."""
    configuration = {**CONFIGURATION, "chaosgpu_prometheus_url": PROMETHEUS}
    labels = {"hostname": NODE, "gpu": "6", "xid": "74"}
    collect = unit_option_s(fresh, "dcgm-exporter.service", "--collect-interval")
    monitoring = Monitoring(ops)
    scrape, evaluation = monitoring.interval_s("scrape_interval"), monitoring.interval_s("evaluation_interval")
    # A rerun within minutes finds the last run's alert still firing: it resolves once the XID has left the
    # exporter's window and the rule's 3-minute look-back, plus a scrape and an evaluation.
    resolve = unit_option_s(fresh, "dcgm-exporter.service", "--xid-count-window-size") + 180 + scrape + evaluation
    quiet, _ = wait_for(
        lambda: probes.alert_state("GpuXidFatal", labels, configuration=configuration) == "inactive", resolve, 5.0
    )
    assert quiet, f"GpuXidFatal for {labels} still active {resolve:g} s after its last XID"

    actions.inject_xid(NODE, xid=74, gpus=[6], duration_s=120, configuration=CONFIGURATION)
    try:
        # Detection: one exporter collection, one scrape, one rule evaluation, plus an SSH round trip's slack.
        budget = collect + scrape + evaluation + 10
        fired, waited = wait_for(
            lambda: probes.alert_state("GpuXidFatal", labels, configuration=configuration) == "firing", budget, 1.0
        )
        assert fired, f"GpuXidFatal for {labels} not firing {budget:g} s after the XID"
        assert waited <= budget
        query = f'max_over_time(DCGM_EXP_XID_ERRORS_COUNT{{hostname="{NODE}",gpu="6",xid="74"}}[1m])'
        assert [series["value"] for series in probes.prometheus_query(query, configuration=configuration)] == [1.0]
    finally:
        revert_faults(NODE, configuration=CONFIGURATION)
    assert ledger_ids(fresh) == []
