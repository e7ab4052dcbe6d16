"""chaosgpu status / cleanup: the inventory and SSH transport replaced, the ledger scripts run for real with bash
against a temporary ledger (test_ledger's fakes)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from types import TracebackType

import pytest
from test_ledger import HOST, BashTransport, FakeRoot, root  # noqa: F401 - root is a fixture

from chaosgpu import cli, ledger
from chaosgpu.inventory import Inventory
from chaosgpu.types import CommandResult, Host

NODE2 = Host("gpu-node-2", "127.0.0.1", 2222, "operator", groups=("gpu_nodes", "lab"))
GPU_NODE_1 = Host(HOST.name, HOST.address, HOST.port, HOST.user, groups=("gpu_nodes", "lab"))


class FakeSSH:
    """Stands in for chaosgpu.transport.SSHTransport; every instance shares one BashTransport."""

    shared = BashTransport()

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __enter__(self) -> FakeSSH:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        pass

    def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:
        return self.shared.run(host, command, timeout, stdin)

    def run_many(
        self, hosts: Sequence[Host], command: str, timeout: float = 60, stdin: str | None = None
    ) -> dict[str, CommandResult]:
        return self.shared.run_many(hosts, command, timeout, stdin)


@pytest.fixture
def fleet(root: FakeRoot, monkeypatch: pytest.MonkeyPatch) -> BashTransport:  # noqa: F811 - the fixture
    """An inventory of gpu-node-1 (this machine, the temporary ledger) and gpu-node-2 (down)."""
    inventory = Inventory(
        source="fake-inventory",
        hosts={GPU_NODE_1.name: GPU_NODE_1, NODE2.name: NODE2},
        groups={"all": (GPU_NODE_1.name, NODE2.name), "gpu_nodes": (GPU_NODE_1.name, NODE2.name)},
        production=False,
        power_drivers={},
    )
    loaded: list[str] = []

    def load_inventory(source: str) -> Inventory:
        loaded.append(source)
        return inventory

    monkeypatch.setattr("chaosgpu.inventory.load_inventory", load_inventory)
    monkeypatch.setattr("chaosgpu.transport.SSHTransport", FakeSSH)
    monkeypatch.setattr(ledger, "LedgerConfig", functools.partial(ledger.LedgerConfig, **root.config.__dict__))
    FakeSSH.shared = BashTransport(down={NODE2.name})
    return FakeSSH.shared


def _apply(root: FakeRoot, revert: str = "true") -> ledger.FaultRecord:  # noqa: F811
    return ledger.apply_fault(BashTransport(), HOST, "gpu-xid", "true", revert, 600, config=root.config)


def test_status_prints_each_fault_with_its_state_and_deadline(
    root: FakeRoot,  # noqa: F811
    fleet: BashTransport,
    capsys: pytest.CaptureFixture[str],
) -> None:
    record = _apply(root)

    assert cli.main(["status", "--inventory", "inv", "--limit", "gpu-node-1"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["HOST", "FAULT", "KIND", "AGE", "DEADLINE", "LEFT", "STATE"]
    row = out[1].split()
    assert row[:3] == ["gpu-node-1", record.id, "gpu-xid"]
    assert row[4] == record.deadline_iso
    assert row[5] in ("10m00s", "9m59s", "9m58s")
    assert row[6] == "active"
    assert out[-1] == "1 fault(s) in the ledgers of 1 host(s)"
    assert [call[:2] for call in fleet.calls] == [("run_many", ("gpu-node-1",))]


def test_status_of_an_unreachable_host_exits_1_and_names_it(
    fleet: BashTransport, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "-i", "inv"]) == 1

    captured = capsys.readouterr()
    assert "0 fault(s) in the ledgers of 1 host(s)" in captured.out
    assert "gpu-node-2: cannot read the fault ledger: exited 255" in captured.err
    assert [call[:2] for call in fleet.calls] == [("run_many", ("gpu-node-1", "gpu-node-2"))]


@pytest.mark.usefixtures("fleet")
def test_status_shows_why_a_revert_failed(
    root: FakeRoot,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    record = _apply(root, revert="echo device busy >&2; exit 4")
    with pytest.raises(ledger.LedgerError):
        ledger.revert_fault(BashTransport(), HOST, record.id, config=root.config)

    assert cli.main(["status", "-i", "inv", "-l", "gpu-node-1"]) == 0

    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[-1] == "failed"
    assert re.search(rf"gpu-node-1 {record.id}: revert exited 4 at 20\d\d-\d\d-\d\dT[\d:]+Z: device busy\n", out)


@pytest.mark.usefixtures("fleet")
def test_cleanup_reverts_everything_and_exits_0_when_nothing_is_left(
    root: FakeRoot,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = _apply(root), _apply(root)

    assert cli.main(["cleanup", "-i", "inv", "-l", "gpu_nodes:!gpu-node-2"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"gpu-node-1: reverted {second.id}",
        f"gpu-node-1: reverted {first.id}",
        "reverted 2 fault(s); 0 left",
    ]
    assert root.files() == []


@pytest.mark.usefixtures("fleet")
def test_cleanup_exits_1_while_a_fault_is_left(
    root: FakeRoot,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    stuck = _apply(root, revert="echo device busy >&2; exit 4")

    assert cli.main(["cleanup", "-i", "inv", "-l", "gpu-node-1"]) == 1

    captured = capsys.readouterr()
    assert f"gpu-node-1: revert of {stuck.id} exited 4: device busy\n" in captured.err
    assert "@chaosgpu" not in captured.err
    assert "Left in the ledgers:" in captured.out
    assert captured.out.splitlines()[-1] == "reverted 0 fault(s); 1 left"
    assert [e["id"] for e in root.entries()] == [stuck.id]


@pytest.mark.usefixtures("fleet")
def test_cleanup_exits_1_when_a_host_cannot_be_reached(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cleanup", "-i", "inv"]) == 1

    captured = capsys.readouterr()
    assert "gpu-node-2: cannot clean the fault ledger: exited 255" in captured.err
    assert captured.out.splitlines()[-1] == "reverted 0 fault(s); 0 left; 1 host(s) not cleaned"


@pytest.mark.parametrize("command", ["status", "cleanup"])
def test_a_limit_that_matches_nothing_exits_2_before_any_host_is_reached(
    fleet: BashTransport, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert cli.main([command, "-i", "inv", "--limit", "gpu-node-9"]) == 2

    assert "'gpu-node-9' is not a host or group of inventory fake-inventory" in capsys.readouterr().err
    assert fleet.calls == []


def test_status_needs_an_inventory(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["status"])
    assert exited.value.code == 2
    assert "--inventory" in capsys.readouterr().err


def test_activities_still_lists_the_exported_activities(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["activities"]) == 0
    assert "chaosgpu.exporter.probes." in capsys.readouterr().out


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (0.4, "0s"), (59, "59s"), (61, "1m01s"), (3725, "1h02m"), (-12, "-12s")]
)
def test_spans_read_as_hours_minutes_seconds(seconds: float | None, text: str) -> None:
    assert cli._span(seconds) == text
