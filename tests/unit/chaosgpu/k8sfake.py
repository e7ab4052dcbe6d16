"""A tiny fake Kubernetes API server on 127.0.0.1 for chaosgpu.k8s's tests: it answers the GETs the probes make
(``/api/v1/nodes``, ``/api/v1/namespaces/<ns>/pods``, with ``labelSelector``) with the JSON the real API server
sends, so the real kubernetes client (built by chaosk8s's ``create_k8s_api_client`` from ``KUBERNETES_HOST``)
parses real wire data. Errors are answered as the API server's Status objects."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chaosgpu.k8s import cluster


def gpu_node(
    name: str,
    gpus: int = 8,
    allocatable: int | None = None,
    ready: bool = True,
    cordoned: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A node as the API server lists it, labelled as the GPU operator labels GPU nodes."""
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110"}
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": labels if labels is not None else {"nvidia.com/gpu.present": "true", "kubernetes.io/os": "linux"},
        },
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "capacity": {**resources, "nvidia.com/gpu": str(gpus)},
            "allocatable": {**resources, "nvidia.com/gpu": str(gpus if allocatable is None else allocatable)},
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {
                    "type": "Ready",
                    "status": "True" if ready else "Unknown",
                    "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                    "lastHeartbeatTime": "2026-11-29T10:00:00Z",
                },
            ],
        },
    }
    if cordoned:
        node["spec"]["unschedulable"] = True
        node["spec"]["taints"] = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
    return node


def pod(
    name: str,
    labels: dict[str, str],
    node: str = "gpu-a",
    phase: str = "Running",
    ready: bool = True,
    deleting: bool = False,
) -> dict[str, Any]:
    """A pod as the API server lists it."""
    metadata: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "labels": labels}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-29T10:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "example/image:1"}]},
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        },
    }


def _matches(labels: dict[str, str], selector: str) -> bool:
    """Equality (``k=v``, ``k==v``), inequality (``k!=v``) and existence (``k``, ``!k``) terms, comma-joined."""
    for raw in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in raw:
            key, value = raw.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif raw.startswith("!"):
            if raw[1:] in labels:
                return False
        elif raw not in labels:
            return False
    return True


@dataclass
class FakeCluster:
    """The fake API server's state; tests change it between (or during) calls."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # namespace -> pods
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # path prefix -> (HTTP status, message)
    requests: list[str] = field(default_factory=list)  # path?query of every request
    url: str = ""

    def answer(self, target: str) -> tuple[int, dict[str, Any]]:
        self.requests.append(target)
        parsed = urllib.parse.urlsplit(target)
        selector = urllib.parse.parse_qs(parsed.query).get("labelSelector", [""])[0]
        for prefix, (status, message) in self.errors.items():
            if parsed.path.startswith(prefix):
                return status, _status(status, message)
        parts = parsed.path.strip("/").split("/")
        if parts == ["api", "v1", "nodes"]:
            items = [n for n in self.nodes if _matches(n["metadata"].get("labels", {}), selector)]
            return 200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "1"}, "items": items}
        if len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            if parts[3] not in self.pods:
                return 404, _status(404, f'namespaces "{parts[3]}" not found', reason="NotFound")
            items = [p for p in self.pods[parts[3]] if _matches(p["metadata"].get("labels", {}), selector)]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}
        return 404, _status(404, "the server could not find the requested resource", reason="NotFound")


def _status(code: int, message: str, reason: str = "Forbidden") -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeCluster]:
    """Run a fake API server, with the environment pointing chaosk8s's client at it (and nowhere else); for a
    fixture to ``yield from``."""
    state = FakeCluster()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = state.answer(self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("CHAOSTOOLKIT_IN_POD", "KUBERNETES_API_KEY", "KUBERNETES_CERT_FILE", "KUBERNETES_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("KUBERNETES_HOST", state.url)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class FakeClock:
    """Stands in for cluster's monotonic clock and sleep; ``on_sleep`` runs at each sleep (the cluster changing)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.on_sleep: list[Any] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep.pop(0)()


def install_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replace chaosgpu.k8s.cluster's clock and sleep with a FakeClock."""
    fake = FakeClock()
    monkeypatch.setattr(cluster, "_now", lambda: fake.now)
    monkeypatch.setattr(cluster, "_sleep", fake.sleep)
    return fake
