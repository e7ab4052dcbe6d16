"""After every bad-input case was refused, nothing of the driver role is on the host."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "/etc/apt/sources.list.d/gpuops-nvidia-driver.sources",
        "/etc/apt/preferences.d/gpuops-nvidia-driver.pref",
        "/etc/apt/keyrings/gpuops-nvidia-cuda.asc",
        "/etc/modprobe.d/gpuops-nvidia.conf",
        "/etc/modprobe.d/gpuops-blacklist-nouveau.conf",
        "/etc/dkms/framework.conf.d/gpuops-mok.conf",
        "/etc/systemd/system/nvidia-persistenced.service.d",
    ],
)
def test_no_file_was_created(host, path):
    assert not host.file(path).exists


@pytest.mark.parametrize("name", ["nvidia-smi", "libnvidia-ml1", "nvidia-persistenced"])
def test_no_driver_package_was_installed(host, name):
    assert not host.package(name).is_installed


def test_no_user_was_created(host):
    assert not host.user("nvpd").exists


def test_apt_sources_are_as_the_image_left_them(host):
    assert "non-free " not in host.check_output("cat /etc/apt/sources.list.d/*.sources")
