"""bench/: the figures' goals, side-by-side rounds, the table, and the game day's fixed-sleep count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import gameday_time, run
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
