"""The game day as JUnit XML (``junit.xml``): one testcase per experiment; a ``failure`` names the missed
objectives, the failed run or the faults left behind, an ``error`` marks an interrupted experiment, and the
experiments the suite did not reach are ``skipped``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree as ET  # builds XML, never parses any

from chaosgpu.report.common import number, problems

__all__ = ["render_junit"]


def render_junit(summary: Mapping[str, Any]) -> str:
    """``summary`` as a JUnit XML document (one ``testsuite`` named ``gameday``)."""
    experiments = summary.get("experiments") or []
    not_run = summary.get("not_run") or []
    suite = ET.Element("testsuite", name="gameday", timestamp=str(summary.get("started", "")))
    failures = errors = 0
    total_time = 0.0
    for entry in experiments:
        duration = number(entry.get("duration_s")) or 0.0
        total_time += duration
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"gameday.{summary.get('suite', 'suite')}",
            name=str(entry.get("title", "")),
            file=str(entry.get("file", "")),
            time=f"{duration:.3f}",
        )
        found = problems(entry)
        if entry.get("status") == "interrupted":
            errors += 1
            ET.SubElement(case, "error", type="interrupted", message="; ".join(found)).text = "\n".join(found)
        elif found or not entry.get("passed"):
            failures += 1
            found = found or ["did not pass"]
            ET.SubElement(case, "failure", type="gameday", message="; ".join(found)).text = "\n".join(found)
    for name in not_run:
        case = ET.SubElement(suite, "testcase", classname=f"gameday.{summary.get('suite', 'suite')}", name=name)
        ET.SubElement(case, "skipped", message=f"not run: {summary.get('stopped') or 'the suite stopped'}")
    suite.set("tests", str(len(experiments) + len(not_run)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(len(not_run)))
    suite.set("time", f"{total_time:.3f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
