"""Maintenance actions on the gpu_health agent that experiments need in their rollbacks.

``clear_rma`` is what an operator runs once a GPU marked for RMA has been replaced (the agent's own
``--clear-rma``); an experiment that provokes an RMA mark calls it after reverting its fault, so the lab is left
as it was found. It acts only on hosts whose agent shows the mark.
"""

from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import run_on, targets
from chaosgpu.health import probes, state

__all__ = ["clear_rma"]

_TIMEOUT_S = 60


def clear_rma(
    pattern: str,
    wait_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Clear the gpu_health RMA mark on every host matching ``pattern`` that has one (``python3 -m
    gpu_health_agent --clear-rma``, taken by the running agent at its next poll; it then undrains once the node has
    been healthy for its ``undrain_after_s``). Revert the fault first, or the agent marks the node again. With
    ``wait_s`` > 0, waits at most that long until no matching host is drained or marked any more, and fails naming
    the state when they are not. Returns ``{"cleared": [hosts], "undrained": bool|null}``."""
    seconds = probes.check_wait_s(wait_s)
    states = probes.gpu_health_state(pattern, configuration, secrets)
    marked = sorted(name for name, s in states.items() if s["rma"])
    hosts = [h for h in targets(configuration, pattern, guard=False).hosts if h.name in marked]
    if hosts:
        results = run_on(hosts, state.clear_rma_command, timeout=_TIMEOUT_S)
        failed = [f"{name}: exit {r.rc}: {(r.stdout + r.stderr).strip()[-300:]}" for name, r in results.items() if r.rc]
        if failed:
            raise ActivityFailed("clear_rma: " + "; ".join(failed))
    undrained = None
    if seconds:
        undrained = probes.node_undrained(pattern, seconds, configuration, secrets)
        if not undrained:
            now = probes.gpu_health_state(pattern, configuration, secrets)
            raise ActivityFailed(
                f"clear_rma: still drained or marked {seconds:g} s later: "
                + ", ".join(f"{n}: drained={s['drained']} rma={s['rma']} phase={s['phase']}" for n, s in now.items())
            )
    return {"cleared": marked, "undrained": undrained}
