"""The fault ledger on a lab node with a real systemd, over real SSH as the operator (sudo -n to root): the
deadline timer reverts a fault on the host after the controller has gone, and after the fault cut it off.

Each test applies a harmless fault (a file under /run/chaosgpu-smoke) and reverts only the faults it applied.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator

import pytest
from labhosts import INVENTORY, Host, Lab, wait_for

from chaosgpu import ledger
from chaosgpu.inventory import load_inventory
from chaosgpu.transport import SSHTransport
from chaosgpu.types import CommandResult
from chaosgpu.types import Host as ChaosHost

SMOKE_DIR = "/run/chaosgpu-smoke"


@pytest.fixture(scope="module")
def node(gpu_nodes: list[Host]) -> Host:
    return gpu_nodes[0]


@pytest.fixture(scope="module")
def target(lab: Lab, node: Host) -> ChaosHost:  # noqa: ARG001 - lab: skip unless the lab is up
    return load_inventory(INVENTORY).hosts[node.name]


@pytest.fixture
def applied(target: ChaosHost) -> Iterator[list[str]]:
    """The ids of the faults a test applied; whatever is left of them is reverted afterwards."""
    ids: list[str] = []
    yield ids
    with SSHTransport() as transport:
        for fault_id in ids:
            ledger.revert_fault(transport, target, fault_id)


def _fault_file(name: str) -> tuple[str, str, str]:
    path = f"{SMOKE_DIR}/{name}-{time.time_ns()}"
    return path, f"install -d -m 0755 {SMOKE_DIR} && touch {shlex.quote(path)}", f"rm -f {shlex.quote(path)}"


def _exists(node: Host, path: str) -> bool:
    return node.run(f"test -e {shlex.quote(path)}", timeout=20).returncode == 0


def _left_on_host(node: Host, fault_id: str) -> str:
    """What the ledger and systemd still hold of ``fault_id`` (empty when nothing)."""
    return node.check(
        f"sudo -n sh -c 'ls -A {ledger.DEFAULT_LEDGER_DIR} 2>/dev/null | grep -F {shlex.quote(fault_id)};"
        f" systemctl list-units --all --no-legend chaosgpu-revert-{shlex.quote(fault_id)}*; true'"
    ).strip()


def test_deadline_timer_reverts_the_fault_after_the_controller_is_gone(
    node: Host, target: ChaosHost, applied: list[str]
) -> None:
    path, inject, revert = _fault_file("deadline")
    with SSHTransport() as transport:
        record = ledger.apply_fault(transport, target, "smoke-deadline", inject, revert, 5, "ledger smoke")
        applied.append(record.id)
    applied_at = time.monotonic()
    # The controller's connections are closed: only the host's timer can revert it now.
    assert _exists(node, path), "the inject did not create its file"
    assert record.state == "active"

    time.sleep(max(0.0, 3 - (time.monotonic() - applied_at)))
    assert _exists(node, path), "the fault was reverted before its deadline"
    gone, _ = wait_for(lambda: not _exists(node, path), deadline_s=12, interval_s=0.5)
    assert gone, f"{node.name}: the timer did not revert the fault within 15 s of a 5 s deadline"
    assert _left_on_host(node, record.id) == ""


class _CutOff:
    """An SSH transport whose calls are cut after 1.5 s, as when a fault takes the controller's network away."""

    def __init__(self, inner: SSHTransport) -> None:
        self.inner = inner

    def run(self, host: ChaosHost, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
        return self.inner.run(host, command, timeout=1.5, stdin=stdin)


def test_fault_that_cuts_the_controller_off_completes_and_reverts_on_the_host(
    node: Host, target: ChaosHost, applied: list[str]
) -> None:
    path, inject, revert = _fault_file("cutoff")
    with SSHTransport() as transport, pytest.raises(ledger.LedgerError, match="recorded and armed") as refused:
        ledger.apply_fault(_CutOff(transport), target, "smoke-cutoff", f"sleep 3; {inject}", revert, 8)  # type: ignore[arg-type]
    applied.append(next(word for word in str(refused.value).split() if word.startswith("smoke-cutoff-")))

    appeared, _ = wait_for(lambda: _exists(node, path), deadline_s=8, interval_s=0.5)
    assert appeared, "the inject did not finish once the controller's call was cut"
    gone, _ = wait_for(lambda: not _exists(node, path), deadline_s=12, interval_s=0.5)
    assert gone, f"{node.name}: the timer did not revert the fault after the controller was cut off"
    assert _left_on_host(node, applied[0]) == ""
