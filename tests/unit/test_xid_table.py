"""DESIGN.md's XID table lives in four places that are deployed apart and cannot import one another: chaosgpu's
kernel-log messages (controller), the GPU simulator's messages and DCGM health verdicts (lab nodes), the gpu_health
agent's policy (GPU nodes) and the alert rules' XID classes (Prometheus). This test holds them to one table, so a
change to one that is not made to the others fails here rather than in a game day."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from chaosgpu.gpu import commands

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "roles" / "gpu_health" / "files"))
sys.path.insert(0, str(ROOT / "roles" / "gpu_simulator" / "files" / "lib"))

from gpu_health_agent import policy  # noqa: E402 - from the role's files, after the path is set
from gpusim import health  # noqa: E402

RULES = ROOT / "roles" / "monitoring" / "files" / "rules" / "gpuops-gpu.rules.yml"

# DESIGN.md "Facts to build on": the XIDs whose catalogue action takes the node out of service (DCGM FAIL), and the
# ones where the application restarts and the node stays (DCGM WARN or nothing).
FATAL = {48, 64, 74, 79, 95, 119, 120, 140}
APPLICATION = {13, 31, 32, 43, 94}


def _rule_xids(record: str) -> set[int]:
    """The xid=~"..." set of one recording rule of the alert rules."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    expr = next(r["expr"] for g in groups for r in g["rules"] if r.get("record") == record)
    match = re.search(r'xid=~"([0-9|]+)"', expr)
    assert match, f"{record}: no xid=~ selector"
    return {int(x) for x in match.group(1).split("|")}


def test_controller_and_simulator_log_the_same_xid_lines():
    assert commands.XID_MESSAGES == health.XID_MESSAGES


def test_the_agent_acts_on_the_fatal_xids_and_leaves_application_xids_to_the_scheduler():
    fail = {xid for xid, rule in policy.XID_RULES.items() if rule.severity == "fail"}
    leave = {xid for xid, rule in policy.XID_RULES.items() if rule.decision == "none"}
    assert fail == FATAL
    assert leave == APPLICATION
    assert all(policy.XID_RULES[xid].decision.startswith("drain") for xid in FATAL)


def test_the_simulator_reports_dcgm_failure_exactly_for_the_fatal_xids():
    failing = {xid for xid, (_system, severity) in health.XID_HEALTH.items() if severity == health.FAIL}
    assert failing == FATAL
    assert {xid for xid in APPLICATION if xid in health.XID_HEALTH} <= {
        xid for xid, (_s, severity) in health.XID_HEALTH.items() if severity == health.WARN
    }


def test_the_alert_rules_classify_xids_as_the_agent_does():
    assert _rule_xids("gpuops:gpu_xid_fatal:recent") == FATAL
    assert _rule_xids("gpuops:gpu_xid_application:recent") == APPLICATION


def test_every_xid_with_a_rule_has_a_kernel_log_line():
    assert set(policy.XID_RULES) <= set(commands.XID_MESSAGES)
