"""The agent: poll the sources, step the engine, carry out its actions, save the state, write the metrics.

Each action is written ahead: the state that says it is in flight is saved before the plugin runs (a reboot
ends the agent), and again after its result. The node's boot is recognised by a token in ``runtime_dir``
(a tmpfs such as /run, emptied by every boot; a container's restart empties its /run too, where the kernel's
boot id would not change).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from gpu_health_agent import maintenance
from gpu_health_agent.actions import Executor, Plugin, build_plugins
from gpu_health_agent.config import Config
from gpu_health_agent.engine import ERR, NOTICE, WARNING, Engine, Guard, Note, State
from gpu_health_agent.events import Boot, ClearRma, Event, Finding, GpuInfo, Poll
from gpu_health_agent.fleet import make_guard
from gpu_health_agent.journal import Journal
from gpu_health_agent.metrics import render, write
from gpu_health_agent.runner import Runner, subprocess_runner
from gpu_health_agent.sources import DcgmHealthSource, KernelLogSource, NvidiaSmiSource, Source, read_uptime
from gpu_health_agent.store import atomic_write_json, atomic_write_text

__all__ = ["CLEAR_RMA_FILE", "STATE_FILE", "Agent", "build_sources", "request_clear_rma"]

STATE_FILE = "state.json"
POSITION_FILE = "kernel_log.position.json"
CLEAR_RMA_FILE = "clear-rma"
BOOT_MARKER_FILE = "boot-marker"
KERNEL_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_MAX_ACTIONS_PER_EVENT = 64


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def build_sources(
    config: Config,
    runner: Runner,
    clock: Callable[[], float] = time.time,
    uptime: Callable[[], float] = read_uptime,
    kernel_boot_id: str | None = None,
) -> list[Source]:
    """The enabled sources, kernel log first: its XID lines name the cause the other sources only see the effect of."""
    sources: list[Source] = []
    if config.kernel_log.enabled:
        boot_id = kernel_boot_id if kernel_boot_id is not None else _read_text(KERNEL_BOOT_ID)
        position = Path(config.state_dir) / POSITION_FILE
        sources.append(KernelLogSource(config.kernel_log, position, boot_id, clock, uptime))
    if config.nvidia_smi.enabled:
        sources.append(NvidiaSmiSource(config.nvidia_smi, runner))
    if config.dcgm.enabled:
        sources.append(DcgmHealthSource(config.dcgm, runner))
    return sources


def request_clear_rma(config: Config, by: str) -> Path:
    """What ``--clear-rma`` does: leave a request the running agent picks up at its next poll."""
    path = Path(config.state_dir) / CLEAR_RMA_FILE
    atomic_write_text(path, by + "\n", 0o600)
    return path


class Agent:
    def __init__(
        self,
        config: Config,
        runner: Runner = subprocess_runner,
        clock: Callable[[], float] = time.time,
        journal: Journal | None = None,
        sources: Sequence[Source] | None = None,
        plugins: Sequence[Plugin] | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.journal = journal or Journal(clock=clock)
        self.sources = list(sources) if sources is not None else build_sources(config, runner, clock)
        chosen_guard = guard if guard is not None else make_guard(config.fleet_guard, runner)
        self.engine = Engine(
            config.policy, chosen_guard, config.nvidia_smi.expected_gpus, hold=maintenance.hold(config.state_dir)
        )
        self.executor = Executor(
            plugins if plugins is not None else build_plugins(config, clock), runner, config.dry_run
        )
        self.state_dir = Path(config.state_dir)
        self.state = State()
        self.sources_up: dict[str, bool] = {}

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    # --- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state = self._load_state()
        if self.config.dry_run:
            self.journal.emit("dry_run", "dry-run mode: actions are logged, not carried out", WARNING)
        self.handle(Boot(self._boot_token()))
        for source in self.sources:
            for warning in source.start():
                self.journal.emit("source_warning", warning, WARNING, source=source.name)
        self.write_metrics()

    def run(self, stop: threading.Event) -> None:
        self.start()
        while not stop.is_set():
            self.cycle()
            stop.wait(self.config.poll_interval_s)

    def cycle(self) -> None:
        """One poll of every source, and whatever the engine makes of it."""
        self._take_requests()
        self.handle(self.poll())
        for source in self.sources:
            try:
                source.commit()
            except OSError as err:
                self.journal.emit("source_warning", f"{source.name}: cannot save its position: {err}", ERR)
        self.write_metrics()

    def poll(self) -> Poll:
        findings: list[Finding] = []
        gpus: tuple[GpuInfo, ...] | None = None
        busy = None
        for source in self.sources:
            try:
                report = source.poll()
            except Exception as err:  # a source's bug or an odd answer must not stop the others
                findings.append(Finding("source_error", source.name, detail=f"{type(err).__name__}: {err}"))
                self.sources_up[source.name] = False
                continue
            findings += report.findings
            gpus = report.gpus if report.gpus is not None else gpus
            busy = report.busy if report.busy is not None else busy
            self.sources_up[source.name] = not any(
                f.kind in ("source_error", "nvml_error") and f.source == source.name for f in report.findings
            )
        return Poll(tuple(findings), gpus, busy)

    def handle(self, event: Event) -> None:
        """Step the engine with ``event`` and carry out the actions it asks for, each result stepped in turn."""
        step = self.engine.step(self.state, event, self.clock())
        self._take(step.state, step.notes)
        queue = list(step.actions)
        for _ in range(_MAX_ACTIONS_PER_EVENT):
            if not queue:
                break
            action = queue.pop(0)
            self.save_state()  # written ahead: the action is in flight
            self.write_metrics()
            result, done = self.executor.execute(action)
            self.journal.emit(
                "action_result",
                f"{action.name}: {result.outcome}" + (f" ({result.detail})" if result.detail else ""),
                ERR if result.outcome == "failed" else NOTICE,
                action=action.name,
                outcome=result.outcome,
                gpu=action.gpu,
                done=done or None,
                dry_run=self.config.dry_run or None,
            )
            step = self.engine.step(self.state, result, self.clock())
            self._take(step.state, step.notes)
            queue.extend(step.actions)
        if queue:  # not expected (a step asks for one action at a time); the next poll asks again
            self.journal.emit("actions_deferred", f"{len(queue)} action(s) left for the next poll", ERR)
            self.state.in_flight = ""
        self.save_state()

    def _take(self, state: State, notes: Sequence[Note]) -> None:
        self.state = state
        for note in notes:
            self.journal.note(note)

    # --- files --------------------------------------------------------------------------------------------------

    def _load_state(self) -> State:
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return State()
        except OSError as err:
            self.journal.emit("state_unreadable", f"{self.state_path}: {err.strerror}; starting afresh", ERR)
            return State()
        try:
            return State.from_json(json.loads(text))
        except (ValueError, TypeError, AttributeError) as err:
            aside = self.state_path.with_suffix(".corrupt")
            self.state_path.replace(aside)
            message = f"{self.state_path} is not a saved state ({err}); kept as {aside.name}, starting afresh"
            self.journal.emit("state_corrupt", message, ERR)
            return State()

    def save_state(self) -> None:
        atomic_write_json(self.state_path, self.state.to_json(), 0o600)

    def write_metrics(self) -> None:
        if not self.config.textfile_dir:
            return
        text = render(self.state, self.clock(), self.config.dry_run, self.sources_up)
        try:
            write(self.config.textfile_dir, text)
        except OSError as err:
            self.journal.emit("metrics_unwritable", f"{self.config.textfile_dir}: {err}", ERR)

    def _boot_token(self) -> str:
        """The same token until the node (or the container) boots again: /run is emptied by a boot."""
        path = Path(self.config.runtime_dir) / BOOT_MARKER_FILE
        token = _read_text(str(path))
        if not token:
            token = uuid.uuid4().hex
            atomic_write_text(path, token + "\n", 0o644)
        return token

    def _take_requests(self) -> None:
        path = self.state_dir / CLEAR_RMA_FILE
        if path.exists():
            by = _read_text(str(path)) or "operator"
            path.unlink(missing_ok=True)
            self.handle(ClearRma(by))
