"""Reading the gpu_health agent's published state (its node_exporter textfile ``gpu_health.prom``) and Slurm's view of
a node (``scontrol -o show node``), as pure functions the probes and actions share; no host is reached here."""

from __future__ import annotations

import re
import shlex
from typing import Any

from chaosgpu.exporter.exposition import parse_exposition
from chaosgpu.types import Host

__all__ = [
    "DEFAULT_TEXTFILE",
    "TEXTFILE_VAR",
    "clear_rma_command",
    "parse_gpu_health_metrics",
    "parse_slurm_node",
    "read_textfile_command",
    "slurm_node_command",
]

# Where the agent writes its metrics: gpu_health_textfile_dir (node_exporter's textfile directory) + gpu_health.prom.
TEXTFILE_VAR = "chaosgpu_gpu_health_textfile"
DEFAULT_TEXTFILE = "/var/lib/node_exporter/textfile/gpu_health.prom"
AGENT_CONFIG = "/etc/gpu_health/agent.json"
# Printed instead of the file when it is missing, so "no agent" is told apart from an unreachable host.
MISSING_MARK = "chaosgpu: gpu_health.prom missing"
_SLURM_FIELD = re.compile(r"(?:^|\s)(\w+)=(.*?)(?=\s\w+=|$)")


def _sudo(host: Host, command: str) -> str:
    return command if host.user == "root" else f"sudo -n {command}"


def read_textfile_command(host: Host) -> str:
    """The shell command that prints the host's gpu_health.prom (host variable ``chaosgpu_gpu_health_textfile``,
    default node_exporter's textfile directory), or MISSING_MARK when the file does not exist."""
    path = str(host.vars.get(TEXTFILE_VAR) or DEFAULT_TEXTFILE)
    if not path.startswith("/"):
        raise ValueError(f"{TEXTFILE_VAR} must be an absolute path, got {path!r}")
    quoted = shlex.quote(path)
    return f"if test -e {quoted}; then cat {quoted}; else echo {shlex.quote(MISSING_MARK)}; fi"


def clear_rma_command(host: Host) -> str:
    """The agent's own ``--clear-rma`` (the running agent takes it at its next poll), with the PYTHONPATH its
    service runs with."""
    find_path = "systemctl show -p Environment --value gpu-health | tr ' ' '\\n' | sed -n 's/^PYTHONPATH=//p'"
    run = f'env PYTHONPATH="$pp" python3 -m gpu_health_agent --config {AGENT_CONFIG} --clear-rma'
    return (
        f'pp=$({find_path}); test -n "$pp" || {{ echo "gpu-health.service sets no PYTHONPATH" >&2; exit 3; }}; '
        + _sudo(host, run)
    )


def slurm_node_command(node: str) -> str:
    """``scontrol -o show node NODE`` (one line of Key=Value fields)."""
    if not isinstance(node, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", node):
        raise ValueError(f"node must be a Slurm node name, got {node!r}")
    return f"scontrol -o show node {node}"


def parse_slurm_node(text: str) -> dict[str, Any]:
    """``scontrol -o show node`` -> {"node", "state", "flags": [DRAIN, DOWN, ...], "reason", "available"}: the
    state's words split on ``+`` (``IDLE+DRAIN``, ``DOWN*``); ``available`` when neither DOWN, DRAIN, FAIL nor
    NOT_RESPONDING."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    fields = {key: value.strip() for key, value in _SLURM_FIELD.findall(line)}
    if "NodeName" not in fields or "State" not in fields:
        raise ValueError(f"not a scontrol -o show node line: {line[:200]!r}")
    state = fields["State"]
    flags = [word.rstrip("*") for word in state.split("+")]
    not_responding = state.endswith("*") or "NOT_RESPONDING" in flags
    unavailable = {"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING", "NOT_RESPONDING"}
    return {
        "node": fields["NodeName"],
        "state": state,
        "flags": flags,
        "reason": fields.get("Reason", ""),
        "available": not not_responding and not unavailable.intersection(flags),
    }


def parse_gpu_health_metrics(text: str) -> dict[str, Any]:
    """gpu_health.prom -> the agent's state: ``{"drained": bool, "rma": bool, "dry_run": bool, "phase": str,
    "last_xid": {gpu: xid}, "last_xid_time": {gpu: epoch}, "healthy_gpus": int, "gpus": int,
    "actions": {action: {outcome: count}}, "detection_time": epoch|None, "last_poll": epoch|None}``. Raises
    ValueError when the text is not the agent's (no ``gpu_health_node_drained`` sample), naming what it lacks."""
    if text.strip() == MISSING_MARK:
        raise ValueError("no gpu_health.prom: is the gpu_health agent installed and running?")
    samples = parse_exposition(text)
    single = {name: value for name, labels, value in samples if not labels}
    if "gpu_health_node_drained" not in single:
        raise ValueError("not the gpu_health agent's metrics: no gpu_health_node_drained sample")
    phase = next((labels.get("phase", "") for n, labels, v in samples if n == "gpu_health_phase" and v == 1), "")
    last_xid = {labels["gpu"]: int(v) for n, labels, v in samples if n == "gpu_health_last_xid" and "gpu" in labels}
    last_xid_time = {
        labels["gpu"]: v for n, labels, v in samples if n == "gpu_health_last_xid_timestamp_seconds" and "gpu" in labels
    }
    healthy = [v for n, labels, v in samples if n == "gpu_health_gpu_healthy"]
    actions: dict[str, dict[str, int]] = {}
    for name, labels, value in samples:
        if name == "gpu_health_action_total" and "action" in labels:
            actions.setdefault(labels["action"], {})[labels.get("outcome", "")] = int(value)
    return {
        "drained": single["gpu_health_node_drained"] == 1,
        "rma": single.get("gpu_health_node_rma", 0) == 1,
        "dry_run": single.get("gpu_health_dry_run", 0) == 1,
        "phase": phase,
        "last_xid": last_xid,
        "last_xid_time": last_xid_time,
        "healthy_gpus": sum(1 for v in healthy if v == 1),
        "gpus": len(healthy),
        "actions": actions,
        "detection_time": single.get("gpu_health_detection_timestamp_seconds"),
        "last_poll": single.get("gpu_health_last_poll_timestamp_seconds"),
    }
