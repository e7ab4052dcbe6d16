"""After every bad-input case was refused, the host must be exactly as prepare left it."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "/etc/apt/keyrings/nvidia-container-toolkit.asc",
        "/etc/apt/keyrings/docker.asc",
        "/etc/apt/sources.list.d/nvidia-container-toolkit.sources",
        "/etc/apt/sources.list.d/docker.sources",
        "/etc/apt/preferences.d/nvidia-container-toolkit.pref",
        "/etc/containerd",
        "/etc/docker",
        "/etc/nvidia-container-runtime",
        "/etc/cdi",
        "/var/lib/gpuops-fleet",
    ],
)
def test_no_file_was_created(host, path):
    assert not host.file(path).exists


@pytest.mark.parametrize(
    "package",
    [
        "containerd",
        "docker.io",
        "nvidia-container-toolkit",
        "nvidia-container-toolkit-base",
        "libnvidia-container-tools",
        "libnvidia-container1",
    ],
)
def test_no_package_was_installed(host, package):
    assert not host.package(package).is_installed


def test_no_key_was_added_anywhere(host):
    keyrings = host.run("ls /etc/apt/keyrings /etc/apt/trusted.gpg.d 2>/dev/null").stdout.split()
    assert not [name for name in keyrings if "nvidia" in name or "docker" in name]
    assert not host.file("/root/.gnupg").exists
