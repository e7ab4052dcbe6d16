"""Fleet guards: asked before a drain or a reboot, they hold it back while too much of the fleet is already out.

- prometheus: an instant query (e.g. ``sum(gpu_health_node_drained)``, or a share such as
  ``sum(gpu_health_node_drained) / count(gpu_health_node_drained)``); the action is allowed while the value is
  below ``max``.
- command: a program given the action's name as its last argument; exit 0 allows, 1 refuses, anything else
  (or a timeout) is an error.

When the guard cannot answer, ``on_error`` decides: ``deny`` (default: hold the action back and ask again next
poll) or ``allow``.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from gpu_health_agent.config import FleetGuardConfig
from gpu_health_agent.engine import Guard, Verdict
from gpu_health_agent.runner import Runner

__all__ = ["CommandGuard", "PrometheusGuard", "make_guard", "prometheus_value"]

_REFUSED = 1

Fetch = Callable[[str, float], bytes]


def _http_get(url: str, timeout: float) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
        body: bytes = response.read()
    return body


def prometheus_value(body: bytes) -> float:
    """The value of an instant query's answer: a scalar, or the sum of a vector (an empty vector is 0)."""
    data: Any = json.loads(body)
    if not isinstance(data, dict) or data.get("status") != "success":
        raise ValueError(f"query failed: {str(data)[:200]}")
    result = data["data"]
    if result["resultType"] == "scalar":
        return float(result["result"][1])
    if result["resultType"] == "vector":
        return sum(float(sample["value"][1]) for sample in result["result"])
    raise ValueError(f"unexpected result type {result['resultType']!r}")


class PrometheusGuard:
    def __init__(self, config: FleetGuardConfig, fetch: Fetch = _http_get) -> None:
        self.config = config
        self.fetch = fetch

    def __call__(self, action: str) -> Verdict:
        url = f"{self.config.url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': self.config.query})}"
        try:
            value = prometheus_value(self.fetch(url, self.config.timeout_s))
        except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
            return _on_error(self.config, f"Prometheus query {self.config.query!r} failed: {err}")
        if value >= self.config.max:
            return Verdict(False, f"{self.config.query} = {value:g} >= max {self.config.max:g}; {action} waits")
        return Verdict(True, f"{self.config.query} = {value:g} < max {self.config.max:g}")


class CommandGuard:
    def __init__(self, config: FleetGuardConfig, runner: Runner) -> None:
        self.config = config
        self.runner = runner

    def __call__(self, action: str) -> Verdict:
        result = self.runner([*self.config.command, action], self.config.timeout_s)
        if result.rc == 0:
            return Verdict(True, result.tail(200))
        if result.rc == _REFUSED:
            return Verdict(False, f"{self.config.command[0]} refused: {result.tail(200)}")
        return _on_error(self.config, f"{self.config.command[0]} failed: {result.tail(200)}")


def _on_error(config: FleetGuardConfig, why: str) -> Verdict:
    if config.on_error == "allow":
        return Verdict(True, f"{why} (on_error: allow)")
    return Verdict(False, f"{why} (on_error: deny)")


def make_guard(config: FleetGuardConfig, runner: Runner, fetch: Fetch = _http_get) -> Guard | None:
    if config.type == "prometheus":
        return PrometheusGuard(config, fetch)
    if config.type == "command":
        return CommandGuard(config, runner)
    return None
