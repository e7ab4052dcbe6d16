"""Planned maintenance (a driver upgrade, a firmware update): the node drained through the agent's own drain
plugins (drain file, Slurm, Kubernetes) with a maintenance reason, and a marker in the state dir.

``python3 -m gpu_health_agent --maintenance-start "driver upgrade 535.216.01"`` / ``--maintenance-end``.

- While the marker exists, the running agent holds back undrain, GPU reset and reboot (``Engine``'s ``hold``):
  the node is the operator's, and a reboot in the middle of a package upgrade is the last thing it needs.
- ``start`` writes the marker first (from then on the agent undrains nothing), then drains; a node the agent already
  holds drained for an incident keeps that drain and its reason. Again on a node under maintenance: nothing to do.
- ``end`` undrains only a drain that is maintenance's: when the agent holds the node drained for an incident or
  an RMA, the drain stays (the agent undrains it when the incident is over; an RMA needs ``--clear-rma``), the
  marker goes, and the exit status is ``RC_HELD``. On a node not under maintenance: nothing to do.
- Dry run (the command line's ``--dry-run``): what would be done is described, nothing is changed. The config's
  ``dry_run`` (a trial of the agent's own reactions) does not apply to these explicit commands: a node is drained
  for its upgrade even while its agent only logs what it would do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_health_agent.actions import Executor, Plugin, build_plugins
from gpu_health_agent.config import Config
from gpu_health_agent.engine import State
from gpu_health_agent.events import Action
from gpu_health_agent.runner import Runner, subprocess_runner
from gpu_health_agent.store import atomic_write_json, read_json

__all__ = ["HELD_STEPS", "MARKER_FILE", "RC_FAILED", "RC_HELD", "Outcome", "active", "end", "hold", "start"]

MARKER_FILE = "maintenance.json"
HELD_STEPS = frozenset({"undrain", "reset", "reboot"})  # what the running agent holds back during maintenance
RC_FAILED = 1  # a drain backend failed (its words in the message)
RC_HELD = 3  # maintenance ended, but the agent holds the node drained for an incident or an RMA
_DRAIN_PLUGINS = ("drain_file", "slurm", "kubernetes")
_AGENT_STATE_FILE = "state.json"


@dataclass(frozen=True)
class Outcome:
    """What a maintenance command did: exit status, whether anything changed, in words, and each step."""

    rc: int
    changed: bool
    message: str
    done: list[str] = field(default_factory=list)

    def to_json(self, command: str, node: str) -> dict[str, Any]:
        return {"command": command, "node": node, "rc": self.rc, "changed": self.changed, "message": self.message,
                "done": self.done}  # fmt: skip


def _marker_path(config: Config) -> Path:
    return Path(config.state_dir) / MARKER_FILE


def active(state_dir: str) -> dict[str, Any] | None:
    """The maintenance marker in ``state_dir``, or None when the node is not under maintenance."""
    marker = read_json(Path(state_dir) / MARKER_FILE)
    return marker if isinstance(marker, dict) else None


def hold(state_dir: str) -> Callable[[str], str]:
    """The engine's ``hold``: why a step must wait (the node is under maintenance), or "" when it need not."""

    def why(step: str) -> str:
        if step not in HELD_STEPS:
            return ""
        marker = active(state_dir)
        if marker is None:
            return ""
        return f"node under maintenance ({marker.get('reason', '')}); {step} waits for --maintenance-end"

    return why


def _agent_state(config: Config) -> State:
    data = read_json(Path(config.state_dir) / _AGENT_STATE_FILE)
    try:
        return State.from_json(data) if isinstance(data, dict) else State()
    except (ValueError, TypeError, AttributeError):
        return State()


def _held_by_agent(state: State) -> str:
    """Why the agent holds the node drained ("" when it does not)."""
    if state.rma:
        return f"marked for RMA ({state.rma_reason}); clear it with --clear-rma once the GPU is replaced"
    if state.drained:
        reason = state.incident.reason if state.incident is not None else "an incident"
        return f"drained for an incident ({reason}, phase {state.phase}); the agent undrains it when it is over"
    return ""


def _executor(config: Config, runner: Runner, clock: Callable[[], float]) -> Executor:
    plugins: list[Plugin] = [p for p in build_plugins(config, clock) if p.name in _DRAIN_PLUGINS]
    return Executor(plugins, runner, config.dry_run)


def start(
    config: Config, reason: str, by: str, runner: Runner = subprocess_runner, clock: Callable[[], float] = time.time
) -> Outcome:
    """Put the node under maintenance: the marker, then the drain plugins with ``maintenance: <reason>``."""
    reason = " ".join(reason.split())
    if not reason:
        return Outcome(RC_FAILED, False, "a maintenance reason is required (e.g. 'driver upgrade 535.216.01')")
    marker = active(config.state_dir)
    if marker is not None and marker.get("drained"):
        return Outcome(0, False, f"already under maintenance since {marker.get('since')}: {marker.get('reason')}")
    path, done = _marker_path(config), []
    record = {"reason": reason, "since": round(clock(), 3), "by": by, "drained": False}
    if config.dry_run:
        done.append(f"would write {path}: {record}")
    else:
        atomic_write_json(path, record, 0o600)  # first: from now on the agent undrains nothing
        done.append(f"wrote {path}")
    held = _held_by_agent(_agent_state(config))
    if held:
        message = f"{config.node_name} stays drained by gpu_health, {held}; under maintenance now"
    else:
        result, steps = _executor(config, runner, clock).execute(Action("drain", f"maintenance: {reason}"))
        done += steps
        if result.outcome == "failed":
            return Outcome(RC_FAILED, not config.dry_run, f"maintenance drain failed: {result.detail}", done)
        if result.outcome == "disabled":
            message = "no drain plugin is enabled (drain_file, slurm, kubernetes): nothing drains the node"
            return Outcome(RC_FAILED, not config.dry_run, message, done)
        message = f"{config.node_name} drained for maintenance: {reason}"
    if config.dry_run:
        return Outcome(0, False, "dry run: " + message, done)
    atomic_write_json(path, {**record, "drained": True}, 0o600)
    return Outcome(0, True, message, done)


def end(config: Config, runner: Runner = subprocess_runner, clock: Callable[[], float] = time.time) -> Outcome:
    """End maintenance: undrain through the drain plugins, unless the agent holds the node drained itself."""
    marker = active(config.state_dir)
    if marker is None:
        return Outcome(0, False, f"{config.node_name} is not under maintenance")
    path, done = _marker_path(config), []
    held = _held_by_agent(_agent_state(config))
    if not held:
        result, steps = _executor(config, runner, clock).execute(Action("undrain", "maintenance over"))
        done += steps
        if result.outcome == "failed":  # the marker stays: nothing undrains the node behind the operator's back
            return Outcome(RC_FAILED, False, f"maintenance undrain failed: {result.detail}", done)
    if config.dry_run:
        done.append(f"would remove {path}")
    else:
        path.unlink(missing_ok=True)
        done.append(f"removed {path}")
    prefix = "dry run: " if config.dry_run else ""
    if held:
        message = f"{prefix}maintenance over, but {config.node_name} stays drained: gpu_health holds it {held}"
        return Outcome(RC_HELD, not config.dry_run, message, done)
    return Outcome(0, not config.dry_run, f"{prefix}{config.node_name} undrained: maintenance over", done)
