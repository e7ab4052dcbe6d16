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


def test_forwarding_for_containers_is_configured_and_in_effect(host):
    assert "net.ipv4.ip_forward = 1" in host.file("/etc/sysctl.d/60-gpuops-hardening.conf").content_string
    # In effect: read from the running kernel (this network namespace), as the role's own read-back does.
    assert host.check_output("sysctl -n net.ipv4.ip_forward") == "1"
    assert 'iifname "docker0" accept' in host.check_output("nft list chain inet gpuops_filter forward")


def test_nvidia_modprobe_keeps_its_setuid_bit(host):
    # prepare installed it setuid, as the driver package does; os-09 must leave it.
    assert host.file("/usr/bin/nvidia-modprobe").mode & 0o4000


MOUNT_OPTIONS = {"/dev/shm": {"nodev", "nosuid", "noexec"}, "/tmp": {"nodev", "nosuid"}}  # noqa: S108 (mount points)


@pytest.mark.parametrize("path", sorted(MOUNT_OPTIONS))
def test_shared_memory_and_tmp_carry_their_mount_options(host, path):
    options = MOUNT_OPTIONS[path]
    # prepare loosened both; converge remounted them and wrote the options to fstab for the next boot.
    live = host.check_output(f"findmnt --noheadings --output OPTIONS --mountpoint {path}").split(",")
    assert options <= set(live), f"{path} is mounted {live}"
    fstab = [line.split() for line in host.file("/etc/fstab").content_string.splitlines() if not line.startswith("#")]
    entry = next(fields for fields in fstab if len(fields) > 3 and fields[1] == path)
    assert options <= set(entry[3].split(","))


def _try_password(host, service: str, user: str, password: str) -> int:
    return host.run(f"printf '%s\\n' '{password}' | timeout 20 pamtester {service} {user} authenticate").rc


@pytest.mark.parametrize("service", ["sudo", "login"])
def test_repeated_password_failures_lock_the_account(host, service):
    """pam_faillock in the stacks sudo and a console login use: after `deny` failures even the right password is
    refused, until an administrator resets the count."""
    user, right = "faillock-probe", "Correct-Horse-9-Battery"
    host.run_expect([0], f"faillock --user {user} --reset")
    assert _try_password(host, service, user, right) == 0
    for _ in range(3):
        assert _try_password(host, service, user, "wrong-password") != 0
    assert _try_password(host, service, user, right) != 0, "the right password worked on a locked account"
    host.run_expect([0], f"faillock --user {user} --reset")
    assert _try_password(host, service, user, right) == 0


def test_failed_passwords_for_the_operator_do_not_lock_out_key_logins_or_sudo(host):
    """Someone guessing the operator's password locks its password path, not its key logins or sudo."""
    # One command: every sudo through which testinfra runs a command is a successful login of the operator,
    # and pam_faillock's account phase clears the count on success.
    tally = host.check_output(
        "faillock --user operator --reset; for i in 1 2 3 4; do printf 'guess\\n' | pamtester sudo operator "
        "authenticate 2>/dev/null && echo ACCEPTED; done; faillock --user operator"
    )
    assert "ACCEPTED" not in tally
    records = [line for line in tally.splitlines() if line.rstrip().endswith(" V")]
    assert len(records) >= 3, f"the failures were not counted:\n{tally}"
    address = host.ansible.get_variables()["ansible_host"]
    result = ssh_with_lab_key(address, "operator", command="sudo -n id -un")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "root"


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
