"""After every bad-input case was refused, the host must be exactly as prepare left it."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "/etc/systemd/system/dcgm-exporter.service",
        "/etc/systemd/system/nvidia-dcgm.service.d",
        "/etc/dcgm-exporter",
        "/etc/apt/sources.list.d/gpuops-dcgm.sources",
        "/etc/apt/keyrings/gpuops-nvidia-cuda.asc",
        "/usr/local/bin/dcgm-exporter",
    ],
)
def test_no_file_was_created(host, path):
    assert not host.file(path).exists


def test_no_user_or_group_was_created(host):
    assert not host.user("dcgm-exporter").exists
    assert not host.group("dcgm-exporter").exists


def test_no_package_was_installed(host):
    assert not host.package("datacenter-gpu-manager").is_installed
    assert not host.package("datacenter-gpu-manager-exporter").is_installed


def test_nothing_listens_on_the_exporter_or_host_engine_port(host):
    listening = host.check_output("ss -Hltn")
    assert ":9400 " not in listening
    assert ":5555 " not in listening
