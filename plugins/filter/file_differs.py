"""file_differs: whether a file (or directory) on the host differs from what a task would make of it.

Used with the states the module gpuops.fleet.file_states read in one call, so a role runs a template, copy or
file task only where something would change. Unknown is "differs": a path that was not read runs its task.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: file_differs
short_description: Whether a path on the host differs from the content, mode and owner a task would give it
description:
  - Takes the RV(gpuops.fleet.file_states#module:states) that M(gpuops.fleet.file_states) read and returns true
    when the path is not a regular file with exactly O(content) (by SHA-1), O(mode), O(owner) and O(group); with no
    O(content), when it is not a directory with that mode and ownership.
  - A path missing from the states (not read) differs, so forgetting to read a path costs a module call, never a
    skipped change.
options:
  _input:
    description: >-
      The states, path -> C({state, sha1, mode, owner, group}), or the registered result of
      M(gpuops.fleet.file_states) (one that was skipped, or not run for the tags selected, read nothing:
      C(__files | default({})) then makes every path differ).
    type: dict
    required: true
  path:
    description: The path the task writes.
    type: path
    required: true
  mode:
    description: The mode the task sets, octal as a string (C("0644")).
    type: string
    required: true
  content:
    description: What the task writes, such as C(lookup('ansible.builtin.template', 'x.j2')); omit for a directory.
    type: string
  owner:
    description: The owner the task sets.
    type: string
    default: root
  group:
    description: The group the task sets.
    type: string
    default: root
  state:
    description:
      - What must be at the path. C(file) (the default with O(content)) and C(directory) (the default without)
        must be that type. C(present) is a task that only sets mode and ownership on whatever is there, a file or
        a directory, whose content it leaves alone; an absent path then differs too.
    type: string
    choices: [file, directory, present]
"""

EXAMPLES = r"""
- ansible.builtin.template:
    src: node_exporter.service.j2
    dest: /etc/systemd/system/node_exporter.service
    mode: "0644"
  when: >-
    __files.states | gpuops.fleet.file_differs('/etc/systemd/system/node_exporter.service', '0644',
    lookup('ansible.builtin.template', 'node_exporter.service.j2'))

- ansible.builtin.file:
    path: /etc/shadow
    owner: root
    group: shadow
    mode: "0640"
  when: __files.states | gpuops.fleet.file_differs('/etc/shadow', '0640', group='shadow', state='present')
"""

RETURN = r"""
_value:
  description: True when the task would change the path (or the path was not read).
  type: bool
"""


_STATES = ("file", "directory", "present")


def _octal(mode: Any) -> int:
    if isinstance(mode, bool) or not isinstance(mode, str | int):
        raise AnsibleFilterError(f"file_differs: mode must be an octal string such as '0644', got {mode!r}")
    try:
        return int(mode, 8) if isinstance(mode, str) else mode
    except ValueError:
        raise AnsibleFilterError(f"file_differs: mode must be an octal string such as '0644', got {mode!r}") from None


def file_differs(
    states: Any,
    path: str,
    mode: Any,
    content: str | None = None,
    owner: str = "root",
    group: str = "root",
    state: str | None = None,
) -> bool:
    if isinstance(states, dict) and ("changed" in states or "skipped" in states or "states" in states):
        states = states.get("states") or {}  # the registered result; one that was skipped read nothing
    if not isinstance(states, dict):
        raise AnsibleFilterError(
            f"file_differs: the input must be the states dict that gpuops.fleet.file_states returns, got {states!r}"
        )
    wanted_mode = _octal(mode)
    kind = state or ("directory" if content is None else "file")
    if kind not in _STATES:
        raise AnsibleFilterError(f"file_differs: state must be one of {', '.join(_STATES)}, got {state!r}")
    if content is not None and kind != "file":
        raise AnsibleFilterError(f"file_differs: content for {path} needs state 'file', got {state!r}")
    found = states.get(path)
    if not isinstance(found, dict):
        return True
    if kind == "present":
        if found.get("state") not in ("file", "directory"):
            return True
    elif content is None:
        if found.get("state") != kind:
            return True
    else:
        if not isinstance(content, str):
            raise AnsibleFilterError(f"file_differs: content for {path} must be text, got {type(content).__name__}")
        checksum = hashlib.sha1(content.encode("utf-8")).hexdigest()  # noqa: S324 - equality with file_states
        if found.get("state") != "file" or found.get("sha1") != checksum:
            return True
    found_mode = found.get("mode")
    return (
        found_mode is None
        or int(str(found_mode), 8) != wanted_mode
        or found.get("owner") != owner
        or found.get("group") != group
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"file_differs": file_differs}
