"""After every refused configuration: sshd untouched, and the operator still logs in."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
from ssh_client import ssh_with_lab_key


def test_no_dropin_was_written(host):
    assert not host.file("/etc/ssh/sshd_config.d/00-gpuops-hardening.conf").exists


def test_banner_is_the_distribution_one(host):
    assert "Authorized access only" not in host.file("/etc/issue.net").content_string


def test_operator_still_logs_in(host):
    result = ssh_with_lab_key(host.ansible.get_variables()["ansible_host"], "operator")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "operator"
