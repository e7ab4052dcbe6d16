"""The lab's Prometheus and Alertmanager (on ops-1, through the ports it publishes on 127.0.0.1), and the intervals
they really run with: what the alert tests and the detection benchmark (bench/detection.py) time signals against.
Every interval is read from what runs (Prometheus' loaded config and rules), not from the inventory."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from typing import Any

import yaml
from labhosts import Host

PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (the lab's 127.0.0.1 ports only)
        return json.load(response)


def duration_s(text: str) -> float:
    """A Prometheus duration such as 15s, 1m30s, 5m; seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", text)
    assert "".join(n + u for n, u in parts) == text, f"not a Prometheus duration: {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


class Monitoring:
    """The lab's Prometheus and Alertmanager through the ports ops-1 publishes on 127.0.0.1."""

    def __init__(self, ops: Host) -> None:
        self.prometheus = ops.published_url(PROMETHEUS_PORT)
        self.alertmanager = ops.published_url(ALERTMANAGER_PORT)

    def active_alerts(self) -> list[dict[str, Any]]:
        body = get_json(self.prometheus + "/api/v1/alerts")
        assert body["status"] == "success", body
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's series (``[{"metric": {...}, "value": [time, "text"]}, ...]``)."""
        body = get_json(f"{self.prometheus}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
        assert body["status"] == "success", body
        series: list[dict[str, Any]] = body["data"]["result"]
        return series

    def rule(self, name: str) -> dict[str, Any]:
        body = get_json(self.prometheus + "/api/v1/rules")
        for group in body["data"]["groups"]:
            for rule in group["rules"]:
                if rule["name"] == name:
                    found: dict[str, Any] = rule
                    return found
        raise AssertionError(f"the lab Prometheus has no rule {name} loaded")

    def global_config(self) -> dict[str, Any]:
        body = get_json(self.prometheus + "/api/v1/status/config")
        config: dict[str, Any] = yaml.safe_load(body["data"]["yaml"])["global"]
        return config

    def interval_s(self, name: str) -> float:
        """A global interval of the running Prometheus (``scrape_interval``, ``evaluation_interval``), seconds."""
        return duration_s(str(self.global_config()[name]))

    def in_alertmanager(self, alertname: str, labels: dict[str, str]) -> bool:
        query = [("active", "true")] + [("filter", f'{k}="{v}"') for k, v in {"alertname": alertname, **labels}.items()]
        return bool(get_json(f"{self.alertmanager}/api/v2/alerts?{urllib.parse.urlencode(query)}"))


def matching(alerts: list[dict[str, Any]], name: str, labels: dict[str, str], state: str | None = None) -> bool:
    """Whether an alert ``name`` whose labels include ``labels`` is among ``alerts`` (in ``state`` when given)."""
    return any(
        alert["labels"].get("alertname") == name
        and all(alert["labels"].get(k) == v for k, v in labels.items())
        and (state is None or alert["state"] == state)
        for alert in alerts
    )
