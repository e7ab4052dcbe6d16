"""Recovery objectives: the declaration's validation, the journal contract, and the control
chaosgpu.controls.objectives in real Chaos Toolkit runs (in-process and ``chaos run``) of experiments whose
signals turn on a known number of seconds after the fault action ran (objectives_helpers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chaoslib.experiment import run_experiment
from chaoslib.types import Dry
from objectives_helpers import SliServer

from chaosgpu.objectives import (
    JOURNAL_KEY,
    Objectives,
    ObjectivesError,
    Watcher,
    build_report,
    parse_objectives,
    validate_report,
)
from chaosgpu.sli import RequestResult

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
HELPERS = "objectives_helpers"


def probe(func: str, tolerance: Any = True, name: str | None = None, **arguments: Any) -> dict[str, Any]:
    """A probe definition calling objectives_helpers.<func>."""
    return {
        "type": "probe",
        "name": name or func,
        "tolerance": tolerance,
        "provider": {"type": "python", "module": HELPERS, "func": func, "arguments": arguments},
    }


def experiment(mark: Path, objectives: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An experiment whose one action marks the fault, with the objectives control and extension."""
    return {
        "version": "1.0.0",
        "title": "objectives under test",
        "description": "the fault action writes a mark; the signals turn on some seconds later",
        "controls": [{"name": "objectives", "provider": {"type": "python", "module": "chaosgpu.controls.objectives"}}],
        "extensions": [{"name": "chaosgpu_objectives", **objectives}],
        "method": [
            {
                "type": "action",
                "name": "fault",
                "provider": {
                    "type": "python",
                    "module": HELPERS,
                    "func": "mark_fault",
                    "arguments": {"path": str(mark)},
                },
            }
        ],
        **extra,
    }


def report_of(journal: dict[str, Any]) -> dict[str, Any]:
    report = journal[JOURNAL_KEY]
    assert validate_report(report) == [], validate_report(report)
    return dict(report)


@pytest.fixture
def mark(tmp_path: Path) -> Path:
    return tmp_path / "fault-mark"


@pytest.fixture
def server() -> Iterator[SliServer]:
    srv = SliServer()
    yield srv
    srv.close()


# --- the declaration ---------------------------------------------------------------------------------------------


def test_no_extension_means_no_objectives(mark: Path) -> None:
    plain = experiment(mark, {})
    plain["extensions"] = [{"name": "something-else"}]
    assert parse_objectives(plain) is None


@pytest.mark.parametrize(
    ("declared", "named"),
    [
        ({"ttr_s": -5}, "ttr_s must be > 0"),
        ({"ttd_s": "30", "detect": probe("healthy", path="x", broken_for_s=1)}, "ttd_s must be a number"),
        ({"ttr_s": 10, "tt_s": 3}, "unknown key.*tt_s"),
        ({"ttd_s": 10}, "ttd_s is declared without a detect probe"),
        ({"ttr_s": 10}, "ttr_s is declared without a recover probe"),
        ({"sli_success_ratio": 0.9}, "sli_success_ratio is declared without an sli load"),
        ({"sli_success_ratio": 1.5, "sli": {"url": "http://127.0.0.1:1/"}}, "sli_success_ratio must be <= 1"),
        ({"sli": {"url": "http://127.0.0.1:1/", "rate_per_s": 500}}, "sli.rate_per_s must be <= 200"),
        ({"sli": {"url": "http://127.0.0.1:1/", "rps": 5}}, "sli: unknown key.*rps"),
        ({"poll_interval_s": 2}, "poll_interval_s must be <= 1"),
        ({"deadline_s": 0}, "deadline_s must be > 0"),
        ({"detect": {"name": "d", "provider": {"type": "python", "module": HELPERS, "func": "healthy"}}}, "tolerance"),
        ({"fault_start_activity": "nope"}, "fault_start_activity: no activity named 'nope'"),
    ],
)
def test_malformed_declarations_are_refused_naming_the_key(mark: Path, declared: dict[str, Any], named: str) -> None:
    with pytest.raises(ObjectivesError, match=named):
        parse_objectives(experiment(mark, declared))


def test_recover_defaults_to_the_steady_state_probes(mark: Path) -> None:
    ssh = {"title": "healthy", "probes": [probe("healthy", path=str(mark), broken_for_s=1)]}
    parsed = parse_objectives(experiment(mark, {"ttr_s": 10}, **{"steady-state-hypothesis": ssh}))
    assert parsed is not None
    assert [p["provider"]["func"] for p in parsed.recover] == ["healthy"]
    assert parsed.poll_interval_s == 1.0
    assert parsed.deadline_s == 600.0


# --- the journal contract ----------------------------------------------------------------------------------------


def test_report_judges_each_declared_objective() -> None:
    objectives = Objectives(
        ttd_s=30, ttr_s=100, sli_success_ratio=0.9, sli_p99_ms=50, sli={"url": "u", "rate_per_s": 1, "timeout_s": 1}
    )
    results = [RequestResult(1010.0, True, 20.0, 200), RequestResult(1011.0, False, None, None, "refused")]
    report = build_report(objectives, 1000.0, 1050.0, 1042.1, None, results)
    assert validate_report(report) == []
    assert report["declared"] == {"ttd_s": 30, "ttr_s": 100, "sli_success_ratio": 0.9, "sli_p99_ms": 50}
    assert report["measured"] == {
        "ttd_s": 42.1,
        "ttr_s": None,
        "sli_success_ratio": 0.5,
        "sli_p50_ms": 20.0,
        "sli_p99_ms": 20.0,
        "sli_requests": 2,
    }
    assert report["met"] is False
    assert report["missed"] == [
        "ttd_s: measured 42.1 > objective 30",
        "ttr_s: never recovered, not within the deadline (600 s); objective 100",
        "sli_success_ratio: measured 0.5 < objective 0.9",
    ]
    assert report["timeline"]["sli"] == [[1010.0, True, 20.0], [1011.0, False, None]]


def test_report_with_nothing_declared_is_met() -> None:
    report = build_report(Objectives(), 1.0, None, None, None, [])
    assert report["met"] is True
    assert report["missed"] == []
    assert report["measured"]["sli_requests"] == 0
    assert validate_report(report) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda r: r.pop("timeline"),
        lambda r: r["measured"].update(sli_requests=1.5),
        lambda r: r["declared"].update(ttd_s="30"),
        lambda r: r.update(met=True),  # while missed is not empty
        lambda r: r["timeline"].update(sli=[[1.0, "yes", 3.0]]),
        lambda r: r["timeline"].update(detected="soon"),
    ],
)
def test_validate_report_catches_a_broken_contract(breakage: Any) -> None:
    report = build_report(Objectives(ttd_s=1), 1.0, None, None, None, [RequestResult(1.0, True, 1.0, 200)])
    assert validate_report(report) == []
    breakage(report)
    assert validate_report(report) != []


# --- real runs ---------------------------------------------------------------------------------------------------


def test_ttd_and_ttr_are_measured_within_a_poll_of_the_signals(mark: Path) -> None:
    journal = run_experiment(
        experiment(
            mark,
            {
                "ttd_s": 10,
                "ttr_s": 10,
                "detect": probe("since_mark_at_least", path=str(mark), seconds=2),
                "recover": probe("healthy", path=str(mark), broken_for_s=3),
                "poll_interval_s": 0.5,
                "deadline_s": 30,
            },
        )
    )
    report = report_of(journal)
    assert journal["status"] == "completed"
    assert report["met"] is True, report["missed"]
    assert 2 <= report["measured"]["ttd_s"] <= 3.5
    assert 3 <= report["measured"]["ttr_s"] <= 4.5
    timeline = report["timeline"]
    assert timeline["fault_start"] <= float(mark.read_text())  # taken before the action ran
    assert timeline["detected"] - timeline["fault_start"] == pytest.approx(report["measured"]["ttd_s"], abs=0.001)
    assert timeline["fault_end"] is None  # no rollbacks, no fault_end_activity


def test_default_recovery_is_the_steady_state_holding_again(mark: Path) -> None:
    ssh = {"title": "healthy", "probes": [probe("healthy", path=str(mark), broken_for_s=2)]}
    exp = experiment(mark, {"ttr_s": 10, "poll_interval_s": 0.5, "deadline_s": 30}, **{"steady-state-hypothesis": ssh})
    exp["method"][0]["pauses"] = {"after": 2.5}  # the hypothesis after the method sees it healthy again
    journal = run_experiment(exp)
    report = report_of(journal)
    assert journal["status"] == "completed"
    assert not journal["deviated"]
    assert 2 <= report["measured"]["ttr_s"] <= 3.5
    assert report["measured"]["ttd_s"] is None


def test_a_missed_objective_fails_the_run(mark: Path) -> None:
    journal = run_experiment(
        experiment(
            mark,
            {
                "ttd_s": 1,
                "detect": probe("since_mark_at_least", path=str(mark), seconds=2),
                "recover": probe("healthy", path=str(mark), broken_for_s=2),
                "poll_interval_s": 0.5,
                "deadline_s": 30,
            },
        )
    )
    report = report_of(journal)
    assert journal["status"] == "failed"
    assert report["met"] is False
    assert len(report["missed"]) == 1
    assert report["missed"][0].startswith("ttd_s: measured ")
    assert report["missed"][0].endswith(" > objective 1")


def test_a_signal_that_never_comes_is_missed_at_the_deadline(mark: Path) -> None:
    journal = run_experiment(
        experiment(
            mark,
            {
                "ttd_s": 5,
                "detect": probe("since_mark_at_least", path=str(mark), seconds=3600),
                "recover": probe("healthy", path=str(mark), broken_for_s=0),
                "poll_interval_s": 0.5,
                "deadline_s": 1.5,
            },
        )
    )
    report = report_of(journal)
    assert journal["status"] == "failed"
    assert report["measured"]["ttd_s"] is None
    assert report["missed"] == ["ttd_s: never detected, not within the deadline (1.5 s); objective 5"]


def test_a_detect_signal_that_held_before_the_fault_cannot_time_detection(mark: Path, tmp_path: Path) -> None:
    def run_detecting(signal_file: Path) -> dict[str, Any]:
        """The experiment, detecting on ``signal_file`` existing (a sticky signal once it exists)."""
        declared = {
            "ttd_s": 5,
            "detect": probe("exists", path=str(signal_file)),
            "recover": probe("healthy", path=str(mark), broken_for_s=0),
            "poll_interval_s": 0.5,
            "deadline_s": 10,
        }
        return run_experiment(experiment(mark, declared))

    sticky = tmp_path / "left-by-an-earlier-run"
    sticky.write_text("")
    journal = run_detecting(sticky)
    report = report_of(journal)
    assert journal["status"] == "failed"
    assert report["measured"]["ttd_s"] is None
    assert report["timeline"]["detected"] is None
    assert report["missed"] == [
        "ttd_s: the detect signal already held before the fault started (it does not reset), so it cannot time this "
        "detection; objective 5"
    ]
    mark.unlink()  # the same experiment on a signal that is off before the fault (the mark) measures TTD
    assert report_of(run_detecting(mark))["met"] is True


def test_a_malformed_declaration_refuses_the_run_before_the_fault(mark: Path) -> None:
    journal = run_experiment(experiment(mark, {"ttd_s": -1}))
    assert journal["status"] == "interrupted"
    assert not mark.exists(), "the fault action ran"
    report = report_of(journal)
    assert report["met"] is False
    assert "ttd_s must be > 0" in report["missed"][0]


def test_sli_load_runs_from_fault_start_until_recovery(mark: Path, server: SliServer) -> None:
    journal = run_experiment(
        experiment(
            mark,
            {
                "sli_success_ratio": 0.99,
                "sli_p99_ms": 5000,
                "sli": {"url": server.url("/ok"), "rate_per_s": 10, "timeout_s": 2},
                "recover": probe("healthy", path=str(mark), broken_for_s=1.5),
                "poll_interval_s": 0.5,
                "deadline_s": 30,
            },
        )
    )
    report = report_of(journal)
    assert journal["status"] == "completed", report["missed"]
    measured, timeline = report["measured"], report["timeline"]
    assert measured["sli_success_ratio"] == 1.0
    assert measured["sli_requests"] == len(timeline["sli"]) >= 10  # >= 1.5 s at 10/s
    assert measured["sli_p50_ms"] is not None
    stamps = [point[0] for point in timeline["sli"]]
    assert timeline["fault_start"] <= min(stamps)
    assert max(stamps) <= timeline["recovered"] + 1


def test_a_failing_workload_misses_the_sli_objective(mark: Path, server: SliServer) -> None:
    journal = run_experiment(
        experiment(
            mark,
            {
                "sli_success_ratio": 0.9,
                "sli": {"url": server.url("/status/500"), "rate_per_s": 10, "timeout_s": 2},
                "recover": probe("healthy", path=str(mark), broken_for_s=1),
                "poll_interval_s": 0.5,
                "deadline_s": 30,
            },
        )
    )
    report = report_of(journal)
    assert journal["status"] == "failed"
    assert report["measured"]["sli_success_ratio"] == 0.0
    assert report["missed"] == ["sli_success_ratio: measured 0 < objective 0.9"]


def test_fault_end_is_the_end_of_the_rollbacks(mark: Path) -> None:
    exp = experiment(
        mark,
        {"recover": probe("healthy", path=str(mark), broken_for_s=0), "poll_interval_s": 0.5, "deadline_s": 30},
    )
    exp["rollbacks"] = [probe("healthy", name="rollback", path=str(mark), broken_for_s=0) | {"type": "action"}]
    journal = run_experiment(exp)
    timeline = report_of(journal)["timeline"]
    assert timeline["fault_start"] < timeline["fault_end"]
    # the recover signal holds at once, but recovery only counts once the fault has ended
    assert timeline["recovered"] >= timeline["fault_end"]


def test_a_dry_run_measures_nothing(mark: Path, server: SliServer) -> None:
    exp = experiment(
        mark,
        {
            "sli": {"url": server.url("/ok"), "rate_per_s": 10, "timeout_s": 2},
            "recover": probe("healthy", path=str(mark), broken_for_s=0),
        },
    )
    exp["dry"] = Dry.ACTIVITIES
    journal = run_experiment(exp)
    assert journal["status"] == "completed"
    assert JOURNAL_KEY not in journal
    assert not mark.exists()


# --- chaos run ---------------------------------------------------------------------------------------------------


def _chaos_run(tmp_path: Path, exp: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    chaos = Path(sys.executable).with_name("chaos")
    if not chaos.exists():
        chaos = Path(shutil.which("chaos") or "chaos")
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(exp))
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), str(HERE), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [
            str(chaos),
            "--no-version-check",
            "--log-file",
            str(tmp_path / "chaostoolkit.log"),
            "run",
            "--journal-path",
            str(tmp_path / "journal.json"),
            str(tmp_path / "experiment.yaml"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    journal = json.loads((tmp_path / "journal.json").read_text())
    return done.returncode, journal, done.stdout + done.stderr


@pytest.mark.parametrize(("ttd_s", "rc", "status"), [(10, 0, "completed"), (1, 1, "failed")])
def test_chaos_run_exits_1_when_an_objective_is_missed(
    tmp_path: Path, mark: Path, ttd_s: float, rc: int, status: str
) -> None:
    exp = experiment(
        mark,
        {
            "ttd_s": ttd_s,
            "detect": probe("since_mark_at_least", path=str(mark), seconds=1.5),
            "recover": probe("healthy", path=str(mark), broken_for_s=1.5),
            "poll_interval_s": 0.5,
            "deadline_s": 30,
        },
    )
    returncode, journal, output = _chaos_run(tmp_path, exp)
    assert returncode == rc, output
    assert journal["status"] == status
    report = report_of(journal)
    assert 1.5 <= report["measured"]["ttd_s"] <= 3
    assert "objectives: measured" in output


def test_chaos_run_refuses_a_malformed_declaration(tmp_path: Path, mark: Path) -> None:
    returncode, journal, output = _chaos_run(tmp_path, experiment(mark, {"ttr_s": 60, "ttx_s": 1}))
    assert returncode == 1
    assert journal["status"] == "interrupted"
    assert "unknown key(s) ttx_s" in output
    assert not mark.exists()


def test_the_lab_experiments_declare_valid_objectives() -> None:
    """Every lab experiment with the objectives control declares objectives that parse (the run would refuse)."""
    checked = 0
    for path in sorted((ROOT / "experiments").rglob("*.yaml")):
        exp = yaml.safe_load(path.read_text())
        modules = [c.get("provider", {}).get("module") for c in exp.get("controls", [])]
        if "chaosgpu.controls.objectives" not in modules:
            continue
        parsed = parse_objectives(exp)
        assert parsed is not None, f"{path}: objectives control without a chaosgpu_objectives extension"
        assert parsed.recover, f"{path}: nothing to judge recovery on"
        checked += 1
    assert checked >= 1


def test_a_detection_in_the_same_round_as_the_recovery_is_not_lost() -> None:
    """Both signals can turn in one instant: the detect probe, asked before the recover probe, says no; the recover
    probe then holds. The watcher asks the detect probe once more before recovery ends the watch."""
    detect = {"type": "probe", "name": "detect"}
    recover = {"type": "probe", "name": "recover"}
    answers = {"detect": iter([False, True])}
    now = iter([100.0 + step for step in range(10)])

    def run_probe(probe: dict[str, Any]) -> bool:
        return next(answers[probe["name"]]) if probe["name"] in answers else True

    watcher = Watcher(
        Objectives(ttd_s=5, ttr_s=10, detect=detect, recover=[recover]), run_probe, 99.0, lambda: next(now)
    )
    watcher.open_recovery_gate()  # the fault already ended
    assert watcher._tick() is True
    assert watcher.detected == 100.0
    assert watcher.recovered == 101.0
