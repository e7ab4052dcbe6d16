"""The agent's state as node_exporter textfile metrics, ``<textfile_dir>/gpu_health.prom`` (written atomically).

| metric | labels | meaning |
|---|---|---|
| gpu_health_gpu_healthy | gpu, uuid | 1 when the GPU passed the last poll's checks |
| gpu_health_last_xid | gpu | the last XID the kernel log reported for the GPU (0: none yet) |
| gpu_health_last_xid_timestamp_seconds | gpu | when (the kernel's stamp, else when the agent read it) |
| gpu_health_node_drained | | 1 while the agent holds the node drained |
| gpu_health_node_rma | | 1 while the node is marked for RMA (no automatic undrain) |
| gpu_health_phase | phase | 1 for the engine's current phase |
| gpu_health_dry_run | | 1 when the agent only logs what it would do |
| gpu_health_detection_timestamp_seconds | | when the agent detected the latest incident |
| gpu_health_event_timestamp_seconds | | when the latest incident's event happened, by the kernel's stamp |
| gpu_health_healthy_since_timestamp_seconds | | since when every poll found the node healthy (absent: unhealthy) |
| gpu_health_action_last_timestamp_seconds | action, outcome | when an action last ended so |
| gpu_health_action_total | action, outcome | how many times (counter, kept across restarts) |
| gpu_health_action_held | action, reason | 1 while the next step waits (cooldown, busy, rate_limited, vetoed) |
| gpu_health_reboots_last_hour | | reboots the agent requested in the last hour |
| gpu_health_source_up | source | 1 when the source answered in the last poll |
| gpu_health_last_poll_timestamp_seconds | | when the agent last polled its sources |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from gpu_health_agent.engine import PHASES, State
from gpu_health_agent.store import atomic_write_text

__all__ = ["FILE_NAME", "render", "write"]

FILE_NAME = "gpu_health.prom"
_HOUR = 3600.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))  # noqa: PLR2004


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            yield f"{self.name}{_labels(labels)} {_number(value)}"


def _gpu_label(pci: str, index: int | None) -> str:
    return str(index) if index is not None else pci


def _gpu_families(state: State) -> list[_Family]:
    healthy = _Family("gpu_health_gpu_healthy", "gauge", "1 when the GPU passed the last poll's checks.")
    last_xid = _Family("gpu_health_last_xid", "gauge", "The last XID the kernel log reported for the GPU (0: none).")
    xid_at = _Family(
        "gpu_health_last_xid_timestamp_seconds", "gauge", "When the GPU's last XID happened (kernel stamp)."
    )
    records = sorted(state.gpus.items(), key=lambda item: (item[1].index is None, item[1].index or 0, item[0]))
    for pci, record in records:
        gpu = _gpu_label(pci, record.index)
        if record.index is not None:
            healthy.add(1 if record.healthy else 0, gpu=gpu, uuid=record.uuid)
        last_xid.add(record.last_xid, gpu=gpu)
        if record.last_xid_at is not None:
            xid_at.add(record.last_xid_at, gpu=gpu)
    return [healthy, last_xid, xid_at]


def _node_families(state: State, dry_run: bool) -> list[_Family]:
    drained = _Family("gpu_health_node_drained", "gauge", "1 while the gpu_health agent holds the node drained.")
    drained.add(1 if state.drained else 0)
    rma = _Family("gpu_health_node_rma", "gauge", "1 while the node is marked for RMA (no automatic undrain).")
    rma.add(1 if state.rma else 0)
    phase = _Family("gpu_health_phase", "gauge", "1 for the agent's current phase.")
    for name in PHASES:
        phase.add(1 if state.phase == name else 0, phase=name)
    dry = _Family("gpu_health_dry_run", "gauge", "1 when the agent only logs what it would do.")
    dry.add(1 if dry_run else 0)
    families = [drained, rma, phase, dry]
    for name, value, text in (
        ("gpu_health_detection_timestamp_seconds", state.detected_at, "When the agent detected the latest incident."),
        ("gpu_health_event_timestamp_seconds", state.event_at, "When the latest incident's event happened."),
        ("gpu_health_healthy_since_timestamp_seconds", state.healthy_since, "Since when every poll was healthy."),
        ("gpu_health_last_poll_timestamp_seconds", state.last_poll_at, "When the agent last polled its sources."),
    ):
        family = _Family(name, "gauge", text)
        if value is not None:
            family.add(value)
        families.append(family)
    return families


def _action_families(state: State, now: float) -> list[_Family]:
    last = _Family("gpu_health_action_last_timestamp_seconds", "gauge", "When an action last ended with the outcome.")
    total = _Family("gpu_health_action_total", "counter", "Actions by outcome, kept across agent restarts.")
    for key in sorted(state.action_total):
        action, _, outcome = key.partition("/")
        total.add(state.action_total[key], action=action, outcome=outcome)
        if key in state.action_last:
            last.add(state.action_last[key], action=action, outcome=outcome)
    held = _Family("gpu_health_action_held", "gauge", "1 while the next step waits (cooldown, busy, guards).")
    if state.incident is not None and state.incident.blocked:
        action, _, reason = state.incident.blocked.partition(":")
        held.add(1, action=action, reason=reason)
    reboots = _Family("gpu_health_reboots_last_hour", "gauge", "Reboots the agent requested in the last hour.")
    reboots.add(sum(1 for t in state.reboots if now - t < _HOUR))
    return [last, total, held, reboots]


def render(state: State, now: float, dry_run: bool = False, sources_up: Mapping[str, bool] | None = None) -> str:
    """The exposition text (Prometheus text format 0.0.4) of ``state``."""
    families = _gpu_families(state) + _node_families(state, dry_run) + _action_families(state, now)
    up = _Family("gpu_health_source_up", "gauge", "1 when the source answered in the last poll.")
    for name, ok in sorted((sources_up or {}).items()):
        up.add(1 if ok else 0, source=name)
    families.append(up)
    return "".join(line + "\n" for family in families for line in family.lines())


def write(textfile_dir: str, text: str) -> Path:
    path = Path(textfile_dir) / FILE_NAME
    atomic_write_text(path, text, 0o644)
    return path
