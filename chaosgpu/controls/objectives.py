"""Chaos Toolkit control that measures an experiment's recovery objectives and fails the run that misses one.

Declare it in the experiment, with the objectives as the extension ``chaosgpu_objectives`` (keys: see
``chaosgpu.objectives``)::

    controls:
      - name: objectives
        provider: {type: python, module: chaosgpu.controls.objectives}
    extensions:
      - name: chaosgpu_objectives
        ttd_s: 30
        ttr_s: 180
        detect: {name: node-drained, tolerance: true, provider: {...}}
        sli: {url: "http://127.0.0.1:18080/infer", rate_per_s: 5, timeout_s: 2}
        sli_success_ratio: 0.9

What it does, hook by hook:

- before the experiment: validates the declaration; a malformed one (unknown key, negative number, an objective
  without its signal...) interrupts the run before any activity, naming the key (``chaos run`` exits 1).
- before the fault-start action (the first method action, or ``fault_start_activity``): asks the detect probe once
  (one that already holds cannot time the detection: TTD is then missed, see chaosgpu.objectives); fault start;
  starts the watcher (detect/recover polling every ``poll_interval_s``, SLI load) in the background.
- after ``fault_end_activity`` (or after the rollbacks): fault end; recovery may be judged from then on.
- after the experiment: waits for recovery or the deadline (not when the run was interrupted or aborted), writes
  the report into the journal under ``chaosgpu_objectives``, logs it, and sets the journal's status to
  ``failed`` when an objective was missed (``chaos run`` then exits 1).

In a dry run (``chaos run --dry=...``) nothing is measured and no load is sent; the declaration is still checked.
One experiment at a time per process, like chaoslib itself.
"""

import json
import logging
import threading
import time
from typing import Any

from chaoslib import substitute
from chaoslib.activity import run_activity
from chaoslib.exceptions import InterruptExecution
from chaoslib.hypothesis import within_tolerance
from chaoslib.types import Activity, Configuration, Experiment, Journal, Secrets

from chaosgpu.objectives import (
    JOURNAL_KEY,
    Objectives,
    ObjectivesError,
    ProbeRunner,
    Watcher,
    build_report,
    parse_objectives,
    probe_holds,
)
from chaosgpu.sli import RequestResult

__all__ = [
    "after_activity_control",
    "after_experiment_control",
    "after_method_control",
    "after_rollback_control",
    "before_activity_control",
    "before_experiment_control",
    "before_method_control",
    "cleanup_control",
    "configure_control",
    "probe_runner",
]

logger = logging.getLogger("chaostoolkit")


class _Run:
    """What the control knows about the experiment being run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objectives: Objectives | None = None
        self.refused: str | None = None
        self.dry = False
        self.phase: str | None = None
        self.fault_start: float | None = None
        self.fault_end: float | None = None
        self.detected_before_fault = False
        self.watcher: Watcher | None = None
        self.configuration: Configuration | None = None
        self.secrets: Secrets | None = None


_run = _Run()


def probe_runner(configuration: Configuration | None, secrets: Secrets | None) -> ProbeRunner:
    """Runs a probe definition as chaoslib does and checks its result against its tolerance."""

    def run(probe: Any) -> bool:
        value = run_activity(probe, configuration, secrets)
        tolerance = probe["tolerance"]
        if isinstance(tolerance, str):
            tolerance = substitute(tolerance, configuration, secrets)
        return bool(within_tolerance(tolerance, value, configuration=configuration, secrets=secrets))

    return run


def configure_control(
    experiment: Experiment = None, configuration: Configuration = None, secrets: Secrets = None
) -> None:
    """Start afresh for this experiment."""
    global _run  # noqa: PLW0603 - one experiment at a time per process, like chaoslib
    if _run.watcher is not None:
        _run.watcher.finish(wait=False)
    _run = _Run()
    _run.configuration, _run.secrets = configuration, secrets
    del experiment


def before_experiment_control(
    context: Experiment, experiment: Experiment = None, configuration: Configuration = None, secrets: Secrets = None
) -> None:
    """Validate the declared objectives; refuse (InterruptExecution) a malformed declaration, naming the key."""
    experiment = experiment or context
    if configuration is not None or secrets is not None:
        _run.configuration, _run.secrets = configuration, secrets
    try:
        _run.objectives = parse_objectives(experiment)
    except ObjectivesError as exc:
        _run.refused = str(exc)
        raise InterruptExecution(f"objectives refused: {exc}") from None
    _run.dry = bool(experiment.get("dry"))
    if _run.objectives is None:
        logger.warning("objectives control declared but the experiment has no chaosgpu_objectives extension")
    elif _run.dry:
        logger.info("objectives: dry run, nothing is measured")


def before_method_control(context: Experiment) -> None:
    """The method begins: its first action (or ``fault_start_activity``) will be the fault start."""
    del context
    _run.phase = "method"


def after_method_control(context: Experiment) -> None:
    """The method is over."""
    del context
    _run.phase = None


def before_activity_control(context: Activity) -> None:
    """Fault start: before the fault-start action of the method; starts the watcher."""
    objectives = _run.objectives
    if objectives is None or _run.dry or _run.phase != "method" or context.get("type") != "action":
        return
    if objectives.fault_start_activity is not None and context.get("name") != objectives.fault_start_activity:
        return
    with _run.lock:
        if _run.fault_start is not None:
            return
        run_probe = probe_runner(_run.configuration, _run.secrets)
        if objectives.detect is not None:
            _run.detected_before_fault = _baseline_holds(run_probe, objectives.detect)
        _run.fault_start = time.time()
        logger.info(f"objectives: fault start at {_run.fault_start:.3f} ({context.get('name')})")
        _run.watcher = Watcher(objectives, run_probe, _run.fault_start).start()


def _baseline_holds(run_probe: ProbeRunner, probe: dict[str, Any]) -> bool:
    """The detect signal, asked once just before the fault: when it already holds it cannot time the detection."""
    holds = probe_holds(run_probe, probe)
    if holds:
        logger.warning(
            f"objectives: the detect signal {probe.get('name')!r} already holds before the fault: it does not reset, "
            "so TTD will not be measured"
        )
    return holds


def _fault_ended() -> None:
    with _run.lock:
        if _run.fault_start is None or _run.fault_end is not None:
            return
        _run.fault_end = time.time()
        logger.info(f"objectives: fault end {_run.fault_end - _run.fault_start:.1f} s after fault start")
        if _run.watcher is not None:
            _run.watcher.open_recovery_gate()


def after_activity_control(context: Activity) -> None:
    """Fault end: after the action named ``fault_end_activity``."""
    objectives = _run.objectives
    name = objectives.fault_end_activity if objectives is not None else None
    if name is not None and context.get("name") == name:
        _fault_ended()


def after_rollback_control(context: Experiment) -> None:
    """Fault end, when no ``fault_end_activity`` is declared: the rollbacks are over."""
    objectives = _run.objectives
    if objectives is not None and objectives.fault_end_activity is None and context.get("rollbacks"):
        _fault_ended()


def _log(report: dict[str, Any]) -> None:
    measured = report["measured"]
    logger.info(
        "objectives: measured "
        + ", ".join(f"{k}={json.dumps(v)}" for k, v in measured.items())
        + (" - all met" if report["met"] else "")
    )
    for line in report["missed"]:
        logger.error(f"objectives missed: {line}")


def after_experiment_control(context: Experiment, state: Journal = None) -> None:
    """Wait for recovery or the deadline, write the report into the journal (``chaosgpu_objectives``) and fail
    the run when an objective was missed."""
    del context
    if state is None:
        return
    if _run.refused is not None:
        report = build_report(Objectives(), None, None, None, None, [])
        report["met"], report["missed"] = False, [f"objectives refused: {_run.refused}"]
        state[JOURNAL_KEY] = report
        return
    objectives = _run.objectives
    if objectives is None or _run.dry:
        return
    watcher = _run.watcher
    sli_results: list[RequestResult] = []
    if watcher is not None:
        watcher.open_recovery_gate()
        cut_short = state.get("status") in ("interrupted", "aborted")
        if not cut_short:
            logger.info("objectives: waiting for recovery (at most until the deadline)")
        sli_results = watcher.finish(wait=not cut_short)
    report = build_report(
        objectives,
        _run.fault_start,
        _run.fault_end,
        watcher.detected if watcher else None,
        watcher.recovered if watcher else None,
        sli_results,
        detected_before_fault=_run.detected_before_fault,
    )
    state[JOURNAL_KEY] = report
    _log(report)
    if not report["met"] and state.get("status") == "completed":
        state["status"] = "failed"
        logger.error("objectives: missed, the run is marked failed")


def cleanup_control() -> None:
    """Stop the watcher and the load if they still run."""
    if _run.watcher is not None:
        _run.watcher.finish(wait=False)
