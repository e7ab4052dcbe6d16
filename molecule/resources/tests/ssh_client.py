"""An SSH client on the controller, logging in to a lab instance as an operator would (shared by SSH scenarios)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
LAB_KEY = PROJECT / ".cache" / "lab" / "ssh" / "id_ed25519"
_CLIENT = [
    "ssh",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=10",
]


def ssh(address: str, user: str, *options: str, command: str = "id -un") -> subprocess.CompletedProcess[str]:
    """Run `command` on address as user with the given extra ssh options; never raises on failure."""
    return subprocess.run(
        [*_CLIENT, *options, f"{user}@{address}", command], capture_output=True, text=True, timeout=30, check=False
    )


def ssh_with_lab_key(
    address: str, user: str, *options: str, command: str = "id -un"
) -> subprocess.CompletedProcess[str]:
    """The same, authenticating with the lab operator key."""
    return ssh(address, user, "-i", str(LAB_KEY), *options, command=command)
