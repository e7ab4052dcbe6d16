"""Game day reports, all rendered from the summary (``summary.json``) that chaosgpu.gameday builds, so a report
can be rendered again from a saved summary:

- ``summary.json``: DESIGN.md's schema (per experiment title, file, status, objectives, measured, met,
  leftover_faults; started, ended) plus what the other reports draw on (missed, timeline, reason, leftover, ...)
- ``report.html``: self-contained (inline SVG and CSS, no script, no external asset): a summary table and one
  timeline per experiment (chaosgpu.report.html)
- ``summary.md``: the table in Markdown (chaosgpu.report.markdown)
- ``junit.xml``: one testcase per experiment (chaosgpu.report.junit)

``reports/latest`` points at the newest run directory (a symlink, replaced atomically).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaosgpu.report.html import render_html
from chaosgpu.report.junit import render_junit
from chaosgpu.report.markdown import render_markdown

__all__ = ["LATEST", "render_html", "render_junit", "render_markdown", "update_latest", "write_reports"]

LATEST = "latest"


def write_reports(run_dir: str | os.PathLike[str], summary: Mapping[str, Any]) -> dict[str, Path]:
    """Write summary.json, report.html, summary.md and junit.xml into ``run_dir``; their paths by kind."""
    directory = Path(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / "summary.json",
        "html": directory / "report.html",
        "markdown": directory / "summary.md",
        "junit": directory / "junit.xml",
    }
    _write(paths["json"], json.dumps(summary, indent=2, default=str) + "\n")
    _write(paths["html"], render_html(summary))
    _write(paths["markdown"], render_markdown(summary))
    _write(paths["junit"], render_junit(summary))
    return paths


def _write(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a report."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def update_latest(reports_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> Path:
    """Point ``<reports_dir>/latest`` at ``run_dir`` (a relative symlink made beside it, then renamed over the old
    one: readers see the old run or the new one, never none)."""
    reports = Path(reports_dir)
    link = reports / LATEST
    target = os.path.relpath(Path(run_dir).resolve(), reports.resolve())
    temporary = reports / f".{LATEST}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    try:
        os.replace(temporary, link)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise OSError(f"cannot point {link} at {target}: {err} (is {link} a directory?)") from err
    return link
