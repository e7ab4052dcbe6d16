"""Bench 5 (issue #10): the game day's wall time and the share of it spent in fixed sleeps.

Read from a finished game day's report (default ``reports/latest``): the wall time from ``summary.json``, and the
fixed sleeps from each experiment's journal: the ``pauses`` (before/after) of every activity that ran, in the
steady-state hypotheses, the method and the rollbacks. Waiting by polling (probes with ``wait_s``, the objectives
control waiting for recovery) is not a fixed sleep: it ends when the condition holds. Goal: no fixed sleeps.

``python bench/gameday_time.py [--report reports/latest]``
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Bench, Figure


def _pauses(activity: dict[str, Any]) -> float:
    pauses = activity.get("pauses") or {}
    return float(pauses.get("before", 0) or 0) + float(pauses.get("after", 0) or 0)


def journal_sleeps(journal: dict[str, Any]) -> dict[str, float]:
    """Seconds of declared pauses of every activity the journal says ran, per activity name."""
    runs: list[dict[str, Any]] = list(journal.get("run") or []) + list(journal.get("rollbacks") or [])
    for phase in ("before", "after"):
        runs += list(((journal.get("steady_states") or {}).get(phase) or {}).get("probes") or [])
    sleeps: dict[str, float] = {}
    for run in runs:
        activity = run.get("activity") or {}
        seconds = _pauses(activity)
        if seconds:
            name = str(activity.get("name", "?"))
            sleeps[name] = sleeps.get(name, 0.0) + seconds
    return sleeps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", default=str(ROOT / "reports" / "latest"), help="a game day's report directory")
    args = parser.parse_args(argv)
    report = Path(args.report)
    summary_path = report / "summary.json"
    if not summary_path.is_file():
        print(f"bench gameday_time: no {summary_path}; run `make gameday` first", file=sys.stderr)
        return 2
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    wall = (datetime.fromisoformat(summary["ended"]) - datetime.fromisoformat(summary["started"])).total_seconds()
    bench = Bench("gameday_time")
    total = 0.0
    for path in sorted(report.glob("*.journal.json")):
        sleeps = journal_sleeps(json.loads(path.read_text(encoding="utf-8")))
        if sleeps:
            bench.samples[path.stem] = list(sleeps.values())
            total += sum(sleeps.values())
            print(f"  {path.stem}: " + ", ".join(f"{n} {s:g} s" for n, s in sleeps.items()))
    experiments = len(summary.get("experiments") or [])
    bench.add(Figure(f"game day: wall time ({experiments} experiments)", wall, "s", detail=str(report.resolve())))
    bench.add(Figure("game day: fixed sleeps", total, "s"))
    bench.add(Figure("game day: share in fixed sleeps", 100 * total / wall if wall else None, "%", "<= 0"))
    print(f"bench gameday_time: wrote {bench.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
