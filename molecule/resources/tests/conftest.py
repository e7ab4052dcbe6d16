"""Fixtures shared by the testinfra suites under molecule/resources/tests/<role>/."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def config(host):
    """The scenario's role variables as the host's inventory gives them (not templated)."""
    return host.ansible.get_variables()
