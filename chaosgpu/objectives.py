"""Recovery objectives: what an experiment declares (TTD, TTR, SLIs), how they are measured, and the journal
entry the run is judged on. The Chaos Toolkit control ``chaosgpu.controls.objectives`` drives this module.

Declared in the experiment as the extension named ``chaosgpu_objectives`` (every key optional):

    ttd_s               objective: fault start -> first detection signal, seconds (> 0)
    ttr_s               objective: fault start -> steady state holds again, seconds (> 0)
    sli_success_ratio   objective: least share of successful SLI requests during the fault (0..1)
    sli_p99_ms          objective: largest p99 latency of the successful SLI requests, ms (> 0)
    detect              the detection signal: one probe definition with a ``tolerance`` (required with ttd_s)
    recover             the recovery signal: a probe definition or a list of them, each with a ``tolerance``;
                        default: the steady-state-hypothesis probes. Use signals that reset (health checks,
                        allocatable GPUs, workload SLIs), never the DCGM XID gauge.
    sli                 {url, rate_per_s (default 5), timeout_s (default 2)}: load on the workload from fault
                        start until recovery (required with sli_*)
    poll_interval_s     how often the signals are polled, 0 < s <= 1 (default 1)
    deadline_s          how long after fault start measuring goes on, 0 < s <= 3600 (default 600)
    fault_start_activity  the method action whose start is the fault start (default: the first method action)
    fault_end_activity    the action (method or rollback) whose end is the fault end (default: the end of the
                        rollbacks, when the experiment has any)

Measuring (``Watcher``): just before the fault starts, the detect probe is asked once: a signal that already holds
then does not reset (a sticky gauge, or a leftover of an earlier run) and cannot time this detection, so TTD is not
measured and is missed. From fault start, every ``poll_interval_s`` the detect probe is polled until it holds
(``detected``). The recover probes are polled once the recovery gate is open: the fault was detected, or it ended,
or the experiment ended, or (without a detect probe) a recover probe has been seen failing; ``recovered`` is the
first poll after that at which all of them hold. A signal's time is the wall-clock time its poll returned, so it is
never earlier than the event and late by at most the poll interval plus the probe's own duration. The SLI load runs
from fault start until recovery or the deadline.

The journal entry (key ``chaosgpu_objectives``) — ``build_report``:

    {"declared": {"ttd_s", "ttr_s", "sli_success_ratio", "sli_p99_ms"},          num|null each
     "measured": {"ttd_s", "ttr_s", "sli_success_ratio", "sli_p50_ms", "sli_p99_ms"} num|null each,
                 "sli_requests": int},
     "met": bool, "missed": [str, ...],
     "timeline": {"fault_start": epoch|null, "fault_end": epoch|null, "detected": epoch|null,
                  "recovered": epoch|null, "sli": [[epoch, ok, latency_ms|null], ...]}}

A measured value of null means it never happened within the deadline; a declared objective with a null
measurement is missed. ``fault_start`` is null only when no fault started (no method action ran).
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaoslib.activity import ensure_activity_is_valid
from chaoslib.exceptions import ChaosException
from chaoslib.hypothesis import ensure_hypothesis_tolerance_is_valid

from chaosgpu.sli import MAX_DURATION_S, LoadGenerator, RequestResult, check_load_arguments, summarize

__all__ = [
    "EXTENSION_NAME",
    "JOURNAL_KEY",
    "Objectives",
    "ObjectivesError",
    "ProbeRunner",
    "Watcher",
    "build_report",
    "parse_objectives",
    "probe_holds",
    "validate_report",
]

EXTENSION_NAME = "chaosgpu_objectives"
JOURNAL_KEY = "chaosgpu_objectives"
OBJECTIVE_KEYS = ("ttd_s", "ttr_s", "sli_success_ratio", "sli_p99_ms")
_KNOWN_KEYS = {
    "name",
    *OBJECTIVE_KEYS,
    "detect",
    "recover",
    "sli",
    "poll_interval_s",
    "deadline_s",
    "fault_start_activity",
    "fault_end_activity",
}
_SLI_KEYS = {"url", "rate_per_s", "timeout_s"}
DEFAULT_POLL_INTERVAL_S = 1.0
DEFAULT_DEADLINE_S = 600.0

logger = logging.getLogger("chaostoolkit")

# A probe runner: runs one probe definition and says whether it is within its tolerance (exceptions = no).
ProbeRunner = Callable[[Mapping[str, Any]], bool]


class ObjectivesError(ValueError):
    """A malformed objectives declaration; the message names the key."""


@dataclass(frozen=True)
class Objectives:
    """A parsed, validated ``chaosgpu_objectives`` declaration."""

    ttd_s: float | None = None
    ttr_s: float | None = None
    sli_success_ratio: float | None = None
    sli_p99_ms: float | None = None
    detect: dict[str, Any] | None = None
    recover: list[dict[str, Any]] = field(default_factory=list)
    sli: dict[str, Any] | None = None
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    deadline_s: float = DEFAULT_DEADLINE_S
    fault_start_activity: str | None = None
    fault_end_activity: str | None = None

    def declared(self) -> dict[str, float | None]:
        """The four objectives, null where not declared."""
        return {key: getattr(self, key) for key in OBJECTIVE_KEYS}


def _number(key: str, value: Any, *, low: float, high: float | None = None, low_inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ObjectivesError(f"{EXTENSION_NAME}.{key} must be a number, got {value!r}")
    if value < low or (value == low and not low_inclusive):
        raise ObjectivesError(f"{EXTENSION_NAME}.{key} must be {'>=' if low_inclusive else '>'} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ObjectivesError(f"{EXTENSION_NAME}.{key} must be <= {high:g}, got {value!r}")
    return float(value)


def _probe(key: str, value: Any) -> dict[str, Any]:
    """A probe definition with a tolerance, checked as Chaos Toolkit checks hypothesis probes."""
    if not isinstance(value, dict):
        raise ObjectivesError(f"{EXTENSION_NAME}.{key} must be a probe definition (a mapping), got {value!r}")
    probe = {"type": "probe", "name": key, **value}
    if probe["type"] != "probe":
        raise ObjectivesError(f"{EXTENSION_NAME}.{key} must be a probe, got type {probe['type']!r}")
    if "tolerance" not in probe:
        raise ObjectivesError(f"{EXTENSION_NAME}.{key} ({probe['name']}) needs a tolerance")
    try:
        ensure_activity_is_valid(probe)
        ensure_hypothesis_tolerance_is_valid(probe["tolerance"])
    except ChaosException as exc:
        raise ObjectivesError(f"{EXTENSION_NAME}.{key} ({probe['name']}): {exc}") from None
    return probe


def _sli(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ObjectivesError(f"{EXTENSION_NAME}.sli must be a mapping with url, rate_per_s, timeout_s")
    unknown = sorted(set(value) - _SLI_KEYS)
    if unknown:
        raise ObjectivesError(f"{EXTENSION_NAME}.sli: unknown key(s) {', '.join(unknown)}")
    sli = {"url": value.get("url"), "rate_per_s": value.get("rate_per_s", 5), "timeout_s": value.get("timeout_s", 2)}
    try:
        check_load_arguments(sli["url"], sli["rate_per_s"], MAX_DURATION_S, sli["timeout_s"])
    except ValueError as exc:
        raise ObjectivesError(f"{EXTENSION_NAME}.sli.{exc}") from None
    return sli


def find_extension(experiment: Mapping[str, Any]) -> dict[str, Any] | None:
    """The experiment's ``chaosgpu_objectives`` extension, or None."""
    for extension in experiment.get("extensions") or []:
        if isinstance(extension, dict) and extension.get("name") == EXTENSION_NAME:
            return extension
    return None


def _activity_names(activities: Any) -> set[str]:
    return {str(a["name"]) for a in activities or [] if isinstance(a, dict) and a.get("name")}


def _numbers(declared: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in ("ttd_s", "ttr_s", "sli_p99_ms"):
        if declared.get(key) is not None:
            values[key] = _number(key, declared[key], low=0)
    if declared.get("sli_success_ratio") is not None:
        values["sli_success_ratio"] = _number("sli_success_ratio", declared["sli_success_ratio"], low=0, high=1)
    values["poll_interval_s"] = _number(
        "poll_interval_s", declared.get("poll_interval_s", DEFAULT_POLL_INTERVAL_S), low=0, high=1
    )
    values["deadline_s"] = _number("deadline_s", declared.get("deadline_s", DEFAULT_DEADLINE_S), low=0, high=3600)
    return values


def _signals(experiment: Mapping[str, Any], declared: Mapping[str, Any], values: dict[str, Any]) -> None:
    """detect, recover and sli, each refused when an objective needs it and it is missing."""
    if declared.get("detect") is not None:
        values["detect"] = _probe("detect", declared["detect"])
    elif "ttd_s" in values:
        raise ObjectivesError(f"{EXTENSION_NAME}.ttd_s is declared without a detect probe to measure it on")

    recover = declared.get("recover")
    if recover is None:
        recover = (experiment.get("steady-state-hypothesis") or {}).get("probes") or []
        if not recover and "ttr_s" in values:
            raise ObjectivesError(
                f"{EXTENSION_NAME}.ttr_s is declared without a recover probe and the experiment has no "
                "steady-state-hypothesis probes to measure it on"
            )
    values["recover"] = [_probe("recover", p) for p in (recover if isinstance(recover, list) else [recover])]

    if declared.get("sli") is not None:
        values["sli"] = _sli(declared["sli"])
    else:
        for key in ("sli_success_ratio", "sli_p99_ms"):
            if key in values:
                raise ObjectivesError(f"{EXTENSION_NAME}.{key} is declared without an sli load (sli.url) to measure it")


def _markers(experiment: Mapping[str, Any], declared: Mapping[str, Any], values: dict[str, Any]) -> None:
    method = experiment.get("method") or []
    for key, pool in (
        ("fault_start_activity", method),
        ("fault_end_activity", [*method, *(experiment.get("rollbacks") or [])]),
    ):
        name = declared.get(key)
        if name is None:
            continue
        if name not in _activity_names(pool):
            raise ObjectivesError(f"{EXTENSION_NAME}.{key}: no activity named {name!r} in the experiment")
        values[key] = name


def parse_objectives(experiment: Mapping[str, Any]) -> Objectives | None:
    """The experiment's objectives, validated; None when it declares none. Raises ObjectivesError naming the
    offending key (unknown, negative, wrong type, an objective without the signal it is measured on...)."""
    declared = find_extension(experiment)
    if declared is None:
        return None
    unknown = sorted(set(declared) - _KNOWN_KEYS)
    if unknown:
        raise ObjectivesError(f"{EXTENSION_NAME}: unknown key(s) {', '.join(unknown)}")
    values = _numbers(declared)
    _signals(experiment, declared, values)
    _markers(experiment, declared, values)
    return Objectives(**values)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def build_report(
    objectives: Objectives,
    fault_start: float | None,
    fault_end: float | None,
    detected: float | None,
    recovered: float | None,
    sli_results: Sequence[RequestResult],
    *,
    detected_before_fault: bool = False,
) -> dict[str, Any]:
    """The journal entry: declared, measured, whether every declared objective was met and why not.
    ``detected_before_fault``: the detect signal already held just before the fault started, so it does not reset
    and cannot time this detection; TTD is then not measured, and missed when declared."""
    if detected_before_fault:
        detected = None
    summary = summarize(sli_results) if objectives.sli is not None else None
    measured: dict[str, Any] = {
        "ttd_s": _round(detected - fault_start) if fault_start is not None and detected is not None else None,
        "ttr_s": _round(recovered - fault_start) if fault_start is not None and recovered is not None else None,
        "sli_success_ratio": _round(summary["success_ratio"], 4) if summary else None,
        "sli_p50_ms": _round(summary["p50_ms"], 1) if summary else None,
        "sli_p99_ms": _round(summary["p99_ms"], 1) if summary else None,
        "sli_requests": summary["requests"] if summary else 0,
    }
    missed = []
    never = "no fault started" if fault_start is None else f"not within the deadline ({objectives.deadline_s:g} s)"
    for key, what in (("ttd_s", "detected"), ("ttr_s", "recovered")):
        objective = getattr(objectives, key)
        if objective is None:
            continue
        if key == "ttd_s" and detected_before_fault:
            missed.append(
                f"ttd_s: the detect signal already held before the fault started (it does not reset), so it cannot "
                f"time this detection; objective {objective:g}"
            )
        elif measured[key] is None:
            missed.append(f"{key}: never {what}, {never}; objective {objective:g}")
        elif measured[key] > objective:
            missed.append(f"{key}: measured {measured[key]:g} > objective {objective:g}")
    if objectives.sli_success_ratio is not None:
        value = measured["sli_success_ratio"]
        if value is None:
            missed.append(f"sli_success_ratio: no SLI request was sent; objective {objectives.sli_success_ratio:g}")
        elif value < objectives.sli_success_ratio:
            missed.append(f"sli_success_ratio: measured {value:g} < objective {objectives.sli_success_ratio:g}")
    if objectives.sli_p99_ms is not None:
        value = measured["sli_p99_ms"]
        if value is None:
            missed.append(f"sli_p99_ms: no successful SLI request; objective {objectives.sli_p99_ms:g}")
        elif value > objectives.sli_p99_ms:
            missed.append(f"sli_p99_ms: measured {value:g} > objective {objectives.sli_p99_ms:g}")
    return {
        "declared": objectives.declared(),
        "measured": measured,
        "met": not missed,
        "missed": missed,
        "timeline": {
            "fault_start": fault_start,
            "fault_end": fault_end,
            "detected": detected,
            "recovered": recovered,
            "sli": [[r.timestamp, r.ok, _round(r.latency_ms, 1)] for r in sli_results],
        },
    }


def _num_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _keys_problem(name: str, value: Any, keys: set[str]) -> str | None:
    if isinstance(value, dict) and set(value) == keys:
        return None
    return f"{name} keys {sorted(value) if isinstance(value, dict) else value!r}"


def _sli_point_ok(point: Any) -> bool:
    return (
        isinstance(point, list)
        and len(point) == len(("epoch", "ok", "latency_ms"))
        and isinstance(point[0], int | float)
        and not isinstance(point[0], bool)
        and isinstance(point[1], bool)
        and _num_or_null(point[2])
    )


def _timeline_problems(timeline: Any) -> list[str]:
    problem = _keys_problem("timeline", timeline, {"fault_start", "fault_end", "detected", "recovered", "sli"})
    if problem:
        return [problem]
    problems = [
        f"timeline.{k} = {timeline[k]!r}"
        for k in ("fault_start", "fault_end", "detected", "recovered")
        if not _num_or_null(timeline[k])
    ]
    if not isinstance(timeline["sli"], list):
        problems.append(f"timeline.sli = {timeline['sli']!r}")
    else:
        problems += [f"timeline.sli point {p!r}" for p in timeline["sli"] if not _sli_point_ok(p)][:1]
    return problems


def validate_report(report: Any) -> list[str]:
    """Every way ``report`` departs from the journal contract (empty when it conforms); for tests and readers."""
    if not isinstance(report, dict) or set(report) != {"declared", "measured", "met", "missed", "timeline"}:
        return [f"top-level: {sorted(report) if isinstance(report, dict) else type(report).__name__}"]
    declared, measured = report["declared"], report["measured"]
    problems: list[str] = []
    problem = _keys_problem("declared", declared, set(OBJECTIVE_KEYS))
    problems += [problem] if problem else [f"declared.{k} = {v!r}" for k, v in declared.items() if not _num_or_null(v)]
    measured_keys = {"ttd_s", "ttr_s", "sli_success_ratio", "sli_p50_ms", "sli_p99_ms", "sli_requests"}
    problem = _keys_problem("measured", measured, measured_keys)
    if problem:
        problems.append(problem)
    else:
        problems += [
            f"measured.{k} = {v!r}" for k, v in measured.items() if k != "sli_requests" and not _num_or_null(v)
        ]
        if isinstance(measured["sli_requests"], bool) or not isinstance(measured["sli_requests"], int):
            problems.append(f"measured.sli_requests = {measured['sli_requests']!r}")
    if not isinstance(report["met"], bool):
        problems.append(f"met = {report['met']!r}")
    if not isinstance(report["missed"], list) or not all(isinstance(m, str) for m in report["missed"]):
        problems.append(f"missed = {report['missed']!r}")
    elif report["met"] is bool(report["missed"]):
        problems.append("met disagrees with missed")
    return problems + _timeline_problems(report["timeline"])


def probe_holds(run_probe: ProbeRunner, probe: Mapping[str, Any]) -> bool:
    """One signal, asked once: whether the probe is within its tolerance; a probe that fails does not hold."""
    try:
        return bool(run_probe(copy.deepcopy(probe)))
    except Exception as exc:  # a probe that fails is a signal that does not hold
        logger.debug(f"objectives: probe {probe.get('name')!r} failed: {exc}")
        return False


class Watcher:
    """Polls the detect and recover signals from fault start and runs the SLI load; see the module docstring.

    ``run_probe`` runs one probe definition and says whether it is within its tolerance. ``clock`` is the
    wall clock (epoch seconds).
    """

    def __init__(
        self,
        objectives: Objectives,
        run_probe: ProbeRunner,
        fault_start: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.objectives = objectives
        self.run_probe = run_probe
        self.fault_start = fault_start
        self.clock = clock
        self.detected: float | None = None
        self.recovered: float | None = None
        self._gate = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._load: LoadGenerator | None = None
        if objectives.sli is not None:
            self._load = LoadGenerator(
                objectives.sli["url"], objectives.sli["rate_per_s"], objectives.deadline_s, objectives.sli["timeout_s"]
            )

    def start(self) -> Watcher:
        """Start the SLI load and the polling thread."""
        if self._load is not None:
            self._load.start()
        self._thread = threading.Thread(target=self._poll, name="chaosgpu-objectives", daemon=True)
        self._thread.start()
        return self

    def open_recovery_gate(self) -> None:
        """The fault (or the experiment) ended: from now on a holding recover signal counts as recovery."""
        self._gate.set()

    def _holds(self, probe: Mapping[str, Any]) -> bool:
        return probe_holds(self.run_probe, probe)

    def _recover_holds(self) -> bool:
        return all(self._holds(probe) for probe in self.objectives.recover)

    def _tick(self) -> bool:
        """One round of polls; True when there is nothing left to measure."""
        objectives = self.objectives
        if objectives.detect is not None and self.detected is None and self._holds(objectives.detect):
            self.detected = self.clock()
            logger.info(f"objectives: detected {self.detected - self.fault_start:.1f} s after fault start")
            self._gate.set()
        if not objectives.recover:  # nothing to recover on: measure (and load) until the fault ends
            return (objectives.detect is None or self.detected is not None) and self._gate.is_set()
        gate_open = self._gate.is_set()
        if objectives.detect is not None and not gate_open:
            return False
        holds = self._recover_holds()
        if holds and (gate_open or self._gate.is_set()):
            # A detect signal that came up during this round (both signals can turn in the same instant) is still a
            # detection: ask it once more before recovery ends the watch, so TTD is not lost to polling order.
            if objectives.detect is not None and self.detected is None and self._holds(objectives.detect):
                self.detected = self.clock()
                logger.info(f"objectives: detected {self.detected - self.fault_start:.1f} s after fault start")
            self.recovered = self.clock()
            logger.info(f"objectives: recovered {self.recovered - self.fault_start:.1f} s after fault start")
            return True
        if not holds and objectives.detect is None:
            self._gate.set()  # the fault is visible on the recover signal itself
        return False

    def _poll(self) -> None:
        deadline = self.fault_start + self.objectives.deadline_s
        interval = self.objectives.poll_interval_s
        next_at = time.monotonic()
        try:
            while not self._stop.is_set() and self.clock() < deadline:
                began = time.monotonic()
                if self._tick():
                    break
                took = time.monotonic() - began
                if took > interval:
                    logger.debug(f"objectives: one poll took {took:.1f} s, longer than poll_interval_s {interval:g}")
                next_at = max(next_at + interval, time.monotonic())
                if self._stop.wait(max(0.0, next_at - time.monotonic())):
                    break
        finally:
            if self._load is not None:
                self._load.stop(wait=False)

    def finish(self, wait: bool = True) -> list[RequestResult]:
        """Wait for recovery or the deadline (``wait``) or stop now; stop the load; the SLI results."""
        if self._thread is not None:
            if wait:
                remaining = self.fault_start + self.objectives.deadline_s - self.clock()
                self._thread.join(timeout=max(0.0, remaining) + 5)
            self._stop.set()
            self._thread.join(timeout=30)
        if self._load is None:
            return []
        return self._load.stop(wait=True)
