"""Network faults on gpu-node-2, each proven by faultcheck: injected -> observable on the hosts (TCP with bash's
/dev/tcp, curl, getent, run on the hosts themselves) -> reverted by rollback, by `chaosgpu cleanup` and by the host's
deadline after the controller was killed -> the host as it was before.

A partition from ops-1 leaves the controller's own path (the lab network's gateway) alone, so the SIGKILL case can
still watch the host. Every measurement is bounded (connect time-outs, curl --max-time, early exit on the first lost
connection).
"""

from __future__ import annotations

import shlex
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from faultcheck import (
    CONFIGURATION,
    FaultCase,
    check_cleanup,
    check_deadline_after_sigkill,
    check_rollback,
    snapshot,
)
from labhosts import Host, Lab, wait_for

NODE = "gpu-node-2"
NETWORK = "chaosgpu.network.actions"
# Network fault state beyond faultcheck's snapshot (which has the whole nftables ruleset and every qdisc): the
# recorded qdiscs of tc faults (the lock files stay, empty, by design).
EXTRA = {"chaosgpu network state": "sudo ls -A /run/chaosgpu/network 2>/dev/null | grep -v '[.]lock$' || true"}
CHECKS: dict[str, Callable[[FaultCase], None]] = {
    "rollback": check_rollback,
    "cleanup": check_cleanup,
    "deadline": check_deadline_after_sigkill,
}
RATE_KBIT = 4000
UPLOAD_BYTES = 262144  # 0.5 s at RATE_KBIT, a few ms unshaped


@pytest.fixture(scope="module")
def node(lab: Lab) -> Host:
    assert NODE in lab.hosts, f"the lab inventory has no {NODE}"
    return lab.hosts[NODE]


def _connects(source: Host, address: str, port: int, timeout_s: float = 1) -> bool:
    """Whether ``source`` opens a TCP connection to address:port within timeout_s (bash's /dev/tcp)."""
    probe = f"timeout {timeout_s:g} bash -c 'exec 3<>/dev/tcp/{address}/{port}'"
    return source.run(probe, timeout=timeout_s + 20).returncode == 0


def _loses_a_connection(source: Host, address: str, port: int, attempts: int = 50) -> bool:
    """Whether one of at most ``attempts`` TCP connects (0.3 s each) times out; stops at the first that does."""
    loop = (
        f"for i in $(seq {attempts}); do timeout 0.3 bash -c 'exec 3<>/dev/tcp/{address}/{port}'; "
        "[ $? -eq 124 ] && { echo lost; exit 0; }; done; echo none"
    )
    return source.check(loop, timeout=attempts * 0.3 + 30).strip() == "lost"


def _chaosgpu_rules(node: Host) -> str:
    return node.run("sudo nft list table inet chaosgpu 2>/dev/null").stdout


def _upload_s(node: Host, ops: Host) -> float:
    """Seconds for one POST of UPLOAD_BYTES from ``node`` to Prometheus on ops-1 (which reads the whole form body
    before it answers 400 to the nonsense query)."""
    curl = (
        f"head -c {UPLOAD_BYTES} /dev/zero | curl -s -o /dev/null -w '%{{size_upload}} %{{time_total}}' "
        f"--max-time 20 --data-binary @- http://{ops.address}:9090/api/v1/query"
    )
    sent, seconds = node.check(curl, timeout=40).split()
    assert int(float(sent)) == UPLOAD_BYTES, f"{node.name}: the upload to {ops.name} stopped at {sent} bytes"
    return float(seconds)


def _case(node: Host, action: str, arguments: dict[str, Any], injected: Callable[[Host], bool], deadline_s: float):
    return FaultCase(NETWORK, action, {"pattern": NODE, **arguments}, node, injected, dict(EXTRA), deadline_s)


@pytest.mark.parametrize("check", list(CHECKS))
def test_partition_from_ops(node: Host, ops: Host, check: str) -> None:
    assert _connects(ops, node.address, 9100), f"before the fault {ops.name} cannot reach {NODE}:9100"
    assert _connects(node, ops.address, 9090), f"before the fault {NODE} cannot reach {ops.name}:9090"

    def injected(host: Host) -> bool:
        return not _connects(ops, host.address, 9100) and not _connects(host, ops.address, 9090)

    CHECKS[check](_case(node, "partition", {"peer": ops.name}, injected, deadline_s=15))
    assert _connects(ops, node.address, 9100), f"after the {check} {ops.name} still cannot reach {NODE}:9100"
    assert _connects(node, ops.address, 9090), f"after the {check} {NODE} still cannot reach {ops.name}:9090"


@pytest.mark.parametrize("check", list(CHECKS))
def test_packet_loss_toward_ops(node: Host, ops: Host, check: str) -> None:
    assert not _loses_a_connection(node, ops.address, 9090, attempts=20), "connections to ops-1 time out already"

    def injected(host: Host) -> bool:
        rule = "numgen random mod 100 < 30 drop"
        return rule in _chaosgpu_rules(host) and _loses_a_connection(host, ops.address, 9090)

    CHECKS[check](_case(node, "packet_loss", {"loss_percent": 30, "peer": ops.name}, injected, deadline_s=20))


def test_packet_loss_is_what_the_probe_measures(node: Host, ops: Host) -> None:
    """30 % loss each way: a connect needs its SYN out and the answer in, so about half of them time out."""
    from chaosgpu.fleet.actions import revert_faults  # noqa: PLC0415 - the package under test, imported late
    from chaosgpu.network import actions, probes  # noqa: PLC0415

    def measured() -> float:
        return probes.packet_loss_percent(NODE, ops.name, 9090, 40, 0.3, configuration=CONFIGURATION)

    before = snapshot(node, EXTRA)
    actions.packet_loss(NODE, 30, peer=ops.name, duration_s=60, configuration=CONFIGURATION)
    try:
        during = measured()
    finally:
        revert_faults(NODE, configuration=CONFIGURATION)
    after = measured()
    # Binomial(40, 0.51): below 15 % or above 90 % once in ~10^5 runs.
    assert 15 <= during <= 90, f"measured {during} % loss under 30 % each way"
    assert after == 0, f"measured {after} % loss after the revert"
    assert snapshot(node, EXTRA) == before


@pytest.mark.parametrize("check", list(CHECKS))
def test_bandwidth_limit_toward_ops(node: Host, ops: Host, check: str) -> None:
    unshaped = statistics.median(_upload_s(node, ops) for _ in range(3))
    at_rate = UPLOAD_BYTES * 8 / (RATE_KBIT * 1000)

    def injected(host: Host) -> bool:
        root = host.check("sudo tc qdisc show dev eth0 root")
        if "tbf cafe:" not in root:
            return False
        shaped = _upload_s(host, ops)
        # Within the rate's budget (the burst lets 16 KiB through at once), and far slower than unshaped.
        return shaped >= 0.7 * at_rate and shaped >= 5 * unshaped

    CHECKS[check](_case(node, "bandwidth_limit", {"peer": ops.name, "rate_kbit": RATE_KBIT}, injected, 20))
    assert _upload_s(node, ops) < at_rate / 2, f"after the {check} uploads from {NODE} are still slow"


@pytest.mark.parametrize("check", list(CHECKS))
def test_dns_failure(node: Host, ops: Host, check: str) -> None:
    # ops-1 is not in /etc/hosts: it resolves through the resolver (Docker's DNS, 127.0.0.11, in the lab).
    assert ops.name not in node.check("cat /etc/hosts").split(), f"{ops.name} is in {NODE}'s /etc/hosts"
    assert node.run(f"timeout 3 getent hosts {ops.name}").returncode == 0, f"{ops.name} does not resolve before"

    def injected(host: Host) -> bool:
        return host.run(f"timeout 3 getent hosts {shlex.quote(ops.name)}", timeout=30).returncode != 0

    CHECKS[check](_case(node, "dns_failure", {}, injected, deadline_s=15))
    assert node.run(f"timeout 3 getent hosts {ops.name}").returncode == 0, f"{ops.name} does not resolve after"


def test_dns_failure_by_timeout_makes_lookups_wait(node: Host, ops: Host) -> None:
    """mode=timeout drops the answers: getent waits (glibc's 5 s per try), so a 3 s bound runs out (124)."""

    def injected(host: Host) -> bool:
        return host.run(f"timeout 3 getent hosts {shlex.quote(ops.name)}", timeout=30).returncode == 124

    check_rollback(_case(node, "dns_failure", {"mode": "timeout"}, injected, deadline_s=15))


def test_latency_is_refused_on_a_kernel_without_netem(node: Host, ops: Host) -> None:
    from chaosgpu.network import actions  # noqa: PLC0415 - the package under test, imported late

    before = snapshot(node, EXTRA)
    with pytest.raises(ActivityFailed, match="the kernel lacks sch_netem") as err:
        actions.latency(NODE, ops.name, 100, duration_s=30, configuration=CONFIGURATION)
    assert "packet_loss or bandwidth_limit" in str(err.value)
    assert snapshot(node, EXTRA) == before


def test_probes_see_partition_and_dns_failure(ops: Host) -> None:
    from chaosgpu.fleet.actions import revert_faults  # noqa: PLC0415 - the package under test, imported late
    from chaosgpu.network import actions, probes  # noqa: PLC0415

    def seen() -> tuple[bool, bool, bool, list[str]]:
        return (
            probes.peer_reachable(NODE, ops.name, 9090, timeout_s=2, configuration=CONFIGURATION),
            probes.peer_reachable(ops.name, NODE, 9100, timeout_s=2, configuration=CONFIGURATION),
            probes.dns_resolves(NODE, ops.name, timeout_s=3, configuration=CONFIGURATION),
            sorted(f["fault_id"] for f in probes.network_faults(NODE, configuration=CONFIGURATION)),
        )

    assert seen() == (True, True, True, [])
    faults = actions.partition(NODE, ops.name, duration_s=60, configuration=CONFIGURATION)
    faults += actions.dns_failure(NODE, duration_s=60, configuration=CONFIGURATION)
    try:
        during = seen()
    finally:
        revert_faults(NODE, configuration=CONFIGURATION)
    assert during == (False, False, False, sorted(f["id"] for f in faults))
    assert seen() == (True, True, True, [])


def test_an_allowed_cut_of_the_controller_is_injected_and_reverts_at_its_deadline(node: Host) -> None:
    """Partition of sshd's port with allow_cut_controller: the call breaks once ssh's ServerAlive gives up, after the
    fault was armed, which counts as injected; SSH cannot reach the host until its deadline reverts the fault."""
    from chaosgpu.activity import get_transport  # noqa: PLC0415 - the package under test, imported late
    from chaosgpu.network import actions  # noqa: PLC0415

    transport = get_transport()
    # ssh notices the cut after ServerAlive's interval x count; the inject waits 1 s before cutting.
    budget_s = transport.server_alive_interval * transport.server_alive_count_max + 1 + 5
    deadline_s = budget_s + 12
    before = snapshot(node, EXTRA)
    with pytest.raises(ActivityFailed, match="would cut off the SSH session"):
        actions.partition(NODE, port=22, duration_s=deadline_s, configuration=CONFIGURATION)
    assert snapshot(node, EXTRA) == before

    started = time.monotonic()
    [fault] = actions.partition(
        NODE, port=22, duration_s=deadline_s, allow_cut_controller=True, configuration=CONFIGURATION
    )
    returned = time.monotonic() - started
    assert fault["kind"] == "net-partition"
    assert returned <= budget_s, f"the cut call returned after {returned:.1f} s (budget {budget_s} s)"
    assert node.run("true", timeout=8).returncode != 0, f"{NODE} still answers SSH under the partition"
    back, _ = wait_for(lambda: node.run("true", timeout=8).returncode == 0, deadline_s + 30, interval_s=2)
    assert back, f"{NODE} did not answer SSH again within {deadline_s + 30} s of the cut"
    left: dict[str, tuple[str, str]] = {}

    def same() -> bool:
        nonlocal left
        now = snapshot(node, EXTRA)
        left = {k: (before[k], now.get(k, "")) for k in before if before[k] != now.get(k, "")}
        return not left

    settled, _ = wait_for(same, 20, interval_s=1)
    assert settled, f"{NODE} differs after the deadline: {left}"
