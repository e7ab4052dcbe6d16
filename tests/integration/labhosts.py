"""The running lab, seen from the controller: its hosts from the lab inventory, and SSH to them as the operator.

Every command goes over real SSH with the lab key through the port each host publishes on 127.0.0.1, the way
Ansible and chaosgpu reach the lab; commands between hosts run on one host against another's lab address.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "inventories" / "lab"
LAB_KEY = ROOT / ".cache" / "lab" / "ssh" / "id_ed25519"
SSH_OPTIONS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=5",
    "-o",
    "ControlMaster=no",
]


@dataclass(frozen=True)
class Host:
    """One lab host: its inventory name, published SSH port, address on the lab network, and the service ports
    it publishes on the controller's 127.0.0.1 (container port -> controller port)."""

    name: str
    port: int
    address: str
    service_ports: dict[int, int] = field(default_factory=dict, compare=False, hash=False)

    def published_url(self, container_port: int, path: str = "") -> str:
        """http://127.0.0.1:<published port><path> for a service port this host publishes to the controller."""
        assert container_port in self.service_ports, (
            f"{self.name} publishes no port {container_port} (lab_service_ports: {self.service_ports})"
        )
        return f"http://127.0.0.1:{self.service_ports[container_port]}{path}"

    def run(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a shell command as the operator; never raises on a non-zero exit (callers assert on it)."""
        argv = ["ssh", *SSH_OPTIONS, "-i", str(LAB_KEY), "-p", str(self.port), "operator@127.0.0.1", command]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            return subprocess.CompletedProcess(argv, 255, "", f"ssh timed out after {err.timeout} s")

    def check(self, command: str, timeout: float = 60) -> str:
        """Run a command that must succeed; its stdout."""
        result = self.run(command, timeout)
        assert result.returncode == 0, f"{self.name}: `{command}` exited {result.returncode}: {result.stderr}"
        return result.stdout

    def http_get(self, url: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
        """GET url from this host (curl); returncode 0 only for a 2xx answer."""
        return self.run(f"curl -sSf --max-time {timeout:g} {shlex.quote(url)}", timeout=timeout + 15)


@dataclass(frozen=True)
class Lab:
    """The lab inventory's hosts and groups."""

    hosts: dict[str, Host]
    groups: dict[str, list[str]]

    def group(self, name: str) -> list[Host]:
        return [self.hosts[host] for host in self.groups.get(name, [])]


def load_lab() -> Lab:
    """Read inventories/lab with ansible-inventory (the single source of truth for the lab's hosts)."""
    listing = json.loads(
        subprocess.run(
            ["ansible-inventory", "-i", str(INVENTORY), "--list"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    )
    hostvars = listing["_meta"]["hostvars"]
    hosts = {
        name: Host(
            name=name,
            port=int(values["ansible_port"]),
            address=str(values["lab_address"]),
            service_ports={int(k): int(v) for k, v in (values.get("lab_service_ports") or {}).items()},
        )
        for name, values in hostvars.items()
    }
    groups: dict[str, list[str]] = {}

    def collect(group: str) -> list[str]:
        members = list(listing.get(group, {}).get("hosts", []))
        for child in listing.get(group, {}).get("children", []):
            members += collect(child)
        groups[group] = sorted(set(members))
        return groups[group]

    collect("all")
    return Lab(hosts=hosts, groups=groups)


def ansible_playbook(playbook: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """ansible-playbook against the lab inventory with the repository's ansible.cfg; results as JSON, so a task's
    message is one line (YAML would fold and re-quote it). Never raises on a non-zero exit."""
    argv = ["ansible-playbook", "-i", str(INVENTORY), str(playbook), *args]
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT, env=env)


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of an ansible-playbook run: host -> {"ok": n, "changed": n, "failed": n, ...}."""
    counts: dict[str, dict[str, int]] = {}
    for match in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output.split("PLAY RECAP", 1)[-1], re.M):
        counts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return counts


def unit_option_s(node: Host, unit: str, option: str) -> float:
    """A duration option given in ms on a running unit's command line (e.g. dcgm-exporter's --collect-interval),
    in seconds: what the host really runs, not what the inventory says."""
    exec_start = node.check(f"systemctl show -p ExecStart --value {shlex.quote(unit)}")
    match = re.search(rf"{re.escape(option)}[= ](\d+)", exec_start)
    assert match, f"{node.name}: no {option} in {unit}'s ExecStart: {exec_start}"
    return int(match.group(1)) / 1000


def wait_for(predicate: Callable[[], bool], deadline_s: float, interval_s: float = 1.0) -> tuple[bool, float]:
    """Call predicate() until it returns true or deadline_s passes; (succeeded, seconds waited)."""
    start = time.monotonic()
    while True:
        if predicate():
            return True, time.monotonic() - start
        if time.monotonic() - start >= deadline_s:
            return False, time.monotonic() - start
        time.sleep(interval_s)
