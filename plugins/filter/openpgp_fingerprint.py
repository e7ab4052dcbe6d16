"""openpgp_fingerprint: the fingerprint of the first public key in an OpenPGP key (armored or binary).

Lets a role check a repository signing key on the controller, in pure Python, before the key is written
anywhere, instead of depending on gpg being installed on the controller or the host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: openpgp_fingerprint
short_description: Fingerprint of an OpenPGP public key
description:
  - Returns the upper-case hex fingerprint of the first (primary) public key packet of an OpenPGP key, given
    ASCII-armored or binary. Version 4 keys (SHA-1, 40 hex digits) and version 6 keys (SHA-256, 64 hex digits).
options:
  _input:
    description: The key, ASCII-armored (C(-----BEGIN PGP PUBLIC KEY BLOCK-----)) or binary.
    type: raw
    required: true
"""

EXAMPLES = r"""
- ansible.builtin.assert:
    that: key.content | gpuops.fleet.openpgp_fingerprint == 'EB693B3035CD5710E231E123A4B469963BF863CC'
"""

# Also provides openpgp_primary_fingerprints: every primary key's fingerprint in a key file (subkeys excluded).

RETURN = r"""
_value:
  description: Upper-case hex fingerprint.
  type: string
"""

PUBLIC_KEY_TAG = 6
_V4 = 4
_V6 = 6
_ONE_OCTET_MAX = 192
_TWO_OCTET_MAX = 224
_FIVE_OCTET = 255


def dearmor(text: str) -> bytes:
    """The binary packets of an ASCII-armored OpenPGP block (checksum line and headers ignored)."""
    lines = text.strip().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN PGP PUBLIC KEY BLOCK"))
    except StopIteration:
        raise AnsibleFilterError("openpgp_fingerprint: no 'BEGIN PGP PUBLIC KEY BLOCK' armor found") from None
    body: list[str] = []
    in_headers = True
    for line in lines[start + 1 :]:
        if line.startswith("-----END"):
            break
        if in_headers:
            if not line.strip():
                in_headers = False
            elif ":" not in line:
                in_headers = False
                body.append(line.strip())
            continue
        if line.startswith("="):
            break
        body.append(line.strip())
    try:
        return base64.b64decode("".join(body), validate=True)
    except binascii.Error as exc:
        raise AnsibleFilterError(f"openpgp_fingerprint: armor is not valid base64: {exc}") from None


def first_packet(data: bytes) -> tuple[int, bytes]:
    """(tag, body) of the first OpenPGP packet (old or new format header)."""
    tag, body, _ = _packet_at(data, 0)
    return tag, body


def _packet_at(data: bytes, start: int) -> tuple[int, bytes, int]:
    """(tag, body, offset of the next packet) of the packet at data[start:]."""
    data = data[start:]
    if not data or not data[0] & 0x80:
        raise AnsibleFilterError("openpgp_fingerprint: not an OpenPGP packet")
    header = data[0]
    if header & 0x40:  # new format
        tag = header & 0x3F
        first = data[1]
        if first < _ONE_OCTET_MAX:
            length, offset = first, 2
        elif first < _TWO_OCTET_MAX:
            length, offset = ((first - _ONE_OCTET_MAX) << 8) + data[2] + _ONE_OCTET_MAX, 3
        elif first == _FIVE_OCTET:
            length, offset = int.from_bytes(data[2:6], "big"), 6
        else:
            raise AnsibleFilterError("openpgp_fingerprint: partial-length key packets are not valid")
    else:  # old format
        tag = (header >> 2) & 0x0F
        size = {0: 1, 1: 2, 2: 4}.get(header & 0x03)
        if size is None:
            raise AnsibleFilterError("openpgp_fingerprint: indeterminate-length packets are not supported")
        length, offset = int.from_bytes(data[1 : 1 + size], "big"), 1 + size
    body = data[offset : offset + length]
    if len(body) != length:
        raise AnsibleFilterError("openpgp_fingerprint: truncated packet")
    return tag, body, start + offset + length


def _key_bytes(key: object) -> bytes:
    if isinstance(key, str):
        return dearmor(key) if "-----BEGIN" in key else key.encode("latin-1")
    if isinstance(key, bytes):
        return dearmor(key.decode("ascii", "replace")) if b"-----BEGIN" in key else key
    raise AnsibleFilterError(f"openpgp_fingerprint: expected a key as text or bytes, got {type(key).__name__}")


def openpgp_fingerprint(key: object) -> str:
    """Fingerprint of the primary key of an armored or binary OpenPGP public key."""
    tag, body = first_packet(_key_bytes(key))
    if tag != PUBLIC_KEY_TAG:
        raise AnsibleFilterError(f"openpgp_fingerprint: first packet has tag {tag}, not a public key (6)")
    return _fingerprint(body)


def openpgp_primary_fingerprints(key: object) -> list[str]:
    """Fingerprints of every primary key in a key file (subkeys excluded), e.g. to require exactly one."""
    data = _key_bytes(key)
    fingerprints, offset = [], 0
    while offset < len(data):
        tag, body, offset = _packet_at(data, offset)
        if tag == PUBLIC_KEY_TAG:
            fingerprints.append(_fingerprint(body))
    return fingerprints


def _fingerprint(body: bytes) -> str:
    version = body[0]
    if version == _V4:
        return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()  # noqa: S324 - RFC 4880 fingerprint
    if version == _V6:
        return hashlib.sha256(b"\x9b" + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    raise AnsibleFilterError(f"openpgp_fingerprint: key version {version} is not supported (only 4 and 6)")


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, object]:
        return {
            "openpgp_fingerprint": openpgp_fingerprint,
            "openpgp_primary_fingerprints": openpgp_primary_fingerprints,
        }
