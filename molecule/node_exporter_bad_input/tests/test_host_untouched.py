"""After every bad-input case was refused, the host must be exactly as the image left it."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "/etc/systemd/system/node_exporter.service",
        "/etc/systemd/system/prometheus-node-exporter.service",
        "/etc/node_exporter",
        "/var/lib/node_exporter",
        "/usr/local/bin/node_exporter",
    ],
)
def test_no_file_was_created(host, path):
    assert not host.file(path).exists


def test_no_user_or_group_was_created(host):
    assert not host.user("node-exporter").exists
    assert not host.group("node-exporter").exists


def test_no_package_was_installed(host):
    assert not host.package("prometheus-node-exporter").is_installed


def test_nothing_listens_on_the_exporter_port(host):
    assert ":9100 " not in host.check_output("ss -Hltn")
