"""Helpers behind ``chaosgpu.k8s.probes``: the API client, error messages, node and pod readings, polling.

Not an activity module: nothing here is listed by ``chaos discover``.
"""

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from chaosk8s import create_k8s_api_client
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

__all__ = [
    "REQUEST_TIMEOUT_S",
    "api_call",
    "check_count",
    "check_flag",
    "check_seconds",
    "check_text",
    "core_v1",
    "node_name",
    "node_reading",
    "pod_name",
    "pod_ready",
    "poll",
]

logger = logging.getLogger("chaostoolkit")

REQUEST_TIMEOUT_S = 30
POLL_INTERVAL_S = 5.0

T = TypeVar("T")

# Replaced by the tests with a fake clock.
_now = time.monotonic
_sleep = time.sleep


def core_v1(secrets: Secrets | None) -> client.CoreV1Api:
    """A CoreV1Api on the client chaostoolkit-kubernetes builds (kubeconfig, in-cluster or KUBERNETES_* values)."""
    try:
        return client.CoreV1Api(create_k8s_api_client(secrets))
    except Exception as exc:  # kubeconfig parse errors come as many types; say which configuration failed
        raise ActivityFailed(f"cannot build a Kubernetes client: {type(exc).__name__}: {exc}") from None


def _api_message(exc: ApiException) -> str:
    """The ``message`` of the Status the API server answered with, else the raw body (shortened)."""
    body = exc.body or ""
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        status = None
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return str(body)[:300]


def api_call(what: str, call: Callable[[], T]) -> T:
    """Run one API request; an API error or an unreachable API server becomes ActivityFailed naming ``what``."""
    try:
        return call()
    except ApiException as exc:
        raise ActivityFailed(f"{what} failed: HTTP {exc.status} {exc.reason}: {_api_message(exc)}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ActivityFailed(f"{what} failed: the API server did not answer: {exc}") from None


def _quantity(node: str, resource: str, kind: str, value: str | None) -> int:
    if value is None:
        return 0
    try:
        return int(parse_quantity(value))  # type: ignore[no-untyped-call]  # kubernetes leaves it untyped
    except (ValueError, TypeError, ArithmeticError):
        raise ActivityFailed(f"node {node}: {kind} {resource}={value!r} is not a quantity") from None


def node_name(node: client.V1Node) -> str:
    """The node's name ("?" for an object without one)."""
    return (node.metadata.name if node.metadata else None) or "?"


def pod_name(pod: client.V1Pod) -> str:
    """The pod's name ("?" for an object without one)."""
    return (pod.metadata.name if pod.metadata else None) or "?"


def node_reading(node: client.V1Node, resource: str) -> dict[str, Any]:
    """What a node offers of ``resource`` and whether it can take pods: allocatable, capacity (0 when the node does
    not list the resource), ready (condition Ready is True) and schedulable (not cordoned)."""
    name = node_name(node)
    status = node.status
    allocatable = (status.allocatable if status else None) or {}
    capacity = (status.capacity if status else None) or {}
    conditions = (status.conditions if status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    cordoned = bool(node.spec.unschedulable) if node.spec else False
    return {
        "allocatable": _quantity(name, resource, "allocatable", allocatable.get(resource)),
        "capacity": _quantity(name, resource, "capacity", capacity.get(resource)),
        "ready": ready,
        "schedulable": not cordoned,
    }


def pod_ready(pod: client.V1Pod) -> bool:
    """A pod that runs, has condition Ready True and is not being deleted."""
    if pod.metadata and pod.metadata.deletion_timestamp is not None:
        return False
    status = pod.status
    if not status or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def poll(check: Callable[[], tuple[bool, str]], wait_s: float, what: str) -> bool:
    """Call ``check`` (-> (holds, what it saw)) until it holds or ``wait_s`` seconds have passed, every
    POLL_INTERVAL_S seconds (one call when ``wait_s`` is 0). An API failure while waiting is retried; if the last
    call failed, its ActivityFailed is raised. Returns whether it held."""
    deadline = _now() + wait_s
    while True:
        failure: ActivityFailed | None = None
        try:
            holds, seen = check()
        except ActivityFailed as exc:
            holds, seen, failure = False, str(exc), exc
        logger.debug("%s: %s (%s)", what, "holds" if holds else "does not hold", seen)
        if holds:
            return True
        left = deadline - _now()
        if left <= 0:
            if failure is not None:
                raise failure
            logger.info("%s does not hold: %s", what, seen)
            return False
        _sleep(min(POLL_INTERVAL_S, left))


def check_count(parameter: str, value: int, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``, else ActivityFailed naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ActivityFailed(f"{parameter} must be an integer >= {minimum}, got {value!r}")
    return value


def check_flag(parameter: str, value: bool) -> bool:
    """``value`` as true or false (not a string such as "false"), else ActivityFailed naming the parameter."""
    if not isinstance(value, bool):
        raise ActivityFailed(f"{parameter} must be true or false, got {value!r}")
    return value


def check_seconds(parameter: str, value: float) -> float:
    """``value`` as a number of seconds >= 0, else ActivityFailed naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ActivityFailed(f"{parameter} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def check_text(parameter: str, value: str, empty_ok: bool = True) -> str:
    """``value`` as a string (non-empty unless ``empty_ok``), else ActivityFailed naming the parameter."""
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise ActivityFailed(f"{parameter} must be a {'' if empty_ok else 'non-empty '}string, got {value!r}")
    return value
