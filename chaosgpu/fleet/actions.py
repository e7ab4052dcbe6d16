"""Rollback actions: revert the faults chaosgpu put on the fleet."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import get_transport, record_dict, targets
from chaosgpu.ledger import cleanup, current_run_id, list_faults, revert_fault

__all__ = ["revert_all_faults", "revert_faults"]


def revert_faults(
    pattern: str = "all",
    kind: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Revert, now, the faults this run injected on the hosts matching ``pattern`` (optionally only those of
    ``kind``), as a rollback: faults of other runs are left to their own deadlines. Returns the faults reverted;
    fails naming every fault whose revert failed (those stay in the ledger and still revert at their deadline)."""
    plan = targets(configuration, pattern, guard=False)
    transport = get_transport()
    run_id = current_run_id()
    by_name = {h.name: h for h in plan.hosts}

    def revert_host(host_name: str, faults: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """One host's faults of this run, newest first (a fault may build on an older one of the same host)."""
        done: list[dict[str, Any]] = []
        failed: list[str] = []
        for fault in reversed(faults):
            if fault.run_id != run_id or (kind and fault.kind != kind):
                continue
            try:
                if revert_fault(transport, by_name[host_name], fault.id):
                    done.append(record_dict(fault))
            except ActivityFailed as err:
                failed.append(str(err))
        return done, failed

    # Hosts side by side: reverting N hosts takes about as long as one.
    listed = list_faults(transport, list(plan.hosts))
    reverted: list[dict[str, Any]] = []
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(listed)))) as pool:
        for done, failed in pool.map(lambda item: revert_host(*item), listed.items()):
            reverted += done
            errors += failed
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
