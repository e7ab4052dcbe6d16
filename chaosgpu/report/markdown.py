"""The game day's Markdown summary (``summary.md``): the verdict, a table, and why each experiment failed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaosgpu.report.common import COLUMNS, problems, row

__all__ = ["render_markdown"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: Mapping[str, Any]) -> str:
    """``summary`` as Markdown."""
    experiments = summary.get("experiments") or []
    verdict = "PASSED" if summary.get("passed") else ("INTERRUPTED" if summary.get("interrupted") else "FAILED")
    lines = [
        f"# Game day {summary.get('run_id', '')}: {verdict}",
        "",
        f"- Suite: `{summary.get('suite')}`, inventory `{summary.get('inventory')}`",
        f"- Started {summary.get('started')}, ended {summary.get('ended')}",
        f"- {sum(1 for e in experiments if e.get('passed'))} of {len(experiments)} experiment(s) passed"
        + (f"; {len(summary.get('not_run') or [])} not run" if summary.get("not_run") else ""),
    ]
    if summary.get("stopped"):
        lines.append(f"- Stopped: {summary['stopped']}")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(c) for c in row(i, e)) + " |" for i, e in enumerate(experiments, start=1)]
    failing = [(e, problems(e)) for e in experiments if problems(e)]
    if failing:
        lines += ["", "## Not passed", ""]
        for entry, found in failing:
            lines.append(f"- **{_cell(str(entry.get('title')))}** (`{entry.get('file')}`):")
            lines += [f"  - {_cell(p)}" for p in found]
    if summary.get("not_run"):
        lines += ["", "## Not run", ""] + [f"- `{name}`" for name in summary["not_run"]]
    return "\n".join(lines) + "\n"
