"""The game day's HTML report (``report.html``): self-contained (inline CSS and SVG; no script, font or image from
anywhere), a summary table, then per experiment its verdict, why it did not pass, and a timeline.

The timeline (``timeline_svg``) puts seconds since the fault started on the x axis and the workload's latency on
the y axis: the fault window as a band, the detection and recovery as vertical markers labelled with TTD/TTR,
the TTD/TTR objectives as dashed vertical lines and the p99 objective as a dashed horizontal one, and each SLI
sample as a dot (failed requests in red, on the top edge when they have no latency). Elements carry classes
(``fault-window``, ``detected``, ``recovered``, ``objective``, ``sli-ok``, ``sli-fail``) that tests look for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from chaosgpu.report.common import COLUMNS, number, problems, row, verdict

__all__ = ["render_html", "timeline_svg"]

WIDTH, HEIGHT = 960, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 34, 44
_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)

_CSS = """
body { font-family: sans-serif; margin: 2em; color: #1f2933; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #cbd2d9; padding: 4px 8px; text-align: left; font-size: 0.9em; }
th { background: #f0f4f8; }
.PASS { color: #137333; font-weight: bold; } .FAIL, .INTERRUPTED { color: #c5221f; font-weight: bold; }
.problems { color: #c5221f; }
svg.timeline { border: 1px solid #e4e7eb; background: #fff; }
svg text { font-family: sans-serif; font-size: 11px; fill: #3e4c59; }
"""


def _nice_step(span: float, ticks: int = 8) -> float:
    raw = span / ticks
    return next((step for step in _NICE_STEPS if step >= raw), math.ceil(raw / 3600) * 3600)


def _points(timeline: Mapping[str, Any]) -> list[tuple[float, bool, float | None]]:
    samples: list[tuple[float, bool, float | None]] = []
    for sample in timeline.get("sli") or []:
        if isinstance(sample, Sequence) and len(sample) >= 2 and number(sample[0]) is not None:  # noqa: PLR2004
            latency = number(sample[2]) if len(sample) > 2 else None  # noqa: PLR2004
            samples.append((float(sample[0]), bool(sample[1]), latency))
    return samples


def timeline_svg(entry: Mapping[str, Any]) -> str:
    """The timeline of one experiment's summary entry as an inline ``<svg>``; a short note instead of a plot when
    the experiment recorded no timeline (it ran without the objectives control)."""
    timeline = entry.get("timeline")
    start = number(timeline.get("fault_start")) if isinstance(timeline, Mapping) else None
    if not isinstance(timeline, Mapping) or start is None:
        return (
            f'<svg class="timeline no-timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="40" '
            f'role="img"><text x="10" y="24">No timeline: this experiment recorded no objectives '
            f"measurement.</text></svg>"
        )
    objectives = entry.get("objectives") or {}
    end = number(timeline.get("fault_end"))
    detected, recovered = number(timeline.get("detected")), number(timeline.get("recovered"))
    samples = _points(timeline)
    ttd_goal, ttr_goal = number(objectives.get("ttd_s")), number(objectives.get("ttr_s"))
    p99_goal = number(objectives.get("sli_p99_ms"))
    times = [start, *(t for t in (end, detected, recovered) if t is not None), *(s[0] for s in samples)]
    times += [start + g for g in (ttd_goal, ttr_goal) if g is not None]
    t_min, t_max = min(times) - start, max(times) - start
    span = max(t_max - t_min, 10.0)
    t_min, t_max = t_min - span * 0.03, t_max + span * 0.05
    latencies = [s[2] for s in samples if s[2] is not None] + ([p99_goal] if p99_goal is not None else [])
    y_max = max(latencies, default=1.0) * 1.15 or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:  # t: seconds since the fault started
        return LEFT + (t - t_min) / (t_max - t_min) * plot_w

    def y(ms: float) -> float:
        return TOP + plot_h - ms / y_max * plot_h

    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="timeline of {escape(str(entry.get("title")))}">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" stroke="#9aa5b1"/>',
    ]
    band_end = (end - start) if end is not None else t_max
    parts.append(
        f'<rect class="fault-window" x="{x(0):.1f}" y="{TOP}" width="{max(x(band_end) - x(0), 1):.1f}" '
        f'height="{plot_h}" fill="#f9a03f" fill-opacity="0.25"><title>fault window: '
        f"{0:.0f} s to {'not ended' if end is None else f'{band_end:.1f} s'}</title></rect>",
    )
    parts.append(
        f'<text x="{x(0) + 4:.1f}" y="{TOP + 12}">fault{"" if end is not None else " (no end recorded)"}</text>'
    )
    parts += _axes(t_min, t_max, y_max, x, y)
    if p99_goal is not None:
        parts.append(
            f'<line class="objective objective-p99" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(p99_goal):.1f}" '
            f'y2="{y(p99_goal):.1f}" stroke="#7b2cbf" stroke-dasharray="6 4"/>'
            f'<text x="{LEFT + 4}" y="{y(p99_goal) + 12:.1f}">'
            f"p99 objective {p99_goal:g} ms</text>"
        )
    for name, goal, label_y in (("ttd", ttd_goal, TOP + 24), ("ttr", ttr_goal, TOP + 36)):
        if goal is not None:
            parts.append(
                f'<line class="objective objective-{name}" x1="{x(goal):.1f}" x2="{x(goal):.1f}" y1="{TOP}" '
                f'y2="{TOP + plot_h}" stroke="#7b2cbf" stroke-dasharray="6 4"/>'
                + _label(x(goal), label_y, f"{name.upper()} objective {goal:g} s", plot_w)
            )
    for sample_t, ok, latency in samples:
        cx = x(sample_t - start)
        if ok:
            cy = y(latency if latency is not None else 0.0)
            parts.append(f'<circle class="sli-ok" cx="{cx:.1f}" cy="{cy:.1f}" r="2.2" fill="#2563eb"/>')
        else:
            cy = y(latency) if latency is not None else TOP + 4
            parts.append(f'<circle class="sli-fail" cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="#dc2626"/>')
    for css, moment, label, color, label_y in (
        ("detected", detected, "TTD", "#1d4ed8", TOP + plot_h - 20),
        ("recovered", recovered, "TTR", "#15803d", TOP + plot_h - 8),
    ):
        if moment is not None:
            at = moment - start
            parts.append(
                f'<line class="{css}" x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
                f'stroke="{color}" stroke-width="2"/>' + _label(x(at), label_y, f"{label} {at:.1f} s", plot_w, color)
            )
    missing = [name for name, moment in (("detection", detected), ("recovery", recovered)) if moment is None]
    if missing:
        parts.append(f'<text x="{LEFT + 4}" y="{TOP - 8}">not observed: {", ".join(missing)}</text>')
    parts.append(_legend())
    parts.append("</svg>")
    return "".join(parts)


def _label(at_x: float, at_y: float, text: str, plot_w: float, color: str = "#3e4c59") -> str:
    """A marker's label beside it: on its right, or on its left near the right edge so it is not cut off."""
    near_edge = at_x > LEFT + plot_w * 0.8
    anchor, text_x = ("end", at_x - 3) if near_edge else ("start", at_x + 3)
    return f'<text x="{text_x:.1f}" y="{at_y}" text-anchor="{anchor}" style="fill:{color}">{escape(text)}</text>'


def _legend() -> str:
    """What the marks mean, in the top margin on the right."""
    y0 = TOP - 12
    items = [
        ('<rect x="{x}" y="{y}" width="14" height="9" fill="#f9a03f" fill-opacity="0.35"/>', "fault window"),
        ('<circle cx="{cx}" cy="{cy}" r="3" fill="#2563eb"/>', "request ok"),
        ('<circle cx="{cx}" cy="{cy}" r="3" fill="#dc2626"/>', "request failed"),
        ('<line x1="{x}" x2="{x2}" y1="{cy}" y2="{cy}" stroke="#7b2cbf" stroke-dasharray="4 3"/>', "objective"),
    ]
    char_w, gap = 6, 14  # 11px sans-serif: about 6 px a character
    parts, at = [], WIDTH - RIGHT - sum(18 + char_w * len(text) + gap for _, text in items)
    for mark, text in items:
        parts.append(mark.format(x=at, y=y0 - 8, cx=at + 7, cy=y0 - 4, x2=at + 14))
        parts.append(f'<text x="{at + 18}" y="{y0}">{text}</text>')
        at += 18 + char_w * len(text) + gap
    return '<g class="legend">' + "".join(parts) + "</g>"


def _axes(t_min: float, t_max: float, y_max: float, x: Any, y: Any) -> list[str]:
    parts: list[str] = []
    step = _nice_step(t_max - t_min)
    tick = math.ceil(t_min / step) * step
    while tick <= t_max:
        parts.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 4}" '
            f'stroke="#9aa5b1"/><text x="{x(tick):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{tick:g}</text>"
        )
        tick += step
    for fraction in (0.0, 0.5, 1.0):
        value = y_max / 1.15 * fraction
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.0f}</text>'
            f'<line x1="{LEFT - 3}" x2="{LEFT}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#9aa5b1"/>'
        )
    parts.append(
        f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">'
        "seconds since the fault started</text>"
        f'<text transform="translate(14 {TOP + (HEIGHT - TOP - BOTTOM) / 2:.0f}) rotate(-90)" '
        'text-anchor="middle">latency (ms)</text>'
    )
    return parts


def _table(experiments: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    rows = []
    for index, entry in enumerate(experiments, start=1):
        cells = row(index, entry)
        cells[1] = f'<a href="#experiment-{index}">{escape(cells[1])}</a>'
        rendered = [cells[1] if i == 1 else escape(c) for i, c in enumerate(cells)]
        rendered[-1] = f'<span class="{escape(verdict(entry))}">{rendered[-1]}</span>'
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in rendered) + "</tr>")
    return f'<table class="summary"><tr>{head}</tr>{"".join(rows)}</table>'


def _section(index: int, entry: Mapping[str, Any]) -> str:
    found = problems(entry)
    measured = entry.get("measured") or {}
    requests = number(measured.get("sli_requests"))
    journal = str(entry.get("journal") or "")
    parts = [
        f'<section class="experiment" id="experiment-{index}">',
        f"<h2>{index}. {escape(str(entry.get('title')))} "
        f'<span class="{escape(verdict(entry))}">{escape(verdict(entry))}</span></h2>',
        f"<p><code>{escape(str(entry.get('file')))}</code>, status {escape(str(entry.get('status')))}, "
        f"{escape(str(entry.get('started')))} to {escape(str(entry.get('ended')))}"
        + (f", {int(requests)} SLI requests" if requests is not None else "")
        + (f', journal <a href="{escape(journal)}">{escape(journal)}</a>' if journal else "")
        + "</p>",
    ]
    if found:
        parts.append('<ul class="problems">' + "".join(f"<li>{escape(p)}</li>" for p in found) + "</ul>")
    parts.append(timeline_svg(entry))
    parts.append("</section>")
    return "".join(parts)


def render_html(summary: Mapping[str, Any]) -> str:
    """The whole report as one HTML document."""
    experiments = summary.get("experiments") or []
    verdict_text = "PASSED" if summary.get("passed") else ("INTERRUPTED" if summary.get("interrupted") else "FAILED")
    css_class = "PASS" if summary.get("passed") else "FAIL"
    not_run = summary.get("not_run") or []
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f"<title>Game day {escape(str(summary.get('run_id', '')))}: {verdict_text}</title>",
            f"<style>{_CSS}</style></head><body>",
            f'<h1>Game day {escape(str(summary.get("run_id", "")))}: <span class="{css_class}">{verdict_text}'
            "</span></h1>",
            f"<p>Suite <code>{escape(str(summary.get('suite')))}</code>, inventory "
            f"<code>{escape(str(summary.get('inventory')))}</code>; {escape(str(summary.get('started')))} to "
            f"{escape(str(summary.get('ended')))}.</p>",
            f"<p class='problems'>Stopped: {escape(str(summary['stopped']))}</p>" if summary.get("stopped") else "",
            _table(experiments),
            ("<p>Not run: " + ", ".join(f"<code>{escape(n)}</code>" for n in not_run) + "</p>") if not_run else "",
            *(_section(i, e) for i, e in enumerate(experiments, start=1)),
            "</body></html>\n",
        ]
    )
