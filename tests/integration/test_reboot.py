"""`systemctl reboot` inside a GPU node is a real reboot: the container comes back (restart policy), every
service is up again and the hardening is still in force. Runs last in this directory: it takes a node down."""

from __future__ import annotations

import pytest
from labhosts import Host, wait_for

REBOOT_DEADLINE_S = 180
BOOT_DEADLINE_S = 120
MARKER = "/run/gpuops-integration-reboot-marker"
SERVICES = ["ssh", "node_exporter", "nvidia-dcgm", "dcgm-exporter", "containerd", "gpuops-firewall"]


@pytest.fixture(scope="module")
def rebooted(gpu_nodes: list[Host]) -> Host:
    """The last GPU node, rebooted from inside and booted again (state checked by the tests below)."""
    node = gpu_nodes[-1]
    node.check(f"sudo touch {MARKER}")
    # The connection may drop before ssh sees the command's exit status; only the outcome below counts.
    node.run("sudo systemctl reboot", timeout=20)
    back, waited = wait_for(lambda: node.run(f"test ! -e {MARKER}", timeout=10).returncode == 0, REBOOT_DEADLINE_S, 2)
    assert back, f"{node.name} did not come back over SSH from a fresh boot within {REBOOT_DEADLINE_S} s"
    state = node.run(f"timeout {BOOT_DEADLINE_S} systemctl is-system-running --wait", timeout=BOOT_DEADLINE_S + 15)
    assert state.stdout.strip() in {"running", "degraded"}, (
        f"{node.name} did not finish booting within {BOOT_DEADLINE_S} s of coming back ({waited:.0f} s): "
        f"systemd is {state.stdout.strip()!r}"
    )
    return node


def test_no_unit_failed_after_reboot(rebooted: Host) -> None:
    state = rebooted.run("systemctl is-system-running").stdout.strip()
    failed = rebooted.run("systemctl --failed --no-legend --plain").stdout
    assert state == "running", f"{rebooted.name} after reboot: systemd is {state!r}; failed units:\n{failed}"


@pytest.mark.parametrize("service", SERVICES)
def test_service_is_up_after_reboot(rebooted: Host, service: str) -> None:
    result = rebooted.run(f"systemctl is-active {service}.service")
    assert result.stdout.strip() == "active", (
        f"{rebooted.name}: {service} is {result.stdout.strip()} after reboot\n"
        + rebooted.run(f"sudo journalctl -b -u {service}.service --no-pager -n 30").stdout
    )


def test_firewall_table_is_loaded_after_reboot(rebooted: Host) -> None:
    chain = rebooted.check("sudo nft list chain inet gpuops_filter input")
    assert "policy drop" in chain


def test_ssh_hardening_in_force_after_reboot(rebooted: Host) -> None:
    effective = set(rebooted.check("sudo sshd -T").splitlines())
    assert {"permitrootlogin no", "passwordauthentication no", "maxauthtries 3", "x11forwarding no"} <= effective


def test_exporters_follow_the_firewall_after_reboot(rebooted: Host, ops: Host, gpu_nodes: list[Host]) -> None:
    other = next(host for host in gpu_nodes if host.name != rebooted.name)
    for port in (9100, 9400):
        url = f"http://{rebooted.address}:{port}/metrics"
        answered, _ = wait_for(lambda url=url: ops.http_get(url).returncode == 0, 30, 2)
        assert answered, f"{ops.name} cannot scrape {url} after the reboot"
        assert other.http_get(url, timeout=3).returncode == 28, f"{other.name} reached {url} after the reboot"


def test_simulated_gpus_are_back_after_reboot(rebooted: Host) -> None:
    assert len(rebooted.check("nvidia-smi -L").splitlines()) == 8
