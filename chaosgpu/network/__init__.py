"""Network faults and probes: what the actions inject on a host and how they find the addresses involved.

Every nftables fault lives in chaosgpu's own table, ``inet chaosgpu``: one base chain per hook and fault, named after
the fault's ledger id (``<id>-in`` on the input hook, ``<id>-out`` on output), at priority -300 (raw), so it sees
packets before conntrack, before NAT (Docker's DNS redirect is at -100) and before any host firewall's filter
chains. A revert deletes exactly its own chains and then the table when no chain is left in it; the host firewall's
table (``inet gpuops_filter``) and Docker's tables are never touched. Loopback traffic is left alone by partitions
and packet loss.

Bandwidth limits (``tbf``) and latency (``netem``) replace the root qdisc of the interface the host routes a peer
through (``ip route get``), with handle ``cafe:``. The inject records the interface's qdiscs first (under
``/run/chaosgpu/network/<id>.tc``: tmpfs, gone at reboot like the qdisc itself) and refuses an interface whose
qdiscs were configured by someone (a non-zero handle), because only a default qdisc can be restored exactly; the
revert deletes its root qdisc, checks the interface is back to the recorded listing and fails loudly otherwise.
Latency needs the kernel's ``sch_netem``: where ``tc`` does not know the kind, the inject changes nothing and the
action fails saying so.

Inventory variables (rendered like every ``chaosgpu_*`` variable):

``chaosgpu_address``
    The address (or list of addresses) other hosts reach this host on; default ``ansible_host`` (resolved on the
    controller when it is a name). The lab sets it to ``lab_address``, as ``ansible_host`` there is the published
    SSH port on 127.0.0.1.
``chaosgpu_controller_addresses``
    Addresses or CIDRs the controller reaches this host from. A partition that would cut them off is refused unless
    ``allow_cut_controller`` is true; packet loss spares them. Independently, the inject refuses on the host itself
    when the fault would match the SSH session it arrived through (``SSH_CONNECTION`` of that session).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from chaoslib.exceptions import ActivityFailed

from chaosgpu.inventory import Inventory
from chaosgpu.types import Host

__all__ = [
    "ADDRESS_VAR",
    "CONTROLLER_VAR",
    "MARK",
    "NFT_PRIORITY",
    "NFT_TABLE",
    "NO_NETEM",
    "PROTOCOLS",
    "QDISC_HANDLE",
    "REFUSED",
    "RUN_DIR",
    "Network",
    "Scope",
    "build_nft_inject",
    "build_nft_revert",
    "build_qdisc_inject",
    "build_qdisc_revert",
    "build_status_script",
    "check_port",
    "check_protocol",
    "controller_networks",
    "cuts_controller",
    "host_addresses",
    "loss_rules",
    "parse_status",
    "partition_rules",
    "probe_address",
    "resolve_peer",
    "resolve_single_peer",
    "scope_for",
]

NFT_TABLE = "chaosgpu"  # family inet
NFT_PRIORITY = -300  # raw: before conntrack (-200), NAT output (-100) and the filter chains (0)
QDISC_HANDLE = "cafe:"
RUN_DIR = "/run/chaosgpu/network"
ADDRESS_VAR = "chaosgpu_address"
CONTROLLER_VAR = "chaosgpu_controller_addresses"
PROTOCOLS = ("tcp", "udp", "any")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Marker lines the probes' scripts print (whatever else the tools print).
MARK = "@chaosgpu-net"
# Exit statuses of the injects, which the actions turn into clear refusals.
REFUSED = 3
NO_NETEM = 4

_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})")
_TOOLS_PATH = 'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"'  # appended: nft and tc live in sbin


@dataclass(frozen=True)
class Scope:
    """The traffic a fault matches: peer networks (none: any address) and a port at either end (0: any port)."""

    networks: tuple[Network, ...] = ()
    port: int = 0
    protocol: str = "tcp"

    def as_json(self) -> str:
        return json.dumps({"networks": [str(n) for n in self.networks], "port": self.port, "protocol": self.protocol})


# --- input -------------------------------------------------------------------------------------------------------


def check_port(port: Any, name: str = "port") -> int:
    """A port number 1-65535, or 0 for any port."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:  # noqa: PLR2004
        raise ActivityFailed(f"{name} must be a port number 1-65535 (0: any port), got {port!r}")
    return port


def check_protocol(protocol: Any, name: str = "protocol") -> str:
    if protocol not in PROTOCOLS:
        raise ActivityFailed(f"{name} must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return str(protocol)


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(part).strip() for part in value if str(part).strip()]
    return [str(value)]


def _literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _usable(address: ipaddress.IPv4Address | ipaddress.IPv6Address, what: str) -> None:
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        raise ActivityFailed(
            f"{what}: {address} is a loopback, unspecified or multicast address, not one other hosts reach it on "
            f"(set {ADDRESS_VAR} in the inventory)"
        )


def host_addresses(host: Host) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses other hosts reach ``host`` on: ``chaosgpu_address``, else ``ansible_host`` (a name is resolved
    here, on the controller). Refuses loopback and unspecified addresses."""
    configured = _as_list(host.vars.get(ADDRESS_VAR))
    names = configured or [host.address]
    source = ADDRESS_VAR if configured else "ansible_host"
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for name in names:
        literal = _literal(name)
        if literal is None:
            try:
                infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except OSError as err:
                raise ActivityFailed(f"host {host.name}: {source} {name!r} does not resolve: {err}") from None
            resolved = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        else:
            resolved = [literal]
        for address in resolved:
            _usable(address, f"host {host.name} ({source} {name})")
            if address not in found:
                found.append(address)
    return found


def controller_networks(host: Host) -> list[Network]:
    """The networks ``chaosgpu_controller_addresses`` names for ``host`` (empty when unset)."""
    networks = []
    for text in _as_list(host.vars.get(CONTROLLER_VAR)):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ActivityFailed(f"host {host.name}: {CONTROLLER_VAR} holds {text!r}, not an address or CIDR") from None
    return networks


def _network(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Network:
    return ipaddress.ip_network(address)


def resolve_peer(inventory: Inventory, peer: str, name: str = "peer") -> list[tuple[str, Network]]:
    """``peer``: comma-separated inventory hosts, groups, addresses or CIDRs; each as (the host it belongs to, or
    "", network). Refuses an entry that is none of these, and loopback/unspecified networks."""
    entries = _as_list(peer)
    if not entries:
        raise ActivityFailed(f"{name} must name an inventory host, a group, an address or a CIDR, got {peer!r}")
    found: list[tuple[str, Network]] = []
    for entry in entries:
        if entry in inventory.hosts:
            members = [entry]
        elif entry in inventory.groups and entry != "all":
            members = list(inventory.groups[entry])
        else:
            members = []
        if members:
            for member in members:
                found += [(member, _network(a)) for a in host_addresses(inventory.hosts[member])]
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ActivityFailed(
                f"{name}: {entry!r} is neither a host nor a group of inventory {inventory.source}, nor an address or "
                "CIDR"
            ) from None
        if network.is_loopback or network.is_unspecified or network.prefixlen == 0:
            raise ActivityFailed(f"{name}: {entry!r} covers loopback, unspecified or every address; name peers")
        found.append(("", network))
    return found


def resolve_single_peer(inventory: Inventory, peer: str, name: str = "peer") -> str:
    """One address for ``peer``: an inventory host (its first address) or an address; for route lookups."""
    if not isinstance(peer, str) or not peer.strip():
        raise ActivityFailed(f"{name} must be one inventory host or an address, got {peer!r}")
    peer = peer.strip()
    if peer in inventory.hosts:
        return str(host_addresses(inventory.hosts[peer])[0])
    literal = _literal(peer)
    if literal is None:
        raise ActivityFailed(f"{name}: {peer!r} is neither a host of inventory {inventory.source} nor an address")
    _usable(literal, name)
    return str(literal)


def probe_address(inventory: Inventory, peer: str, name: str = "peer") -> str:
    """What a probe connects to: an inventory host's first address, an address, or a host name the host resolves."""
    if not isinstance(peer, str) or not peer.strip():
        raise ActivityFailed(f"{name} must be an inventory host, an address or a host name, got {peer!r}")
    peer = peer.strip()
    if peer in inventory.hosts:
        return str(host_addresses(inventory.hosts[peer])[0])
    if _literal(peer) is not None:
        return str(_literal(peer))
    if not _HOSTNAME.fullmatch(peer):
        raise ActivityFailed(f"{name}: {peer!r} is neither an inventory host, an address nor a host name")
    return peer


def scope_for(host: Host, peers: Sequence[tuple[str, Network]], port: int, protocol: str) -> Scope:
    """The scope of a fault on ``host``: its peers without the host itself (a group may hold it)."""
    own = {_network(a) for a in host_addresses(host)} if peers else set()
    networks = [network for member, network in peers if member != host.name and network not in own]
    if peers and not networks:
        raise ActivityFailed(f"peer: the only peers given are {host.name} itself")
    collapsed: list[Network] = []
    for version in (4, 6):
        same = [n for n in networks if n.version == version]
        collapsed += list(ipaddress.collapse_addresses(cast("list[ipaddress.IPv4Network]", same)))
    return Scope(tuple(collapsed), port, protocol)


def cuts_controller(scope: Scope, controller: Iterable[Network], ssh_port: int) -> list[str]:
    """The controller networks ``scope`` would cut off (the controller speaks SSH to ``ssh_port``)."""
    by_port = not scope.port or (scope.protocol in ("tcp", "any") and scope.port == ssh_port)
    if not by_port:
        return []
    return [
        str(net)
        for net in controller
        if not scope.networks or any(net.version == n.version and net.overlaps(n) for n in scope.networks)
    ]


# --- nftables ----------------------------------------------------------------------------------------------------


def _matchers(scope: Scope, direction: str) -> list[str]:
    field = "saddr" if direction == "in" else "daddr"
    addresses = [""]
    if scope.networks:
        addresses = []
        for family, version in (("ip", 4), ("ip6", 6)):
            same = [str(n) for n in scope.networks if n.version == version]
            if same:
                addresses.append(f"{family} {field} {{ {', '.join(same)} }}")
    ports = [""]
    if scope.port:
        proto = "{ tcp, udp }" if scope.protocol == "any" else scope.protocol
        ports = [f"meta l4proto {proto} th {end} {scope.port}" for end in ("dport", "sport")]
    return [" ".join(part for part in (a, p) if part) for a in addresses for p in ports]


def _exclusions(networks: Iterable[Network], direction: str) -> list[str]:
    field = "saddr" if direction == "in" else "daddr"
    return [f"{'ip' if n.version == 4 else 'ip6'} {field} {n} accept" for n in networks]  # noqa: PLR2004


def partition_rules(scope: Scope) -> dict[str, list[str]]:
    """Rules per direction ("in", "out") that drop everything ``scope`` matches, loopback excepted."""
    if not scope.networks and not scope.port:
        raise ActivityFailed("a partition needs a peer or a port: it would cut the host off everything")
    return {
        "in": ['iif "lo" accept', *[f"{m} drop" for m in _matchers(scope, "in")]],
        "out": ['oif "lo" accept', *[f"{m} drop" for m in _matchers(scope, "out")]],
    }


def _random_below(percent: float) -> str:
    basis = round(percent * 100)
    if basis % 100 == 0:
        return f"numgen random mod 100 < {basis // 100}"
    return f"numgen random mod 10000 < {basis}"


def loss_rules(
    scope: Scope, percent: float, directions: Sequence[str], spared: Iterable[Network], *, spare_session: bool = True
) -> dict[str, list[str]]:
    """Rules that drop ``percent`` % of the packets ``scope`` matches, in ``directions``, sparing loopback, the
    ``spared`` networks (the controller's) and, with ``spare_session``, the SSH session the inject came through
    (its client address, found on the host)."""
    spared = list(spared)
    rules: dict[str, list[str]] = {}
    for direction in directions:
        lo = 'iif "lo" accept' if direction == "in" else 'oif "lo" accept'
        session = [f"@SESSION_{direction.upper()}@"] if spare_session else []
        rules[direction] = [
            lo,
            *_exclusions(spared, direction),
            *session,
            *[f"{m} {_random_below(percent)} drop".strip() for m in _matchers(scope, direction)],
        ]
    return rules


def _ruleset(rules: dict[str, list[str]]) -> str:
    hooks = {"in": "input", "out": "output"}
    lines = [f"table inet {NFT_TABLE} {{"]
    for direction, chain_rules in rules.items():
        lines.append(f"  chain @ID@-{direction} {{")
        lines.append(f"    type filter hook {hooks[direction]} priority {NFT_PRIORITY}; policy accept;")
        lines += [f"    {rule}" for rule in chain_rules]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# Finds the SSH session this command came through: SSH_CONNECTION of the nearest ancestor that has it (sudo resets
# the environment, but the sudo process itself still holds the session's).
_SSH_CONNECTION = r"""
ssh_connection() {
  local pid=$$ conn
  while [ "${pid:-0}" -gt 1 ]; do
    conn=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^SSH_CONNECTION=//p' | head -n 1)
    if [ -n "$conn" ]; then printf '%s\n' "$conn"; return 0; fi
    pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null)
  done
}
"""

# Exit 3 when the SSH session (client address and port, server port) is in the fault's scope.
_GUARD = """
import ipaddress, json, sys
spec = json.loads(sys.argv[1])
client = ipaddress.ip_address(sys.argv[2])
if client.version == 6 and client.ipv4_mapped:
    client = client.ipv4_mapped
nets = [ipaddress.ip_network(n) for n in spec["networks"]]
by_address = not nets or any(client in n for n in nets)
ports = (int(sys.argv[3]), int(sys.argv[4]))
by_port = not spec["port"] or (spec["protocol"] in ("tcp", "any") and spec["port"] in ports)
sys.exit(3 if by_address and by_port else 0)
"""


# One lock per mechanism (fd 8), held until the script ends: nftables table changes, tc root qdisc changes.
_TAKE_LOCK = r"""
take_lock() {
  mkdir -p -- "$RUN_DIR" && exec 8>>"$RUN_DIR/$1.lock" && flock -w 30 8 && return 0
  echo "cannot take the lock $RUN_DIR/$1.lock" >&2
  exit 1
}
"""


def _prelude(run_dir: str) -> str:
    return (
        "set -u\n"
        + _TOOLS_PATH
        + "\n"
        + f"RUN_DIR={shlex.quote(run_dir)}\n"
        + "id=${CHAOSGPU_FAULT_ID:-}\n"
        + 'case "$id" in ""|*[!A-Za-z0-9_.-]*) echo "CHAOSGPU_FAULT_ID is not a fault id ($id): run this through the '
        + 'chaosgpu ledger" >&2; exit 2;; esac\n'
        + _TAKE_LOCK
    )


def build_nft_inject(
    rules: dict[str, list[str]],
    scope: Scope,
    *,
    guard: bool,
    allow_cut: bool,
    spared_networks: Sequence[Network] = (),
    run_dir: str | None = None,
) -> str:
    """The inject of an nftables fault: chains ``<id>-in``/``<id>-out`` of ``inet chaosgpu`` with ``rules``.

    ``guard``: refuse (exit 3) when ``scope`` matches the SSH session the command came through, unless
    ``allow_cut``; then wait a second before cutting, so the ledger's answer that the fault is armed gets out.
    ``@SESSION_IN@``/``@SESSION_OUT@`` in the rules become an accept of the session's client address (nothing when
    there is no session, or when that address is one of ``spared_networks``, which the rules accept already).
    """
    ruleset = _ruleset(rules)
    spared = " ".join(str(n.network_address) for n in spared_networks if n.num_addresses == 1)
    return (
        _prelude(run_dir or RUN_DIR)
        + 'command -v nft >/dev/null 2>&1 || { echo "no nft on this host" >&2; exit 2; }\n'
        + _SSH_CONNECTION
        + f"RULESET={shlex.quote(ruleset)}\nSCOPE={shlex.quote(scope.as_json())}\nGUARD={shlex.quote(_GUARD)}\n"
        + f"SPARED={shlex.quote(spared)}\n"
        + f"GUARDED={1 if guard else 0}\nALLOW_CUT={1 if allow_cut else 0}\n"
        + r"""
conn=$(ssh_connection)
client=${conn%% *}
case "$client" in ::ffff:*.*) client=${client#::ffff:};; esac
[[ "$client" =~ ^[0-9A-Fa-f:.]+$ ]] || client=""
session_in="" session_out="" cut=0
if [ -n "$client" ]; then
  family=ip
  case "$client" in *:*) family=ip6;; esac
  case " $SPARED " in
    *" $client "*) ;;
    *) session_in="$family saddr $client accept"; session_out="$family daddr $client accept";;
  esac
  if [ "$GUARDED" = 1 ]; then
    set -- $conn
    python3 -I -c "$GUARD" "$SCOPE" "$client" "${2:-0}" "${4:-0}"
    rc=$?
    if [ "$rc" -eq 3 ]; then
      cut=1
    elif [ "$rc" -ne 0 ]; then
      echo "cannot check that this fault spares the SSH session from $client (python3 exited $rc)" >&2
      [ "$ALLOW_CUT" = 1 ] || exit 3
    fi
    if [ "$cut" = 1 ] && [ "$ALLOW_CUT" != 1 ]; then
      echo "refused: this fault would cut off the SSH session from $client (the controller);" \
        "allow_cut_controller=true cuts it anyway, and the host reverts the fault at its deadline" >&2
      exit 3
    fi
  fi
fi
RULESET=${RULESET//@ID@/$id}
RULESET=${RULESET//@SESSION_IN@/$session_in}
RULESET=${RULESET//@SESSION_OUT@/$session_out}
take_lock nft
# Cutting the controller off: give the ledger's answer (recorded and armed) a second to get out first.
[ "$cut" = 1 ] && sleep 1
printf '%s' "$RULESET" | nft -f -
"""
    )


def build_nft_revert(run_dir: str | None = None) -> str:
    """The revert of every nftables fault: delete the fault's own chains, then the table once no chain is left."""
    return (
        _prelude(run_dir or RUN_DIR)
        + "command -v nft >/dev/null 2>&1 || exit 0  # no nft: nothing of ours can be loaded\n"
        + f"TABLE={shlex.quote('inet ' + NFT_TABLE)}\n"
        + r"""
take_lock nft
nft list table $TABLE >/dev/null 2>&1 || exit 0
script=""
for chain in "$id-in" "$id-out"; do
  nft list chain $TABLE "$chain" >/dev/null 2>&1 && script+="delete chain $TABLE $chain"$'\n'
done
if [ -n "$script" ]; then
  printf '%s' "$script" | nft -f - || exit 1
fi
if ! nft list table $TABLE | grep -q '^[[:space:]]*chain '; then
  nft delete table $TABLE || exit 1
fi
exit 0
"""
    )


# --- tc ----------------------------------------------------------------------------------------------------------

_NORMALISE = "sed -e 's/ refcnt [0-9]*//' -e 's/[[:space:]]*$//'"


def build_qdisc_inject(peer_address: str, qdisc: str, what: str, run_dir: str | None = None) -> str:
    """The inject of a root-qdisc fault (``qdisc``: ``tbf ...`` or ``netem ...``) on the interface the host routes
    ``peer_address`` through: records the interface's qdiscs, refuses configured ones, then adds ours."""
    return (
        _prelude(run_dir or RUN_DIR)
        + f"PEER={shlex.quote(peer_address)}\nQDISC={shlex.quote(qdisc)}\nHANDLE={QDISC_HANDLE}\n"
        + f"WHAT={shlex.quote(what)}\nREFUSED={REFUSED}\nNO_NETEM={NO_NETEM}\n"
        + f"normalise() {{ {_NORMALISE}; }}\n"
        + r"""
for tool in tc ip flock; do
  command -v "$tool" >/dev/null 2>&1 || { echo "no $tool on this host" >&2; exit 2; }
done
dev=$(ip -o route get "$PEER" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n 1)
[ -n "$dev" ] || { echo "no route to $PEER on this host" >&2; exit 2; }
take_lock tc
listing=$(tc qdisc show dev "$dev" | normalise) || exit 1
while read -r _ kind handle _; do
  case "$kind" in ""|ingress|clsact) continue;; esac
  if [ "$handle" = "$HANDLE" ]; then
    echo "refused: $dev is already shaped by another chaosgpu fault ($kind $handle)" >&2
    exit "$REFUSED"
  fi
  if [ "$handle" != "0:" ]; then
    echo "refused: $dev has a configured qdisc ($kind $handle); chaosgpu only replaces an interface's default" \
      "qdisc, which it can restore exactly" >&2
    exit "$REFUSED"
  fi
done <<<"$listing"
state="$RUN_DIR/$id.tc"
printf '%s\n%s\n' "$dev" "$listing" >"$state.tmp" && mv -f -- "$state.tmp" "$state" || exit 1
if ! out=$(tc qdisc add dev "$dev" root handle "$HANDLE" $QDISC 2>&1); then
  rm -f -- "$state"
  case "$out" in
    *"kind is unknown"*)
      echo "the kernel of this host lacks sch_${QDISC%% *} (tc: $out): $WHAT cannot be injected here" >&2
      exit "$NO_NETEM";;
  esac
  echo "tc qdisc add dev $dev root $QDISC failed: $out" >&2
  exit 1
fi
echo "$dev: $(tc qdisc show dev "$dev" root)"
"""
    )


def build_qdisc_revert(run_dir: str | None = None) -> str:
    """The revert of a root-qdisc fault: delete our root qdisc, which gives the interface its default qdisc back (the
    inject refused any other), then check it lists exactly the qdiscs recorded before; exit 1 showing both when not
    (a qdisc the kernel creates gets a new handle, so nothing but the default can be put back exactly)."""
    return (
        _prelude(run_dir or RUN_DIR)
        + f"HANDLE={QDISC_HANDLE}\n"
        + f"normalise() {{ {_NORMALISE}; }}\n"
        + r"""
state="$RUN_DIR/$id.tc"
[ -e "$state" ] || exit 0  # nothing recorded: the inject changed nothing (or the host rebooted since)
take_lock tc
dev=$(sed -n 1p "$state")
before=$(sed 1d "$state")
if [ -z "$dev" ] || ! ip link show dev "$dev" >/dev/null 2>&1; then
  rm -f -- "$state"  # the interface is gone, and our qdisc with it
  exit 0
fi
root=$(tc qdisc show dev "$dev" root)
case "$root" in
  "qdisc "*" $HANDLE "*) tc qdisc del dev "$dev" root || exit 1;;
esac
now=$(tc qdisc show dev "$dev" | normalise)
if [ "$now" != "$before" ]; then
  printf 'the qdiscs of %s differ from before the fault:\nbefore:\n%s\nnow:\n%s\n' "$dev" "$before" "$now" >&2
  exit 1
fi
rm -f -- "$state"
"""
    )


# --- status ------------------------------------------------------------------------------------------------------


def build_status_script(run_dir: str | None = None) -> str:
    """Lists chaosgpu's nftables table and the root qdiscs its tc faults recorded (read-only, as root)."""
    return (
        "set -u\n"
        + _TOOLS_PATH
        + "\n"
        + f"RUN_DIR={shlex.quote(run_dir or RUN_DIR)}\nMARK={MARK}\n"
        + f'echo "$MARK nft-begin"\nnft list table inet {NFT_TABLE} 2>/dev/null\necho "$MARK nft-end"\n'
        + r"""
for state in "$RUN_DIR"/*.tc; do
  [ -e "$state" ] || continue
  dev=$(sed -n 1p "$state")
  echo "$MARK tc $(basename -- "$state" .tc) $dev $(tc qdisc show dev "$dev" root 2>/dev/null | head -n 1)"
done
exit 0
"""
    )


_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_HOOK = re.compile(r"^\s*type filter hook (\w+) priority (\S+);")


def parse_status(host: str, stdout: str) -> list[dict[str, Any]]:
    """The network faults in a status listing: one entry per fault id (nftables chains, tc root qdiscs)."""
    faults: dict[str, dict[str, Any]] = {}
    inside = False
    chain = ""
    for line in stdout.splitlines():
        if line == f"{MARK} nft-begin":
            inside = True
            continue
        if line == f"{MARK} nft-end":
            inside = False
            continue
        if inside:
            match = _CHAIN.match(line)
            if match:
                chain = match.group(1)
                fault_id = re.sub(r"-(in|out)$", "", chain)
                entry = faults.setdefault(
                    fault_id, {"host": host, "fault_id": fault_id, "mechanism": "nftables", "chains": [], "rules": []}
                )
                entry["chains"].append(chain)
                continue
            hook = _HOOK.match(line)
            stripped = line.strip()
            if hook or not chain or stripped in ("", "}") or stripped.startswith("table "):
                continue
            faults[re.sub(r"-(in|out)$", "", chain)]["rules"].append(f"{chain}: {stripped}")
        elif line.startswith(f"{MARK} tc "):
            _, _, fault_id, dev, *qdisc = line.split()
            faults[fault_id] = {
                "host": host,
                "fault_id": fault_id,
                "mechanism": "tc",
                "device": dev,
                "qdisc": " ".join(qdisc),
            }
    return list(faults.values())
