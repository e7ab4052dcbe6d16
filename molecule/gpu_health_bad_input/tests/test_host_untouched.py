"""After every bad-input case was refused, the host must be exactly as the image left it."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "/usr/local/lib/gpu_health",
        "/etc/gpu_health",
        "/etc/systemd/system/gpu-health.service",
        "/var/lib/gpu_health",
        "/run/gpu_health",
        "/var/lib/node_exporter/textfile",
    ],
)
def test_no_file_was_created(host, path):
    assert not host.file(path).exists


def test_no_unit_is_known_to_systemd(host):
    assert host.run("systemctl cat gpu-health").rc != 0


def test_no_temporary_copy_of_the_config_was_left(host):
    leftovers = host.check_output("find /tmp /var/tmp /root -name '*agent.json*' -o -name 'gpu_health*'")
    assert leftovers == ""
