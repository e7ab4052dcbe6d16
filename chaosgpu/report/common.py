"""What every report says the same way: numbers, verdicts, and why an experiment did not pass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["COLUMNS", "number", "problems", "row", "seconds", "verdict"]

# The summary table of the HTML and Markdown reports: header, then a cell per experiment.
COLUMNS = ("#", "Experiment", "Status", "TTD", "TTR", "SLI success", "SLI p99", "Left faults", "Result")


def number(value: Any) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def seconds(value: Any) -> str:
    """``12.3 s``, or ``-`` when not measured."""
    measured = number(value)
    return "-" if measured is None else f"{measured:.1f} s"


def _with_objective(measured: str, objective: Any, unit: str, fmt: str = "{:g}") -> str:
    goal = number(objective)
    return measured if goal is None else f"{measured} (≤ {fmt.format(goal)}{unit})"


def verdict(entry: Mapping[str, Any]) -> str:
    """PASS, FAIL or INTERRUPTED."""
    if entry.get("status") == "interrupted":
        return "INTERRUPTED"
    return "PASS" if entry.get("passed") else "FAIL"


def problems(entry: Mapping[str, Any]) -> list[str]:
    """Why ``entry`` did not pass, one line each (empty when it passed)."""
    found: list[str] = []
    if entry.get("status") == "interrupted":
        found.append("interrupted")
    elif entry.get("status") != "completed" and entry.get("reason") != "objectives missed":  # listed below
        found.append(f"run {entry.get('status')}: {entry.get('reason') or 'no reason recorded'}")
    found += [f"objective missed: {missed}" for missed in entry.get("missed") or []]
    if not entry.get("met") and not entry.get("missed") and entry.get("objectives"):
        found.append("objectives not met")
    for fault in entry.get("leftover") or []:
        found.append(f"fault left behind: {fault.get('host')} {fault.get('id')} ({fault.get('kind')})")
    if entry.get("leftover_error"):
        found.append(f"ledger check failed: {entry['leftover_error']}")
    return found


def row(index: int, entry: Mapping[str, Any]) -> list[str]:
    """The cells of ``entry`` in the summary table (COLUMNS)."""
    measured, objectives = entry.get("measured") or {}, entry.get("objectives") or {}
    ratio = number(measured.get("sli_success_ratio"))
    p99 = number(measured.get("sli_p99_ms"))
    ratio_goal = number(objectives.get("sli_success_ratio"))
    return [
        str(index),
        str(entry.get("title", "")),
        str(entry.get("status", "")),
        _with_objective(seconds(measured.get("ttd_s")), objectives.get("ttd_s"), " s"),
        _with_objective(seconds(measured.get("ttr_s")), objectives.get("ttr_s"), " s"),
        ("-" if ratio is None else f"{ratio:.2%}") + ("" if ratio_goal is None else f" (≥ {ratio_goal:.2%})"),
        _with_objective("-" if p99 is None else f"{p99:.0f} ms", objectives.get("sli_p99_ms"), " ms"),
        str(entry.get("leftover_faults", 0)) + (" (check failed)" if entry.get("leftover_error") else ""),
        verdict(entry),
    ]
