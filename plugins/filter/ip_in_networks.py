"""ip_in_networks: whether an IP address lies in any of a list of CIDR networks (IPv4 and IPv6).

Pure Python (ipaddress), so a role can check that a firewall keeps its own controller reachable without the
netaddr library on the controller.
"""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: ip_in_networks
short_description: Whether an address is inside any of the given networks
description:
  - Returns true when the address (IPv4 or IPv6, an IPv4-mapped IPv6 address counts as IPv4) lies in at least
    one of the CIDR networks. Invalid addresses or networks raise an error naming the bad value.
options:
  _input:
    description: The IP address.
    type: string
    required: true
  networks:
    description: CIDR networks, e.g. C(10.0.0.0/8) or C(2001:db8::/32); a bare address counts as /32 or /128.
    type: list
    elements: string
    required: true
"""

EXAMPLES = r"""
- ansible.builtin.assert:
    that: controller_ip | gpuops.fleet.ip_in_networks(firewall_ssh_admin_cidrs)
"""

# Also provides invalid_networks(list): the entries that are not CIDR networks.

RETURN = r"""
_value:
  description: True when the address is in one of the networks.
  type: boolean
"""


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise AnsibleFilterError(f"ip_in_networks: '{value}' is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def ip_in_networks(address: str, networks: list[str]) -> bool:
    """True when address is inside any of networks."""
    ip = _address(address)
    for network in networks:
        try:
            net = ipaddress.ip_network(str(network).strip(), strict=False)
        except ValueError:
            raise AnsibleFilterError(f"ip_in_networks: '{network}' is not a CIDR network") from None
        if ip.version == net.version and ip in net:
            return True
    return False


def invalid_networks(networks: list[str]) -> list[str]:
    """The entries of networks that are not CIDR networks (or addresses), for clear preflight messages."""
    bad = []
    for network in networks:
        try:
            ipaddress.ip_network(str(network).strip(), strict=False)
        except ValueError:
            bad.append(str(network))
    return bad


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, object]:
        return {"ip_in_networks": ip_in_networks, "invalid_networks": invalid_networks}
