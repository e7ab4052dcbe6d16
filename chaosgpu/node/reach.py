"""Whether hosts answer SSH, and waiting (bounded) until they answer again after a power action.

A host "answers" when a trivial command runs on it over the transport within the timeout. A multiplexed master
connection left over from before a power cycle may hang or fail, so a host that does not answer through it is
asked once more on a fresh connection (``SSHTransport.forget``) before it counts as not answering.
"""

import time
from collections.abc import Sequence

from chaoslib.exceptions import ActivityFailed

from chaosgpu.types import CommandResult, Host, Transport

__all__ = ["BOOT_IDENTITY", "boot_identities", "ssh_answers", "wait_until_back"]

# Changes with every boot: the kernel's boot id (a real reboot) and PID 1's start time (a container's restart).
BOOT_IDENTITY = "cat /proc/sys/kernel/random/boot_id && cut -d ' ' -f 22 /proc/1/stat"
_POLL_S = 1.0


def _forget(transport: Transport, hosts: Sequence[Host]) -> None:
    forget = getattr(transport, "forget", None)
    if callable(forget):
        for host in hosts:
            forget(host)


def _run(transport: Transport, hosts: Sequence[Host], command: str, timeout_s: float) -> dict[str, CommandResult]:
    return transport.run_many(list(hosts), command, timeout=timeout_s) if hosts else {}


def ssh_answers(transport: Transport, hosts: Sequence[Host], timeout_s: float) -> dict[str, bool]:
    """Host name -> whether it ran ``true`` within ``timeout_s`` (a second try on a fresh connection when not)."""
    results = _run(transport, hosts, "true", timeout_s)
    silent = [host for host in hosts if not results[host.name].ok]
    _forget(transport, silent)
    results.update(_run(transport, silent, "true", timeout_s))
    return {host.name: results[host.name].ok for host in hosts}


def boot_identities(transport: Transport, hosts: Sequence[Host], timeout_s: float = 15) -> dict[str, str | None]:
    """Host name -> its boot identity (BOOT_IDENTITY's output), None for a host that did not answer."""
    results = _run(transport, hosts, BOOT_IDENTITY, timeout_s)
    return {name: (result.stdout.strip() if result.ok else None) for name, result in results.items()}


def wait_until_back(
    transport: Transport, hosts: Sequence[Host], wait_s: float, before: dict[str, str | None] | None = None
) -> dict[str, float]:
    """Wait until every host answers SSH (and, for a host in ``before`` with an identity, has booted since);
    host name -> seconds it took. Raises ActivityFailed naming the hosts not back within ``wait_s``."""
    started = time.monotonic()
    back: dict[str, float] = {}
    pending = list(hosts)
    while pending:
        remaining = wait_s - (time.monotonic() - started)
        if remaining <= 0:
            break
        _forget(transport, pending)
        results = _run(transport, pending, BOOT_IDENTITY, max(1.0, min(10.0, remaining)))
        for host in pending:
            result = results[host.name]
            earlier = (before or {}).get(host.name)
            if result.ok and (earlier is None or result.stdout.strip() != earlier):
                back[host.name] = round(time.monotonic() - started, 1)
        pending = [host for host in pending if host.name not in back]
        if pending:
            time.sleep(min(_POLL_S, max(0.0, wait_s - (time.monotonic() - started))))
    if pending:
        raise ActivityFailed(
            f"not back within wait_s={wait_s:g} s (SSH, and a new boot where one was expected): "
            + ", ".join(host.name for host in pending)
            + (f"; back: {', '.join(f'{n} after {s:g} s' for n, s in back.items())}" if back else "")
        )
    return back
