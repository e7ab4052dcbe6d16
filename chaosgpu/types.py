"""The types the parts of chaosgpu share: a target host, the result of a command on it, and the transport that
runs commands. Inventory loading (chaosgpu.inventory), targeting (chaosgpu.targeting), the SSH transport
(chaosgpu.transport) and the fault ledger (chaosgpu.ledger) meet here, so each can be tested with fakes of the
others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chaoslib.exceptions import ActivityFailed

__all__ = ["CommandResult", "Host", "Transport", "TransportError"]


@dataclass(frozen=True)
class Host:
    """One inventory host as chaosgpu reaches it (Ansible's connection variables, resolved)."""

    name: str
    address: str  # ansible_host, else the inventory name
    port: int = 22  # ansible_port
    user: str | None = None  # ansible_user
    key_file: str | None = None  # ansible_ssh_private_key_file
    ssh_args: tuple[str, ...] = ()  # ansible_ssh_common_args + ansible_ssh_extra_args, split like a shell
    groups: tuple[str, ...] = ()  # every group the host is in, parents included (not "all")
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class CommandResult:
    """What one command did on one host."""

    host: str
    command: str
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0


class TransportError(ActivityFailed):  # type: ignore[misc]  # chaoslib is untyped
    """A command could not run or failed on a host; the message names the host, the command and its stderr."""

    def __init__(self, result: CommandResult, reason: str = "") -> None:
        self.result = result
        stderr = result.stderr.strip()[-2000:]
        why = reason or f"exited {result.rc}"
        super().__init__(f"{result.host}: `{result.command}` {why}" + (f": {stderr}" if stderr else ""))


class Transport(Protocol):
    """Runs shell commands on hosts (as root where the command needs it: commands carry their own sudo)."""

    def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:
        """Run and return the result whatever the exit status; a timeout gives rc 124 and says so in stderr."""
        ...

    def check(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:
        """Run; raise TransportError unless the exit status is 0."""
        ...

    def run_many(
        self, hosts: Sequence[Host], command: str, timeout: float = 60, stdin: str | None = None
    ) -> dict[str, CommandResult]:
        """The same command on every host in parallel; results by host name, in the order of ``hosts``."""
        ...
