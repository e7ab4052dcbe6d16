"""firewall: the live nftables table, seen from the host and from the controller's side of the wire."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(scope="module")
def address(host):
    return host.ansible.get_variables()["ansible_host"]


@pytest.fixture(scope="module")
def ruleset(host):
    return host.check_output("nft list table inet gpuops_filter")


def connect(address, port, timeout=3.0):
    """'open', 'refused' or 'dropped' (no answer at all) for a TCP connect to the lab instance."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "dropped"


def test_inbound_default_is_drop(ruleset):
    assert "hook input priority filter; policy drop;" in ruleset


def test_ssh_is_open_to_the_controller_only(ruleset, host):
    gateway = host.check_output("ip -4 route show default").split()[2]
    assert "tcp dport 22 ip saddr @ssh_admin_v4 accept" in ruleset
    assert gateway in ruleset.split("set ssh_admin_v4")[1].split("}")[0]


def test_exporter_ports_are_open_to_prometheus_only(ruleset):
    assert "tcp dport { 9100, 9400 } ip saddr @prometheus_v4 accept" in ruleset
    assert "192.0.2.10" in ruleset.split("set prometheus_v4")[1].split("}")[0]


def test_container_forwarding_is_kept(ruleset):
    forward = ruleset.split("chain forward")[1]
    assert 'iifname "docker0" accept' in forward
    assert "ct state established,related accept" in forward


def test_other_tables_are_left_alone(host):
    assert "table ip foreign_keep" in host.check_output("nft list tables")


def test_ssh_answers_from_the_controller(address):
    assert connect(address, 22) == "open"


def test_exporter_port_is_dropped_for_the_controller(address):
    # Nothing listens on 9100 here: without the firewall the kernel would answer with a reset ('refused').
    assert connect(address, 9100) == "dropped"


def test_no_revert_is_pending_and_the_ruleset_loads_at_boot(host):
    assert not host.service("gpuops-firewall-revert.timer").is_running
    assert host.service("gpuops-firewall").is_enabled
    live = host.file("/etc/gpuops/firewall.nft")
    assert live.mode == 0o600
    gateway = host.check_output("ip -4 route show default").split()[2]
    # After the side effect's reverted apply, the file loaded at boot is the confirmed one, not the bad candidate.
    assert gateway in live.content_string
    assert "192.0.2.0/24" not in live.content_string


def test_revert_was_logged(host):
    assert "reverted: the apply was not confirmed in time" in host.check_output(
        "journalctl -t gpuops-firewall --no-pager -o cat"
    )
