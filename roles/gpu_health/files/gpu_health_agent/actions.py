"""Action plugins behind one interface, each switched on or off in the config, and the executor that runs them.

The engine asks for abstract actions (drain, undrain, rma, reset, reboot); the executor hands each to the enabled
plugins that handle it:

- drain_file   drain / undrain / rma: a JSON file workloads honour (written atomically; removed on undrain)
- slurm        drain / undrain / rma: ``scontrol update nodename=N state=drain reason=...`` / ``state=resume``
               (only a drain whose reason is gpu_health's is resumed)
- kubernetes   drain / undrain / rma: ``kubectl cordon`` + ``kubectl drain --ignore-daemonsets
               --delete-emptydir-data --timeout=Ns`` (evictions, so PodDisruptionBudgets hold; never
               --disable-eviction), an annotation saying why; ``uncordon`` only a node gpu_health cordoned
- gpu_reset    reset: ``nvidia-smi -r -i N``
- reboot       reboot: ``systemctl reboot`` or the configured command

Every command goes through the Runner. In dry-run mode a plugin's changes (``Operations.change``, file writes) are
only described; read-only queries still run, so the description is the one a real run would have acted on.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gpu_health_agent.config import (
    Config,
    DrainFileConfig,
    GpuResetConfig,
    KubernetesConfig,
    RebootConfig,
    SlurmConfig,
)
from gpu_health_agent.events import Action, ActionResult, full_bus_id
from gpu_health_agent.runner import Runner, RunResult
from gpu_health_agent.store import atomic_write_json

__all__ = [
    "DRAIN_ANNOTATION",
    "REASON_PREFIX",
    "RMA_ANNOTATION",
    "DrainFilePlugin",
    "Executor",
    "GpuResetPlugin",
    "KubernetesPlugin",
    "Operations",
    "Plugin",
    "PluginOutcome",
    "RebootPlugin",
    "SlurmPlugin",
    "build_plugins",
]

REASON_PREFIX = "gpu_health"
DRAIN_ANNOTATION = "gpuops.fleet/gpu-health-drain"
RMA_ANNOTATION = "gpuops.fleet/gpu-health-rma"
_REASON_MAX = 200
_KUBECTL_GRACE_S = 30  # the runner's timeout beyond kubectl drain's own --timeout


@dataclass
class Operations:
    """What a plugin may do. ``change`` and the file operations only describe themselves in dry-run mode."""

    runner: Runner
    dry_run: bool
    done: list[str] = field(default_factory=list)

    def query(self, argv: Sequence[str], timeout: float) -> RunResult:
        """A read-only command: runs in dry-run mode too."""
        return self.runner(argv, timeout)

    def change(self, argv: Sequence[str], timeout: float) -> RunResult:
        if self.dry_run:
            self.done.append(f"would run: {shlex.join(argv)}")
            return RunResult(tuple(argv), 0, "")
        result = self.runner(argv, timeout)
        self.done.append(f"ran: {shlex.join(argv)} ({result.tail(120)})")
        return result

    def write_json(self, path: str, data: Any) -> None:
        if self.dry_run:
            self.done.append(f"would write {path}: {data}")
            return
        atomic_write_json(path, data)
        self.done.append(f"wrote {path}")

    def remove(self, path: str) -> None:
        if self.dry_run:
            self.done.append(f"would remove {path}")
            return
        Path(path).unlink(missing_ok=True)
        self.done.append(f"removed {path}")


@dataclass(frozen=True)
class PluginOutcome:
    ok: bool
    detail: str = ""


class Plugin(Protocol):
    name: str
    actions: frozenset[str]

    def run(self, action: Action, ops: Operations) -> PluginOutcome: ...


def _reason(action: Action) -> str:
    text = " ".join(f"{REASON_PREFIX}: {action.reason}".split())
    return text[:_REASON_MAX]


def _checked(result: RunResult, what: str) -> PluginOutcome:
    return PluginOutcome(True) if result.rc == 0 else PluginOutcome(False, f"{what} failed: {result.tail()}")


_DRAIN_ACTIONS = frozenset({"drain", "undrain", "rma"})


class DrainFilePlugin:
    """A JSON file (``{"drained": true, "rma": false, "reason": ..., "since": ..., "node": ...}``) that workloads
    and their launchers check before they start; it is removed on undrain."""

    name = "drain_file"
    actions = _DRAIN_ACTIONS

    def __init__(self, config: DrainFileConfig, node: str, clock: Callable[[], float] = time.time) -> None:
        self.path = config.path
        self.node = node
        self.clock = clock

    def run(self, action: Action, ops: Operations) -> PluginOutcome:
        if action.name == "undrain":
            ops.remove(self.path)
            return PluginOutcome(True)
        data = {
            "drained": True,
            "rma": action.name == "rma",
            "node": self.node,
            "reason": _reason(action),
            "since": round(self.clock(), 3),
            "by": REASON_PREFIX,
        }
        ops.write_json(self.path, data)
        return PluginOutcome(True)


class SlurmPlugin:
    name = "slurm"
    actions = _DRAIN_ACTIONS

    def __init__(self, config: SlurmConfig) -> None:
        self.config = config

    def _update(self, ops: Operations, state: str, reason: str | None = None) -> RunResult:
        argv = [*self.config.command, "update", f"nodename={self.config.node}", f"state={state}"]
        if reason is not None:
            argv.append(f"reason={reason}")
        return ops.change(argv, self.config.timeout_s)

    def run(self, action: Action, ops: Operations) -> PluginOutcome:
        if action.name != "undrain":
            return _checked(self._update(ops, "drain", _reason(action)), "scontrol update state=drain")
        shown = ops.query([*self.config.command, "-o", "show", "node", self.config.node], self.config.timeout_s)
        if shown.rc != 0:
            return PluginOutcome(False, f"scontrol show node failed: {shown.tail()}")
        state = next((w.partition("=")[2] for w in shown.stdout.split() if w.startswith("State=")), "")
        if "DRAIN" not in state.upper():
            return PluginOutcome(True, f"slurm: node not drained (State={state})")
        if f"Reason={REASON_PREFIX}" not in shown.stdout:
            return PluginOutcome(True, "slurm: drained by someone else (reason not gpu_health's): left drained")
        return _checked(self._update(ops, "resume"), "scontrol update state=resume")


class KubernetesPlugin:
    name = "kubernetes"
    actions = _DRAIN_ACTIONS

    def __init__(self, config: KubernetesConfig) -> None:
        self.config = config
        self.base = [*config.command, *(["--kubeconfig", config.kubeconfig] if config.kubeconfig else [])]

    def drain_argv(self) -> list[str]:
        argv = [*self.base, "drain", self.config.node, "--ignore-daemonsets", "--delete-emptydir-data"]
        argv.append(f"--timeout={self.config.drain_timeout_s}s")
        if self.config.grace_period_s >= 0:
            argv.append(f"--grace-period={self.config.grace_period_s}")
        return argv

    def _annotate(self, ops: Operations, *pairs: str) -> RunResult:
        return ops.change([*self.base, "annotate", "node", self.config.node, *pairs, "--overwrite"], 30)

    def run(self, action: Action, ops: Operations) -> PluginOutcome:
        node, reason = self.config.node, _reason(action)
        if action.name == "rma":
            return _checked(self._annotate(ops, f"{RMA_ANNOTATION}={reason}"), "kubectl annotate (rma)")
        if action.name == "undrain":
            return self._undrain(ops)
        steps = (
            (self._annotate(ops, f"{DRAIN_ANNOTATION}={reason}"), "kubectl annotate"),
            (ops.change([*self.base, "cordon", node], 60), "kubectl cordon"),
        )
        for result, what in steps:
            if result.rc != 0:
                return _checked(result, what)
        drained = ops.change(self.drain_argv(), self.config.drain_timeout_s + _KUBECTL_GRACE_S)
        return _checked(drained, "kubectl drain (evictions honour PodDisruptionBudgets)")

    def _undrain(self, ops: Operations) -> PluginOutcome:
        key = DRAIN_ANNOTATION.replace(".", "\\.")
        argv = [*self.base, "get", "node", self.config.node, "-o", f"jsonpath={{.metadata.annotations.{key}}}"]
        shown = ops.query(argv, 60)
        if shown.rc != 0:
            return PluginOutcome(False, f"kubectl get node failed: {shown.tail()}")
        if not shown.stdout.strip():
            return PluginOutcome(True, "kubernetes: not cordoned by gpu_health: left as it is")
        uncordoned = ops.change([*self.base, "uncordon", self.config.node], 60)
        if uncordoned.rc != 0:
            return _checked(uncordoned, "kubectl uncordon")
        argv = [*self.base, "annotate", "node", self.config.node, f"{DRAIN_ANNOTATION}-", f"{RMA_ANNOTATION}-"]
        removed = ops.change(argv, 30)
        return _checked(removed, "kubectl annotate (remove)")


class GpuResetPlugin:
    name = "gpu_reset"
    actions = frozenset({"reset"})

    def __init__(self, config: GpuResetConfig) -> None:
        self.config = config

    def run(self, action: Action, ops: Operations) -> PluginOutcome:
        if action.gpu is not None:
            which = str(action.gpu)
        elif action.pci:
            which = full_bus_id(action.pci)
        else:
            return PluginOutcome(False, "no GPU named for the reset")
        return _checked(ops.change([*self.config.command, "-r", "-i", which], self.config.timeout_s), "GPU reset")


class RebootPlugin:
    name = "reboot"
    actions = frozenset({"reboot"})

    def __init__(self, config: RebootConfig) -> None:
        self.config = config

    def run(self, action: Action, ops: Operations) -> PluginOutcome:  # noqa: ARG002 - one interface for all
        return _checked(ops.change(list(self.config.command), self.config.timeout_s), "reboot command")


def build_plugins(config: Config, clock: Callable[[], float] = time.time) -> list[Plugin]:
    """The enabled plugins, drain backends in the order they run: local file, Slurm, Kubernetes."""
    plugins: list[Plugin] = []
    if config.drain_file.enabled:
        plugins.append(DrainFilePlugin(config.drain_file, config.node_name, clock))
    if config.slurm.enabled:
        plugins.append(SlurmPlugin(config.slurm))
    if config.kubernetes.enabled:
        plugins.append(KubernetesPlugin(config.kubernetes))
    if config.gpu_reset.enabled:
        plugins.append(GpuResetPlugin(config.gpu_reset))
    if config.reboot.enabled:
        plugins.append(RebootPlugin(config.reboot))
    return plugins


class Executor:
    """Runs an action through every enabled plugin that handles it; all must succeed for "ok"."""

    def __init__(self, plugins: Sequence[Plugin], runner: Runner, dry_run: bool = False) -> None:
        self.plugins = list(plugins)
        self.runner = runner
        self.dry_run = dry_run

    def execute(self, action: Action) -> tuple[ActionResult, list[str]]:
        """The result for the engine, and what was done (or, in dry-run mode, would have been)."""
        chosen = [p for p in self.plugins if action.name in p.actions]
        if not chosen:
            return ActionResult(action.name, "disabled", "no enabled plugin handles it", action.target), []
        ops = Operations(self.runner, self.dry_run)
        failures, notes = [], []
        for plugin in chosen:
            try:
                outcome = plugin.run(action, ops)
            except OSError as err:
                outcome = PluginOutcome(False, f"{err.strerror or err}")
            if not outcome.ok:
                failures.append(f"{plugin.name}: {outcome.detail}")
            elif outcome.detail:
                notes.append(outcome.detail)
        if failures:
            return ActionResult(action.name, "failed", "; ".join(failures), action.target), ops.done
        outcome_name = "dry_run" if self.dry_run else "ok"
        return ActionResult(action.name, outcome_name, "; ".join(notes), action.target), ops.done
