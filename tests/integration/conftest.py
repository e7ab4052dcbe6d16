"""Fixtures for tests against the running lab (`make lab`, then `make lab-test`).

Every test here needs the lab: when any lab host does not answer SSH, the whole suite is skipped and says why —
or fails, when GPUOPS_LAB_REQUIRED=1 (CI sets it: a lab that did not come up is a failure there, not a skip).
"""

from __future__ import annotations

import os
import subprocess
from typing import NoReturn

import pytest
from labhosts import LAB_KEY, Host, Lab, load_lab


def _not_up(reason: str) -> NoReturn:
    if os.environ.get("GPUOPS_LAB_REQUIRED") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The lab inventory, once every host answers SSH as the operator; skips the suite otherwise."""
    if not LAB_KEY.is_file():
        _not_up(f"the lab is not up: no lab key at {LAB_KEY} (run `make lab`)")
    try:
        inventory = load_lab()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as err:
        _not_up(f"the lab inventory cannot be read ({err}); run `make setup`")
    silent = [
        f"{host.name} (127.0.0.1:{host.port})"
        for host in inventory.hosts.values()
        if host.run("true", timeout=20).returncode != 0
    ]
    if silent:
        _not_up(f"the lab is not up: {', '.join(silent)} do(es) not answer SSH; run `make lab`")
    return inventory


@pytest.fixture(scope="session")
def gpu_nodes(lab: Lab) -> list[Host]:
    nodes = lab.group("gpu_nodes")
    assert nodes, "the lab inventory has no host in group gpu_nodes"
    return nodes


@pytest.fixture(scope="session")
def ops(lab: Lab) -> Host:
    """The ops host Prometheus runs on: the one address the exporters admit."""
    hosts = lab.group("ops")
    assert hosts, "the lab inventory has no host in group ops"
    return hosts[0]
