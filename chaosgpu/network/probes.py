"""Network probes, run on the hosts themselves: can they reach a peer, how many packets get through, does name
resolution work, and which chaosgpu network faults are in place. Every probe is bounded in time."""

import math
import re
import shlex
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import get_inventory, get_transport, run_on, targets
from chaosgpu.ledger import ROOT_SHELL
from chaosgpu.network import MARK, build_status_script, check_port, parse_status, probe_address
from chaosgpu.types import CommandResult

__all__ = ["dns_resolves", "network_faults", "packet_loss_percent", "peer_reachable"]

MAX_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 500
MAX_PROBE_S = 120.0  # attempts x timeout_s, the longest a loss measurement may take
_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")
_PING = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def _timeout(value: Any, name: str = "timeout_s") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ActivityFailed(f"{name} must be a number of seconds, got {value!r}")
    if not 0 < value <= MAX_TIMEOUT_S:
        raise ActivityFailed(f"{name} must be in (0, {MAX_TIMEOUT_S:g}] seconds, got {value!r}")
    return float(value)


def _marker(result: CommandResult, name: str) -> list[str]:
    """The fields of the probe's marker line ``name``; ActivityFailed naming the host when the probe did not run."""
    for line in result.stdout.splitlines():
        fields = line.split()
        if fields[:2] == [MARK, name]:
            return fields[2:]
    raise ActivityFailed(
        f"{result.host}: the probe did not run (exit {result.rc}): {result.stderr.strip()[-2000:] or result.stdout}"
    )


def _tcp_connect(address: str, port: int, timeout_s: float) -> str:
    """A shell command: exit 0 when a TCP connection to address:port opens within timeout_s, 124 on time-out."""
    return f"timeout {timeout_s:g} bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' {shlex.quote(address)} {port} 2>/dev/null"


def peer_reachable(
    pattern: str,
    peer: str,
    port: int,
    timeout_s: float = 3.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True when every host matching ``pattern`` opens a TCP connection to ``peer`` (an inventory host, an address
    or a host name the hosts resolve) on ``port`` within ``timeout_s``; False when any cannot."""
    if not check_port(port):
        raise ActivityFailed("port must be a port number 1-65535, got 0")
    timeout = _timeout(timeout_s)
    plan = targets(configuration, pattern, guard=False)
    address = probe_address(get_inventory(configuration), peer)
    command = (
        f"if {_tcp_connect(address, port, timeout)}; then echo '{MARK} reach 1'; else echo \"{MARK} reach 0 $?\"; fi"
    )
    results = run_on(list(plan.hosts), command, timeout=timeout + 30)
    return all(_marker(result, "reach")[0] == "1" for result in results.values())


def packet_loss_percent(
    pattern: str,
    peer: str,
    port: int = 0,
    attempts: int = 20,
    timeout_s: float = 0.5,
    method: str = "tcp",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> float:
    """The share (%) of ``attempts`` that got no answer from ``peer`` within ``timeout_s``, measured on each host
    matching ``pattern``; the worst host's. ``method`` ``tcp`` (default): TCP connects to ``port``, where a
    connection opened or refused counts as answered and only a time-out as lost (both the SYN and its answer must
    get through); ``icmp``: ``ping`` (needs ping on the hosts). Bounded: ``attempts`` x ``timeout_s`` <= 120 s."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 0 < attempts <= MAX_ATTEMPTS:
        raise ActivityFailed(f"attempts must be a whole number in [1, {MAX_ATTEMPTS}], got {attempts!r}")
    timeout = _timeout(timeout_s)
    if attempts * timeout > MAX_PROBE_S:
        raise ActivityFailed(
            f"attempts x timeout_s must be at most {MAX_PROBE_S:g} s (the probe's bound), got {attempts * timeout:g}"
        )
    if method not in ("tcp", "icmp"):
        raise ActivityFailed(f"method must be tcp or icmp, got {method!r}")
    check_port(port)
    if method == "tcp" and not port:
        raise ActivityFailed("port: the tcp method connects to a port, give one (1-65535)")
    plan = targets(configuration, pattern, guard=False)
    address = probe_address(get_inventory(configuration), peer)
    if method == "tcp":
        command = (
            f"ok=0; lost=0; for _ in $(seq {attempts}); do {_tcp_connect(address, port, timeout)}; "
            "if [ $? -eq 124 ]; then lost=$((lost+1)); else ok=$((ok+1)); fi; done; "
            f'echo "{MARK} loss {attempts} $ok $lost"'
        )
    else:
        ping = f"ping -n -q -c {attempts} -i 0.2 -W {max(1, math.ceil(timeout))} {shlex.quote(address)}"
        command = f'out=$({ping} 2>&1); echo "$out"; echo "{MARK} loss ping"'
    results = run_on(list(plan.hosts), command, timeout=attempts * max(timeout, 0.2) + 60)
    worst = 0.0
    for result in results.values():
        fields = _marker(result, "loss")
        if fields == ["ping"]:
            match = _PING.search(result.stdout)
            if not match:
                raise ActivityFailed(f"{result.host}: ping gave no statistics: {result.stdout.strip()[-500:]}")
            sent, answered = int(match.group(1)), int(match.group(2))
        else:
            sent, answered = int(fields[0]), int(fields[1])
        worst = max(worst, 100.0 * (sent - answered) / sent if sent else 100.0)
    return worst


def dns_resolves(
    pattern: str,
    name: str,
    timeout_s: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True when ``name`` resolves (``getent hosts``, the host's own resolver order) within ``timeout_s`` on every
    host matching ``pattern``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ActivityFailed(f"name must be a host name, got {name!r}")
    timeout = _timeout(timeout_s)
    plan = targets(configuration, pattern, guard=False)
    command = (
        f"if timeout {timeout:g} getent hosts {shlex.quote(name)} >/dev/null; then echo '{MARK} resolves 1'; "
        f'else echo "{MARK} resolves 0 $?"; fi'
    )
    results = run_on(list(plan.hosts), command, timeout=timeout + 30)
    return all(_marker(result, "resolves")[0] == "1" for result in results.values())


def network_faults(
    pattern: str = "all",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """The chaosgpu network faults in place on the hosts matching ``pattern``, read from the hosts themselves (not
    the ledger): one entry per fault id, with its nftables chains and rules (table ``inet chaosgpu``) or its tc root
    qdisc. An empty list means none. Fails naming the hosts that could not be read."""
    plan = targets(configuration, pattern, guard=False)
    results = get_transport().run_many(list(plan.hosts), ROOT_SHELL, timeout=60, stdin=build_status_script())
    failed = {name: r for name, r in results.items() if r.rc != 0}
    if failed:
        raise ActivityFailed(
            "network_faults: cannot read "
            + "; ".join(f"{name}: exit {r.rc}: {r.stderr.strip()[-500:]}" for name, r in failed.items())
        )
    return [fault for name, result in results.items() for fault in parse_status(name, result.stdout)]
