#!/usr/bin/python
"""file_states: the type, SHA-1, mode, owner and group of many paths in one call (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: file_states
short_description: Type, SHA-1, mode, owner and group of many paths, in one call
version_added: "0.2.0"
description:
  - Reads each path with C(lstat) (a symbolic link is reported as a link, not followed) and, for a regular file,
    its SHA-1. One module call for all the files a role writes, where a M(ansible.builtin.stat) per file costs one
    call each.
  - The roles read their configuration files with it first, then run each M(ansible.builtin.template) or
    M(ansible.builtin.copy) only when the filter P(gpuops.fleet.file_differs#filter) says the file on the host
    differs from what the task would write; an idempotent re-run then asks the host once per role, not twice per
    file.
  - Never changes anything; safe in check mode.
author: gpuops.fleet maintainers
options:
  paths:
    description:
      - Absolute paths to read (may be empty). A path that does not exist is reported with RV(states.state=absent).
    type: list
    elements: path
    required: true
  list_directories:
    description:
      - Directories whose entries to list as well (names only, not recursive), for a role that removes what it no
        longer installs. Each entry is also read as if it were in O(paths).
      - A directory that does not exist lists as empty.
    type: list
    elements: path
    default: []
  units:
    description:
      - systemd units whose state to read as well (C(systemctl show), one call for all), so a role that reads its
        files first can skip enabling and starting a unit that is enabled and running already
        (P(gpuops.fleet.unit_differs#filter)).
    type: list
    elements: str
    default: []
  max_checksum_bytes:
    description: Regular files larger than this get no RV(states.sha1) (null), so a large file is not read.
    type: int
    default: 4194304
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read the files this role writes
  gpuops.fleet.file_states:
    paths: [/etc/default/node_exporter, /etc/systemd/system/node_exporter.service]
  register: __node_exporter_files

- name: Write the systemd unit
  ansible.builtin.template:
    src: node_exporter.service.j2
    dest: /etc/systemd/system/node_exporter.service
    owner: root
    group: root
    mode: "0644"
  when: >-
    __node_exporter_files.states | gpuops.fleet.file_differs('/etc/systemd/system/node_exporter.service', '0644',
    lookup('ansible.builtin.template', 'node_exporter.service.j2'))
"""

RETURN = r"""
states:
  description: Path -> what is there. Keys are the paths as given.
  type: dict
  returned: always
  contains:
    state:
      description: C(file), C(directory), C(link), C(absent) or C(other) (a device, socket, FIFO).
      type: str
    sha1:
      description: SHA-1 of a regular file's bytes; null for anything else and for a file over O(max_checksum_bytes).
      type: str
    mode:
      description: Permission bits in octal, four digits (C(0644)); null when absent.
      type: str
    owner:
      description: Owner's user name (the numeric id when it has no name); null when absent.
      type: str
    group:
      description: Group name (the numeric id when it has no name); null when absent.
      type: str
listings:
  description: Directory of O(list_directories) -> the sorted names of its entries (an absent one lists none).
  type: dict
  returned: always
units:
  description: Unit of O(units) -> its state. A unit systemd does not know has RV(units.load=not-found).
  type: dict
  returned: always
  contains:
    load:
      description: C(loaded), C(not-found), C(masked)... (systemd's LoadState).
      type: str
    active:
      description: C(active), C(inactive), C(failed), C(activating)... (systemd's ActiveState).
      type: str
    enabled:
      description: C(enabled), C(disabled), C(static), C(masked)... (systemd's UnitFileState; empty when none).
      type: str
"""

import grp
import hashlib
import os
import pwd
import re
import stat
from typing import Any

from ansible.module_utils.basic import AnsibleModule

_CHUNK = 1 << 16


def _name(lookup: Any, number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def _sha1(path: str) -> str:
    digest = hashlib.sha1()  # noqa: S324 - compared with Ansible's own file checksums, not a security use
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state(path: str, max_checksum_bytes: int) -> dict[str, Any]:
    """What is at ``path``: its type, SHA-1 (a regular file up to ``max_checksum_bytes``), mode, owner, group."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return {"state": "absent", "sha1": None, "mode": None, "owner": None, "group": None}
    if stat.S_ISREG(info.st_mode):
        kind = "file"
    elif stat.S_ISDIR(info.st_mode):
        kind = "directory"
    elif stat.S_ISLNK(info.st_mode):
        kind = "link"
    else:
        kind = "other"
    checksum = _sha1(path) if kind == "file" and info.st_size <= max_checksum_bytes else None
    return {
        "state": kind,
        "sha1": checksum,
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "owner": _name(pwd.getpwuid, info.st_uid),
        "group": _name(grp.getgrgid, info.st_gid),
    }


def list_directory(path: str) -> list[str]:
    """The sorted names in directory ``path``; none when it does not exist."""
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


_UNIT = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")
_PROPERTIES = {"LoadState": "load", "ActiveState": "active", "UnitFileState": "enabled"}


def read_units(module: AnsibleModule, units: list[str]) -> dict[str, dict[str, str]]:
    """LoadState, ActiveState and UnitFileState of ``units`` with one ``systemctl show`` (blocks in the order asked)."""
    if not units:
        return {}
    systemctl = module.get_bin_path("systemctl", required=True)
    command = [systemctl, "show", "--property=" + ",".join(_PROPERTIES), "--", *units]
    rc, out, err = module.run_command(command)
    if rc != 0:
        module.fail_json(msg=f"systemctl show {' '.join(units)} failed ({rc}): {err or out}")
    blocks = out.strip("\n").split("\n\n")
    if len(blocks) != len(units):
        module.fail_json(msg=f"systemctl show returned {len(blocks)} blocks for {len(units)} units: {out!r}")
    states = {}
    for unit, block in zip(units, blocks, strict=True):
        found = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[unit] = {key: found.get(prop, "") for prop, key in _PROPERTIES.items()}
    return states


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "paths": {"type": "list", "elements": "path", "required": True},
            "list_directories": {"type": "list", "elements": "path", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
            "max_checksum_bytes": {"type": "int", "default": 4 * 1024 * 1024},
        },
        supports_check_mode=True,
    )
    for option in ("paths", "list_directories"):
        relative = [p for p in module.params[option] if not os.path.isabs(p)]
        if relative:
            module.fail_json(msg=f"{option} must be absolute: {', '.join(relative)}")
    if module.params["max_checksum_bytes"] < 0:
        module.fail_json(msg="max_checksum_bytes must be 0 or more")
    bad_units = [u for u in module.params["units"] if not _UNIT.match(u)]
    if bad_units:
        module.fail_json(msg=f"units: not a systemd unit name: {', '.join(bad_units)}")
    states: dict[str, Any] = {}
    listings: dict[str, list[str]] = {}
    path = ""
    try:
        for path in module.params["list_directories"]:
            listings[path] = list_directory(path)
        entries = [os.path.join(d, name) for d, names in listings.items() for name in names]
        for path in [*module.params["paths"], *entries]:
            states[path] = read_state(path, module.params["max_checksum_bytes"])
    except OSError as err:
        module.fail_json(msg=f"{path}: cannot be read: {err}")
    units = read_units(module, list(dict.fromkeys(module.params["units"])))
    module.exit_json(changed=False, states=states, listings=listings, units=units)


if __name__ == "__main__":
    main()
