"""The ``chaosgpu`` command.

- ``chaosgpu activities``: the actions and probes the extension exports.
- ``chaosgpu status --inventory PATH [--limit PATTERN]``: the faults in the ledgers of the inventory's hosts (one
  parallel SSH fan-out). Exit 0 when every host's ledger was read, 1 when one could not be, 2 on bad input.
- ``chaosgpu cleanup --inventory PATH [--limit PATTERN]``: revert every fault those ledgers hold. Exit 0 only when
  every host answered and nothing is left, 1 otherwise, 2 on bad input.
- ``chaosgpu gameday --inventory PATH --suite DIR``: run a suite of experiments and write reports/<timestamp>/
  (chaosgpu.gameday: exit 0 only when every experiment passed, 1 when one did not, 2 on bad input, 3 when the
  pre-flight failed, 130 when interrupted).

``--limit`` takes an Ansible-style host pattern (chaosgpu.targeting). Both commands work on production inventories
and ignore the blast-radius guard: they only read ledgers and revert faults.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from chaoslib.exceptions import ActivityFailed

from chaosgpu import __version__, gameday, ledger, load_exported_activities
from chaosgpu.types import Host

__all__ = ["main"]

_EXIT_OK = 0
_EXIT_LEFT = 1
_EXIT_USAGE = 2
_MINUTE = 60
_HOUR = 3600


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chaosgpu`` console script."""
    parser = argparse.ArgumentParser(prog="chaosgpu", description="GPU fleet chaos engineering helpers")
    parser.add_argument("--version", action="version", version=f"chaosgpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("activities", help="list the actions and probes chaosgpu exports")
    for name, text in (
        ("status", "show the faults in the ledgers of the inventory's hosts"),
        ("cleanup", "revert every fault in the ledgers of the inventory's hosts (exit 0 only when none is left)"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("-i", "--inventory", required=True, metavar="PATH", help="Ansible inventory source")
        command.add_argument("-l", "--limit", metavar="PATTERN", help="only the hosts this host pattern matches")
    gameday.add_arguments(sub.add_parser("gameday", help="run a suite of experiments and report on it"))
    args = parser.parse_args(argv)
    if args.command == "gameday":
        return gameday.main(args)
    if args.command == "activities":
        for activity in load_exported_activities():
            sys.stdout.write(f"{activity['type']:<6} {activity['mod']}.{activity['name']}\n")
        return _EXIT_OK
    try:
        hosts = _hosts(args.inventory, args.limit)
    except ActivityFailed as err:  # InventoryError, TargetingRefused
        sys.stderr.write(f"chaosgpu {args.command}: {err}\n")
        return _EXIT_USAGE
    if args.command == "status":
        return _status(hosts)
    return _cleanup(hosts)


def _hosts(inventory_source: str, limit: str | None) -> list[Host]:
    """The inventory's hosts, or those ``limit`` matches. Imported here so tests can replace the modules."""
    from chaosgpu.inventory import load_inventory  # noqa: PLC0415
    from chaosgpu.targeting import select_targets  # noqa: PLC0415

    inventory = load_inventory(inventory_source)
    if not limit:
        return list(inventory.hosts.values())
    # Reading and reverting faults is what the guards exist to make possible: no production or share refusal.
    return list(select_targets(inventory, limit, max_share=1.0, allow_production=True).hosts)


def _status(hosts: Sequence[Host], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the faults in the ledgers of ``hosts``; 0 when every ledger was read."""
    from chaosgpu.transport import SSHTransport  # noqa: PLC0415

    out, err = out or sys.stdout, err or sys.stderr
    with SSHTransport() as transport:
        scan = ledger.scan_ledgers(transport, hosts)
    records = [record for name in scan.faults for record in scan.faults[name]]
    _print_faults(records, out)
    read = len(scan.faults)
    out.write(f"{len(records)} fault(s) in the ledgers of {read} host(s)\n")
    for name, why in scan.errors.items():
        err.write(f"chaosgpu status: {name}: cannot read the fault ledger: {why}\n")
    return _EXIT_LEFT if scan.errors else _EXIT_OK


def _cleanup(hosts: Sequence[Host], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Revert every fault in the ledgers of ``hosts``; 0 only when every host answered and none is left."""
    from chaosgpu.transport import SSHTransport  # noqa: PLC0415

    out, err = out or sys.stdout, err or sys.stderr
    with SSHTransport() as transport:
        report = ledger.cleanup(transport, hosts)
    for name, host in report.hosts.items():
        for fault_id in host.reverted:
            out.write(f"{name}: reverted {fault_id}\n")
        for fault_id, why in host.failed.items():
            err.write(f"chaosgpu cleanup: {name}: revert of {fault_id} {why}\n")
        if host.error:
            err.write(f"chaosgpu cleanup: {name}: cannot clean the fault ledger: {host.error}\n")
    left = [record for host in report.hosts.values() for record in host.left]
    if left:
        out.write("Left in the ledgers:\n")
        _print_faults(left, out)
    unreached = sum(1 for host in report.hosts.values() if host.error)
    out.write(
        f"reverted {report.reverted} fault(s); {report.left} left"
        + (f"; {unreached} host(s) not cleaned" if unreached else "")
        + "\n"
    )
    return _EXIT_OK if report.clean else _EXIT_LEFT


def _print_faults(records: Sequence[ledger.FaultRecord], out: TextIO) -> None:
    if not records:
        return
    rows = [("HOST", "FAULT", "KIND", "AGE", "DEADLINE", "LEFT", "STATE")]
    rows += [
        (
            record.host,
            record.id,
            record.kind,
            _span(record.age_s()),
            datetime.fromtimestamp(record.deadline, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            _span(record.remaining_s()),
            record.state,
        )
        for record in records
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")
    for record in records:
        if record.failure:
            out.write(f"{record.host} {record.id}: revert {record.failure_summary()[:300]}\n")


def _span(seconds: float | None) -> str:
    """12s, 3m04s, 1h02m; negative spans (a deadline passed) get a minus sign; '-' when unknown."""
    if seconds is None:
        return "-"
    sign, whole = ("-" if seconds < 0 else ""), round(abs(seconds))
    if whole < _MINUTE:
        return f"{sign}{whole}s"
    if whole < _HOUR:
        return f"{sign}{whole // _MINUTE}m{whole % _MINUTE:02d}s"
    return f"{sign}{whole // _HOUR}h{whole % _HOUR // _MINUTE:02d}m"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
