"""The policy engine: a pure state machine, ``Engine.step(state, event, now) -> Step(state, actions, notes)``.

It reads no clock, runs no command and touches no file: time comes in as ``now``, the world as events (a poll of
the sources, the result of an action, the agent's start after a boot, an operator's RMA clearance), and what should
happen goes out as actions and journal notes. The only call out is the fleet guard, a callback given to the
engine, asked just before a drain or a reboot would be requested.

Phases of the node::

    healthy --finding that needs action--> remediating --drain, reset--> recovering --healthy N s: undrain--> healthy
                                           remediating --reboot--> awaiting_boot --boot--> recovering
                                           remediating --rma--> rma (stays drained until an operator clears it)

Each step of a remediation (drain, reset, reboot, rma, undrain) is requested once its guards allow it: its
cooldown since it last ran, the reboots-per-hour limit, the fleet guard (drains and reboots), planned maintenance
(``hold``: undrain, reset and reboot wait while the node is under maintenance), and for a GPU reset a GPU without
compute processes. A step is requested one at a time; its ActionResult moves the state on. The same
cause on the same GPU seen ``rma_after`` times within ``repeat_window_s`` marks the node for RMA instead of
repeating the remediation, and a GPU that fails again after its remediation climbs the ladder reset -> reboot ->
RMA.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from gpu_health_agent.config import PolicyConfig
from gpu_health_agent.events import (
    Action,
    ActionResult,
    Boot,
    ClearRma,
    Event,
    Finding,
    GpuInfo,
    Poll,
)
from gpu_health_agent.policy import LADDER, Rule, rank

__all__ = [
    "AWAITING_BOOT",
    "HEALTHY",
    "PHASES",
    "RECOVERING",
    "REMEDIATING",
    "RMA",
    "Engine",
    "GpuRecord",
    "Guard",
    "Incident",
    "Note",
    "State",
    "Step",
    "Target",
    "Verdict",
]

HEALTHY, REMEDIATING, AWAITING_BOOT, RECOVERING, RMA = "healthy", "remediating", "awaiting_boot", "recovering", "rma"
PHASES = (HEALTHY, REMEDIATING, AWAITING_BOOT, RECOVERING, RMA)
_DONE_OUTCOMES = ("ok", "dry_run", "disabled")  # the step is over (disabled: switched off, so skipped)
_RESET_DECISIONS = ("reset_when_idle", "drain_reset")
_HOUR = 3600.0
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6  # syslog priorities of the journal notes


# --- state ------------------------------------------------------------------------------------------------------


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class GpuRecord:
    """What the agent knows of one GPU (keyed by its PCI address in State.gpus)."""

    index: int | None = None
    uuid: str = ""
    healthy: bool = True
    lost: bool = False
    listed: bool = False  # nvidia-smi has listed it (only such a GPU can go missing)
    last_xid: int = 0
    last_xid_at: float | None = None


@dataclass
class Target:
    """A GPU (or "node") an incident remediates, and how."""

    gpu: int | None
    cause: str
    decision: str
    on_reset_failure: str = "reboot"
    needs_reset: bool = False
    reset_done: bool = False


@dataclass
class Incident:
    """The open remediation: what opened it, its decision, the steps left and done."""

    decision: str
    cause: str
    reason: str
    opened_at: float
    event_at: float | None = None
    targets: dict[str, Target] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # causes counted in this round (cause@target)
    steps: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    remediated_at: float | None = None
    grace_until: float | None = None
    reboot_at: float | None = None
    blocked: str = ""  # "action:reason" of the hold last reported
    rounds: int = 1

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Incident:
        values = _known(cls, data)
        values["targets"] = {k: Target(**_known(Target, v)) for k, v in (data.get("targets") or {}).items()}
        return cls(**values)


@dataclass
class State:
    """Everything the agent remembers, saved as JSON in the state dir after each change."""

    phase: str = HEALTHY
    drained: bool = False
    rma: bool = False
    rma_reason: str = ""
    incident: Incident | None = None
    boot_id: str = ""
    in_flight: str = ""
    healthy_since: float | None = None
    gpus: dict[str, GpuRecord] = field(default_factory=dict)
    busy: dict[str, int] | None = None  # GPU index (as a string) -> compute processes, from the last poll
    conditions: list[str] = field(default_factory=list)  # cause@target of the last poll, to log changes only
    occurrences: dict[str, list[float]] = field(default_factory=dict)
    reboots: list[float] = field(default_factory=list)
    last_run: dict[str, float] = field(default_factory=dict)  # action -> when it was last requested
    action_last: dict[str, float] = field(default_factory=dict)  # "action/outcome" -> when
    action_total: dict[str, int] = field(default_factory=dict)  # "action/outcome" -> how many times
    detected_at: float | None = None
    event_at: float | None = None
    last_poll_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        values = _known(cls, data)
        values["gpus"] = {k: GpuRecord(**_known(GpuRecord, v)) for k, v in (data.get("gpus") or {}).items()}
        incident = data.get("incident")
        values["incident"] = Incident.from_json(incident) if incident else None
        if values.get("phase") not in PHASES:
            values["phase"] = HEALTHY
        return cls(**values)


@dataclass(frozen=True)
class Note:
    """A journal event: what happened (``event``), in words, with its syslog priority and fields."""

    event: str
    message: str
    priority: int = INFO
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    state: State
    actions: tuple[Action, ...]
    notes: tuple[Note, ...]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""


Guard = Callable[[str], Verdict]  # asked with "drain" or "reboot" just before the engine requests it


# --- engine -----------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    state: State
    now: float
    notes: list[Note] = field(default_factory=list)
    failed: str = ""  # the action whose failure this step handles: not requested again before the next event

    def note(self, event: str, message: str, priority: int = INFO, **values: Any) -> None:
        self.notes.append(Note(event, message, priority, {k: v for k, v in values.items() if v is not None}))


def target_key(finding: Finding) -> str:
    if finding.pci:
        return finding.pci
    return f"gpu{finding.gpu}" if finding.gpu is not None else "node"


def _describe(finding: Finding) -> str:
    where = f"GPU {finding.gpu}" if finding.gpu is not None else "the node"
    if finding.pci:
        where += f" ({finding.pci})"
    what = f"XID {finding.xid}" if finding.kind == "xid" else finding.cause
    return f"{what} on {where}" + (f": {finding.detail}" if finding.detail else "")


class Engine:
    """The policy in force (PolicyConfig), the fleet guard and how many GPUs the node should have."""

    def __init__(
        self,
        policy: PolicyConfig,
        guard: Guard | None = None,
        expected_gpus: int = 0,
        hold: Callable[[str], str] | None = None,
    ) -> None:
        self.policy = policy
        self.rules = policy.rulebook
        self.guard = guard
        self.expected_gpus = expected_gpus
        self.hold = hold  # why a step must wait outside the policy (planned maintenance), "" when it need not

    def step(self, state: State, event: Event, now: float) -> Step:
        """The new state, the actions to carry out now (in order) and the journal notes; ``state`` is unchanged."""
        run = _Run(copy.deepcopy(state), now)
        if isinstance(event, Poll):
            self._on_poll(run, event)
        elif isinstance(event, ActionResult):
            self._on_result(run, event)
        elif isinstance(event, Boot):
            self._on_boot(run, event)
        elif isinstance(event, ClearRma):
            self._on_clear_rma(run, event)
        actions = self._advance(run)
        return Step(run.state, tuple(actions), tuple(run.notes))

    # --- poll ---------------------------------------------------------------------------------------------------

    def _on_poll(self, run: _Run, poll: Poll) -> None:
        s = run.state
        s.last_poll_at = run.now
        findings = list(poll.findings)
        if poll.gpus is not None:
            findings += self._inventory(s, poll.gpus, findings)
        # compute processes per GPU, as of this poll only: unknown (None) keeps every GPU from counting as idle
        s.busy = None if poll.busy is None else {str(k): int(v) for k, v in poll.busy.items()}
        ranked = sorted(
            ((f, self.rules.rule_for(f)) for f in (self._resolve(s, f) for f in findings)),
            key=lambda item: (-rank(item[1].decision), item[0].kind != "xid"),
        )
        self._log_findings(run, ranked)
        unhealthy = {target_key(f) for f, rule in ranked if rule.severity == "fail"}
        for finding, rule in ranked:
            if rank(rule.decision) >= rank("reset_when_idle"):
                self._on_finding(run, finding, rule)
        for pci, record in s.gpus.items():
            record.healthy = not record.lost and pci not in unhealthy and f"gpu{record.index}" not in unhealthy
        s.healthy_since = (s.healthy_since if s.healthy_since is not None else run.now) if not unhealthy else None

    def _inventory(self, s: State, gpus: tuple[GpuInfo, ...], findings: list[Finding]) -> list[Finding]:
        """Remember the GPUs nvidia-smi lists; one it listed before and lists no longer is missing."""
        present = {gpu.pci for gpu in gpus}
        lost = {f.pci for f in findings if f.kind == "gpu_lost" and f.pci}
        for gpu in gpus:
            record = s.gpus.setdefault(gpu.pci, GpuRecord())
            record.index, record.uuid, record.lost, record.listed = gpu.index, gpu.uuid, False, True
        taken = {gpu.index for gpu in gpus}
        for pci, record in s.gpus.items():
            if pci not in present and record.index in taken:
                record.index = None  # nvidia-smi numbers the GPUs it finds: a GPU gone gives its index away
        for pci in lost:
            record = s.gpus.setdefault(pci, GpuRecord())
            record.lost = record.listed = True
        missing = []
        for pci, record in sorted(s.gpus.items()):
            if record.listed and pci not in present and pci not in lost:
                record.lost = True
                detail = f"GPU {record.index} ({record.uuid or 'no UUID'}) is no longer listed by nvidia-smi"
                missing.append(Finding("gpu_missing", "nvidia_smi", pci=pci, gpu=record.index, detail=detail))
        seen = len(present | lost)
        if not missing and self.expected_gpus and seen < self.expected_gpus:
            detail = f"nvidia-smi lists {seen} of the {self.expected_gpus} GPUs expected"
            missing.append(Finding("gpu_missing", "nvidia_smi", detail=detail))
        return missing

    @staticmethod
    def _resolve(s: State, finding: Finding) -> Finding:
        """Fill in the GPU's index from its PCI address, or the address from the index, where the agent knows it."""
        if finding.pci and finding.gpu is None and finding.pci in s.gpus:
            return replace(finding, gpu=s.gpus[finding.pci].index)
        if finding.gpu is not None and not finding.pci:
            for pci, record in s.gpus.items():
                if record.index == finding.gpu:
                    return replace(finding, pci=pci)
        return finding

    def _log_findings(self, run: _Run, ranked: list[tuple[Finding, Rule]]) -> None:
        """XID lines each time; lasting conditions when they appear and when they clear."""
        s = run.state
        current = []
        for finding, rule in ranked:
            key = target_key(finding)
            priority = {"fail": ERR, "warn": WARNING}.get(rule.severity, INFO)
            fields_ = {"cause": finding.cause, "gpu": finding.gpu, "pci": finding.pci, "source": finding.source}
            fields_ |= {"decision": rule.decision, "severity": rule.severity, "detail": finding.detail}
            if finding.kind == "xid":
                record = s.gpus.setdefault(key, GpuRecord(index=finding.gpu)) if finding.pci else None
                if record is not None:
                    record.last_xid, record.last_xid_at = finding.xid or 0, finding.at or run.now
                message = f"{_describe(finding)} -> {rule.decision} ({rule.note})"
                run.note("xid", message, priority, xid=finding.xid, event_at=finding.at, **fields_)
                continue
            tag = f"{finding.cause}@{key}"
            current.append(tag)
            if tag not in s.conditions:
                run.note("condition", f"{_describe(finding)} -> {rule.decision} ({rule.note})", priority, **fields_)
        for tag in sorted(set(s.conditions) - set(current)):
            run.note("condition_cleared", f"{tag} is no longer reported", INFO, condition=tag)
        s.conditions = sorted(set(current))

    # --- findings -> incident -------------------------------------------------------------------------------------

    def _on_finding(self, run: _Run, finding: Finding, rule: Rule) -> None:
        s, inc = run.state, run.state.incident
        key = target_key(finding)
        tag = f"{finding.cause}@{key}"
        if inc is None or s.phase == HEALTHY:
            decision = self._count(run, tag, rule, rule.decision)
            self._open(run, finding, rule, decision)
        elif s.phase == RMA:
            if tag not in inc.keys:
                inc.keys.append(tag)
                run.note("rma_hold", f"{_describe(finding)}: the node stays drained for RMA", NOTICE, cause=tag)
        elif s.phase == RECOVERING:
            if inc.grace_until is not None and run.now < inc.grace_until:
                return  # right after a GPU reset, what the tools still report may predate it
            self._recur(run, inc, finding, rule)
        else:
            decision = rule.decision
            if tag not in inc.keys:
                inc.keys.append(tag)
                decision = self._count(run, tag, rule, decision)
            self._merge(inc, key, finding, rule, decision)
            self._escalate(run, inc, decision, _describe(finding))

    def _count(self, run: _Run, tag: str, rule: Rule, decision: str) -> str:
        """Record one occurrence of ``tag``; drain_rma when the rule's rma_after is reached within the window."""
        s, window = run.state, self.policy.repeat_window_s
        s.occurrences = {
            k: kept for k, times in s.occurrences.items() if (kept := [t for t in times if run.now - t < window])
        }
        times = s.occurrences.setdefault(tag, [])
        times.append(run.now)
        if rule.rma_after and len(times) >= rule.rma_after and rank(decision) < rank("drain_rma"):
            run.note(
                "repeated_failure",
                f"{tag} seen {len(times)} times within {window:.0f} s (rma_after {rule.rma_after}): marking for RMA"
                f" instead of {decision}",
                ERR,
                cause=tag,
                count=len(times),
            )
            return "drain_rma"
        return decision

    def _open(self, run: _Run, finding: Finding, rule: Rule, decision: str) -> None:
        s = run.state
        inc = Incident(decision, finding.cause, _describe(finding), run.now, finding.at)
        inc.keys.append(f"{finding.cause}@{target_key(finding)}")
        self._merge(inc, target_key(finding), finding, rule, decision)
        inc.steps = self._plan(inc)
        s.incident, s.phase, s.detected_at, s.event_at = inc, REMEDIATING, run.now, finding.at
        run.note(
            "incident_opened",
            f"{inc.reason}: {decision} (steps: {', '.join(inc.steps) or 'none'})",
            ERR if rank(decision) >= rank("drain") else WARNING,
            decision=decision,
            cause=finding.cause,
            gpu=finding.gpu,
            pci=finding.pci,
            event_at=finding.at,
        )

    @staticmethod
    def _merge(inc: Incident, key: str, finding: Finding, rule: Rule, decision: str) -> None:
        target = inc.targets.get(key)
        if target is None:
            inc.targets[key] = Target(
                finding.gpu, finding.cause, decision, rule.on_reset_failure, decision in _RESET_DECISIONS
            )
            return
        if finding.gpu is not None:
            target.gpu = finding.gpu
        if rank(decision) > rank(target.decision):
            target.cause, target.decision, target.on_reset_failure = finding.cause, decision, rule.on_reset_failure
            target.needs_reset = target.needs_reset or decision in _RESET_DECISIONS

    def _recur(self, run: _Run, inc: Incident, finding: Finding, rule: Rule) -> None:
        """A failure after the remediation finished: a new round, one rung higher for the same GPU."""
        s, key = run.state, target_key(finding)
        decision = rule.decision
        previous = inc.targets.get(key)
        if previous is not None and rank(LADDER[previous.decision]) > rank(decision):
            decision = LADDER[previous.decision]
        decision = self._count(run, f"{finding.cause}@{key}", rule, decision)
        if s.drained or "drain" in inc.done:
            decision = decision if rank(decision) >= rank("drain") else "drain"
        inc.rounds += 1
        inc.keys = [f"{finding.cause}@{key}"]
        inc.done = [d for d in inc.done if d == "drain"]
        inc.remediated_at = inc.grace_until = inc.reboot_at = None
        inc.decision, inc.reason = decision, _describe(finding)
        if previous is not None:
            previous.reset_done = previous.needs_reset = False
            previous.decision = "none"  # replaced below by this round's decision
        self._merge(inc, key, finding, rule, decision)
        inc.steps = self._plan(inc)
        s.phase = REMEDIATING
        run.note(
            "failure_recurred",
            f"{inc.reason} after the remediation: {decision} (round {inc.rounds})",
            ERR,
            decision=decision,
            cause=finding.cause,
        )

    def _escalate(self, run: _Run, inc: Incident, decision: str, why: str) -> None:
        if rank(decision) <= rank(inc.decision):
            inc.steps = self._plan(inc)  # a new target may still need a reset
            return
        old, inc.decision = inc.decision, decision
        inc.steps = self._plan(inc)
        if run.state.phase in (AWAITING_BOOT, RECOVERING) and inc.steps:
            run.state.phase = REMEDIATING
        run.note(
            "escalated",
            f"{why}: {old} -> {decision} (steps: {', '.join(inc.steps) or 'none'})",
            ERR,
            decision=decision,
            previous=old,
        )

    @staticmethod
    def _plan(inc: Incident) -> list[str]:
        steps = ["drain"] if rank(inc.decision) >= rank("drain") else []
        if inc.decision == "drain_rma":
            steps.append("rma")
        elif inc.decision == "drain_reboot":
            steps.append("reboot")
        elif any(t.needs_reset and not t.reset_done for t in inc.targets.values()):
            steps.append("reset")
        return [step for step in steps if step not in inc.done]

    # --- results, boot, operator ----------------------------------------------------------------------------------

    def _on_result(self, run: _Run, result: ActionResult) -> None:
        s, inc = run.state, run.state.incident
        s.in_flight = ""
        key = f"{result.action}/{result.outcome}"
        s.action_total[key] = s.action_total.get(key, 0) + 1
        s.action_last[key] = run.now
        if result.action == "undrain":
            if result.outcome in _DONE_OUTCOMES:
                s.drained = False
                self._close(run, f"undrained ({result.outcome})")
            elif result.outcome == "failed":
                run.failed = "undrain"
                run.note("action_failed", f"undrain failed: {result.detail}", ERR, action="undrain")
            return
        if inc is None:
            return
        if result.outcome == "failed":
            if result.action == "reset":
                self._reset_failed(run, inc, result.target, result.detail)
            else:
                run.failed = result.action
                cooldown = self.policy.cooldown(result.action)
                message = f"{result.action} failed: {result.detail}; again at a later poll, {cooldown:.0f} s apart"
                run.note("action_failed", message, ERR, action=result.action)
            return
        if result.outcome not in _DONE_OUTCOMES:
            return
        self._step_done(run, inc, result)

    def _step_done(self, run: _Run, inc: Incident, result: ActionResult) -> None:
        s = run.state
        if result.action == "drain":
            s.drained = s.drained or result.outcome == "ok"
            _finish(inc, "drain")
        elif result.action == "reset":
            target = inc.targets.get(result.target)
            if target is not None:
                target.reset_done = True
            if not any(t.needs_reset and not t.reset_done for t in inc.targets.values()):
                _finish(inc, "reset")
            if result.outcome == "ok":
                inc.grace_until = run.now + self.policy.reset_grace_s
        elif result.action == "reboot":
            if result.outcome == "disabled":
                _finish(inc, "reboot")
            else:
                s.phase, inc.reboot_at = AWAITING_BOOT, run.now
                run.note("awaiting_boot", f"reboot requested ({result.outcome}); waiting for the node to come back")
        elif result.action == "rma":
            s.rma, s.rma_reason, s.phase = True, inc.reason, RMA
            _finish(inc, "rma")
            run.note("rma", f"marked for RMA: {inc.reason}; no automatic undrain", ERR, reason=inc.reason)

    def _reset_failed(self, run: _Run, inc: Incident, key: str, detail: str) -> None:
        target = inc.targets.get(key)
        choice = target.on_reset_failure if target is not None else "reboot"
        run.note("reset_failed", f"GPU reset of {key} failed: {detail}; on_reset_failure: {choice}", ERR, target=key)
        if choice == "hold" or target is None:
            if target is not None:
                target.reset_done = True  # given up: the node stays as it is until the GPU is healthy again
            if not any(t.needs_reset and not t.reset_done for t in inc.targets.values()):
                _finish(inc, "reset")
            return
        target.decision = "drain_reboot" if choice == "reboot" else "drain_rma"
        self._escalate(run, inc, target.decision, f"GPU reset of {key} failed")

    def _on_boot(self, run: _Run, boot: Boot) -> None:
        s, inc = run.state, run.state.incident
        if not s.boot_id or boot.boot_id == s.boot_id:
            first = not s.boot_id
            s.boot_id = boot.boot_id
            if s.in_flight == "reboot" and inc is not None:
                s.phase, inc.reboot_at = AWAITING_BOOT, s.last_run.get("reboot", run.now)
            elif s.in_flight:
                run.note("resumed", f"the agent restarted while {s.in_flight} ran; it is requested again", WARNING)
            s.in_flight = ""
            run.note("started", "agent started" + (" (no saved state)" if first else ""), INFO, phase=s.phase)
            return
        s.boot_id, s.busy = boot.boot_id, None
        reboot_pending = s.phase == AWAITING_BOOT or s.in_flight == "reboot"
        s.in_flight = ""
        run.note("booted", f"the node booted (phase {s.phase})", NOTICE, phase=s.phase)
        if inc is None:
            return
        if reboot_pending or (s.phase == REMEDIATING and set(inc.steps) <= {"reset", "reboot"}):
            for step in ("reset", "reboot"):
                _finish(inc, step)
            for target in inc.targets.values():
                target.reset_done = True
            s.phase, inc.grace_until = REMEDIATING, None

    def _on_clear_rma(self, run: _Run, event: ClearRma) -> None:
        s, inc = run.state, run.state.incident
        if not s.rma:
            run.note("clear_rma_ignored", "clear-rma requested, but the node is not marked for RMA", WARNING)
            return
        s.rma, s.rma_reason, s.occurrences, s.gpus = False, "", {}, {}
        run.note("rma_cleared", f"RMA cleared by {event.by}; GPUs are learnt again", NOTICE, by=event.by)
        if inc is not None and (s.drained or "drain" in inc.done):
            s.phase, inc.steps, inc.remediated_at, inc.grace_until = RECOVERING, [], run.now, None
        else:
            self._close(run, "RMA cleared")

    def _close(self, run: _Run, why: str) -> None:
        s = run.state
        if s.incident is not None:
            run.note("incident_closed", f"{s.incident.reason}: {why}", NOTICE, decision=s.incident.decision)
        s.incident, s.phase, s.in_flight = None, HEALTHY, ""

    # --- what to do next --------------------------------------------------------------------------------------------

    def _advance(self, run: _Run) -> list[Action]:
        s, inc = run.state, run.state.incident
        if s.in_flight or inc is None:
            return []
        if s.phase == AWAITING_BOOT:
            if run.now - (inc.reboot_at or run.now) < self.policy.reboot_timeout_s:
                return []
            run.note("reboot_timeout", f"no boot within {self.policy.reboot_timeout_s:.0f} s of the reboot", ERR)
            s.phase = REMEDIATING
        if s.phase == REMEDIATING:
            if inc.steps:
                return self._next_step(run, inc)
            self._enter_recovering(run, inc)
        if s.phase == RECOVERING:
            return self._maybe_undrain(run, inc)
        return []

    def _enter_recovering(self, run: _Run, inc: Incident) -> None:
        s = run.state
        inc.remediated_at = run.now
        if not s.drained and "drain" not in inc.done:
            self._close(run, "remediated without a drain")
            return
        s.phase = RECOVERING
        run.note("recovering", f"remediation done; undrain after {self.policy.undrain_after_s:.0f} s healthy", NOTICE)

    def _next_step(self, run: _Run, inc: Incident) -> list[Action]:
        step = inc.steps[0]
        if step == "reset":
            return self._next_reset(run, inc)
        held = self._gate(run, step)
        if held:
            self._hold(run, inc, step, *held)
            return []
        reason = f"RMA: {inc.reason}" if step == "rma" else inc.reason
        return [self._request(run, step, reason)]

    def _next_reset(self, run: _Run, inc: Incident) -> list[Action]:
        s = run.state
        pending = [(k, t) for k, t in inc.targets.items() if t.needs_reset and not t.reset_done]
        if not pending:
            _finish(inc, "reset")
            return self._advance(run)
        key, target = pending[0]
        index = target.gpu if target.gpu is not None else (s.gpus[key].index if key in s.gpus else None)
        if index is None:
            self._reset_failed(run, inc, key, "the GPU's index is not known")
            return self._advance(run)
        busy = None if s.busy is None else s.busy.get(str(index))
        if busy is None or busy > 0:
            why = "its compute processes are not known" if busy is None else f"{busy} compute process(es) hold it"
            self._hold(run, inc, "reset", "busy", f"GPU {index} is not idle: {why}")
            return []
        held = self._gate(run, "reset")
        if held:
            self._hold(run, inc, "reset", *held)
            return []
        pci = key if key in s.gpus else None
        return [self._request(run, "reset", inc.reason, target=key, gpu=index, pci=pci)]

    def _maybe_undrain(self, run: _Run, inc: Incident) -> list[Action]:
        s = run.state
        if s.rma or s.healthy_since is None:
            return []
        start = max(s.healthy_since, inc.remediated_at or s.healthy_since)
        if run.now - start < self.policy.undrain_after_s:
            return []
        held = self._gate(run, "undrain")
        if held:
            self._hold(run, inc, "undrain", *held)
            return []
        return [self._request(run, "undrain", f"healthy for {run.now - start:.0f} s after: {inc.reason}")]

    def _gate(self, run: _Run, step: str) -> tuple[str, str] | None:
        """Why ``step`` must wait (code, words), or None: cooldown, reboots per hour, fleet guard."""
        s = run.state
        if step == run.failed:
            return "failed", "it has just failed; it is requested again at the next poll"
        held = self.hold(step) if self.hold is not None else ""
        if held:
            return "maintenance", held
        cooldown, last = self.policy.cooldown(step), s.last_run.get(step)
        if last is not None and run.now - last < cooldown:
            return "cooldown", f"it ran {run.now - last:.0f} s ago (cooldown {cooldown:.0f} s)"
        if step == "reboot":
            s.reboots = [t for t in s.reboots if run.now - t < _HOUR]
            if len(s.reboots) >= self.policy.max_reboots_per_hour:
                limit = self.policy.max_reboots_per_hour
                return "rate_limited", f"{len(s.reboots)} reboot(s) in the last hour (max_reboots_per_hour {limit})"
        if self.guard is not None and (step == "reboot" or (step == "drain" and not s.drained)):
            verdict = self.guard(step)
            if not verdict.allowed:
                return "vetoed", f"fleet guard: {verdict.reason}"
        return None

    def _hold(self, run: _Run, inc: Incident, action: str, code: str, why: str) -> None:
        """Report a held step once (until it is requested or held for another reason)."""
        tag = f"{action}:{code}"
        if inc.blocked == tag:
            return
        inc.blocked = tag
        if code in ("vetoed", "rate_limited"):
            s, key = run.state, f"{action}/{code}"
            s.action_total[key] = s.action_total.get(key, 0) + 1
            s.action_last[key] = run.now
        run.note("action_held", f"{action} held back: {why}", WARNING, action=action, reason=code)

    def _request(
        self, run: _Run, name: str, reason: str, target: str = "", gpu: int | None = None, pci: str | None = None
    ) -> Action:
        s = run.state
        s.in_flight, s.last_run[name] = name, run.now
        if name == "reboot":
            s.reboots.append(run.now)
        if s.incident is not None:
            s.incident.blocked = ""
        run.note("action_requested", f"{name}: {reason}", NOTICE, action=name, gpu=gpu, target=target or None)
        return Action(name, reason, target=target, gpu=gpu, pci=pci)


def _finish(inc: Incident, step: str) -> None:
    if step in inc.steps:
        inc.steps.remove(step)
        inc.done.append(step)
