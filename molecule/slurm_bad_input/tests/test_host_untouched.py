"""After every bad-input case was refused, the host must be exactly as the image left it."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "path", ["/etc/slurm/slurm.conf", "/etc/slurm/gres.conf", "/etc/munge/munge.key", "/etc/munge"]
)
def test_no_file_was_created(host, path):
    assert not host.file(path).exists


@pytest.mark.parametrize("package", ["munge", "slurm-client", "slurmctld", "slurmd"])
def test_no_package_was_installed(host, package):
    assert not host.package(package).is_installed


def test_no_user_was_created(host):
    assert not host.user("slurm").exists
    assert not host.user("munge").exists
