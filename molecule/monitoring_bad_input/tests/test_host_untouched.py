"""After every bad-input case was refused, the host must be exactly as the image left it."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "/etc/prometheus",
        "/etc/systemd/system/prometheus.service",
        "/etc/systemd/system/prometheus-alertmanager.service",
        "/run/systemd/system/prometheus.service",
        "/run/systemd/system/prometheus-alertmanager.service",
        "/var/lib/prometheus",
        "/opt/monitoring",
        "/usr/local/bin/prometheus",
        "/usr/local/bin/promtool",
        "/usr/local/bin/alertmanager",
        "/usr/local/bin/amtool",
    ],
)
def test_no_file_was_created(host, path):
    assert not host.file(path).exists


@pytest.mark.parametrize("package", ["prometheus", "prometheus-alertmanager"])
def test_no_package_was_installed(host, package):
    assert not host.package(package).is_installed


def test_no_user_was_created(host):
    assert not host.user("prometheus").exists


def test_nothing_listens_on_the_monitoring_ports(host):
    listening = host.check_output("ss -Hltn")
    for port in (9090, 9093, 9094):
        assert f":{port} " not in listening
