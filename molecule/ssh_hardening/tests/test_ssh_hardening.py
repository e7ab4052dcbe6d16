"""ssh_hardening, seen from an SSH client on the controller and from `sshd -T` on the host."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
from ssh_client import ssh, ssh_with_lab_key


@pytest.fixture(scope="module")
def address(host):
    return host.ansible.get_variables()["ansible_host"]


@pytest.fixture(scope="module")
def effective(host):
    """sshd's effective configuration, as `sshd -T` prints it (keys lower-case)."""
    lines = host.check_output("sshd -T").splitlines()
    return {key: value for key, _, value in (line.partition(" ") for line in lines)}


def test_a_fresh_connection_as_the_operator_succeeds(address):
    result = ssh_with_lab_key(address, "operator")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "operator"


def test_password_login_is_refused(address):
    result = ssh(
        address,
        "operator",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
    )
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def test_root_login_is_refused_even_with_a_valid_key(address):
    result = ssh_with_lab_key(address, "root")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_weak_cipher_is_refused(address):
    result = ssh_with_lab_key(address, "operator", "-o", "Ciphers=aes128-cbc")
    assert result.returncode == 255
    assert "no matching cipher" in result.stderr


def test_effective_authentication_settings(effective):
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["permitrootlogin"] == "no"
    assert effective["permitemptypasswords"] == "no"
    assert effective["authenticationmethods"] == "publickey"
    assert effective["allowgroups"] == "sudo"


def test_effective_algorithms(effective):
    assert effective["ciphers"].split(",")[0] == "chacha20-poly1305@openssh.com"
    assert not [c for c in effective["ciphers"].split(",") if "cbc" in c]
    assert all(mac.endswith("-etm@openssh.com") for mac in effective["macs"].split(","))
    assert "sha1" not in effective["kexalgorithms"]


def test_effective_limits_and_forwarding(effective):
    assert effective["maxauthtries"] == "3"
    assert effective["logingracetime"] == "30"
    assert effective["x11forwarding"] == "no"
    assert effective["allowtcpforwarding"] == "no"
    assert effective["allowagentforwarding"] == "no"
    assert effective["loglevel"] == "VERBOSE"
    assert effective["banner"] == "/etc/issue.net"


def test_dropin_is_root_only_and_valid(host):
    dropin = host.file("/etc/ssh/sshd_config.d/00-gpuops-hardening.conf")
    assert dropin.user == "root"
    assert dropin.mode == 0o600
    assert host.run("sshd -t").rc == 0
