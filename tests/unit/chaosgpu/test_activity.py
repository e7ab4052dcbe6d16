"""chaosgpu.activity: the harness every activity goes through (inventory, guarded targets, all-or-nothing faults)."""

from __future__ import annotations

from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosgpu import activity
from chaosgpu.inventory import Inventory
from chaosgpu.ledger import FaultRecord, LedgerError
from chaosgpu.targeting import TargetingRefused, TargetPlan
from chaosgpu.types import Host

NODES = [Host(name=f"gpu-node-{i}", address=f"10.0.0.{i}", groups=("gpu_nodes",)) for i in range(1, 7)]


def make_inventory(production: bool = False) -> Inventory:
    return Inventory(
        source="/inventories/test",
        hosts={h.name: h for h in NODES},
        groups={"all": tuple(h.name for h in NODES), "gpu_nodes": tuple(h.name for h in NODES)},
        production=production,
        power_drivers={h.name: "systemd" for h in NODES},
        production_hosts=tuple(h.name for h in NODES) if production else (),
    )


@pytest.fixture
def lab_inventory(monkeypatch: pytest.MonkeyPatch) -> Inventory:
    inv = make_inventory()
    monkeypatch.setattr(activity, "get_inventory", lambda _configuration: inv)
    return inv


def plan_of(*names: str) -> TargetPlan:
    hosts = tuple(h for h in NODES if h.name in names)
    return TargetPlan(pattern=",".join(names), hosts=hosts, matched=tuple(names), seed=1, count=len(hosts))


class FakeLedger:
    """apply_fault / revert_fault stand-ins: which hosts fail, what was applied and reverted."""

    def __init__(self, failing: set[str] | None = None) -> None:
        self.failing = failing or set()
        self.applied: list[tuple[str, str, str, float]] = []
        self.reverted: list[tuple[str, str]] = []

    def apply(
        self, transport: Any, host: Host, kind: str, inject: str, revert: str, duration_s: float, description: str
    ) -> FaultRecord:
        del transport
        if host.name in self.failing:
            raise LedgerError(f"{host.name}: fault x ({kind}): inject exited 1 and was reverted at once")
        self.applied.append((host.name, inject, revert, duration_s))
        return FaultRecord(
            host.name, f"{kind}-{host.name}", kind, description, 1.0, 1.0 + duration_s, "run", inject, revert
        )

    def revert(self, transport: Any, host: Host, fault_id: str) -> bool:  # noqa: ARG002
        self.reverted.append((host.name, fault_id))
        return True


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> FakeLedger:
    fake = FakeLedger()
    monkeypatch.setattr(activity, "apply_fault", fake.apply)
    monkeypatch.setattr(activity, "revert_fault", fake.revert)
    return fake


def test_no_inventory_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAOSGPU_INVENTORY", raising=False)
    with pytest.raises(ActivityFailed, match="chaosgpu_inventory"):
        activity.inventory_source({})


def test_inventory_from_the_environment_when_the_configuration_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSGPU_INVENTORY", "/srv/inventories/lab")
    assert activity.inventory_source(None) == "/srv/inventories/lab"
    assert activity.inventory_source({"chaosgpu_inventory": "/etc/inv"}) == "/etc/inv"


@pytest.mark.usefixtures("lab_inventory")
def test_targets_apply_the_blast_radius_guard_from_the_configuration() -> None:
    assert len(activity.targets({}, "gpu_nodes", count=2).hosts) == 2  # 2 of 6: a third
    with pytest.raises(TargetingRefused, match="gpu_nodes"):
        activity.targets({}, "gpu_nodes", count=3)
    assert len(activity.targets({"chaosgpu_max_share": 0.5}, "gpu_nodes", count=3).hosts) == 3


def test_reading_and_reverting_lift_the_share_limit_but_not_the_production_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(activity, "get_inventory", lambda _configuration: make_inventory())
    assert len(activity.targets({}, "gpu_nodes", guard=False).hosts) == 6
    monkeypatch.setattr(activity, "get_inventory", lambda _configuration: make_inventory(production=True))
    with pytest.raises(TargetingRefused, match="production"):
        activity.targets({}, "gpu_nodes", guard=False)
    assert len(activity.targets({"chaosgpu_allow_production": True}, "gpu-node-1").hosts) == 1


@pytest.mark.usefixtures("lab_inventory")
def test_the_seed_in_the_configuration_chooses_the_same_hosts() -> None:
    first = activity.targets({"chaosgpu_seed": 7}, "gpu_nodes", count=2).names
    assert all(activity.targets({"chaosgpu_seed": 7}, "gpu_nodes", count=2).names == first for _ in range(5))


@pytest.mark.usefixtures("lab_inventory")
@pytest.mark.parametrize("pattern", ["", "   ", None])
def test_an_empty_pattern_is_refused(pattern: Any) -> None:
    with pytest.raises(ActivityFailed, match="pattern"):
        activity.targets({}, pattern)


def test_fault_duration_defaults() -> None:
    assert activity.fault_duration({}, None) == activity.DEFAULT_FAULT_DURATION_S
    assert activity.fault_duration({"chaosgpu_fault_duration_s": 42}, None) == 42
    assert activity.fault_duration({"chaosgpu_fault_duration_s": 42}, 7) == 7


def test_inject_fault_applies_to_every_host_and_returns_journal_records(ledger: FakeLedger) -> None:
    records = activity.inject_fault(plan_of("gpu-node-1", "gpu-node-2"), "stop-service", "inj", "rev", 30, "d")
    assert sorted(r["host"] for r in records) == ["gpu-node-1", "gpu-node-2"]
    assert all(set(r) == {"host", "id", "kind", "description", "created", "deadline", "run_id"} for r in records)
    assert sorted(a[0] for a in ledger.applied) == ["gpu-node-1", "gpu-node-2"]
    assert ledger.reverted == []


def test_inject_fault_builds_commands_per_host(ledger: FakeLedger) -> None:
    activity.inject_fault(
        plan_of("gpu-node-1", "gpu-node-3"), "partition", lambda h: f"drop {h.address}", lambda h: f"undo {h.name}", 9
    )
    assert sorted(ledger.applied) == [
        ("gpu-node-1", "drop 10.0.0.1", "undo gpu-node-1", 9),
        ("gpu-node-3", "drop 10.0.0.3", "undo gpu-node-3", 9),
    ]


def test_inject_fault_is_all_or_nothing(ledger: FakeLedger) -> None:
    ledger.failing = {"gpu-node-2"}
    with pytest.raises(ActivityFailed) as failure:
        activity.inject_fault(plan_of("gpu-node-1", "gpu-node-2", "gpu-node-3"), "stop-service", "inj", "rev", 30)
    message = str(failure.value)
    assert "gpu-node-2" in message
    assert "inject exited 1" in message
    # The hosts where it had been applied are reverted at once, and the message says so.
    assert sorted(host for host, _ in ledger.reverted) == ["gpu-node-1", "gpu-node-3"]
    assert "Reverted where it had been applied: " in message


def test_a_revert_that_fails_during_all_or_nothing_is_reported(ledger: FakeLedger, monkeypatch: pytest.MonkeyPatch):
    ledger.failing = {"gpu-node-2"}

    def failing_revert(transport: Any, host: Host, fault_id: str) -> bool:  # noqa: ARG001
        raise LedgerError(f"{host.name}: fault {fault_id}: revert exited 1")

    monkeypatch.setattr(activity, "revert_fault", failing_revert)
    with pytest.raises(ActivityFailed, match=r"revert failed.*deadline still reverts it"):
        activity.inject_fault(plan_of("gpu-node-1", "gpu-node-2"), "stop-service", "inj", "rev", 30)


# --- the rollback -------------------------------------------------------------------------------------------------


def test_revert_faults_reverts_this_runs_faults_on_the_matched_hosts_in_one_fan_out(
    lab_inventory: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaosgpu.fleet import actions as fleet  # noqa: PLC0415 - imported with the fakes in place
    from chaosgpu.ledger import HostRevert  # noqa: PLC0415

    del lab_inventory
    calls: list[tuple[list[str], str, str]] = []

    def revert_run_faults(transport: Any, hosts: list[Host], run_id: str, kind: str = "") -> dict[str, HostRevert]:
        del transport
        calls.append(([h.name for h in hosts], run_id, kind))
        record = FaultRecord(hosts[0].name, "fill-disk-1", "fill-disk", "", 1.0, 61.0, run_id, "x", "y", "reverted")
        return {hosts[0].name: HostRevert(hosts[0].name, [record])} | {h.name: HostRevert(h.name) for h in hosts[1:]}

    monkeypatch.setattr(fleet, "revert_run_faults", revert_run_faults)
    monkeypatch.setattr(fleet, "get_transport", lambda: None)
    monkeypatch.setenv("CHAOSGPU_RUN_ID", "gameday-7")

    done = fleet.revert_faults("gpu-node-1:gpu-node-2", kind="fill-disk", configuration={"chaosgpu_inventory": "x"})

    assert calls == [(["gpu-node-1", "gpu-node-2"], "gameday-7", "fill-disk")]
    assert [(f["host"], f["id"], f["run_id"]) for f in done] == [("gpu-node-1", "fill-disk-1", "gameday-7")]


def test_revert_faults_names_every_failure_and_unreachable_host(
    lab_inventory: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaosgpu.fleet import actions as fleet  # noqa: PLC0415 - imported with the fakes in place
    from chaosgpu.ledger import HostRevert  # noqa: PLC0415

    del lab_inventory
    report = {
        "gpu-node-1": HostRevert("gpu-node-1", failed=["gpu-node-1: fault f-1: revert exited 9; the entry stays"]),
        "gpu-node-2": HostRevert("gpu-node-2", error="gpu-node-2: cannot revert the faults of run r: exited 255"),
    }
    monkeypatch.setattr(fleet, "revert_run_faults", lambda *_args, **_kw: report)
    monkeypatch.setattr(fleet, "get_transport", lambda: None)

    with pytest.raises(ActivityFailed) as failed:
        fleet.revert_faults("gpu-node-1:gpu-node-2", configuration={"chaosgpu_inventory": "x"})
    assert "gpu-node-1: fault f-1: revert exited 9" in str(failed.value)
    assert "gpu-node-2: cannot revert the faults of run r: exited 255" in str(failed.value)
