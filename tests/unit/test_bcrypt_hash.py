"""The bcrypt_hash filter: idempotent, verifiable hashes and clear refusals."""

from __future__ import annotations

import bcrypt
import bcrypt_hash as plugin
import pytest
from ansible.errors import AnsibleFilterError


def test_hash_verifies_against_the_password():
    hashed = plugin.bcrypt_hash("s3cret-value", seed="gpu-node-1:prometheus")
    assert hashed.startswith("$2b$10$")
    assert bcrypt.checkpw(b"s3cret-value", hashed.encode())
    assert not bcrypt.checkpw(b"other", hashed.encode())


def test_same_input_gives_the_same_hash():
    first = plugin.bcrypt_hash("pw", seed="host:user")
    assert first == plugin.bcrypt_hash("pw", seed="host:user")


def test_seed_and_password_change_the_salt():
    base = plugin.bcrypt_hash("pw", seed="host-a:user")
    assert base[:29] != plugin.bcrypt_hash("pw", seed="host-b:user")[:29]
    assert base[:29] != plugin.bcrypt_hash("pw2", seed="host-a:user")[:29]


def test_cost_is_encoded():
    assert plugin.bcrypt_hash("pw", seed="s", cost=4).startswith("$2b$04$")


@pytest.mark.parametrize(
    ("password", "cost", "message"),
    [("", 10, "non-empty"), ("x" * 73, 10, "72 bytes"), ("pw", 3, "cost"), ("pw", 32, "cost")],
)
def test_bad_input_is_refused(password, cost, message):
    with pytest.raises(AnsibleFilterError, match=message):
        plugin.bcrypt_hash(password, seed="s", cost=cost)


def test_filter_is_registered():
    assert plugin.FilterModule().filters()["bcrypt_hash"] is plugin.bcrypt_hash
