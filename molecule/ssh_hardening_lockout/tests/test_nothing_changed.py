"""After every refused configuration: sshd untouched, and the operator still logs in."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

KEY = (
    Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
    / ".cache/lab/ssh/id_ed25519"
)


def test_no_dropin_was_written(host):
    assert not host.file("/etc/ssh/sshd_config.d/00-gpuops-hardening.conf").exists


def test_banner_is_the_distribution_one(host):
    assert "Authorized access only" not in host.file("/etc/issue.net").content_string


def test_operator_still_logs_in(host):
    address = host.ansible.get_variables()["ansible_host"]
    result = subprocess.run(
        [
            "ssh",
            "-i",
            str(KEY),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            f"operator@{address}",
            "id -un",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "operator"
