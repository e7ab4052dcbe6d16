"""The exporters of every GPU node answer Prometheus (ops-1) through the firewall, and nobody else."""

from __future__ import annotations

import socket

import pytest
from labhosts import Host, Lab

# Exporter port and a metric each one always serves.
EXPORTERS = {9100: "node_exporter_build_info", 9400: "DCGM_FI_DEV_GPU_TEMP"}
NODES = ["gpu-node-1", "gpu-node-2", "gpu-node-3"]


def exporter_url(node: Host, port: int) -> str:
    return f"http://{node.address}:{port}/metrics"


def listens(node: Host, port: int) -> bool:
    """The exporter is up on the node's lab address (so a refusal elsewhere is the firewall's doing)."""
    return node.run(f"ss -Hltn 'sport = :{port}' | grep -qF '{node.address}:{port}'").returncode == 0


@pytest.mark.parametrize("port", sorted(EXPORTERS))
@pytest.mark.parametrize("name", NODES)
def test_exporter_answers_prometheus_host(lab: Lab, ops: Host, name: str, port: int) -> None:
    node = lab.hosts[name]
    result = ops.http_get(exporter_url(node, port))
    assert result.returncode == 0, f"{ops.name} -> {name}:{port}: {result.stderr}"
    assert EXPORTERS[port] in result.stdout


@pytest.mark.parametrize("port", sorted(EXPORTERS))
@pytest.mark.parametrize("name", NODES)
def test_exporter_refuses_another_gpu_node(lab: Lab, gpu_nodes: list[Host], name: str, port: int) -> None:
    node = lab.hosts[name]
    other = next(host for host in gpu_nodes if host.name != name)
    assert listens(node, port), f"{name} has nothing listening on {node.address}:{port}"
    result = other.http_get(exporter_url(node, port), timeout=3)
    assert result.returncode != 0, f"{other.name} reached {name}:{port} past the firewall"
    # curl exit 28: the connection timed out (dropped), not refused by an absent listener.
    assert result.returncode == 28, f"{other.name} -> {name}:{port}: {result.stderr}"


@pytest.mark.parametrize("port", sorted(EXPORTERS))
def test_exporter_refuses_the_controller(lab: Lab, port: int) -> None:
    node = lab.hosts[NODES[0]]
    assert listens(node, port)
    # Dropped, not refused: the connection attempt times out (socket.timeout is TimeoutError).
    with pytest.raises(TimeoutError), socket.create_connection((node.address, port), timeout=3):
        pass


def test_ssh_admits_only_the_controller(gpu_nodes: list[Host]) -> None:
    """SSH between GPU nodes is dropped: port 22 is open to the controller's address only."""
    node, other = gpu_nodes[0], gpu_nodes[1]
    result = other.run(f"timeout 3 bash -c 'exec 3<>/dev/tcp/{node.address}/22'")
    assert result.returncode != 0, f"{other.name} opened {node.name}:22"
