"""chaosgpu: a Chaos Toolkit extension for GPU fleets.

Injects node, network and GPU faults into the hosts of an Ansible inventory and measures detection and
recovery. Activities live in one subpackage per domain (``chaosgpu.<domain>.actions`` / ``.probes``).
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version

from chaoslib.discovery.discover import discover_actions, discover_probes, initialize_discovery_result
from chaoslib.types import DiscoveredActivities, Discovery

__all__ = ["__version__", "discover", "load_exported_activities"]

try:
    __version__ = version("chaosgpu")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

_ACTIVITY_MODULES = (
    "chaosgpu.exporter.probes",
    "chaosgpu.fleet.actions",
    "chaosgpu.fleet.probes",
    "chaosgpu.gpu.actions",
    "chaosgpu.gpu.probes",
    "chaosgpu.health.actions",
    "chaosgpu.health.probes",
    "chaosgpu.k8s.probes",
    "chaosgpu.network.actions",
    "chaosgpu.network.probes",
    "chaosgpu.node.actions",
    "chaosgpu.node.probes",
    "chaosgpu.training.actions",
    "chaosgpu.training.probes",
    "chaosgpu.workload.probes",
)

# Activity modules that need an optional dependency (pip extra): discovery leaves them out when it is missing.
_OPTIONAL_MODULES = {"chaosgpu.k8s.probes": "chaosk8s"}  # extra "k8s": chaostoolkit-kubernetes


def discover(discover_system: bool = True) -> Discovery:  # noqa: ARG001 - Chaos Toolkit's signature
    """Describe this extension's activities for ``chaos discover chaosgpu``."""
    result = initialize_discovery_result("chaosgpu", __version__, "gpu")
    result["activities"].extend(load_exported_activities())
    return result


def load_exported_activities() -> list[DiscoveredActivities]:
    """Every action and probe that chaosgpu exports."""
    activities: list[DiscoveredActivities] = []
    for module in _ACTIVITY_MODULES:
        needs = _OPTIONAL_MODULES.get(module)
        if needs and importlib.util.find_spec(needs) is None:
            continue
        if module.endswith(".actions"):
            activities.extend(discover_actions(module))
        else:
            activities.extend(discover_probes(module))
    return activities
