#!/usr/bin/python
"""package_selections: dpkg selections (hold, install...) of many packages in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
module: package_selections
short_description: Set the dpkg selection (hold, install, deinstall, purge) of many packages in one call
version_added: "0.2.0"
description:
  - What M(ansible.builtin.dpkg_selections) does for one package, for many. Each package's selection is read
    with C(dpkg-query), and only those that differ are set, together, with one C(dpkg --set-selections).
  - A role that holds its packages then asks the host once per re-run, not once per package.
  - Check mode reports what would change and changes nothing.
author: gpuops.fleet maintainers
options:
  names:
    description: Package names, as C(dpkg-query -W) takes them (C(name) or C(name:arch)).
    type: list
    elements: str
    required: true
  selection:
    description: The selection every package in O(names) gets.
    type: str
    required: true
    choices: [install, hold, deinstall, purge]
  only_installed:
    description:
      - Leave alone the packages that are not installed (for a hold that applies only where a package is
        present). Otherwise a package dpkg does not know counts as a change, as with
        M(ansible.builtin.dpkg_selections).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Hold the driver packages
  gpuops.fleet.package_selections:
    names: [nvidia-driver, nvidia-smi, libnvidia-ml1]
    selection: hold

- name: Hold the DCGM packages that are installed
  gpuops.fleet.package_selections:
    names: [datacenter-gpu-manager, datacenter-gpu-manager-4-core]
    selection: hold
    only_installed: true
"""

RETURN = r"""
before:
  description: Package -> its selection before (C(not present) when dpkg does not know it).
  type: dict
  returned: always
changed_packages:
  description: The packages whose selection was (in check mode, would be) set.
  type: list
  elements: str
  returned: always
"""

import re
from typing import Any

from ansible.module_utils.basic import AnsibleModule

# The first letter of dpkg's db:Status-Abbrev is the selection ("want"), the second the package's state.
_WANT = {"u": "unknown", "i": "install", "h": "hold", "r": "deinstall", "p": "purge"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?$")


def read_selection(module: AnsibleModule, name: str) -> tuple[str, bool]:
    """The selection of ``name`` and whether it is installed; ("not present", False) when dpkg does not know it.
    A package installed for several architectures counts as each of them: the first that differs decides."""
    rc, out, _err = module.run_command(["dpkg-query", "-W", "-f=${db:Status-Abbrev}\n", name])
    lines = [line for line in out.splitlines() if line.strip()] if rc == 0 else []
    if not lines:
        return "not present", False
    wants = {_WANT.get(line[0], "unknown") for line in lines}
    installed = all(len(line) > 1 and line[1] == "i" for line in lines)
    want = wants.pop() if len(wants) == 1 else "mixed"
    return want, installed


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "selection": {"type": "str", "required": True, "choices": ["install", "hold", "deinstall", "purge"]},
            "only_installed": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    names: list[str] = module.params["names"]
    wanted: str = module.params["selection"]
    bad = [name for name in names if not _NAME.match(name)]
    if bad:
        module.fail_json(msg=f"names: not a Debian package name: {', '.join(bad)}")
    before: dict[str, str] = {}
    to_set: list[str] = []
    for name in dict.fromkeys(names):
        current, installed = read_selection(module, name)
        before[name] = current
        if current != wanted and (installed or not module.params["only_installed"]):
            to_set.append(name)
    result: dict[str, Any] = {"changed": bool(to_set), "before": before, "changed_packages": to_set}
    if to_set and not module.check_mode:
        stdin = "".join(f"{name} {wanted}\n" for name in to_set)
        rc, out, err = module.run_command(["dpkg", "--set-selections"], data=stdin, binary_data=True)
        if rc != 0:
            module.fail_json(msg=f"dpkg --set-selections failed for {', '.join(to_set)}: {err or out}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
