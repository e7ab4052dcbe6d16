"""The game day's fleet checks (gameday.LedgerChecks): the ledger scripts run for real with bash against a
temporary ledger (test_ledger's fakes), the inventory and transport replaced."""

from __future__ import annotations

import functools

import pytest
from chaoslib.exceptions import ActivityFailed
from test_ledger import HOST, BashTransport, FakeRoot, root  # noqa: F401 - root is a fixture

from chaosgpu import gameday, ledger
from chaosgpu.inventory import Inventory
from chaosgpu.types import Host

NODE1 = Host(HOST.name, HOST.address, HOST.port, HOST.user, groups=("gpu_nodes",))
NODE2 = Host("gpu-node-2", "127.0.0.1", 2222, "operator", groups=("gpu_nodes",))


def _fleet(monkeypatch: pytest.MonkeyPatch, root: FakeRoot, hosts: list[Host], down: set[str]) -> None:  # noqa: F811
    inventory = Inventory(
        source="fake-inventory",
        hosts={h.name: h for h in hosts},
        groups={"all": tuple(h.name for h in hosts), "gpu_nodes": tuple(h.name for h in hosts)},
        production=False,
        power_drivers={},
    )
    transport = BashTransport(down=down)
    monkeypatch.setattr("chaosgpu.activity.get_inventory", lambda _configuration: inventory)
    monkeypatch.setattr("chaosgpu.activity.get_transport", lambda: transport)
    monkeypatch.setattr("chaosgpu.fleet.probes.get_transport", lambda: transport)
    monkeypatch.setattr(ledger, "LedgerConfig", functools.partial(ledger.LedgerConfig, **root.config.__dict__))


def _apply(root: FakeRoot) -> ledger.FaultRecord:  # noqa: F811
    return ledger.apply_fault(BashTransport(), HOST, "gpu-xid", "true", "true", 600, config=root.config)


def test_clean_fleet_passes_preflight_and_has_nothing_left(
    monkeypatch: pytest.MonkeyPatch,
    root: FakeRoot,  # noqa: F811
) -> None:
    _fleet(monkeypatch, root, [NODE1], set())
    checks = gameday.LedgerChecks("inventories/lab")
    assert checks.preflight() == []
    assert checks.leftover() == []


def test_a_fault_in_a_ledger_fails_preflight_and_is_left_over(
    monkeypatch: pytest.MonkeyPatch,
    root: FakeRoot,  # noqa: F811
) -> None:
    _fleet(monkeypatch, root, [NODE1], set())
    record = _apply(root)
    checks = gameday.LedgerChecks("inventories/lab")
    problems = checks.preflight()
    assert len(problems) == 1
    assert problems[0].startswith(f"gpu-node-1: fault {record.id} (gpu-xid, active) is active")
    left = checks.leftover()
    assert [(f["host"], f["id"], f["kind"]) for f in left] == [("gpu-node-1", record.id, "gpu-xid")]


def test_a_host_that_does_not_answer_fails_preflight_and_the_leftover_check(
    monkeypatch: pytest.MonkeyPatch,
    root: FakeRoot,  # noqa: F811
) -> None:
    _fleet(monkeypatch, root, [NODE1, NODE2], {NODE2.name})
    checks = gameday.LedgerChecks("inventories/lab")
    problems = checks.preflight()
    assert len(problems) == 1
    assert problems[0].startswith("gpu-node-2: does not answer")
    with pytest.raises(ActivityFailed, match="gpu-node-2"):
        checks.leftover()
