"""bcrypt_hash: a bcrypt hash of a password whose salt is derived from a seed, so templates stay idempotent.

A random salt would give a different hash on every run and make every converge report a change; a salt
derived from (seed, password) is stable across runs, differs between hosts and users (put both in the seed),
and changes when the password changes.
"""

from __future__ import annotations

import hashlib

from ansible.errors import AnsibleFilterError

try:
    import bcrypt
except ImportError:  # pragma: no cover - depends on the controller's environment
    bcrypt = None

DOCUMENTATION = r"""
name: bcrypt_hash
short_description: bcrypt hash with a salt derived from a seed (idempotent)
description:
  - Hashes a password with bcrypt (C($2b$)) for web configs such as exporter-toolkit's C(basic_auth_users).
  - The salt is derived from O(seed) and the password, so the same input gives the same hash on every run.
options:
  _input:
    description: The password.
    type: string
    required: true
  seed:
    description: Seed for the salt; use something unique per host and user.
    type: string
    required: true
  cost:
    description: bcrypt cost factor (4..31).
    type: integer
    default: 10
"""

EXAMPLES = r"""
basic_auth_users:
  prometheus: "{{ password | gpuops.fleet.bcrypt_hash(seed=inventory_hostname ~ ':prometheus') }}"
"""

RETURN = r"""
_value:
  description: The bcrypt hash, 60 characters.
  type: string
"""

MIN_COST = 4
MAX_COST = 31
MAX_PASSWORD_BYTES = 72
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# The 22nd salt character carries only 2 bits; these are the canonical characters for it.
_LAST_SALT_CHARS = ".Oeu"


def derive_salt(seed: str, password: str, cost: int) -> bytes:
    """Return a bcrypt salt string ($2b$NN$ + 22 characters) derived from seed and password."""
    digest = hashlib.sha256(f"gpuops.fleet/bcrypt/{seed}\0{password}".encode()).digest()
    chars = [_BCRYPT_ALPHABET[b % 64] for b in digest[:21]]
    chars.append(_LAST_SALT_CHARS[digest[21] % 4])
    return f"$2b${cost:02d}${''.join(chars)}".encode()


def bcrypt_hash(password: object, seed: str, cost: int = 10) -> str:
    """Hash password with bcrypt using a salt derived from seed."""
    if bcrypt is None:  # pragma: no cover - depends on the controller's environment
        raise AnsibleFilterError("bcrypt_hash needs the Python 'bcrypt' package on the controller")
    if not isinstance(password, str) or not password:
        raise AnsibleFilterError("bcrypt_hash: the password must be a non-empty string")
    if not MIN_COST <= int(cost) <= MAX_COST:
        raise AnsibleFilterError(f"bcrypt_hash: cost must be between {MIN_COST} and {MAX_COST}, got {cost}")
    secret = password.encode()
    if len(secret) > MAX_PASSWORD_BYTES:
        raise AnsibleFilterError(
            f"bcrypt_hash: bcrypt uses at most {MAX_PASSWORD_BYTES} bytes of a password; use a shorter one"
        )
    return bcrypt.hashpw(secret, derive_salt(str(seed), password, int(cost))).decode()


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, object]:
        return {"bcrypt_hash": bcrypt_hash}
