"""The fleet's alert rules, end to end in the lab: faults on real hosts, the lab's Prometheus (on ops-1, as
site.yml installs it) evaluating the shipped rule file, seen through its HTTP API and Alertmanager's.

One experiment drives both faults at once, so the suite pays DcgmExporterDown's 5-minute `for:` only once:
- XID 79 injected through `dcgmi` on GPU 0 of the first GPU node must fire GpuXidFatal within the budget that
  the intervals imply (exporter collection + scrape + rule evaluation), reach Alertmanager, and resolve once
  the event has left the exporter's XID window and the rule's look-back; the GPU is recovered (`gpusim boot`,
  what a reboot does) as soon as the alert fires.
- dcgm-exporter stopped on the second GPU node must fire DcgmExporterDown no earlier than its `for:` and within
  scrape + `for:` + evaluation; starting it again must resolve the alert within a scrape and an evaluation.
Every interval is read from what runs (Prometheus' loaded config and rules, the exporter's unit), not from the
inventory. The GPUs, `dcgmi` and dcgm-exporter here are the lab's STAND-INs (gpu_simulator); Prometheus,
Alertmanager and the rule file are the real ones. The measured timeline is written to reports/integration/alerts.json.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import pytest
from labhosts import ROOT, Host, unit_option_s
from labmonitoring import Monitoring, duration_s, matching

EXPORTER_UNIT = "dcgm-exporter.service"
XID = "79"
# On top of the intervals: the SSH round trip of the fault command, the 1 s poll, Prometheus' notification.
SLACK_S = 10.0
POLL_S = 1.0
REPORT = ROOT / "reports" / "integration" / "alerts.json"


@dataclass
class Budgets:
    """The intervals the lab really runs with, in seconds."""

    collect: float
    xid_window: float
    scrape: float
    evaluation: float
    xid_lookback: float
    exporter_down_for: float


@dataclass
class Timeline:
    """Seconds since the fault started (monotonic clock, polled every POLL_S); None: not seen by the deadline."""

    budgets: Budgets
    xid_fired: float | None = None
    xid_in_alertmanager: float | None = None
    xid_recovered: float | None = None
    xid_resolved: float | None = None
    down_pending: float | None = None
    down_fired: float | None = None
    exporter_restarted: float | None = None
    down_resolved: float | None = None
    left_active: list[str] | None = None


def read_budgets(monitoring: Monitoring, xid_node: Host) -> Budgets:
    config = monitoring.global_config()
    query = monitoring.rule("gpuops:gpu_xid_fatal:recent")["query"]
    lookbacks = re.findall(r"DCGM_EXP_XID_ERRORS_COUNT\{[^}]*\}\[(\w+)\]", query)
    assert lookbacks, "gpuops:gpu_xid_fatal:recent does not read DCGM_EXP_XID_ERRORS_COUNT over a range"
    return Budgets(
        collect=unit_option_s(xid_node, EXPORTER_UNIT, "--collect-interval"),
        xid_window=unit_option_s(xid_node, EXPORTER_UNIT, "--xid-count-window-size"),
        scrape=duration_s(config["scrape_interval"]),
        evaluation=duration_s(config["evaluation_interval"]),
        xid_lookback=max(duration_s(text) for text in lookbacks),
        exporter_down_for=float(monitoring.rule("DcgmExporterDown")["duration"]),
    )


def xid_fire_budget(b: Budgets) -> float:
    # The exporter shows the XID at its next collection, Prometheus scrapes it, the next evaluation fires it
    # (GpuXidFatal has no `for:`).
    return b.collect + b.scrape + b.evaluation + SLACK_S


def xid_resolve_budget(b: Budgets) -> float:
    # The event leaves the exporter's window (window, seen at a collection), the last scrape that still had it
    # leaves the rule's look-back, the next evaluation resolves it.
    return b.collect + b.xid_window + b.scrape + b.xid_lookback + b.evaluation + SLACK_S


def down_fire_budget(b: Budgets) -> float:
    # The first failed scrape, the evaluation that makes it pending, `for:`, the evaluation that fires it.
    return b.scrape + b.evaluation + b.exporter_down_for + b.evaluation + SLACK_S


def down_resolve_budget(b: Budgets) -> float:
    return b.scrape + b.evaluation + SLACK_S


class Experiment:
    """Both faults, and the recovery each gets as soon as its alert fires, observed one poll at a time."""

    def __init__(self, monitoring: Monitoring, xid_node: Host, down_node: Host, budgets: Budgets) -> None:
        self.monitoring = monitoring
        self.xid_node = xid_node
        self.down_node = down_node
        self.xid_labels = {"host": xid_node.name, "gpu": "0", "xid": XID}
        self.down_labels = {"host": down_node.name}
        self.line = Timeline(budgets=budgets)
        self.start = 0.0

    def wait_quiet(self) -> None:
        """Start clean: an XID of an earlier run leaves within the resolve budget; nothing may stay active."""
        deadline = time.monotonic() + xid_resolve_budget(self.line.budgets)
        while True:
            alerts = self.monitoring.active_alerts()
            xid_busy = matching(alerts, "GpuXidFatal", {"host": self.xid_node.name})
            if not xid_busy and not matching(alerts, "DcgmExporterDown", self.down_labels):
                return
            assert time.monotonic() < deadline, f"alerts still active before the experiment: {alerts}"
            time.sleep(POLL_S)

    def inject(self) -> None:
        self.start = time.monotonic()
        out = self.xid_node.check(f"sudo dcgmi test --inject --gpuid 0 -f 230 -v {XID}")
        assert "Successfully injected" in out, out
        self.down_node.check(f"sudo systemctl stop {EXPORTER_UNIT}")

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def observe(self) -> bool:
        """One poll; true once both alerts have fired and resolved."""
        now = self.elapsed()
        alerts = self.monitoring.active_alerts()
        self._observe_xid(alerts, now)
        self._observe_down(alerts, now)
        return self.line.xid_resolved is not None and self.line.down_resolved is not None

    def _observe_xid(self, alerts: list[dict[str, Any]], now: float) -> None:
        line = self.line
        if line.xid_fired is None:
            if matching(alerts, "GpuXidFatal", self.xid_labels, "firing"):
                line.xid_fired = now
                self.xid_node.check("sudo gpusim boot")  # recovery: what a reboot does to the GPUs
                line.xid_recovered = self.elapsed()
            return
        if line.xid_in_alertmanager is None and self.monitoring.in_alertmanager("GpuXidFatal", self.xid_labels):
            line.xid_in_alertmanager = now
        if line.xid_resolved is None and not matching(alerts, "GpuXidFatal", self.xid_labels):
            line.xid_resolved = now

    def _observe_down(self, alerts: list[dict[str, Any]], now: float) -> None:
        line = self.line
        if line.down_pending is None and matching(alerts, "DcgmExporterDown", self.down_labels, "pending"):
            line.down_pending = now
        if line.down_fired is None:
            if matching(alerts, "DcgmExporterDown", self.down_labels, "firing"):
                line.down_fired = now
                self.down_node.check(f"sudo systemctl start {EXPORTER_UNIT}")
                line.exporter_restarted = self.elapsed()
            return
        if line.down_resolved is None and not matching(alerts, "DcgmExporterDown", self.down_labels):
            line.down_resolved = now

    def left_active(self) -> list[str]:
        """Alerts still active for either node (GpuMissing from the lost GPU included)."""
        names = (self.xid_node.name, self.down_node.name)
        return sorted(
            f"{alert['labels']['alertname']} ({alert['state']})"
            for alert in self.monitoring.active_alerts()
            if alert["labels"].get("host") in names or alert["labels"].get("hostname") in names
        )

    def clean_up(self) -> None:
        self.down_node.run(f"sudo systemctl start {EXPORTER_UNIT}")
        self.xid_node.run("sudo gpusim boot")


@pytest.fixture(scope="module")
def timeline(ops: Host, gpu_nodes: list[Host]) -> Timeline:
    assert len(gpu_nodes) >= 2, "this experiment needs two GPU nodes"
    monitoring = Monitoring(ops)
    experiment = Experiment(monitoring, gpu_nodes[0], gpu_nodes[1], read_budgets(monitoring, gpu_nodes[0]))
    budgets = experiment.line.budgets
    deadline = max(xid_resolve_budget(budgets), down_fire_budget(budgets) + down_resolve_budget(budgets)) + 30
    experiment.xid_node.check("sudo gpusim boot")
    experiment.down_node.check(f"sudo systemctl start {EXPORTER_UNIT}")
    experiment.wait_quiet()
    try:
        experiment.inject()
        while not experiment.observe() and experiment.elapsed() < deadline:
            time.sleep(POLL_S)
        experiment.line.left_active = experiment.left_active()
    finally:
        experiment.clean_up()
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(asdict(experiment.line), indent=2) + "\n")
    return experiment.line


def test_fatal_xid_fires_within_the_interval_budget(timeline: Timeline) -> None:
    budget = xid_fire_budget(timeline.budgets)
    assert timeline.xid_fired is not None, f"GpuXidFatal never fired for XID {XID} (budget {budget:.0f} s)"
    assert timeline.xid_fired <= budget, f"GpuXidFatal fired after {timeline.xid_fired:.0f} s, budget {budget:.0f} s"


def test_fatal_xid_reaches_alertmanager(timeline: Timeline) -> None:
    assert timeline.xid_fired is not None, "GpuXidFatal never fired"
    assert timeline.xid_in_alertmanager is not None, "GpuXidFatal fired in Prometheus but never reached Alertmanager"
    # Prometheus sends firing alerts to Alertmanager at every evaluation.
    late = timeline.xid_in_alertmanager - timeline.xid_fired
    assert late <= timeline.budgets.evaluation + SLACK_S, f"in Alertmanager {late:.0f} s after it fired"


def test_fatal_xid_resolves_once_the_window_has_passed(timeline: Timeline) -> None:
    b = timeline.budgets
    assert timeline.xid_resolved is not None, f"GpuXidFatal still active after {xid_resolve_budget(b):.0f} s"
    # Not before the event left the exporter's window (the alert must not vanish while it is recent) ...
    assert timeline.xid_resolved >= b.xid_window, f"resolved after {timeline.xid_resolved:.0f} s < window"
    # ... and not later than the window plus the look-back allow.
    assert timeline.xid_resolved <= xid_resolve_budget(b), (
        f"resolved after {timeline.xid_resolved:.0f} s, budget {xid_resolve_budget(b):.0f} s"
    )


def test_exporter_down_waits_for_its_for_window(timeline: Timeline) -> None:
    assert timeline.down_pending is not None, "DcgmExporterDown was never pending"
    assert timeline.down_fired is not None, "DcgmExporterDown never fired"
    assert timeline.down_pending < timeline.down_fired, "DcgmExporterDown fired without being pending first"
    # The exporter stopped after `start`, so a firing alert before `for:` had elapsed would break the rule.
    assert timeline.down_fired >= timeline.budgets.exporter_down_for, (
        f"fired after {timeline.down_fired:.0f} s, before its for: of {timeline.budgets.exporter_down_for:.0f} s"
    )


def test_exporter_down_fires_within_the_interval_budget(timeline: Timeline) -> None:
    budget = down_fire_budget(timeline.budgets)
    assert timeline.down_fired is not None, f"DcgmExporterDown never fired (budget {budget:.0f} s)"
    assert timeline.down_fired <= budget, f"DcgmExporterDown fired after {timeline.down_fired:.0f} s > {budget:.0f} s"


def test_exporter_down_resolves_after_restart(timeline: Timeline) -> None:
    assert timeline.exporter_restarted is not None, "the exporter was never restarted (the alert never fired)"
    assert timeline.down_resolved is not None, "DcgmExporterDown did not resolve after the exporter restarted"
    took = timeline.down_resolved - timeline.exporter_restarted
    budget = down_resolve_budget(timeline.budgets)
    assert took <= budget, f"resolved {took:.0f} s after the restart, budget {budget:.0f} s"


def test_nothing_left_active_for_the_two_nodes(timeline: Timeline) -> None:
    assert timeline.left_active == [], f"still active after recovery: {timeline.left_active}"
