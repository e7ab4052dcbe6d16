"""chaosgpu gameday: small suites whose activities are gameday_fixtures' Python functions (no hosts), the fleet
checks replaced by fakes; chaoslib runs the experiments for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from chaosgpu import cli, gameday

FIXTURES = "gameday_fixtures"
REPO = Path(__file__).resolve().parents[3]


class FakeChecks:
    """The fleet as the test wants it: pre-flight problems, and faults left after chosen experiments."""

    def __init__(self, problems: list[str] | None = None, leftovers: list[list[dict[str, Any]]] | None = None):
        self.problems = problems or []
        self.leftovers = list(leftovers or [])
        self.calls: list[str] = []

    def preflight(self) -> list[str]:
        self.calls.append("preflight")
        return self.problems

    def leftover(self) -> list[dict[str, Any]]:
        self.calls.append("leftover")
        return self.leftovers.pop(0) if self.leftovers else []


def _call(func: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "python", "module": FIXTURES, "func": func, "arguments": arguments}


def objectives_record(met: bool = True) -> dict[str, Any]:
    """A chaosgpu_objectives entry as the objectives control writes it."""
    start = 1_700_000_000.0
    sli = [[start - 5 + i, i not in (8, 9), None if i == 9 else 20.0 + i] for i in range(40)]
    return {
        "declared": {"ttd_s": 30, "ttr_s": 60, "sli_success_ratio": 0.9, "sli_p99_ms": 100},
        "measured": {
            "ttd_s": 12.5 if met else 42.1,
            "ttr_s": 31.0,
            "sli_success_ratio": 0.95,
            "sli_p50_ms": 30.0,
            "sli_p99_ms": 58.0,
            "sli_requests": 40,
        },
        "met": met,
        "missed": [] if met else ["ttd_s: measured 42.1 > objective 30"],
        "timeline": {
            "fault_start": start,
            "fault_end": start + 20,
            "detected": start + (12.5 if met else 42.1),
            "recovered": start + 31,
            "sli": sli,
        },
    }


def experiment(
    tmp: Path, name: str, *, method: list[dict[str, Any]] | None = None, objectives: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An experiment whose action and rollback leave <name>.action / <name>.rollback in ``tmp``."""
    doc: dict[str, Any] = {
        "version": "1.0.0",
        "title": f"experiment {name}",
        "description": "a game day test experiment",
        "steady-state-hypothesis": {
            "title": "holds",
            "probes": [{"type": "probe", "name": "holds", "tolerance": True, "provider": _call("holds")}],
        },
        "method": method
        or [{"type": "action", "name": "inject", "provider": _call("touch", path=str(tmp / f"{name}.action"))}],
        "rollbacks": [
            {"type": "action", "name": "revert", "provider": _call("touch", path=str(tmp / f"{name}.rollback"))}
        ],
        "configuration": {"chaosgpu_inventory": "replaced-by-the-game-day"},
    }
    if objectives is not None:
        doc["configuration"]["fake_objectives"] = objectives
        doc["controls"] = [{"name": "fake-objectives", "provider": {"type": "python", "module": FIXTURES}}]
    return doc


def write_suite(directory: Path, experiments: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in experiments.items():
        (directory / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")
    return directory


def run(tmp: Path, suite: Path, checks: FakeChecks, **options: Any) -> tuple[int, str]:
    """Run the game day with its output captured; exit status and output."""
    out_path = tmp / "out.txt"
    with out_path.open("w", encoding="utf-8") as out:
        rc = gameday.run_gameday(
            str(suite), "inventories/lab", reports_dir=tmp / "reports", checks=checks, out=out, **options
        )
    return rc, out_path.read_text(encoding="utf-8")


def latest_summary(tmp: Path) -> dict[str, Any]:
    return json.loads((tmp / "reports" / "latest" / "summary.json").read_text(encoding="utf-8"))


def junit(tmp: Path) -> ET.Element:
    return ET.fromstring((tmp / "reports" / "latest" / "junit.xml").read_text(encoding="utf-8"))  # noqa: S314


def test_suite_that_meets_every_objective_exits_0_with_every_report(tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path / "suite",
        {"01-a": experiment(tmp_path, "a", objectives=objectives_record()), "02-b": experiment(tmp_path, "b")},
    )
    checks = FakeChecks()
    rc, out = run(tmp_path, suite, checks)
    assert rc == gameday.EXIT_OK, out
    assert checks.calls == ["preflight", "leftover", "leftover"]
    assert (tmp_path / "a.rollback").exists()
    assert (tmp_path / "b.rollback").exists()
    summary = latest_summary(tmp_path)
    assert summary["passed"] is True
    assert summary["interrupted"] is False
    first, second = summary["experiments"]
    assert first["title"] == "experiment a"
    assert first["file"] == str(suite / "01-a.json")
    assert first["status"] == "completed"
    assert first["objectives"] == {"ttd_s": 30.0, "ttr_s": 60.0, "sli_success_ratio": 0.9, "sli_p99_ms": 100.0}
    assert first["measured"]["ttd_s"] == 12.5
    assert first["met"] is True
    assert first["leftover_faults"] == 0
    # Without the objectives control: no objectives, nothing measured, met = the run's own status.
    assert second["objectives"] == {}
    assert set(second["measured"].values()) == {None}
    assert second["met"] is True
    for key in ("started", "ended"):
        assert summary[key].endswith("+00:00")
    run_dir = (tmp_path / "reports" / "latest").resolve()
    assert (tmp_path / "reports" / "latest").is_symlink()
    assert run_dir.parent == (tmp_path / "reports").resolve()
    for name in ("summary.json", "report.html", "summary.md", "junit.xml", "01-01-a.journal.json"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "01-01-a.journal.json").read_text())["chaosgpu_objectives"]["met"] is True
    suite_xml = junit(tmp_path).find("testsuite")
    assert suite_xml is not None
    assert (suite_xml.get("tests"), suite_xml.get("failures"), suite_xml.get("errors")) == ("2", "0", "0")
    assert "| 1 | experiment a | completed | 12.5 s (≤ 30 s) |" in (run_dir / "summary.md").read_text()
    assert "[1/2] experiment a" in out
    assert "[1/2] completed  TTD 12.5 s  TTR 31.0 s  objectives met  0 fault(s) left" in out


def test_missed_objective_exits_1_and_fails_its_junit_testcase(tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path / "suite",
        {
            "01-miss": experiment(tmp_path, "miss", objectives=objectives_record(met=False)),
            "02-ok": experiment(tmp_path, "ok"),
        },
    )
    rc, out = run(tmp_path, suite, FakeChecks())
    assert rc == gameday.EXIT_FAILED, out
    assert (tmp_path / "ok.action").exists(), "the suite continues after a failed experiment by default"
    entry = latest_summary(tmp_path)["experiments"][0]
    assert (entry["status"], entry["met"], entry["passed"]) == ("failed", False, False)
    assert entry["missed"] == ["ttd_s: measured 42.1 > objective 30"]
    cases = junit(tmp_path).findall("./testsuite/testcase")
    failure = cases[0].find("failure")
    assert failure is not None
    assert "ttd_s: measured 42.1 > objective 30" in (failure.get("message") or "")
    assert cases[1].find("failure") is None
    assert "objectives MISSED: ttd_s: measured 42.1 > objective 30" in out


def test_stop_on_failure_skips_the_rest(tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path / "suite",
        {
            "01-miss": experiment(tmp_path, "miss", objectives=objectives_record(met=False)),
            "02-ok": experiment(tmp_path, "ok"),
        },
    )
    rc, _ = run(tmp_path, suite, FakeChecks(), stop_on_failure=True)
    assert rc == gameday.EXIT_FAILED
    assert not (tmp_path / "ok.action").exists()
    summary = latest_summary(tmp_path)
    assert summary["not_run"] == [str(suite / "02-ok.json")]
    skipped = junit(tmp_path).findall("./testsuite/testcase/skipped")
    assert len(skipped) == 1


def test_leftover_fault_is_reported_stops_the_suite_and_fails(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a"), "02-b": experiment(tmp_path, "b")})
    left = {"host": "gpu-node-2", "id": "net-partition-1", "kind": "net-partition", "state": "active", "x": 1}
    rc, out = run(tmp_path, suite, FakeChecks(leftovers=[[left]]))
    assert rc == gameday.EXIT_FAILED
    assert not (tmp_path / "b.action").exists(), "a fault left behind stops the suite"
    summary = latest_summary(tmp_path)
    entry = summary["experiments"][0]
    assert entry["status"] == "completed"
    assert entry["leftover_faults"] == 1
    assert entry["leftover"] == [
        {"host": "gpu-node-2", "id": "net-partition-1", "kind": "net-partition", "state": "active"}
    ]
    assert entry["passed"] is False
    assert summary["not_run"] == [str(suite / "02-b.json")]
    assert "faults left behind" in summary["stopped"]
    failure = junit(tmp_path).find("./testsuite/testcase/failure")
    assert failure is not None
    assert "gpu-node-2 net-partition-1" in (failure.get("message") or "")
    assert "left behind: gpu-node-2 net-partition-1 (net-partition)" in out


def test_unreadable_ledger_after_an_experiment_counts_as_left_behind(tmp_path: Path) -> None:
    from chaoslib.exceptions import ActivityFailed  # noqa: PLC0415

    class Unreadable(FakeChecks):
        def leftover(self) -> list[dict[str, Any]]:
            raise ActivityFailed("cannot read the fault ledger of gpu-node-1: ssh exited 255")

    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a"), "02-b": experiment(tmp_path, "b")})
    rc, _ = run(tmp_path, suite, Unreadable())
    assert rc == gameday.EXIT_FAILED
    entry = latest_summary(tmp_path)["experiments"][0]
    assert "gpu-node-1" in entry["leftover_error"]
    assert entry["passed"] is False
    assert not (tmp_path / "b.action").exists()


def test_invalid_experiment_refuses_the_run_before_anything_runs(tmp_path: Path) -> None:
    bad = experiment(tmp_path, "bad")
    bad["method"][0]["provider"]["func"] = "no_such_function"
    suite = write_suite(tmp_path / "suite", {"01-good": experiment(tmp_path, "good"), "02-bad": bad})
    checks = FakeChecks()
    rc, out = run(tmp_path, suite, checks)
    assert rc == gameday.EXIT_INVALID
    assert checks.calls == [], "no host may be touched (no pre-flight) when the suite is invalid"
    assert not (tmp_path / "good.action").exists()
    assert not (tmp_path / "reports").exists()
    assert "02-bad.json" in out
    assert "no_such_function" in out


def test_failed_preflight_runs_nothing(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a")})
    checks = FakeChecks(problems=["gpu-node-1: fault net-1 (net-partition, active) is active"])
    rc, out = run(tmp_path, suite, checks)
    assert rc == gameday.EXIT_PREFLIGHT
    assert not (tmp_path / "a.action").exists()
    assert "gpu-node-1: fault net-1" in out
    assert checks.calls == ["preflight"]


def test_failed_action_fails_the_experiment_and_its_rollbacks_still_run(tmp_path: Path) -> None:
    doc = experiment(tmp_path, "f", method=[{"type": "action", "name": "break", "provider": _call("fail")}])
    suite = write_suite(tmp_path / "suite", {"01-f": doc})
    rc, out = run(tmp_path, suite, FakeChecks())
    assert rc == gameday.EXIT_FAILED, out
    assert (tmp_path / "f.rollback").exists(), "rollback strategy always: rollbacks after a failed action"
    entry = latest_summary(tmp_path)["experiments"][0]
    assert (entry["status"], entry["met"], entry["passed"]) == ("failed", False, False)
    assert "action break failed" in entry["reason"]
    assert "broken on purpose" in entry["reason"]


def test_steady_state_not_holding_before_the_method_fails_the_experiment(tmp_path: Path) -> None:
    doc = experiment(tmp_path, "h")
    doc["steady-state-hypothesis"]["probes"][0]["provider"] = _call("holds", value=False)
    suite = write_suite(tmp_path / "suite", {"01-h": doc})
    rc, _ = run(tmp_path, suite, FakeChecks())
    assert rc == gameday.EXIT_FAILED
    assert not (tmp_path / "h.action").exists()
    assert (tmp_path / "h.rollback").exists(), "rollback strategy always"
    entry = latest_summary(tmp_path)["experiments"][0]
    assert entry["status"] == "failed"
    assert "did not hold before the method" in entry["reason"]


def test_experiments_get_the_inventory_and_one_run_id(tmp_path: Path) -> None:
    method = [
        {"type": "action", "name": "record", "provider": _call("record_settings", path=str(tmp_path / "seen.json"))}
    ]
    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a", method=method)})
    rc, _ = run(tmp_path, suite, FakeChecks())
    assert rc == gameday.EXIT_OK
    seen = json.loads((tmp_path / "seen.json").read_text())
    inventory = str((Path.cwd() / "inventories/lab").resolve())
    assert seen["chaosgpu_inventory"] == inventory
    assert seen["CHAOSGPU_INVENTORY"] == inventory
    assert seen["CHAOSGPU_RUN_ID"] == latest_summary(tmp_path)["run_id"]
    assert "CHAOSGPU_RUN_ID" not in os.environ or os.environ["CHAOSGPU_RUN_ID"] != seen["CHAOSGPU_RUN_ID"]


def test_suite_txt_sets_the_order(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"a": experiment(tmp_path, "a"), "b": experiment(tmp_path, "b")})
    (suite / "suite.txt").write_text("# order\nb.json\na.json\n", encoding="utf-8")
    assert [p.name for p in gameday.suite_files(suite)] == ["b.json", "a.json"]
    (suite / "suite.txt").write_text("c.json\n", encoding="utf-8")
    with pytest.raises(gameday.SuiteError, match=r"c\.json"):
        gameday.suite_files(suite)


def test_only_keeps_the_named_experiments_in_suite_order(tmp_path: Path) -> None:
    files = [tmp_path / n for n in ("01-xid94.yaml", "02-xid48.yaml", "11-containerd.yaml", "13-partition.yaml")]
    assert [p.name for p in gameday.select_files(files, ["11", "01"])] == ["01-xid94.yaml", "11-containerd.yaml"]
    assert [p.name for p in gameday.select_files(files, ["*xid*"])] == ["01-xid94.yaml", "02-xid48.yaml"]
    assert gameday.select_files(files, [""]) == files
    with pytest.raises(gameday.SuiteError, match=r"--only 99, nope: matches no experiment"):
        gameday.select_files(files, ["01", "99", "nope"])


def test_only_with_a_typo_runs_nothing(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a")})
    rc, out = run(tmp_path, suite, FakeChecks(), only=["02"])
    assert rc == gameday.EXIT_INVALID
    assert "--only 02: matches no experiment" in out
    assert not (tmp_path / "a.rollback").exists()
    assert not (tmp_path / "reports").exists()


def _preflight(directory: Path, probes: list[dict[str, Any]]) -> None:
    doc = {"title": "the lab is healthy", "steady-state-hypothesis": {"title": "healthy", "probes": probes}}
    (directory / gameday.PREFLIGHT_FILE).write_text(json.dumps(doc), encoding="utf-8")


def test_a_failing_preflight_hypothesis_runs_nothing_and_names_every_problem(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a")})
    _preflight(
        suite,
        [
            {"type": "probe", "name": "fine", "tolerance": True, "provider": _call("holds")},
            {"type": "probe", "name": "gpus-missing", "tolerance": False, "provider": _call("holds")},
            {"type": "probe", "name": "explodes", "tolerance": True, "provider": _call("fail")},
        ],
    )
    assert [p.name for p in gameday.suite_files(suite)] == ["01-a.json"]  # preflight.yaml is not an experiment
    rc, out = run(tmp_path, suite, FakeChecks())
    assert rc == gameday.EXIT_PREFLIGHT
    assert "pre-flight probe 'gpus-missing' is not within its tolerance" in out
    assert "pre-flight probe 'explodes' failed" in out
    assert "'fine'" not in out.split("pre-flight failed")[1]
    assert not (tmp_path / "a.action").exists()
    assert not (tmp_path / "reports").exists()


def test_a_holding_preflight_hypothesis_lets_the_suite_run(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a")})
    _preflight(suite, [{"type": "probe", "name": "fine", "tolerance": True, "provider": _call("holds")}])
    rc, out = run(tmp_path, suite, FakeChecks())
    assert rc == gameday.EXIT_OK, out
    assert "pre-flight hypothesis" in out
    assert (tmp_path / "a.action").exists()


def test_preflight_wait_asks_again_until_the_lab_has_settled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a")})
    settled = tmp_path / "settled"
    probe = {
        "type": "probe",
        "name": "lab-settled",
        "tolerance": True,
        "provider": {"type": "python", "module": "os.path", "func": "exists", "arguments": {"path": str(settled)}},
    }
    _preflight(suite, [probe])
    rc, out = run(tmp_path, suite, FakeChecks())  # no wait: refused at once
    assert rc == gameday.EXIT_PREFLIGHT
    assert "'lab-settled' is not within its tolerance" in out
    monkeypatch.setattr(gameday, "_PREFLIGHT_RETRY_S", 0.1)
    timer = threading.Timer(0.5, settled.touch)
    timer.start()
    rc, out = run(tmp_path, suite, FakeChecks(), preflight_wait_s=30)
    timer.join()
    assert rc == gameday.EXIT_OK, out
    assert "asking again (--preflight-wait)" in out
    assert (tmp_path / "a.action").exists()


def test_an_invalid_preflight_is_refused_before_anything(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a")})
    _preflight(suite, [{"type": "probe", "name": "no-tolerance", "provider": _call("holds")}])
    checks = FakeChecks()
    rc, out = run(tmp_path, suite, checks)
    assert rc == gameday.EXIT_INVALID
    assert "preflight.yaml" in out
    assert "tolerance" in out
    assert checks.calls == []


def test_empty_suite_is_refused(tmp_path: Path) -> None:
    (tmp_path / "suite").mkdir()
    rc, out = run(tmp_path, tmp_path / "suite", FakeChecks())
    assert rc == gameday.EXIT_INVALID
    assert "no experiment files" in out


def test_latest_moves_to_the_newest_run(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a")})
    run(tmp_path, suite, FakeChecks())
    first = (tmp_path / "reports" / "latest").resolve()
    run(tmp_path, suite, FakeChecks())
    second = (tmp_path / "reports" / "latest").resolve()
    assert first != second
    assert first.is_dir()
    assert second.is_dir()


def test_cli_gameday_subcommand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = write_suite(tmp_path / "suite", {"01-a": experiment(tmp_path, "a")})
    made: list[str] = []

    def fake_checks(inventory: str) -> FakeChecks:
        made.append(inventory)
        return FakeChecks()

    monkeypatch.setattr(gameday, "LedgerChecks", fake_checks)
    rc = cli.main(["gameday", "-i", "inventories/lab", "-s", str(suite), "--reports", str(tmp_path / "reports")])
    assert rc == gameday.EXIT_OK
    assert made == [str(Path("inventories/lab").resolve())]
    assert (tmp_path / "a.rollback").exists()


_DRIVER = """
import sys
from chaosgpu import gameday
from gameday_fixtures import CleanChecks
sys.exit(gameday.run_gameday(sys.argv[1], "inventories/lab", reports_dir=sys.argv[2], checks=CleanChecks()))
"""


def interrupt_when(tmp: Path, suite: Path, marker: Path, signals: int = 1) -> tuple[int, str]:
    """Run the game day in a subprocess, send SIGINT ``signals`` times once ``marker`` exists; status, output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
    process = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, str(suite), str(tmp / "reports")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # only bounds a broken run; a working one is signalled at once
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"{marker.name} never appeared: {process.communicate(timeout=30)[0]}"
        for _ in range(signals):
            process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=110)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, output


def test_sigint_runs_the_rollbacks_and_writes_an_interrupted_report(tmp_path: Path) -> None:
    started = tmp_path / "action-started"
    method = [
        {"type": "action", "name": "slow", "provider": _call("sleep_after_marker", marker=str(started), seconds=120)}
    ]
    method.append({"type": "action", "name": "after", "provider": _call("touch", path=str(tmp_path / "after"))})
    suite = write_suite(
        tmp_path / "suite", {"01-slow": experiment(tmp_path, "slow", method=method), "02-b": experiment(tmp_path, "b")}
    )
    rc, output = interrupt_when(tmp_path, suite, started)
    assert rc == gameday.EXIT_INTERRUPTED, output
    assert (tmp_path / "slow.rollback").exists(), f"the rollback did not run: {output}"
    assert not (tmp_path / "after").exists(), "the method went on after the interrupt"
    assert not (tmp_path / "b.action").exists(), "the suite went on after the interrupt"
    summary = latest_summary(tmp_path)
    assert summary["interrupted"] is True
    assert summary["passed"] is False
    assert [e["status"] for e in summary["experiments"]] == ["interrupted"]
    assert summary["not_run"] == [str(suite / "02-b.json")]
    error = junit(tmp_path).find("./testsuite/testcase/error")
    assert error is not None
    assert error.get("type") == "interrupted"


def test_sigint_during_the_rollbacks_lets_every_rollback_finish(tmp_path: Path) -> None:
    rollback_started = tmp_path / "rollback-started"
    doc = experiment(tmp_path, "r")
    doc["rollbacks"] = [
        {
            "type": "action",
            "name": "slow-revert",
            "provider": _call("sleep_after_marker", marker=str(rollback_started), seconds=1),
        },
        {"type": "action", "name": "last-revert", "provider": _call("touch", path=str(tmp_path / "last-revert"))},
    ]
    suite = write_suite(tmp_path / "suite", {"01-r": doc, "02-b": experiment(tmp_path, "b")})
    rc, output = interrupt_when(tmp_path, suite, rollback_started, signals=2)  # a second Ctrl-C must not cut them
    assert rc == gameday.EXIT_INTERRUPTED, output
    assert (tmp_path / "last-revert").exists(), f"a rollback was skipped: {output}"
    assert not (tmp_path / "b.action").exists()
    summary = latest_summary(tmp_path)
    assert [e["status"] for e in summary["experiments"]] == ["interrupted"]
    assert summary["interrupted"] is True


def test_sigint_while_a_control_waits_after_the_rollbacks_ends_the_run(tmp_path: Path) -> None:
    waiting = tmp_path / "control-waiting"
    doc = experiment(tmp_path, "w", objectives=objectives_record())
    doc["configuration"].update(fake_wait_marker=str(waiting), fake_wait_s=120)
    suite = write_suite(tmp_path / "suite", {"01-w": doc, "02-b": experiment(tmp_path, "b")})
    rc, output = interrupt_when(tmp_path, suite, waiting)
    assert rc == gameday.EXIT_INTERRUPTED, output
    assert (tmp_path / "w.rollback").exists()
    assert not (tmp_path / "control-waiting.done").exists(), "the wait was not cut short"
    summary = latest_summary(tmp_path)
    assert [e["status"] for e in summary["experiments"]] == ["interrupted"]
    journal = json.loads((tmp_path / "reports" / "latest" / summary["experiments"][0]["journal"]).read_text())
    assert journal["rollbacks"][0]["status"] == "succeeded", "the journal chaoslib had built is the one saved"
    assert "after the rollbacks" in journal["chaosgpu_gameday"]
