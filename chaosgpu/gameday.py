"""The game day: run a suite of experiments against an inventory, in order, and report on them.

``chaosgpu gameday --inventory inventories/lab --suite experiments/lab`` (chaosgpu.cli hands over to ``main``):

1. Loads every experiment of the suite (``*.yaml``/``*.yml``/``*.json`` in name order, or the files a
   ``suite.txt`` in the suite lists, one a line) and validates them all with Chaos Toolkit's own validation; one
   invalid experiment refuses the whole run before any host is reached (exit 2).
2. Pre-flight: every inventory host answers and no fault is in any ledger (one read of the ledgers, as
   ``chaosgpu status`` does), then the suite's own health check, when it has one: every probe of the
   steady-state hypothesis in ``preflight.yaml`` beside the experiments ("the lab is healthy"); otherwise nothing
   runs (exit 3), and every problem is named.
3. Runs each experiment with chaoslib, rollbacks always (whatever the experiment says), the inventory passed as
   ``configuration.chaosgpu_inventory`` (and ``$CHAOSGPU_INVENTORY``), every fault of the game day under one run id
   (``$CHAOSGPU_RUN_ID``). Progress goes to the terminal; chaoslib's log to ``<run>/chaostoolkit.log``.
4. After each experiment, reads the ledgers again: a fault left behind stops the suite. ``--stop-on-failure``
   also stops it at the first experiment that did not pass; by default the rest still runs.
5. Writes ``reports/<UTC timestamp>/`` (chaosgpu.report: summary.json, report.html, summary.md, junit.xml, one
   journal per experiment) and points ``reports/latest`` at it.

Interrupts: the first SIGINT (Ctrl-C) stops the experiment where it is (chaoslib turns it into an ``interrupted``
run) and its rollbacks still run; an interrupt that arrives while rollbacks run is held until they are done, and
later ones are ignored. The remaining experiments are skipped, the partial report is written with
``"interrupted": true``, and the exit status is 130.

An experiment passes when it completed, its objectives (the ``chaosgpu_objectives`` journal entry the
objectives control writes) were met, and nothing was left in the ledgers. Exit 0 only when every experiment of the
suite ran and passed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fnmatch
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TextIO

from chaoslib.configuration import load_configuration
from chaoslib.exceptions import ActivityFailed, ChaosException
from chaoslib.experiment import ensure_experiment_is_valid, run_experiment
from chaoslib.hypothesis import ensure_hypothesis_is_valid
from chaoslib.loader import load_experiment
from chaoslib.run import RunEventHandler
from chaoslib.settings import CHAOSTOOLKIT_CONFIG_PATH, load_settings
from chaoslib.types import Strategy

from chaosgpu import report

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_PREFLIGHT",
    "OBJECTIVES_KEY",
    "PREFLIGHT_FILE",
    "Checks",
    "LedgerChecks",
    "SuiteError",
    "add_arguments",
    "experiment_entry",
    "load_preflight",
    "load_suite",
    "main",
    "preflight_problems",
    "run_gameday",
    "select_files",
    "suite_files",
]

EXIT_OK = 0
EXIT_FAILED = 1  # an experiment failed, missed an objective or left a fault behind
EXIT_INVALID = 2  # bad input: the suite, an experiment or the inventory
EXIT_PREFLIGHT = 3  # the lab was not ready: a host did not answer or a fault was already there
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it

OBJECTIVES_KEY = "chaosgpu_objectives"  # what the objectives control writes into the journal
SUITE_ORDER_FILE = "suite.txt"
PREFLIGHT_FILE = "preflight.yaml"  # the suite's "lab healthy" hypothesis, checked before anything runs
_EXPERIMENT_SUFFIXES = (".yaml", ".yml", ".json")
_PREFLIGHT_RETRY_S = 5.0
_MEASURED_KEYS = ("ttd_s", "ttr_s", "sli_success_ratio", "sli_p50_ms", "sli_p99_ms", "sli_requests")
_log = logging.getLogger("chaostoolkit")


class SuiteError(Exception):
    """The suite cannot run: no experiments, or experiments that do not load or validate (each named)."""


class Checks(Protocol):
    """What the game day asks of the fleet outside the experiments (a fake in tests)."""

    def preflight(self) -> list[str]:
        """Why the fleet is not ready (a host that does not answer, a fault in a ledger); empty when ready."""
        ...

    def leftover(self) -> list[dict[str, Any]]:
        """The faults in the ledgers now (host, id, kind, ...); raises ActivityFailed when a ledger is unreadable."""
        ...


class LedgerChecks:
    """The checks against the inventory's hosts: their fault ledgers, read over the experiments' SSH transport."""

    def __init__(self, inventory: str) -> None:
        self.configuration = {"chaosgpu_inventory": inventory}

    def preflight(self) -> list[str]:
        """One parallel read of every host's ledger: a host that cannot be read, or holds a fault, is a problem."""
        from chaosgpu.activity import get_inventory, get_transport  # noqa: PLC0415 - loads Ansible
        from chaosgpu.ledger import scan_ledgers  # noqa: PLC0415

        hosts = list(get_inventory(self.configuration).hosts.values())
        scan = scan_ledgers(get_transport(), hosts)
        problems = [f"{name}: does not answer: {why}" for name, why in scan.errors.items()]
        problems += [
            f"{record.host}: fault {record.id} ({record.kind}, {record.state}) is active; `chaosgpu cleanup` reverts it"
            for records in scan.faults.values()
            for record in records
        ]
        return problems

    def leftover(self) -> list[dict[str, Any]]:
        """Every fault in the ledgers of the inventory (chaosgpu.fleet.probes.active_faults)."""
        from chaosgpu.fleet.probes import active_faults  # noqa: PLC0415

        return active_faults("all", configuration=self.configuration)


@dataclass
class _Interrupts:
    """SIGINT during a game day: raised into chaoslib only while an experiment's activities run (chaoslib turns
    it into an interrupted run and then plays the rollbacks); held everywhere else, so that rollbacks, the ledger
    checks and the report are never cut short."""

    out: TextIO
    requested: bool = False
    armed: bool = False
    _raised: bool = False

    def handle(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002 - signal handler signature
        if self.requested:
            self.out.write("gameday: interrupt already requested; rollbacks and the report are being finished\n")
            self.out.flush()
            return
        self.requested = True
        self.out.write("gameday: interrupted; running the rollbacks, then writing the partial report\n")
        self.out.flush()
        if self.armed:
            self.fire()

    def fire(self) -> None:
        """Raise the held interrupt now (once): the caller is inside chaoslib's interruptible section."""
        if self.requested and not self._raised:
            self._raised = True
            self.armed = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = signal.signal(signal.SIGINT, self.handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class _Phases(RunEventHandler):  # type: ignore[misc]  # chaoslib is untyped
    """Arms the interrupt while chaoslib runs a hypothesis or the method (inside its try block, which turns it into
    an interrupted run and goes on to the rollbacks), disarms it in between and for the rollbacks, and arms it again
    once they are done (the controls may still wait, e.g. the objectives control for recovery: an interrupt then
    ends the run there; the journal kept here stands in for the one chaoslib no longer returns)."""

    def __init__(self, interrupts: _Interrupts) -> None:
        self.interrupts = interrupts
        self.journal: dict[str, Any] | None = None
        self.rollbacks_done = False

    def started(self, experiment: Any, journal: Any) -> None:  # noqa: ARG002
        self.journal = journal

    def rollbacks_completed(self, experiment: Any, journal: Any) -> None:  # noqa: ARG002
        self.rollbacks_done = True
        self._arm()

    def finish(self, journal: Any) -> None:  # noqa: ARG002
        self._disarm()

    def _arm(self) -> None:
        self.interrupts.armed = True
        self.interrupts.fire()

    def _disarm(self) -> None:
        self.interrupts.armed = False

    def start_hypothesis_before(self, experiment: Any) -> None:  # noqa: ARG002
        self._arm()

    def hypothesis_before_completed(self, experiment: Any, state: Any, journal: Any) -> None:  # noqa: ARG002
        self._disarm()

    def start_method(self, experiment: Any) -> None:  # noqa: ARG002
        self._arm()

    def method_completed(self, experiment: Any, state: Any = None) -> None:  # noqa: ARG002
        self._disarm()

    def start_hypothesis_after(self, experiment: Any) -> None:  # noqa: ARG002
        self._arm()

    def hypothesis_after_completed(self, experiment: Any, state: Any, journal: Any) -> None:  # noqa: ARG002
        self._disarm()

    def start_rollbacks(self, experiment: Any) -> None:  # noqa: ARG002
        self._disarm()


def suite_files(suite: str | os.PathLike[str]) -> list[Path]:
    """The suite's experiment files in run order: those ``suite.txt`` lists (one a line, ``#`` comments), else
    every ``*.yaml``/``*.yml``/``*.json`` of the directory by name. A single file is a suite of one."""
    path = Path(suite)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SuiteError(f"suite {suite}: no such directory or experiment file")
    order = path / SUITE_ORDER_FILE
    if order.is_file():
        names = [line.split("#", 1)[0].strip() for line in order.read_text(encoding="utf-8").splitlines()]
        files = [path / name for name in names if name]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise SuiteError(f"suite {suite}: {SUITE_ORDER_FILE} lists missing files: {', '.join(missing)}")
    else:
        files = sorted(
            p for p in path.iterdir() if p.suffix in _EXPERIMENT_SUFFIXES and p.is_file() and p.name != PREFLIGHT_FILE
        )
    if not files:
        raise SuiteError(f"suite {suite}: no experiment files (*.yaml, *.yml, *.json)")
    return files


def select_files(files: Sequence[Path], only: Sequence[str]) -> list[Path]:
    """The files of the suite that ``only`` names, in suite order: each entry is a file name prefix (``03``,
    ``03-xid79``) or a glob on the file name (``*xid*``). An entry that matches no file is an error (a typo would
    otherwise shrink the game day silently)."""
    wanted = [entry.strip() for entry in only if entry.strip()]
    if not wanted:
        return list(files)

    def matches(entry: str, path: Path) -> bool:
        return path.name.startswith(entry) or fnmatch.fnmatch(path.name, entry)

    unmatched = [entry for entry in wanted if not any(matches(entry, f) for f in files)]
    if unmatched:
        raise SuiteError(
            f"--only {', '.join(unmatched)}: matches no experiment of the suite ({', '.join(f.name for f in files)})"
        )
    return [f for f in files if any(matches(entry, f) for entry in wanted)]


def load_preflight(suite: str | os.PathLike[str], settings: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The suite's pre-flight hypothesis (``preflight.yaml`` beside the experiments): a Chaos Toolkit document with
    a ``title``, optional ``configuration`` and a ``steady-state-hypothesis`` whose probes must all be within their
    tolerance before the game day touches anything ("the lab is healthy"). None when the suite has none; SuiteError
    naming the problem when it does not load or its hypothesis is not valid."""
    path = Path(suite) / PREFLIGHT_FILE
    if not path.is_file():
        return None
    try:
        document = load_experiment(str(path), dict(settings or {}))
        hypothesis = document.get("steady-state-hypothesis")
        if not isinstance(hypothesis, dict) or not hypothesis.get("probes"):
            raise SuiteError(f"{path}: a pre-flight needs a steady-state-hypothesis with probes")
        ensure_hypothesis_is_valid({"steady-state-hypothesis": hypothesis})
    except (ChaosException, OSError, ValueError) as err:
        raise SuiteError(f"{path}: {err}") from None
    document["_path"] = str(path)
    return dict(document)


def preflight_problems(preflight: Mapping[str, Any], secrets: Mapping[str, Any] | None = None) -> list[str]:
    """Each probe of the pre-flight hypothesis that failed (with its error) or was outside its tolerance, by name
    (probes run in order, all of them, so every problem is listed at once)."""
    from chaosgpu.controls.objectives import probe_runner  # noqa: PLC0415 - loads the control only when used

    configuration = load_configuration(dict(preflight.get("configuration") or {}))
    run_probe = probe_runner(configuration, dict(secrets or {}))
    problems = []
    for probe in preflight["steady-state-hypothesis"]["probes"]:
        try:
            if not run_probe(copy.deepcopy(probe)):
                problems.append(f"pre-flight probe {probe.get('name')!r} is not within its tolerance")
        except Exception as err:  # a failing probe is a problem to report, whatever it raised
            problems.append(f"pre-flight probe {probe.get('name')!r} failed: {err}")
    return problems


def load_suite(files: Sequence[Path], settings: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Load and validate every experiment (chaoslib's loader and validation); SuiteError names each bad file."""
    experiments: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in files:
        try:
            experiment = load_experiment(str(path), dict(settings or {}))
            ensure_experiment_is_valid(experiment)
        except (ChaosException, OSError, ValueError) as err:
            errors.append(f"{path}: {err}")
            continue
        experiments.append(experiment)
    if errors:
        raise SuiteError("invalid experiments, nothing was run:\n  " + "\n  ".join(errors))
    return experiments


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _objectives_record(journal: Mapping[str, Any]) -> dict[str, Any] | None:
    record = journal.get(OBJECTIVES_KEY)
    return record if isinstance(record, dict) else None


def _failed_activity(journal: Mapping[str, Any]) -> str | None:
    """The first method action or rollback that failed, with its error, in one line."""
    for section, kinds in (("run", ("action",)), ("rollbacks", ("action", "probe"))):
        for run in journal.get(section) or []:
            activity = (run.get("activity") or {}) if isinstance(run, dict) else {}
            if isinstance(run, dict) and run.get("status") == "failed" and activity.get("type") in kinds:
                lines = [str(line).strip() for line in (run.get("exception") or []) if str(line).strip()]
                where = "rollback" if section == "rollbacks" else "action"
                said = lines[-1] if lines else "no error recorded"
                return f"{where} {activity.get('name', '?')} failed: {said}"[:500]
    return None


def _failure_reason(journal: Mapping[str, Any]) -> str | None:
    """Why the run does not count as completed, in one line; None when it does.

    Stricter than ``chaos run``'s exit status: chaoslib calls a run "completed" when the steady state did not hold
    before the method (nothing was injected) and when a method action failed; a game day does not."""
    status = journal.get("status")
    if status == "interrupted":
        return "interrupted"
    before = (journal.get("steady_states") or {}).get("before")
    if isinstance(before, dict) and before.get("steady_state_met") is False:
        return "the steady-state hypothesis did not hold before the method (nothing was injected)"
    if journal.get("deviated"):
        return "the steady-state hypothesis deviated after the method"
    failed = _failed_activity(journal)
    if failed:
        return failed
    return None if status == "completed" else f"chaoslib status {status}"


def _status(journal: Mapping[str, Any]) -> str:
    """completed, failed or interrupted (DESIGN.md's statuses; chaoslib's aborted is failed)."""
    if journal.get("status") == "interrupted":
        return "interrupted"
    return "completed" if _failure_reason(journal) is None else "failed"


def experiment_entry(
    path: str,
    journal: Mapping[str, Any],
    leftover: Sequence[Mapping[str, Any]],
    leftover_error: str | None = None,
) -> dict[str, Any]:
    """The summary.json entry of one experiment, from its journal and the ledger read after it.

    DESIGN.md's keys (title, file, status, objectives, measured, met, leftover_faults) and: missed, timeline,
    reason, leftover (host/id/kind), leftover_error, started, ended, duration_s, passed."""
    status = _status(journal)
    record = _objectives_record(journal)
    measured: dict[str, Any] = dict.fromkeys(_MEASURED_KEYS)
    if record is not None:
        objectives = {k: _number(v) for k, v in (record.get("declared") or {}).items()}
        measured.update({k: v for k, v in (record.get("measured") or {}).items() if k in _MEASURED_KEYS})
        met = bool(record.get("met"))
        missed = [str(m) for m in record.get("missed") or []]
        timeline = record.get("timeline") if isinstance(record.get("timeline"), dict) else None
    else:
        objectives, met, missed, timeline = {}, status == "completed", [], None
    faults = [{k: fault.get(k) for k in ("host", "id", "kind", "state")} for fault in leftover]
    entry = {
        "title": str((journal.get("experiment") or {}).get("title", path)),
        "file": path,
        "status": status,
        "objectives": objectives,
        "measured": measured,
        "met": met,
        "missed": missed,
        "leftover_faults": len(faults),
        "leftover": faults,
        "leftover_error": leftover_error,
        "reason": _failure_reason(journal),
        "timeline": timeline,
        "started": journal.get("start"),
        "ended": journal.get("end"),
        "duration_s": _number(journal.get("duration")),
    }
    if missed and entry["reason"] == "chaoslib status failed":  # the objectives control failed the run
        entry["reason"] = "objectives missed"
    entry["passed"] = status == "completed" and met and not faults and leftover_error is None
    return entry


def _now() -> datetime:
    return datetime.now(UTC)


def _run_dir(reports_dir: Path, started: datetime) -> Path:
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        candidate = reports_dir / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return candidate
    raise SuiteError(f"cannot create a run directory under {reports_dir}")  # pragma: no cover


@contextlib.contextmanager
def _chaostoolkit_log(path: Path) -> Iterator[None]:
    """chaoslib's log into the run directory, and not on the terminal (the progress lines are there)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    level, propagate = _log.level, _log.propagate
    _log.addHandler(handler)
    _log.setLevel(logging.DEBUG)
    _log.propagate = False
    try:
        yield
    finally:
        _log.removeHandler(handler)
        _log.setLevel(level)
        _log.propagate = propagate
        handler.close()


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _short(seconds: Any) -> str:
    value = _number(seconds)
    return "-" if value is None else f"{value:.1f} s"


def _progress_line(counter: str, entry: Mapping[str, Any], elapsed: float) -> str:
    measured = entry["measured"]
    parts = [f"{counter} {entry['status']}"]
    if measured.get("ttd_s") is not None:
        parts.append(f"TTD {_short(measured['ttd_s'])}")
    if measured.get("ttr_s") is not None:
        parts.append(f"TTR {_short(measured['ttr_s'])}")
    if entry["objectives"]:
        parts.append("objectives met" if entry["met"] else "objectives MISSED: " + "; ".join(entry["missed"]))
    if entry["leftover_error"]:
        parts.append(f"ledger check FAILED: {entry['leftover_error']}")
    else:
        parts.append(f"{entry['leftover_faults']} fault(s) left")
    if entry["reason"] and entry["status"] != "completed":
        parts.append(entry["reason"])
    parts.append(f"{elapsed:.1f} s")
    return "  ".join(parts) + ("  PASS" if entry["passed"] else "  FAIL") + "\n"


def _settings(settings_path: str | None) -> dict[str, Any]:
    """Chaos Toolkit's settings (global controls, notifications), with the rollback strategy forced to always."""
    settings = load_settings(settings_path or CHAOSTOOLKIT_CONFIG_PATH) or {}
    settings.setdefault("runtime", {}).setdefault("rollbacks", {})["strategy"] = "always"
    return dict(settings)


def _hypothesis_strategy(experiment: Mapping[str, Any]) -> Strategy:
    value = ((experiment.get("runtime") or {}).get("hypothesis") or {}).get("strategy", "default")
    return Strategy.from_string(value)


@dataclass
class _Context:
    """What every step of one game day shares."""

    inventory: str
    checks: Checks
    settings: dict[str, Any]
    interrupts: _Interrupts
    out: TextIO
    preflight: dict[str, Any] | None = None
    preflight_wait_s: float = 0.0


@dataclass
class _Run:
    """One game day in progress: what ``run_gameday`` hands to the report."""

    suite: str
    inventory: str
    run_id: str
    started: datetime
    entries: list[dict[str, Any]] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    stopped: str | None = None
    interrupted: bool = False

    def summary(self, ended: datetime) -> dict[str, Any]:
        passed = not self.interrupted and not self.not_run and all(e["passed"] for e in self.entries)
        return {
            "suite": self.suite,
            "inventory": self.inventory,
            "run_id": self.run_id,
            "started": self.started.isoformat(),
            "ended": ended.isoformat(),
            "interrupted": self.interrupted,
            "stopped": self.stopped,
            "passed": passed,
            "experiments": self.entries,
            "not_run": self.not_run,
        }


def run_gameday(  # noqa: PLR0913 - suite and inventory, then keyword-only options
    suite: str,
    inventory: str,
    *,
    reports_dir: str | os.PathLike[str] = "reports",
    checks: Checks | None = None,
    stop_on_failure: bool = False,
    settings_path: str | None = None,
    out: TextIO | None = None,
    handle_sigint: bool = True,
    only: Sequence[str] = (),
    preflight_wait_s: float = 0.0,
) -> int:
    """Run the game day; returns the exit status (module docstring). ``checks`` replaces the ledger checks (tests);
    ``handle_sigint`` False leaves SIGINT alone (when not called from the main thread); ``only`` keeps the suite's
    experiments it names (select_files)."""
    out = out or sys.stdout
    settings = _settings(settings_path)
    try:
        files = select_files(suite_files(suite), only)
        experiments = load_suite(files, settings)
        preflight = load_preflight(suite, settings) if Path(suite).is_dir() else None
    except SuiteError as err:
        out.write(f"gameday: {err}\n")
        return EXIT_INVALID
    inventory_path = str(Path(inventory).resolve())
    checks = checks or LedgerChecks(inventory_path)
    interrupts = _Interrupts(out)
    guard = interrupts.installed() if handle_sigint else contextlib.nullcontext()
    context = _Context(inventory_path, checks, settings, interrupts, out, preflight, preflight_wait_s)
    with guard:
        return _run(context, suite, list(zip(files, experiments, strict=True)), Path(reports_dir), stop_on_failure)


def _preflight_hypothesis(context: _Context) -> list[str]:
    """The suite's preflight.yaml, asked again every few seconds for up to ``preflight_wait_s`` while it does not
    hold (a lab that was just converged or tested settles: first scrapes, a node back from a reboot)."""
    if context.preflight is None:
        return []
    out, interrupts = context.out, context.interrupts
    out.write(f"gameday: pre-flight hypothesis {context.preflight['_path']}\n")
    out.flush()
    deadline = time.monotonic() + context.preflight_wait_s
    with _environment({"CHAOSGPU_INVENTORY": context.inventory}):
        problems = preflight_problems(context.preflight)
        while problems and not interrupts.requested and time.monotonic() + _PREFLIGHT_RETRY_S < deadline:
            out.write(f"gameday: pre-flight: {len(problems)} problem(s), asking again (--preflight-wait)\n")
            out.flush()
            time.sleep(_PREFLIGHT_RETRY_S)
            problems = preflight_problems(context.preflight)
    return problems


def _run(
    context: _Context,
    suite: str,
    experiments: Sequence[tuple[Path, dict[str, Any]]],
    reports_dir: Path,
    stop_on_failure: bool,
) -> int:
    inventory, checks, interrupts, out = context.inventory, context.checks, context.interrupts, context.out
    total = len(experiments)
    out.write(f"gameday: {total} experiment(s) from {suite}, inventory {inventory}; pre-flight\n")
    out.flush()
    try:
        problems = checks.preflight()
    except ActivityFailed as err:  # InventoryError, an unreadable inventory
        out.write(f"gameday: pre-flight: {err}\n")
        return EXIT_INVALID
    if not problems and context.preflight is not None and not interrupts.requested:
        problems = _preflight_hypothesis(context)
    if interrupts.requested:
        out.write("gameday: interrupted during pre-flight; nothing was run\n")
        return EXIT_INTERRUPTED
    if problems:
        out.write("gameday: pre-flight failed, nothing was run:\n" + "".join(f"  {p}\n" for p in problems))
        return EXIT_PREFLIGHT
    started = _now()
    run = _Run(suite, inventory, os.environ.get("CHAOSGPU_RUN_ID") or f"gameday-{started:%Y%m%dT%H%M%SZ}", started)
    run_dir = _run_dir(reports_dir, started)
    out.write(f"gameday: pre-flight passed; run {run.run_id}, report in {run_dir}\n")
    out.flush()
    env = {"CHAOSGPU_INVENTORY": inventory, "CHAOSGPU_RUN_ID": run.run_id}
    with _chaostoolkit_log(run_dir / "chaostoolkit.log"), _environment(env):
        for index, (path, experiment) in enumerate(experiments, start=1):
            if interrupts.requested or run.stopped:
                run.not_run.append(str(path))
                continue
            entry = _run_one(context, f"[{index}/{total}]", path, experiment, run_dir / f"{index:02d}-{path.stem}")
            run.entries.append(entry)
            if entry["status"] == "interrupted" or interrupts.requested:
                run.interrupted = True
                run.stopped = "interrupted"
            elif entry["leftover_faults"] or entry["leftover_error"]:
                run.stopped = f"faults left behind after {path}; run `chaosgpu cleanup -i {inventory}`"
            elif stop_on_failure and not entry["passed"]:
                run.stopped = f"{path} did not pass (--stop-on-failure)"
    summary = run.summary(_now())
    written = report.write_reports(run_dir, summary)
    report.update_latest(reports_dir, run_dir)
    if run.stopped:
        out.write(f"gameday: stopped: {run.stopped}; not run: {len(run.not_run)}\n")
    verdict = "PASSED" if summary["passed"] else ("INTERRUPTED" if run.interrupted else "FAILED")
    out.write(f"gameday: {verdict}; report {written['html']}\n")
    out.flush()
    if run.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary["passed"] else EXIT_FAILED


def _run_one(context: _Context, counter: str, path: Path, experiment: dict[str, Any], stem: Path) -> dict[str, Any]:
    """Run one experiment, save its journal as ``<stem>.journal.json``, read the ledgers; its summary entry."""
    inventory, checks, interrupts, out = context.inventory, context.checks, context.interrupts, context.out
    out.write(f"{counter} {experiment.get('title', path)} ({path})\n")
    out.flush()
    began = time.monotonic()
    interrupted_before = interrupts.requested
    phases = _Phases(interrupts)
    try:
        journal = run_experiment(
            copy.deepcopy(experiment),
            settings=context.settings,
            experiment_vars=({"chaosgpu_inventory": inventory}, {}),
            strategy=_hypothesis_strategy(experiment),
            event_handlers=[phases],
        )
    except KeyboardInterrupt:  # after the rollbacks (a control still waiting), or outside chaoslib's handling
        interrupts.requested = True
        journal = dict(phases.journal or {"experiment": experiment})
        journal["status"] = "interrupted"
        journal["chaosgpu_gameday"] = (
            "interrupted after the rollbacks, while the experiment's controls finished"
            if phases.rollbacks_done
            else "interrupted outside chaoslib's handling: the rollbacks may not have run"
        )
    except ChaosException as err:  # an experiment chaoslib could not start (configuration, secrets)
        journal = {"experiment": experiment, "status": "failed", "run": [], "chaosgpu_error": str(err)}
    journal_name = f"{stem.name}.journal.json"
    (stem.parent / journal_name).write_text(json.dumps(journal, indent=2, default=str) + "\n", encoding="utf-8")
    leftover: list[dict[str, Any]] = []
    leftover_error = None
    try:
        leftover = checks.leftover()
    except ActivityFailed as err:
        leftover_error = str(err)
    entry = experiment_entry(str(path), journal, leftover, leftover_error)
    if interrupts.requested and not interrupted_before:  # e.g. during its rollbacks, which were let finish
        entry.update(status="interrupted", passed=False)
    if journal.get("chaosgpu_error"):
        entry["reason"] = str(journal["chaosgpu_error"])
    entry["journal"] = journal_name
    out.write(_progress_line(counter, entry, time.monotonic() - began))
    for fault in entry["leftover"]:
        out.write(f"    left behind: {fault['host']} {fault['id']} ({fault['kind']})\n")
    out.flush()
    return entry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``gameday`` subcommand's options (chaosgpu.cli)."""
    parser.add_argument("-i", "--inventory", required=True, metavar="PATH", help="Ansible inventory of the fleet")
    parser.add_argument("-s", "--suite", required=True, metavar="DIR", help="directory of experiments (or one file)")
    parser.add_argument("--reports", default="reports", metavar="DIR", help="where reports go (default: reports)")
    parser.add_argument(
        "--stop-on-failure",
        action="store_true",
        help="stop at the first experiment that does not pass (a fault left behind always stops the suite)",
    )
    parser.add_argument("--settings", metavar="PATH", help="Chaos Toolkit settings file (default: chaos's own)")
    parser.add_argument(
        "--only",
        default="",
        metavar="LIST",
        help="run only these experiments of the suite, in suite order: comma-separated file name prefixes or globs "
        "(e.g. 01,11 or '*xid*')",
    )
    parser.add_argument(
        "--preflight-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="ask the suite's preflight.yaml again every 5 s for up to this long while it does not hold (a lab that "
        "was just converged or tested settles); the ledger check never waits",
    )


def main(args: argparse.Namespace, checks_factory: Callable[[str], Checks] | None = None) -> int:
    """``chaosgpu gameday``: run the suite (chaosgpu.cli parses the arguments)."""
    checks = checks_factory(str(Path(args.inventory).resolve())) if checks_factory else None
    return run_gameday(
        args.suite,
        args.inventory,
        reports_dir=args.reports,
        checks=checks,
        stop_on_failure=args.stop_on_failure,
        settings_path=args.settings,
        only=args.only.split(","),
        preflight_wait_s=max(0.0, args.preflight_wait),
    )
