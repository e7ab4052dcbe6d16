"""Rollback actions: revert the faults chaosgpu put on the fleet."""

from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import get_transport, record_dict, targets
from chaosgpu.ledger import cleanup, current_run_id, revert_run_faults

__all__ = ["revert_all_faults", "revert_faults"]


def revert_faults(
    pattern: str = "all",
    kind: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Revert, now, the faults this run injected on the hosts matching ``pattern`` (optionally only those of
    ``kind``), as a rollback: faults of other runs are left to their own deadlines. Returns the faults reverted;
    fails naming every fault whose revert failed and every host that did not answer (after reverting what it could;
    what is left stays in the ledgers and still reverts at its deadline)."""
    plan = targets(configuration, pattern, guard=False)
    # One call per host, hosts side by side: reverting N hosts takes about as long as one.
    report = revert_run_faults(get_transport(), list(plan.hosts), current_run_id(), kind)
    reverted = [record_dict(record) for host in report.values() for record in host.reverted]
    errors = [message for host in report.values() for message in ([host.error] if host.error else []) + host.failed]
    if errors:
        raise ActivityFailed("revert_faults: " + "; ".join(errors))
    return reverted


def revert_all_faults(
    pattern: str = "all",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, Any]:
    """Revert every fault in the ledgers of the hosts matching ``pattern``, whichever run injected it (what
    ``chaosgpu cleanup`` does). Fails when any fault is left or a host could not be reached."""
    plan = targets(configuration, pattern, guard=False)
    report = cleanup(get_transport(), list(plan.hosts))
    summary = {"reverted": report.reverted, "left": report.left}
    if not report.clean:
        problems = [
            f"{name}: {host.error or ''}{' failed: ' + ', '.join(host.failed) if host.failed else ''}"
            f"{' left: ' + ', '.join(f.id for f in host.left) if host.left else ''}"
            for name, host in report.hosts.items()
            if not host.clean
        ]
        raise ActivityFailed("revert_all_faults: not clean: " + "; ".join(problems))
    return summary
