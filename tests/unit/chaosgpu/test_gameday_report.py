"""The game day reports: the SVG timeline's marks, a self-contained HTML document, and the report rendered by
headless Chromium (Debian's ``chromium`` package) with its plots painted."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
from test_gameday import FakeChecks, experiment, objectives_record, run, write_suite

from chaosgpu import gameday
from chaosgpu.report import render_html, render_markdown
from chaosgpu.report.html import timeline_svg

FAULT_BAND_RGB = (250, 229, 205)  # #f9a03f at 25 % over the plot's #fbfcfd
FAILED_RGB = (220, 38, 38)  # #dc2626


def entry(met: bool = True, **changes: Any) -> dict[str, Any]:
    """A summary entry built the way the game day builds it, from a journal with the objectives record."""
    journal = {
        "experiment": {"title": "node <b>down</b>"},
        "status": "completed",
        "chaosgpu_objectives": objectives_record(met),
    }
    built = gameday.experiment_entry("experiments/lab/x.yaml", journal, [])
    built.update(changes)
    return built


def test_timeline_has_the_fault_window_markers_objectives_and_samples() -> None:
    svg = timeline_svg(entry())
    assert svg.count('class="fault-window"') == 1
    assert svg.count('class="detected"') == 1
    assert svg.count('class="recovered"') == 1
    assert "TTD 12.5 s" in svg
    assert "TTR 31.0 s" in svg
    for objective in ("objective-ttd", "objective-ttr", "objective-p99"):
        assert objective in svg
    # objectives_record: 40 samples, 2 failed (one with a latency, one without).
    assert svg.count('class="sli-ok"') == 38
    assert svg.count('class="sli-fail"') == 2


def test_fault_band_spans_the_fault_window() -> None:
    svg = timeline_svg(entry())
    band = re.search(r'class="fault-window" x="([\d.]+)" y="\d+" width="([\d.]+)"', svg)
    detected = re.search(r'class="detected" x1="([\d.]+)"', svg)
    assert band is not None
    assert detected is not None
    left, width = float(band[1]), float(band[2])
    # The fault lasted 20 s and was detected 12.5 s in: the detection marker is 62.5 % into the band.
    assert float(detected[1]) == pytest.approx(left + width * 12.5 / 20, abs=0.2)


def test_timeline_says_what_was_not_observed() -> None:
    record = objectives_record()
    record["timeline"].update(fault_end=None, recovered=None)
    journal = {"experiment": {"title": "t"}, "status": "completed", "chaosgpu_objectives": record}
    svg = timeline_svg(gameday.experiment_entry("x.yaml", journal, []))
    assert "not observed: recovery" in svg
    assert "fault (no end recorded)" in svg
    assert 'class="recovered"' not in svg


def test_experiment_without_a_timeline_gets_a_note_not_a_plot() -> None:
    svg = timeline_svg(gameday.experiment_entry("x.yaml", {"experiment": {"title": "t"}, "status": "completed"}, []))
    assert "no-timeline" in svg
    assert "fault-window" not in svg


def test_html_is_self_contained_and_escapes_titles() -> None:
    summary = {"run_id": "r", "passed": False, "experiments": [entry(), entry(met=False)], "not_run": ["z.yaml"]}
    page = render_html(summary)
    assert "<script" not in page
    assert "node &lt;b&gt;down&lt;/b&gt;" in page
    assert "<b>down</b>" not in page
    external = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert all("://" not in url for url in external), external
    assert page.count('<svg class="timeline"') == 2
    assert "objective missed: ttd_s: measured 42.1 &gt; objective 30" in page


def test_markdown_lists_why_each_experiment_failed() -> None:
    failing = entry(met=False, leftover=[{"host": "gpu-node-1", "id": "f-1", "kind": "k"}], leftover_faults=1)
    text = render_markdown({"run_id": "r", "experiments": [entry(), failing], "stopped": "faults left behind"})
    assert "# Game day r: FAILED" in text
    assert "- Stopped: faults left behind" in text
    assert "objective missed: ttd_s: measured 42.1 > objective 30" in text
    assert "fault left behind: gpu-node-1 f-1 (k)" in text
    assert text.count("| node <b>down</b> |") == 2


# --- headless Chromium -------------------------------------------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("GPUOPS_REQUIRE_CHROMIUM") == "1":
        pytest.fail("GPUOPS_REQUIRE_CHROMIUM=1 but no chromium on PATH (Debian: apt-get install chromium)")
    pytest.skip(
        "chromium is not installed (Debian: apt-get install chromium); GPUOPS_REQUIRE_CHROMIUM=1 makes this fail"
    )


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """Width, height, the raw rows and bytes per pixel of an 8-bit RGB/RGBA non-interlaced PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), f"unsupported PNG: depth {depth}, interlace {interlace}"
    bpp = {2: 3, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + (left + previous[i]) // 2) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up_left = previous[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, previous[i], up_left)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows, bpp


def _near(pixel: tuple[int, ...], target: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, target, strict=False))


def test_report_renders_in_headless_chromium_with_its_plots(tmp_path: Path) -> None:
    chromium = _chromium()
    met, missed = objectives_record(), objectives_record(met=False)
    suite = write_suite(
        tmp_path / "suite",
        {
            "01-a": experiment(tmp_path, "a", objectives=met),
            "02-m": experiment(tmp_path, "m", objectives=missed),
            "03-plain": experiment(tmp_path, "plain"),
        },
    )
    rc, out = run(tmp_path, suite, FakeChecks())
    assert rc == gameday.EXIT_FAILED, out
    page = (tmp_path / "reports" / "latest" / "report.html").resolve()
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    svgs = re.findall(r"<svg [^>]*class=\"timeline[^\"]*\".*?</svg>", dom.stdout, flags=re.DOTALL)
    assert len(svgs) == 3, "one timeline per experiment"
    assert ['class="fault-window"' in svg for svg in svgs] == [True, True, False]
    assert "no-timeline" in svgs[2]
    shot = tmp_path / "report.png"
    screenshot = subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    width, height, rows, bpp = decode_png(shot.read_bytes())
    assert (width, height) == (1000, 1400)
    pixels = {tuple(row[i : i + 3]) for row in rows for i in range(0, len(row), bpp)}
    assert len(pixels) > 50, f"the screenshot is nearly blank: {len(pixels)} colours"
    assert any(_near(p, FAULT_BAND_RGB) for p in pixels), "no fault window band painted"
    assert any(_near(p, FAILED_RGB, 10) for p in pixels), "no failed SLI sample painted"
