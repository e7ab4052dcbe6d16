"""bench/: the figures' goals, side-by-side rounds, the table, and the game day's fixed-sleep count."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import common, gameday_time, run
from bench.common import Bench, Figure, side_by_side


@pytest.mark.parametrize(
    ("value", "goal", "met"),
    [
        (12.0, ">= 10", True),
        (9.9, ">= 10", False),
        (3.0, "<= 3", True),
        (3.01, "<= 3", False),
        (None, "<= 3", False),
        (5.0, None, None),
    ],
)
def test_a_figure_is_judged_by_its_goal(value: float | None, goal: str | None, met: bool | None) -> None:
    assert Figure("f", value, "x", goal).met is met


def test_side_by_side_rotates_the_order_and_skips_the_warmup() -> None:
    calls: list[str] = []
    samples = side_by_side(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, log=lambda _: None
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up a b, then rounds ab, ba, ab
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3}
    with pytest.raises(ValueError, match="rounds"):
        side_by_side({"a": lambda: None}, rounds=0)


def test_the_table_lists_every_figure_and_fails_on_a_missed_goal(tmp_path: Path) -> None:
    bench = Bench("demo")
    bench.figures += [Figure("speed-up", 12.0, "x", ">= 10"), Figure("wall", 95.0, "s")]
    bench.save(tmp_path)
    lines, ok = run.table(tmp_path)
    assert ok
    assert any(line.startswith("speed-up") and line.endswith("met") for line in lines)
    bench.figures.append(Figure("fan-out", 2.5, "x", "<= 2"))
    bench.save(tmp_path)
    lines, ok = run.table(tmp_path)
    assert not ok
    assert any(line.startswith("fan-out") and line.endswith("MISSED") for line in lines)
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert [f["met"] for f in saved["figures"]] == [True, None, False]


def test_fixed_sleeps_are_the_pauses_of_the_activities_that_ran() -> None:
    def ran(name: str, pauses: dict[str, float] | None = None) -> dict[str, object]:
        return {"activity": {"name": name, **({"pauses": pauses} if pauses else {})}}

    journal = {
        "steady_states": {"before": {"probes": [ran("ssh", {"before": 2})]}, "after": None},
        "run": [ran("stop", {"after": 60}), ran("start", {"after": 20}), ran("probe")],
        "rollbacks": [ran("revert", {"after": 1.5})],
    }
    assert gameday_time.journal_sleeps(journal) == {"ssh": 2.0, "stop": 60.0, "start": 20.0, "revert": 1.5}


def test_an_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["nope"]) == 2
    assert "unknown benchmark(s) nope" in capsys.readouterr().err


def test_cpu_busy_seconds_counts_every_state_but_idle_and_iowait(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 10 50 1000 40 5 5 0 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n", encoding="ascii")
    ticks = os.sysconf("SC_CLK_TCK")
    assert common.cpu_busy_seconds(stat) == pytest.approx((100 + 10 + 50 + 5 + 5 + 0) / ticks)
    stat.write_text("intr 1 2 3\n", encoding="ascii")
    with pytest.raises(ValueError, match="not the cpu total"):
        common.cpu_busy_seconds(stat)


def test_cpu_meter_adds_up_busy_and_wall_time_per_label(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([10.0, 13.0, 20.0, 21.0])  # two calls: 3 and 1 busy CPU seconds
    clock = iter([0.0, 2.0, 5.0, 7.0])  # 2 and 2 s of wall time
    monkeypatch.setattr(common.time, "monotonic", lambda: next(clock))
    meter = common.CpuMeter(read=lambda: next(readings))
    action = meter.wrap("all", lambda: "done")
    assert action() == "done"
    assert action() == "done"
    assert meter.busy == {"all": 4.0}
    assert meter.wall == {"all": 4.0}
    assert meter.share("all", cpus=2) == pytest.approx(50.0)  # 4 busy CPU s in 4 s on 2 CPUs
    assert meter.share("never", cpus=2) == 0.0
    assert meter.calls == {"all": 2}
    assert meter.per_call("all") == pytest.approx(2.0)
    assert meter.per_call("never") == 0.0


def test_cpu_meter_leaves_the_warm_up_calls_unmetered(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([10.0, 11.5])  # read only around the third call
    clock = iter([0.0, 3.0])
    monkeypatch.setattr(common.time, "monotonic", lambda: next(clock))
    meter = common.CpuMeter(read=lambda: next(readings))
    ran = []
    action = meter.wrap("all", lambda: ran.append(1), skip=2)
    for _ in range(3):
        action()
    assert len(ran) == 3
    assert meter.busy == {"all": 1.5}
    assert meter.wall == {"all": 3.0}
    assert meter.per_call("all") == pytest.approx(1.5)


def test_cpu_meter_idle_meters_a_sleep_of_the_given_length(monkeypatch: pytest.MonkeyPatch) -> None:
    slept = []
    monkeypatch.setattr(common.time, "sleep", slept.append)
    clock = iter([100.0, 130.0])
    monkeypatch.setattr(common.time, "monotonic", lambda: next(clock))
    readings = iter([50.0, 56.0])  # 6 busy CPU s over 30 s on 2 CPUs: the lab took 10 %
    meter = common.CpuMeter(read=lambda: next(readings))
    meter.idle("idle", 30.0)
    assert slept == [30.0]
    assert meter.share("idle", cpus=2) == pytest.approx(10.0)
    assert meter.calls == {"idle": 1}


def _metered(busy: dict[str, float], wall: dict[str, float]) -> common.CpuMeter:
    meter = common.CpuMeter(read=lambda: 0.0)
    meter.busy, meter.wall, meter.calls = dict(busy), dict(wall), dict.fromkeys(busy, 1)
    return meter


def test_cpu_bound_removes_the_lab_load_and_says_what_each_host_adds() -> None:
    # The idle lab keeps 0.5 CPU busy. One host: 10 s, 15 busy CPU s (10 of them its own work). Eight hosts:
    # 30 s, 45 busy CPU s: 30 s of work, so each of the 7 extra hosts added 20/7 CPU s.
    meter = _metered({"idle": 5.0, "1": 15.0, "8": 45.0}, {"idle": 10.0, "1": 10.0, "8": 30.0})
    bound = common.cpu_bound(meter, "1", "8", 8, "idle", goal=2.0, cpus=2)
    assert bound["load"] == pytest.approx(0.5)
    assert (bound["work_1"], bound["work_n"]) == (pytest.approx(10.0), pytest.approx(30.0))
    assert bound["per_host"] == pytest.approx(20.0 / 7)
    # 30 CPU s on the 1.5 CPUs the lab leaves free take at least 20 s: twice T(1), whatever the tool does.
    assert bound["least"] == pytest.approx(2.0)
    # The goal of 2x allows 2 * 10 s * 1.5 CPUs = 30 CPU s in all, 20 of them for the 7 extra hosts.
    assert bound["needed"] == pytest.approx(20.0 / 7)


def test_cpu_bound_refuses_what_was_not_metered() -> None:
    meter = _metered({"1": 1.0, "8": 2.0}, {"1": 1.0, "8": 1.0})
    with pytest.raises(ValueError, match="nothing metered under 'idle'"):
        common.cpu_bound(meter, "1", "8", 8, "idle", goal=2.0, cpus=2)
    with pytest.raises(ValueError, match="hosts must be >= 2"):
        common.cpu_bound(meter, "1", "8", 1, "1", goal=2.0, cpus=2)


def _process(proc: Path, pid: int, title: bytes, utime: int, stime: int) -> None:
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "cmdline").write_bytes(title)
    fields = ["S", "1"] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 10
    (proc / str(pid) / "stat").write_text(f"{pid} (ssh) " + " ".join(fields) + "\n", encoding="ascii")


def test_controller_cpu_counts_ssh_masters_and_keeps_a_master_that_exited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tick = common.os.sysconf("SC_CLK_TCK")
    usage = type("Usage", (), {"ru_utime": 1.0, "ru_stime": 0.5})()
    monkeypatch.setattr(common.resource, "getrusage", lambda _who: usage)
    proc = tmp_path / "proc"
    _process(proc, 10, b"ssh: /root/.ansible/cp/ab [mux]\0\0", 2 * tick, tick)  # a master: 3 s
    _process(proc, 11, b"ssh\0-o\0ControlMaster=auto\0host\0", 50 * tick, 0)  # a client: counted when it exits
    _process(proc, 12, b"sshd: operator [priv]\0", 70 * tick, 0)  # not the controller's
    (proc / "self").mkdir()
    read = common.controller_cpu_reader(proc)
    assert read() == pytest.approx(2 * 1.5 + 3.0)  # RUSAGE_SELF and RUSAGE_CHILDREN, 1.5 s each, and the master
    _process(proc, 10, b"ssh: /root/.ansible/cp/ab [mux]\0", 4 * tick, tick)
    assert read() == pytest.approx(3.0 + 5.0)
    for name in ("cmdline", "stat"):
        (proc / "10" / name).unlink()
    (proc / "10").rmdir()
    assert read() == pytest.approx(3.0 + 5.0)
