"""The hardening roles together: controls as an auditor checks them, and Lynis's verdict."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
from ssh_client import ssh, ssh_with_lab_key

LYNIS_TARGET = 85


@pytest.fixture(scope="module")
def lynis(host):
    """Run `lynis audit system` once; return (hardening index, report text)."""
    host.run_expect([0], "lynis audit system --quick --no-colors --skip-plugins > /tmp/lynis.out 2>&1")
    report = host.file("/var/log/lynis-report.dat").content_string
    index = int(re.search(r"^hardening_index=(\d+)$", report, re.MULTILINE).group(1))
    return index, report


def test_lynis_hardening_index_meets_the_target(lynis):
    index, report = lynis
    print(f"\nLynis hardening index: {index} (target {LYNIS_TARGET})")
    suggestions = "\n".join(line for line in report.splitlines() if line.startswith("suggestion[]="))
    assert index >= LYNIS_TARGET, f"Lynis hardening index {index} < {LYNIS_TARGET}; suggestions:\n{suggestions}"


def test_forwarding_for_containers_is_configured(host):
    assert "net.ipv4.ip_forward = 1" in host.file("/etc/sysctl.d/60-gpuops-hardening.conf").content_string
    assert 'iifname "docker0" accept' in host.check_output("nft list chain inet gpuops_filter forward")


def test_nvidia_modprobe_stays_in_the_setuid_allowlist(host):
    assert "/usr/bin/nvidia-modprobe" in host.ansible.get_variables().get(
        "os_hardening_suid_allowlist", ["/usr/bin/nvidia-modprobe"]
    )


def test_core_dumps_are_off(host):
    assert "hard    core    0" in host.file("/etc/security/limits.d/gpuops-core.conf").content_string


def test_gpu_packages_are_excluded_from_unattended_upgrades(host):
    config = host.file("/etc/apt/apt.conf.d/52gpuops-unattended-upgrades").content_string
    for pattern in ('"nvidia-"', '"libnvidia-"', '"cuda-"', '"datacenter-gpu-manager"'):
        assert pattern in config


def test_audit_rules_watch_gpu_devices_and_module_loading(host):
    rules = host.file("/etc/audit/rules.d/gpuops.rules").content_string
    assert "-w /dev/nvidiactl -p rwa -k gpu-device" in rules
    assert "-S init_module,finit_module,delete_module -k kernel-modules" in rules


def test_cron_is_restricted(host):
    assert host.file("/etc/cron.allow").content_string.split() == ["root"]
    assert not host.file("/etc/cron.deny").exists


def test_a_fresh_operator_login_succeeds_after_converge(host):
    result = ssh_with_lab_key(host.ansible.get_variables()["ansible_host"], "operator")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "operator"


def test_password_and_root_logins_are_refused(host):
    address = host.ansible.get_variables()["ansible_host"]
    password = ssh(address, "operator", "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password")
    assert password.returncode == 255
    assert "Permission denied (publickey)" in password.stderr
    root = ssh(address, "root", "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password")
    assert root.returncode == 255
