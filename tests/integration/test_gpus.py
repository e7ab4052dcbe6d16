"""The simulated GPUs (STAND-IN nvidia-smi, dcgmi and dcgm-exporter from gpu_simulator): nvidia-smi sees 8 of
them, and an XID injected through DCGM reaches the exporter's metrics within one collection interval."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from labhosts import Host, unit_option_s, wait_for

GPUS_PER_NODE = 8
# Slack on top of one collection interval: an SSH round trip and a scrape per poll.
POLL_SLACK_S = 5.0


def test_nvidia_smi_lists_eight_gpus(gpu_nodes: list[Host]) -> None:
    for node in gpu_nodes:
        lines = node.check("nvidia-smi -L").splitlines()
        gpus = [line for line in lines if re.match(r"^GPU \d+: .+ \(UUID: GPU-[0-9a-f-]+\)$", line)]
        assert len(gpus) == GPUS_PER_NODE, f"{node.name}: nvidia-smi -L printed {lines}"


def xid_of_gpu0(ops: Host, node: Host) -> float | None:
    """GPU 0's DCGM_FI_DEV_XID_ERRORS on the node's exporter, scraped from the ops host like Prometheus does."""
    result = ops.http_get(f"http://{node.address}:9400/metrics")
    if result.returncode != 0:
        return None
    for line in result.stdout.splitlines():
        if line.startswith("DCGM_FI_DEV_XID_ERRORS{") and 'gpu="0"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def node_with_fresh_gpus(gpu_nodes: list[Host]) -> Iterator[Host]:
    """The first GPU node after `gpusim boot` (what a reboot does to the GPUs: no XID, none lost), and again after."""
    node = gpu_nodes[0]
    node.check("sudo gpusim boot")
    yield node
    node.check("sudo gpusim boot")


def test_injected_xid_reaches_the_exporter_within_one_interval(ops: Host, node_with_fresh_gpus: Host) -> None:
    node = node_with_fresh_gpus
    interval = unit_option_s(node, "dcgm-exporter.service", "--collect-interval")
    deadline = interval + POLL_SLACK_S
    # Start from a known value, so the injected one is new and the test can fail.
    cleared, _ = wait_for(lambda: xid_of_gpu0(ops, node) == 0, deadline)
    assert cleared, f"{node.name}: GPU 0's XID gauge is {xid_of_gpu0(ops, node)}, not 0, after gpusim boot"

    out = node.check("sudo dcgmi test --inject --gpuid 0 -f 230 -v 79")
    assert "Successfully injected" in out
    seen, waited = wait_for(lambda: xid_of_gpu0(ops, node) == 79, deadline, interval_s=0.5)
    assert seen, f"{node.name}: XID 79 not in the metrics {deadline:.0f} s after injection (interval {interval:g} s)"
    assert waited <= deadline
