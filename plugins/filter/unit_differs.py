"""unit_differs: whether a systemd unit is not yet as a systemd_service task would leave it (enabled, running).

Used with the unit states the module gpuops.fleet.file_states read (its ``units`` option) in the same call as the
role's files, so a role runs its enable-and-start task only where there is something to do. Unknown is "differs":
a unit that was not read runs its task.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: unit_differs
short_description: Whether a systemd unit is not enabled or not running, as a systemd_service task wants it
description:
  - Takes the registered result of M(gpuops.fleet.file_states) (or its RV(gpuops.fleet.file_states#module:units))
    and returns true when the unit is not loaded, or its unit file state is not (O(enabled=true)) or is
    (O(enabled=false)) C(enabled), or it is not (O(started=true)) or is (O(started=false)) C(active).
  - A unit missing from the states (not read, or the read was skipped) differs, so its task runs.
options:
  _input:
    description: The registered result of M(gpuops.fleet.file_states), or its C(units) dict.
    type: dict
    required: true
  unit:
    description: The unit name as it was read.
    type: string
    required: true
  enabled:
    description: The task enables (true) or disables (false) the unit; null when it does neither.
    type: bool
    default: true
  started:
    description: The task starts (true) or stops (false) the unit; null when it does neither.
    type: bool
    default: true
"""

EXAMPLES = r"""
- ansible.builtin.systemd_service:
    name: node_exporter.service
    enabled: true
    state: started
  when: __files | gpuops.fleet.unit_differs('node_exporter.service')
"""

RETURN = r"""
_value:
  description: True when the task would change the unit (or the unit was not read).
  type: bool
"""


def unit_differs(states: Any, unit: str, enabled: bool | None = True, started: bool | None = True) -> bool:
    if isinstance(states, dict) and ("changed" in states or "skipped" in states or "states" in states):
        states = states.get("units") or {}  # the registered result; one that was skipped read nothing
    if not isinstance(states, dict):
        raise AnsibleFilterError(
            f"unit_differs: the input must be what gpuops.fleet.file_states registered, got {states!r}"
        )
    found = states.get(unit)
    if not isinstance(found, dict):
        return True
    return (
        found.get("load") != "loaded"
        or (enabled is not None and (found.get("enabled") == "enabled") != enabled)
        or (started is not None and (found.get("active") == "active") != started)
    )


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"unit_differs": unit_differs}
