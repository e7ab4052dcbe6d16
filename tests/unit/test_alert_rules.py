"""The GPU alert rules: every alert is complete (severity, summary, description, runbook_url), has a runbook page,
and has promtool test cases where it fires and where it must not; the Kubernetes manifest is generated from them."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import gen_prometheusrule
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "roles" / "monitoring" / "files" / "rules" / "gpuops-gpu.rules.yml"
RULE_TESTS = sorted((ROOT / "tests" / "rules").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks"
SEVERITIES = {"critical", "warning", "info"}
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")


def alerts(rule_file: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Alert rules by name (recording rules left out)."""
    return {rule["alert"]: rule for group in rule_file["groups"] for rule in group["rules"] if "alert" in rule}


def incomplete(alert: dict[str, Any], base_url: str) -> list[str]:
    """What an alert rule lacks: severity, the annotations, a runbook_url that is base URL + name + .md."""
    problems = []
    severity = alert.get("labels", {}).get("severity")
    if severity not in SEVERITIES:
        problems.append(f"severity {severity!r} is not one of {sorted(SEVERITIES)}")
    annotations = alert.get("annotations", {})
    problems += [f"no {key} annotation" for key in REQUIRED_ANNOTATIONS if not str(annotations.get(key, "")).strip()]
    wanted = f"{base_url}{alert['alert']}.md"
    if annotations.get("runbook_url") and annotations["runbook_url"] != wanted:
        problems.append(f"runbook_url {annotations['runbook_url']!r} is not {wanted!r}")
    return problems


def cases(test_files: list[dict[str, Any]]) -> dict[str, set[bool]]:
    """For each alert name, whether the promtool tests have a case where it fires (True) and one where it doesn't."""
    found: dict[str, set[bool]] = {}
    for test_file in test_files:
        for test in test_file.get("tests", []):
            for case in test.get("alert_rule_test", []):
                found.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    return found


def missing_cases(alert_names: set[str], test_files: list[dict[str, Any]]) -> list[str]:
    found = cases(test_files)
    problems = []
    for name in sorted(alert_names):
        if True not in found.get(name, set()):
            problems.append(f"{name}: no promtool case where it fires")
        if False not in found.get(name, set()):
            problems.append(f"{name}: no promtool case where it must not fire")
    return problems


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def rule_file() -> dict[str, Any]:
    return _load(RULES)


@pytest.fixture(scope="module")
def base_url() -> str:
    return gen_prometheusrule.runbook_base_url(RULES.read_text(encoding="utf-8"))


def test_the_rule_file_has_the_alerts_the_fleet_needs(rule_file):
    names = set(alerts(rule_file))
    assert {
        "GpuXidFatal",
        "GpuXidApplicationError",
        "GpuEccDoubleBitError",
        "GpuRowRemapFailure",
        "GpuRowRemapPending",
        "GpuRetiredPagesPending",
        "GpuTemperatureHigh",
        "GpuThermalViolation",
        "GpuPowerViolation",
        "GpuClockEventHardwareSlowdown",
        "GpuMissing",
        "GpuHealthFailing",
        "DcgmExporterDown",
        "DcgmExporterAbsent",
        "NodeExporterDown",
        "NodeFilesystemSpaceLow",
        "NodeMemoryLow",
        "NodeClockSkew",
        "GpuNodeMarkedForRma",
        "GpuRemediationHeld",
        "GpuNodeDrainedTooLong",
        "GpuHealthSourceDown",
        "GpuHealthAgentStale",
        "GpuFleetDrainedHigh",
    } <= names


def test_every_alert_has_severity_summary_description_and_its_runbook_url(rule_file, base_url):
    problems = {name: incomplete(alert, base_url) for name, alert in alerts(rule_file).items()}
    assert {name: p for name, p in problems.items() if p} == {}


def test_every_alert_has_a_runbook_page(rule_file):
    missing = [name for name in alerts(rule_file) if not (RUNBOOKS / f"{name}.md").is_file()]
    assert missing == [], f"add docs/runbooks/<Alert>.md for {missing}"


def test_every_runbook_page_belongs_to_an_alert(rule_file):
    orphans = sorted({page.stem for page in RUNBOOKS.glob("*.md")} - set(alerts(rule_file)))
    assert orphans == []


def test_every_alert_has_promtool_cases_that_fire_and_that_do_not(rule_file):
    assert RULE_TESTS, "no tests/rules/*.yml"
    problems = missing_cases(set(alerts(rule_file)), [_load(path) for path in RULE_TESTS])
    assert problems == []


def test_every_promtool_test_file_loads_the_rule_file():
    for path in RULE_TESTS:
        rule_files = [(path.parent / name).resolve() for name in _load(path)["rule_files"]]
        assert rule_files == [RULES], path


def test_the_checks_catch_an_incomplete_alert_and_a_missing_case():
    alert = {"alert": "Demo", "labels": {}, "annotations": {"summary": "s", "runbook_url": "https://x/Other.md"}}
    assert incomplete(alert, "https://x/") == [
        "severity None is not one of ['critical', 'info', 'warning']",
        "no description annotation",
        "runbook_url 'https://x/Other.md' is not 'https://x/Demo.md'",
    ]
    only_firing = [{"tests": [{"alert_rule_test": [{"alertname": "Demo", "exp_alerts": [{"exp_labels": {}}]}]}]}]
    assert missing_cases({"Demo", "Other"}, only_firing) == [
        "Demo: no promtool case where it must not fire",
        "Other: no promtool case where it fires",
        "Other: no promtool case where it must not fire",
    ]


def test_the_manifest_is_a_prometheusrule_with_the_source_groups(rule_file):
    manifest = yaml.safe_load(gen_prometheusrule.MANIFEST.read_text(encoding="utf-8"))
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["labels"]["role"] == "alert-rules"
    assert manifest["spec"]["groups"] == rule_file["groups"]
    assert gen_prometheusrule.main(["--check"]) == 0


def test_moving_the_runbook_base_url_moves_every_annotation():
    text = RULES.read_text(encoding="utf-8")
    moved = gen_prometheusrule.set_runbook_base_url(text, "https://wiki.example.invalid/gpu")
    assert gen_prometheusrule.runbook_base_url(moved) == "https://wiki.example.invalid/gpu/"
    assert incomplete(alerts(yaml.safe_load(moved))["GpuXidFatal"], "https://wiki.example.invalid/gpu/") == []


def test_ensure_promtool_tells_a_non_root_user_what_to_do(tmp_path):
    fake_id = tmp_path / "bin" / "id"
    fake_id.parent.mkdir()
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(fake_id.stat().st_mode | stat.S_IEXEC)
    result = subprocess.run(
        ["bash", ROOT / "scripts" / "ensure-promtool.sh"],
        env={**os.environ, "PATH": f"{fake_id.parent}:{os.environ['PATH']}", "PROMTOOL_DIR": str(tmp_path / "tools")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "needs root on Debian" in result.stderr
    assert "fix:" in result.stderr
