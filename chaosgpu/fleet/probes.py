"""Probes of the fleet's fault ledgers: what chaosgpu has left on the hosts."""

from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import get_transport, record_dict, targets
from chaosgpu.ledger import list_faults

__all__ = ["active_faults"]


def active_faults(
    pattern: str = "all",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Every fault still in the ledgers of the hosts matching ``pattern`` (any run), oldest first per host; an
    empty list means nothing is left behind. Fails naming the hosts whose ledger could not be read."""
    plan = targets(configuration, pattern, guard=False)
    faults = list_faults(get_transport(), list(plan.hosts))
    return [dict(record_dict(f), state=f.state) for host_faults in faults.values() for f in host_faults]
