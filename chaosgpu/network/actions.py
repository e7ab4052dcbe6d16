"""Network faults: partition, packet loss, bandwidth limit, latency and DNS failure (see chaosgpu.network).

Each is one call per host through the ledger (recorded with its deadline before it is injected) and returns the
faults it recorded. Bad input is refused naming the parameter before any host is reached.
"""

import math
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import fault_duration, get_inventory, inject_fault, targets
from chaosgpu.ledger import LedgerConfig
from chaosgpu.network import (
    Scope,
    build_nft_inject,
    build_nft_revert,
    build_qdisc_inject,
    build_qdisc_revert,
    check_port,
    check_protocol,
    controller_networks,
    cuts_controller,
    loss_rules,
    partition_rules,
    resolve_peer,
    resolve_single_peer,
    scope_for,
)
from chaosgpu.targeting import TargetPlan
from chaosgpu.types import Host

__all__ = ["bandwidth_limit", "dns_failure", "latency", "packet_loss", "partition"]

DIRECTIONS = {"both": ("in", "out"), "in": ("in",), "out": ("out",)}
MIN_RATE_KBIT = 64  # below this the controller's own SSH calls, shaped on the same interface, crawl
MAX_RATE_KBIT = 400_000_000
MAX_DELAY_MS = 10_000


def _number(value: Any, name: str, low: float, high: float, *, low_open: bool = True, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ActivityFailed(f"{name} must be a number, got {value!r}")
    if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ActivityFailed(f"{name} must be in {left}{low:g}, {high:g}{right}, got {value!r}")
    return float(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ActivityFailed(f"{name} must be true or false, got {value!r}")
    return value


def _seconds(configuration: Configuration | None, duration_s: float | None) -> float:
    limit = LedgerConfig().max_duration_s
    return _number(fault_duration(configuration, duration_s), "duration_s", 0, limit)


def _peer_label(peer: str, port: int, protocol: str) -> str:
    parts = [f"peer {peer}"] if peer else []
    if port:
        parts.append(f"{protocol} port {port}")
    return ", ".join(parts) or "every peer"


def _refuse_controller_cut(plan: TargetPlan, scopes: dict[str, Scope]) -> None:
    for host in plan.hosts:
        cut = cuts_controller(scopes[host.name], controller_networks(host), host.port)
        if cut:
            raise ActivityFailed(
                f"refused: on {host.name} this fault would cut off the controller ({', '.join(cut)}, "
                "chaosgpu_controller_addresses); pass allow_cut_controller=true to cut it anyway (the host reverts "
                "the fault at its deadline)"
            )


def partition(  # noqa: PLR0913, PLR0917 - target selection, the partition, its deadline, the controller switch
    pattern: str,
    peer: str = "",
    port: int = 0,
    protocol: str = "tcp",
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    allow_cut_controller: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Cut the hosts matching ``pattern`` (``count`` or ``percentage`` of them) off ``peer`` in both directions:
    every packet from and to it is dropped on the host (nftables, input and output).

    ``peer``: comma-separated inventory hosts, groups, addresses or CIDRs (a group's own target is left out);
    ``port``: only traffic to or from that port at either end, ``protocol`` tcp, udp or any; a port without a peer
    cuts that port off every address. A partition that would cut the controller off
    (``chaosgpu_controller_addresses``, or the SSH session the call arrives through) is refused unless
    ``allow_cut_controller`` is true: then the host's deadline is what brings it back. Reverts at ``duration_s``
    (default: the configuration's) at the latest.
    """
    check_port(port)
    check_protocol(protocol)
    _flag(allow_cut_controller, "allow_cut_controller")
    if not isinstance(peer, str):
        raise ActivityFailed(f"peer must be a string (hosts, groups, addresses or CIDRs), got {peer!r}")
    if not peer.strip() and not port:
        raise ActivityFailed("partition: give a peer, a port or both (a partition from everything is a power-off)")
    seconds = _seconds(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    peers = resolve_peer(get_inventory(configuration), peer) if peer.strip() else []
    scopes = {host.name: scope_for(host, peers, port, protocol) for host in plan.hosts}
    if not allow_cut_controller:
        _refuse_controller_cut(plan, scopes)

    def inject(host: Host) -> str:
        scope = scopes[host.name]
        return build_nft_inject(partition_rules(scope), scope, guard=True, allow_cut=allow_cut_controller)

    return inject_fault(
        plan,
        "net-partition",
        inject,
        build_nft_revert(),
        seconds,
        f"partition from {_peer_label(peer, port, protocol)}",
        accept_cut=allow_cut_controller,
    )


def packet_loss(  # noqa: PLR0913, PLR0917 - target selection, the loss and its scope, its deadline, the controller switch
    pattern: str,
    loss_percent: float,
    peer: str = "",
    port: int = 0,
    protocol: str = "tcp",
    direction: str = "both",
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    allow_cut_controller: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Drop ``loss_percent`` % of the packets (0.01 % steps, below 100: that is a partition) on the hosts matching
    ``pattern``, at random (nftables ``numgen random``), in ``direction`` ``both`` (default), ``in`` or ``out``.

    Optionally only traffic with ``peer`` (hosts, groups, addresses or CIDRs) and/or ``port`` (either end,
    ``protocol`` tcp, udp or any). The controller's traffic (``chaosgpu_controller_addresses`` and the SSH session
    the call arrives through) and loopback are spared unless ``allow_cut_controller`` is true.
    """
    _number(loss_percent, "loss_percent", 0, 100, high_open=True)
    check_port(port)
    check_protocol(protocol)
    _flag(allow_cut_controller, "allow_cut_controller")
    if direction not in DIRECTIONS:
        raise ActivityFailed(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if not isinstance(peer, str):
        raise ActivityFailed(f"peer must be a string (hosts, groups, addresses or CIDRs), got {peer!r}")
    seconds = _seconds(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    peers = resolve_peer(get_inventory(configuration), peer) if peer.strip() else []
    scopes = {host.name: scope_for(host, peers, port, protocol) for host in plan.hosts}
    spared = {host.name: [] if allow_cut_controller else controller_networks(host) for host in plan.hosts}

    def inject(host: Host) -> str:
        scope = scopes[host.name]
        rules = loss_rules(
            scope, loss_percent, DIRECTIONS[direction], spared[host.name], spare_session=not allow_cut_controller
        )
        return build_nft_inject(
            rules, scope, guard=False, allow_cut=allow_cut_controller, spared_networks=spared[host.name]
        )

    return inject_fault(
        plan,
        "net-loss",
        inject,
        build_nft_revert(),
        seconds,
        f"{loss_percent:g} % packet loss ({direction}) with {_peer_label(peer, port, protocol)}",
        accept_cut=allow_cut_controller,
    )


def bandwidth_limit(
    pattern: str,
    peer: str,
    rate_kbit: int,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Limit what the hosts matching ``pattern`` send on the interface they route ``peer`` through (an inventory
    host or an address) to ``rate_kbit`` kbit/s: a ``tbf`` root qdisc, which shapes everything leaving that
    interface. The interface must have its default qdisc (recorded, and restored exactly by the revert)."""
    if isinstance(rate_kbit, bool) or not isinstance(rate_kbit, int):
        raise ActivityFailed(f"rate_kbit must be a whole number of kbit/s, got {rate_kbit!r}")
    _number(rate_kbit, "rate_kbit", MIN_RATE_KBIT, MAX_RATE_KBIT, low_open=False)
    seconds = _seconds(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    address = resolve_single_peer(get_inventory(configuration), peer)
    burst = max(16384, rate_kbit * 1000 // 8 // 100)  # 10 ms at the rate, and never below a few full frames
    qdisc = f"tbf rate {rate_kbit}kbit burst {burst} latency 200ms"
    return inject_fault(
        plan,
        "net-bandwidth",
        build_qdisc_inject(address, qdisc, "a bandwidth limit"),
        build_qdisc_revert(),
        seconds,
        f"bandwidth limited to {rate_kbit} kbit/s on the interface toward {peer}",
    )


def latency(  # noqa: PLR0913, PLR0917 - target selection, the delay, its deadline
    pattern: str,
    peer: str,
    delay_ms: float,
    jitter_ms: float = 0,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Delay what the hosts matching ``pattern`` send on the interface they route ``peer`` through by ``delay_ms``
    (± ``jitter_ms``): a ``netem`` root qdisc. Needs the kernel's sch_netem: where the kernel lacks it, nothing is
    changed and this fails saying so (packet_loss and bandwidth_limit work without it)."""
    delay = _number(delay_ms, "delay_ms", 0, MAX_DELAY_MS)
    jitter = _number(jitter_ms, "jitter_ms", 0, delay, low_open=False)
    seconds = _seconds(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    address = resolve_single_peer(get_inventory(configuration), peer)
    qdisc = f"netem delay {delay:g}ms" + (f" {jitter:g}ms" if jitter else "")
    try:
        return inject_fault(
            plan,
            "net-latency",
            build_qdisc_inject(address, qdisc, "latency"),
            build_qdisc_revert(),
            seconds,
            f"{delay:g} ms latency (± {jitter:g} ms) on the interface toward {peer}",
        )
    except ActivityFailed as err:
        if "lacks sch_netem" not in str(err):
            raise
        raise ActivityFailed(
            "latency: the kernel lacks sch_netem (tc: Specified qdisc kind is unknown), so latency cannot be "
            "injected; nothing was changed. Use chaosgpu.network.actions.packet_loss or bandwidth_limit instead. "
            f"({err})"
        ) from None


DNS_MODES = ("drop", "timeout")


def dns_failure(
    pattern: str,
    mode: str = "drop",
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Make name resolution fail on the hosts matching ``pattern`` (nftables, udp and tcp port 53, any server, local
    stub resolvers and Docker's 127.0.0.11 included; /etc/hosts and resolv.conf are not touched).

    ``mode`` ``drop`` (default): every query is dropped on its way out, so lookups fail at once (the sender gets
    "operation not permitted"); ``timeout``: the queries leave but every answer is dropped on its way in, so lookups
    wait out the resolver's timeouts, as when the DNS servers are down."""
    if mode not in DNS_MODES:
        raise ActivityFailed(f"mode must be one of {', '.join(DNS_MODES)}, got {mode!r}")
    seconds = _seconds(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    if mode == "drop":
        rules = {"out": ["meta l4proto { tcp, udp } th dport 53 drop"]}
    else:
        rules = {"in": ["meta l4proto { tcp, udp } th sport 53 drop"]}
    return inject_fault(
        plan,
        "net-dns",
        build_nft_inject(rules, Scope(port=53, protocol="any"), guard=False, allow_cut=False),
        build_nft_revert(),
        seconds,
        f"DNS failure ({'queries dropped' if mode == 'drop' else 'answers dropped: lookups time out'})",
    )
