#!/usr/bin/env python3
"""Dynamic inventory: reach this scenario's Molecule instances over real SSH instead of `docker exec`.

Scenarios whose subject is SSH itself (hardening, firewall) link this file into their inventory
(`provisioner.inventory.links.hosts`). For every running container named `molecule-<scenario>...` it gives
`ansible_connection: ssh` to the container's address on its Docker network (a lab host on this machine), the
operator account that the scenario's prepare step creates, and the lab key from `make setup`. Docker is asked
at inventory time, so Ansible and testinfra see plain values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

OPERATOR = os.environ.get("MOLECULE_SSH_USER", "operator")
# Lab hosts get new host keys on every create; their identity is the container this scenario just made.
SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


def instances(scenario: str) -> dict[str, str]:
    names = subprocess.run(
        ["docker", "ps", "--filter", f"name=^molecule-{scenario}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # Docker's name filter is a regular expression: ^molecule-ssh_hardening also matches the containers of
    # ssh_hardening_lockout, which may be running at the same time (make molecule MOLECULE_JOBS=2).
    own = f"molecule-{scenario}"
    names = [name for name in names if name == own or name.startswith(own + "-")]
    addresses: dict[str, str] = {}
    for name in names:
        inspected = json.loads(
            subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True).stdout
        )[0]
        networks = inspected["NetworkSettings"]["Networks"].values()
        address = next((net["IPAddress"] for net in networks if net.get("IPAddress")), "")
        if address:
            addresses[name] = address
    return addresses


def main() -> int:
    if "--host" in sys.argv:
        print("{}")
        return 0
    scenario = os.environ.get("MOLECULE_SCENARIO_NAME", "")
    project = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
    key = project / ".cache" / "lab" / "ssh" / "id_ed25519"
    hostvars = (
        {
            name: {
                "ansible_connection": "ssh",
                "ansible_host": address,
                "ansible_port": 22,
                "ansible_user": OPERATOR,
                "ansible_become": True,
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": SSH_ARGS,
            }
            for name, address in instances(scenario).items()
        }
        if scenario
        else {}
    )
    print(json.dumps({"_meta": {"hostvars": hostvars}, "ssh_lab": {"hosts": sorted(hostvars)}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
