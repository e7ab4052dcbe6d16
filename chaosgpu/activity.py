"""What every chaosgpu activity shares: the experiment's inventory and targets, one SSH transport per run, and
faults that go through the ledger (recorded, deadline armed on the host, then injected).

Experiment ``configuration`` keys (all optional except the inventory):

    chaosgpu_inventory          the Ansible inventory (path) the fleet is provisioned from; else $CHAOSGPU_INVENTORY
    chaosgpu_max_share          blast-radius guard: the largest share of any named group one activity may touch
                                (default 1/3)
    chaosgpu_allow_production   true to allow targeting an inventory marked ``chaosgpu_environment: production``
    chaosgpu_seed               seed of the random choice of targets (same seed, same hosts)
    chaosgpu_fault_duration_s   the default deadline of a fault, when the activity does not give one (default 300)

Activities choose hosts with ``targets()`` (refusals happen there, before any host is reached), inject with
``inject_fault()`` and read with ``run_on()``. Every fault an activity injects is in the host's ledger until it
is reverted by the rollback ``chaosgpu.fleet.actions.revert_faults``, by ``chaosgpu cleanup``, or by the host
itself at the deadline.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration

from chaosgpu.inventory import Inventory, load_inventory
from chaosgpu.ledger import FaultRecord, LedgerError, apply_fault, revert_fault
from chaosgpu.targeting import DEFAULT_MAX_SHARE, TargetPlan, select_targets
from chaosgpu.transport import SSHTransport
from chaosgpu.types import CommandResult, Host, Transport

__all__ = [
    "DEFAULT_FAULT_DURATION_S",
    "CommandFor",
    "fault_duration",
    "get_inventory",
    "get_transport",
    "inject_fault",
    "inventory_source",
    "record_dict",
    "run_on",
    "targets",
]

DEFAULT_FAULT_DURATION_S = 300.0
# A command for every host, or one built per host (e.g. a partition naming the host's peers).
CommandFor = str | Callable[[Host], str]

_lock = threading.Lock()
_inventories: dict[str, Inventory] = {}
_transport: SSHTransport | None = None


def _setting(configuration: Configuration | None, key: str, default: Any = None) -> Any:
    return (configuration or {}).get(key, default)


def inventory_source(configuration: Configuration | None) -> str:
    """The inventory path: configuration ``chaosgpu_inventory``, else $CHAOSGPU_INVENTORY; refused when neither."""
    source = _setting(configuration, "chaosgpu_inventory") or os.environ.get("CHAOSGPU_INVENTORY", "")
    if not isinstance(source, str) or not source:
        raise ActivityFailed(
            "no inventory: set configuration chaosgpu_inventory (or $CHAOSGPU_INVENTORY) to the Ansible inventory"
        )
    return str(Path(source).resolve())


def get_inventory(configuration: Configuration | None) -> Inventory:
    """The experiment's inventory, read once per process."""
    source = inventory_source(configuration)
    with _lock:
        if source not in _inventories:
            _inventories[source] = load_inventory(source)
        return _inventories[source]


def get_transport() -> Transport:
    """The run's SSH transport: one multiplexed connection per host, shared by every activity, closed at exit."""
    global _transport  # noqa: PLW0603 - one transport per process, like the Chaos Toolkit run
    with _lock:
        if _transport is None:
            _transport = SSHTransport()
            atexit.register(_transport.close)
        return _transport


def targets(
    configuration: Configuration | None,
    pattern: str,
    count: int | None = None,
    percentage: float | None = None,
    *,
    guard: bool = True,
) -> TargetPlan:
    """Hosts matching ``pattern`` (count or percentage of them), through the blast-radius and production guards;
    pure computation: a refusal raises before any host is reached. ``guard=False`` (reading and reverting only)
    lifts the share limit but never the production guard."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ActivityFailed(f"targets: a host pattern is required, got {pattern!r}")
    max_share = float(_setting(configuration, "chaosgpu_max_share", DEFAULT_MAX_SHARE)) if guard else 1.0
    seed = _setting(configuration, "chaosgpu_seed")
    return select_targets(
        get_inventory(configuration),
        pattern,
        count=count,
        percentage=percentage,
        seed=int(seed) if seed is not None else None,
        max_share=max_share,
        allow_production=bool(_setting(configuration, "chaosgpu_allow_production", False)),
    )


def fault_duration(configuration: Configuration | None, duration_s: float | None) -> float:
    """The fault's deadline in seconds: the activity's, else the configuration's default, else 300."""
    if duration_s is not None:
        return float(duration_s)
    return float(_setting(configuration, "chaosgpu_fault_duration_s", DEFAULT_FAULT_DURATION_S))


def _command(command: CommandFor, host: Host) -> str:
    return command(host) if callable(command) else command


def record_dict(record: FaultRecord) -> dict[str, Any]:
    """A fault as the activity returns it into the Chaos Toolkit journal (no commands: they may be long)."""
    data = asdict(record)
    return {k: data[k] for k in ("host", "id", "kind", "description", "created", "deadline", "run_id")}


def inject_fault(
    plan: TargetPlan,
    kind: str,
    inject: CommandFor,
    revert: CommandFor,
    duration_s: float,
    description: str = "",
    transport: Transport | None = None,
    *,
    accept_cut: bool = False,
) -> list[dict[str, Any]]:
    """Apply one fault to every host of ``plan`` in parallel, each recorded in its host's ledger with a deadline.

    All or nothing: when the fault fails on any host, the hosts where it was applied are reverted at once and
    ActivityFailed names every host that failed and why. ``accept_cut``: for a fault meant to cut the controller
    off, a call that broke after the fault was recorded and armed counts as injected (its deadline reverts it).
    """
    transport = transport or get_transport()
    hosts = list(plan.hosts)

    def one(host: Host) -> FaultRecord | LedgerError:
        try:
            return apply_fault(
                transport, host, kind, _command(inject, host), _command(revert, host), duration_s, description
            )
        except LedgerError as err:
            if accept_cut and err.record is not None:
                return err.record
            return err

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(hosts)))) as pool:
        outcomes = list(pool.map(one, hosts))
    applied = [o for o in outcomes if isinstance(o, FaultRecord)]
    failed = {h.name: o for h, o in zip(hosts, outcomes, strict=True) if isinstance(o, LedgerError)}
    if failed:
        undone = []
        for record in applied:
            host = next(h for h in hosts if h.name == record.host)
            try:
                revert_fault(transport, host, record.id)
                undone.append(record.host)
            except LedgerError as err:
                undone.append(f"{record.host} (revert failed: {err}; its deadline still reverts it)")
        raise ActivityFailed(
            f"{kind} failed on "
            + "; ".join(f"{name}: {err}" for name, err in failed.items())
            + (f". Reverted where it had been applied: {', '.join(undone)}" if undone else "")
        )
    return [record_dict(record) for record in applied]


def run_on(
    hosts: Sequence[Host], command: CommandFor, timeout: float = 60, transport: Transport | None = None
) -> dict[str, CommandResult]:
    """Run a command on every host in parallel (one per host when ``command`` is callable); results by host."""
    transport = transport or get_transport()
    if isinstance(command, str):
        return transport.run_many(list(hosts), command, timeout=timeout)
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(hosts)))) as pool:
        results = list(pool.map(lambda h: transport.run(h, _command(command, h), timeout=timeout), hosts))
    return {result.host: result for result in results}
