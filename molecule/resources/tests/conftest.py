"""Fixtures shared by the testinfra suites under molecule/resources/tests/<role>/."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def config(host):
    """The scenario's role variables as the host's inventory gives them (not templated)."""
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def default_ipv4(host):
    """The host's primary IPv4 address: where the exporter roles listen unless told otherwise."""
    facts = host.ansible("setup", "gather_subset=!all,network")["ansible_facts"]
    return facts["ansible_default_ipv4"]["address"]
