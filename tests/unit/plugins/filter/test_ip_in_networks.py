"""ip_in_networks: containment for IPv4, IPv6 and IPv4-mapped addresses, and clear errors."""

from __future__ import annotations

import ip_in_networks as plugin
import pytest
from ansible.errors import AnsibleFilterError


@pytest.mark.parametrize(
    ("address", "networks", "expected"),
    [
        ("10.1.2.3", ["10.0.0.0/8"], True),
        ("10.1.2.3", ["192.168.0.0/16", "10.1.2.0/24"], True),
        ("172.17.0.1", ["10.0.0.0/8"], False),
        ("172.17.0.1", ["172.17.0.1"], True),
        ("2001:db8::5", ["2001:db8::/32"], True),
        ("2001:db8::5", ["10.0.0.0/8"], False),
        ("::ffff:10.9.8.7", ["10.0.0.0/8"], True),
        ("10.1.2.3", [], False),
    ],
)
def test_containment(address, networks, expected):
    assert plugin.ip_in_networks(address, networks) is expected


def test_bad_address_is_named():
    with pytest.raises(AnsibleFilterError, match="'not-an-ip' is not an IP address"):
        plugin.ip_in_networks("not-an-ip", ["10.0.0.0/8"])


def test_bad_network_is_named():
    with pytest.raises(AnsibleFilterError, match=r"'10\.0\.0\.0/33' is not a CIDR network"):
        plugin.ip_in_networks("10.0.0.1", ["10.0.0.0/33"])


def test_invalid_networks_lists_only_the_bad_entries():
    assert plugin.invalid_networks(["10.0.0.0/8", "2001:db8::/32", "10.0.0.0/33", "bogus", "192.0.2.7"]) == [
        "10.0.0.0/33",
        "bogus",
    ]
