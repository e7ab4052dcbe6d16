"""chaosgpu.network: peers and scopes, the nftables and tc scripts (run for real with bash against recording fakes of
nft, tc and ip that keep their state in a temporary directory), the actions through the real ledger scripts
(test_ledger's temporary ledger), and the probes with LocalTransport."""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from test_ledger import BashTransport, FakeRoot, root  # noqa: F401 - root is a fixture

from chaosgpu import activity, ledger, network
from chaosgpu.inventory import Inventory
from chaosgpu.network import actions, probes
from chaosgpu.transport import LocalTransport
from chaosgpu.types import CommandResult, Host

CONTROLLER = "172.30.99.1"
NODE1 = Host(
    "gpu-node-1",
    "127.0.0.1",
    2221,
    "operator",
    groups=("gpu_nodes", "lab"),
    vars={"chaosgpu_address": "172.30.99.11", "chaosgpu_controller_addresses": [CONTROLLER]},
)
NODE2 = Host(
    "gpu-node-2",
    "127.0.0.1",
    2222,
    "operator",
    groups=("gpu_nodes", "lab"),
    vars={"chaosgpu_address": "172.30.99.12", "chaosgpu_controller_addresses": [CONTROLLER]},
)
OPS = Host(
    "ops-1",
    "127.0.0.1",
    2220,
    "operator",
    groups=("ops", "lab"),
    vars={"chaosgpu_address": "172.30.99.10", "chaosgpu_controller_addresses": [CONTROLLER]},
)
BARE = Host("bare-1", "127.0.0.1", 2224, "operator", groups=("lab",))  # no chaosgpu_address: only loopback known
INVENTORY = Inventory(
    source="fake-inventory",
    hosts={h.name: h for h in (NODE1, NODE2, OPS, BARE)},
    groups={
        "all": ("gpu-node-1", "gpu-node-2", "ops-1", "bare-1"),
        "lab": ("gpu-node-1", "gpu-node-2", "ops-1", "bare-1"),
        "gpu_nodes": ("gpu-node-1", "gpu-node-2"),
        "ops": ("ops-1",),
    },
    production=False,
    power_drivers={},
)
CONFIGURATION = {"chaosgpu_inventory": "fake-inventory", "chaosgpu_max_share": 1.0}
FAULT_ID = "net-partition-20260101T000000Z-0123abcd"

# --- fakes of nft, tc and ip -------------------------------------------------------------------------------------

_FAKE_NFT = r"""
import json, os, re, sys
state_dir = os.environ["FAKE_NET_STATE"]
path = os.path.join(state_dir, "nft.json")
state = json.load(open(path)) if os.path.exists(path) else {}
args = sys.argv[1:]
with open(os.path.join(state_dir, "nft.log"), "a") as log:
    log.write(json.dumps(args) + "\n")

def fail(message):
    print("Error: " + message, file=sys.stderr)
    sys.exit(1)

def save():
    json.dump(state, open(path, "w"))

def show(table):
    print(f"table {table} {{")
    for name, chain in state[table].items():
        print(f"\tchain {name} {{")
        print(f"\t\ttype filter hook {chain['hook']} priority {chain['priority']}; policy accept;")
        for rule in chain["rules"]:
            print(f"\t\t{rule}")
        print("\t}")
    print("}")

if args == ["-f", "-"]:
    text = sys.stdin.read()
    with open(os.path.join(state_dir, "nft.input"), "a") as log:
        log.write(text + "\n---\n")
    if os.path.exists(os.path.join(state_dir, "nft.fail")):
        fail("Could not process rule: Operation not permitted")
    table = chain = None
    for line in text.splitlines():
        line = line.strip()
        if m := re.fullmatch(r"table (\w+ \w+) \{", line):
            table = m.group(1)
            state.setdefault(table, {})
        elif m := re.fullmatch(r"chain (\S+) \{", line):
            chain = state[table].setdefault(m.group(1), {"hook": "", "priority": "", "rules": []})
        elif m := re.fullmatch(r"type filter hook (\w+) priority (\S+); policy accept;", line):
            chain["hook"], chain["priority"] = m.group(1), m.group(2)
        elif m := re.fullmatch(r"delete chain (\w+ \w+) (\S+)", line):
            if m.group(2) not in state.get(m.group(1), {}):
                fail("No such file or directory")
            del state[m.group(1)][m.group(2)]
        elif line == "}":
            chain = None if chain is not None else chain
        elif line and chain is not None:
            chain["rules"].append(line)
    save()
elif args[:2] == ["list", "table"]:
    table = " ".join(args[2:4])
    if table not in state:
        fail("No such file or directory")
    show(table)
elif args[:2] == ["list", "chain"]:
    if args[4] not in state.get(" ".join(args[2:4]), {}):
        fail("No such file or directory")
elif args[:2] == ["delete", "table"]:
    table = " ".join(args[2:4])
    if table not in state:
        fail("No such file or directory")
    del state[table]
    save()
else:
    fail("fake nft does not know " + " ".join(args))
"""

_FAKE_TC = r"""
import json, os, sys
state_dir = os.environ["FAKE_NET_STATE"]
path = os.path.join(state_dir, "tc.json")
state = json.load(open(path))
args = sys.argv[1:]
with open(os.path.join(state_dir, "tc.log"), "a") as log:
    log.write(json.dumps(args) + "\n")

def save():
    json.dump(state, open(path, "w"))

def error(message):
    print("Error: " + message, file=sys.stderr)
    sys.exit(2)

assert args[0] == "qdisc", args
dev = args[args.index("dev") + 1] if "dev" in args else None
if args[1] == "show":
    for line in state["devs"][dev]:
        if "root" not in args[2:] or " root" in line:
            print(line + " ")
elif args[1] == "add":
    handle, kind = args[args.index("handle") + 1], args[args.index("handle") + 2]
    if kind in os.environ.get("FAKE_TC_UNKNOWN", "").split():
        error("Specified qdisc kind is unknown.")
    root = state["devs"][dev][0].split()
    if root[2] != "0:":
        error("Exclusivity flag on, cannot modify.")
    rest = " ".join(args[args.index("handle") + 3:])
    state["devs"][dev] = [f"qdisc {kind} {handle} root refcnt 2 {rest}"]
    save()
elif args[1] == "del":
    if state["devs"][dev][0].split()[2] == "0:":
        error("Cannot delete qdisc with handle of zero.")
    state["devs"][dev] = state["after_delete"].get(dev) or state["default"][dev]
    save()
else:
    error("fake tc does not know " + " ".join(args))
"""

_FAKE_IP = r"""
import json, os, sys
state = json.load(open(os.path.join(os.environ["FAKE_NET_STATE"], "tc.json")))
args = sys.argv[1:]
if args[:3] == ["-o", "route", "get"]:
    if args[3] == "203.0.113.99":
        print("RTNETLINK answers: Network is unreachable", file=sys.stderr)
        sys.exit(2)
    print(f"{args[3]} dev {state['route_dev']} src 172.30.99.12 uid 0 \\    cache ")
elif args[:3] == ["link", "show", "dev"]:
    sys.exit(0 if args[3] in state["devs"] else 1)
else:
    sys.exit(2)
"""


@dataclass
class FakeNet:
    """The fakes' state directory and their bin directory (first on PATH)."""

    state: Path
    bin: Path
    run_dir: Path

    def nft(self) -> dict[str, Any]:
        path = self.state / "nft.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def chains(self) -> dict[str, Any]:
        return self.nft().get("inet chaosgpu", {})

    def nft_calls(self) -> list[list[str]]:
        path = self.state / "nft.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def tc_state(self) -> dict[str, Any]:
        return json.loads((self.state / "tc.json").read_text())

    def qdiscs(self, dev: str = "eth0") -> list[str]:
        return list(self.tc_state()["devs"][dev])

    def set_qdiscs(self, dev: str, lines: list[str], after_delete: list[str] | None = None) -> None:
        state = self.tc_state()
        state["devs"][dev] = lines
        state["default"][dev] = lines
        if after_delete is not None:
            state["after_delete"][dev] = after_delete
        (self.state / "tc.json").write_text(json.dumps(state))

    def tc_calls(self) -> list[list[str]]:
        path = self.state / "tc.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNet:
    state = tmp_path / "net"
    bin_dir = tmp_path / "net-bin"
    state.mkdir()
    bin_dir.mkdir()
    for name, body in (("nft", _FAKE_NFT), ("tc", _FAKE_TC), ("ip", _FAKE_IP)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{body}")
        (bin_dir / name).chmod(0o755)
    default = {"eth0": ["qdisc noqueue 0: root refcnt 2"], "lo": ["qdisc noqueue 0: root refcnt 2"]}
    (state / "tc.json").write_text(
        json.dumps({"devs": default, "default": default, "after_delete": {}, "route_dev": "eth0"})
    )
    monkeypatch.setenv("FAKE_NET_STATE", str(state))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    # The session the commands "arrive through": an operator's workstation, not a peer of any test.
    monkeypatch.setenv("SSH_CONNECTION", "198.51.100.7 50000 172.30.99.12 22")
    run_dir = tmp_path / "run" / "chaosgpu" / "network"
    monkeypatch.setattr(network, "RUN_DIR", str(run_dir))
    return FakeNet(state, bin_dir, run_dir)


def _bash(script: str, fault_id: str = FAULT_ID, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "CHAOSGPU_FAULT_ID": fault_id, **env},
    )


# --- peers, scopes, rules ----------------------------------------------------------------------------------------


def test_a_peer_host_is_its_chaosgpu_address_and_a_group_its_members() -> None:
    assert network.resolve_peer(INVENTORY, "ops-1") == [("ops-1", ipaddress.ip_network("172.30.99.10/32"))]
    assert [m for m, _ in network.resolve_peer(INVENTORY, "gpu_nodes")] == ["gpu-node-1", "gpu-node-2"]
    assert network.resolve_peer(INVENTORY, "ops-1, 10.1.0.0/16") == [
        ("ops-1", ipaddress.ip_network("172.30.99.10/32")),
        ("", ipaddress.ip_network("10.1.0.0/16")),
    ]


@pytest.mark.parametrize(
    ("peer", "match"),
    [
        ("nosuchhost", r"peer: 'nosuchhost' is neither a host nor a group of inventory fake-inventory"),
        ("127.0.0.0/8", r"peer: '127.0.0.0/8' covers loopback"),
        ("0.0.0.0/0", r"covers loopback, unspecified or every address"),
        ("bare-1", r"host bare-1 \(ansible_host 127.0.0.1\): 127.0.0.1 is a loopback.*set chaosgpu_address"),
        ("", r"peer must name an inventory host"),
    ],
)
def test_a_peer_that_is_not_one_is_refused_by_name(peer: str, match: str) -> None:
    with pytest.raises(ActivityFailed, match=match):
        network.resolve_peer(INVENTORY, peer)


def test_a_groups_own_target_is_left_out_of_its_peers() -> None:
    peers = network.resolve_peer(INVENTORY, "gpu_nodes")
    assert network.scope_for(NODE2, peers, 0, "tcp").networks == (ipaddress.ip_network("172.30.99.11/32"),)
    with pytest.raises(ActivityFailed, match="the only peers given are gpu-node-2 itself"):
        network.scope_for(NODE2, network.resolve_peer(INVENTORY, "gpu-node-2"), 0, "tcp")


def test_overlapping_peer_networks_are_merged_for_nft() -> None:
    peers = network.resolve_peer(INVENTORY, "10.0.0.0/8,10.1.0.0/16,ops-1")
    assert [str(n) for n in network.scope_for(NODE2, peers, 0, "tcp").networks] == ["10.0.0.0/8", "172.30.99.10/32"]


def test_the_controller_is_cut_by_a_peer_covering_it_or_by_its_ssh_port() -> None:
    controller = [ipaddress.ip_network(CONTROLLER)]
    subnet = network.Scope((ipaddress.ip_network("172.30.99.0/24"),))
    assert network.cuts_controller(subnet, controller, 22) == ["172.30.99.1/32"]
    assert network.cuts_controller(network.Scope(port=22), controller, 22) == ["172.30.99.1/32"]
    assert network.cuts_controller(network.Scope(port=22, protocol="udp"), controller, 22) == []
    assert network.cuts_controller(network.Scope(port=9100), controller, 22) == []
    ops = network.Scope((ipaddress.ip_network("172.30.99.10/32"),))
    assert network.cuts_controller(ops, controller, 22) == []


def test_partition_rules_drop_both_ends_of_a_port_both_ways_and_spare_loopback() -> None:
    scope = network.Scope((ipaddress.ip_network("172.30.99.10/32"), ipaddress.ip_network("fd00::/64")), 9100, "any")
    rules = network.partition_rules(scope)
    assert rules["in"] == [
        'iif "lo" accept',
        "ip saddr { 172.30.99.10/32 } meta l4proto { tcp, udp } th dport 9100 drop",
        "ip saddr { 172.30.99.10/32 } meta l4proto { tcp, udp } th sport 9100 drop",
        "ip6 saddr { fd00::/64 } meta l4proto { tcp, udp } th dport 9100 drop",
        "ip6 saddr { fd00::/64 } meta l4proto { tcp, udp } th sport 9100 drop",
    ]
    assert rules["out"][1] == "ip daddr { 172.30.99.10/32 } meta l4proto { tcp, udp } th dport 9100 drop"
    with pytest.raises(ActivityFailed, match="needs a peer or a port"):
        network.partition_rules(network.Scope())


def test_loss_rules_spare_the_controller_and_use_basis_points_only_when_needed() -> None:
    controller = [ipaddress.ip_network(CONTROLLER)]
    rules = network.loss_rules(network.Scope(), 30, ("in", "out"), controller)
    assert rules["in"] == [
        'iif "lo" accept',
        "ip saddr 172.30.99.1/32 accept",
        "@SESSION_IN@",
        "numgen random mod 100 < 30 drop",
    ]
    assert rules["out"][-1] == "numgen random mod 100 < 30 drop"
    fine = network.loss_rules(network.Scope(port=53, protocol="udp"), 2.5, ("out",), [], spare_session=False)
    assert fine == {"out": ['oif "lo" accept', "meta l4proto udp th dport 53 numgen random mod 10000 < 250 drop",
                            "meta l4proto udp th sport 53 numgen random mod 10000 < 250 drop"]}  # fmt: skip


# --- the nftables scripts ------------------------------------------------------------------------------------------


def _partition_inject(peer: str = "172.30.99.10/32", port: int = 0, allow_cut: bool = False) -> str:
    scope = network.Scope((ipaddress.ip_network(peer),), port)
    return network.build_nft_inject(network.partition_rules(scope), scope, guard=True, allow_cut=allow_cut)


def test_nft_inject_adds_one_chain_per_hook_named_after_the_fault(net: FakeNet) -> None:
    done = _bash(_partition_inject())
    assert done.returncode == 0, done.stderr
    chains = net.chains()
    assert set(chains) == {f"{FAULT_ID}-in", f"{FAULT_ID}-out"}
    assert chains[f"{FAULT_ID}-in"]["hook"] == "input"
    assert chains[f"{FAULT_ID}-out"]["hook"] == "output"
    assert {c["priority"] for c in chains.values()} == {"-300"}
    assert chains[f"{FAULT_ID}-in"]["rules"] == ['iif "lo" accept', "ip saddr { 172.30.99.10/32 } drop"]
    assert set(net.nft()) == {"inet chaosgpu"}  # no other table touched or created


def test_nft_revert_deletes_only_its_chains_and_the_table_with_the_last(net: FakeNet) -> None:
    other = "net-loss-20260101T000000Z-feedbeef"
    assert _bash(_partition_inject()).returncode == 0
    assert _bash(_partition_inject("10.9.0.0/16"), fault_id=other).returncode == 0

    first = _bash(network.build_nft_revert())
    assert first.returncode == 0, first.stderr
    assert set(net.chains()) == {f"{other}-in", f"{other}-out"}
    assert _bash(network.build_nft_revert()).returncode == 0  # again: nothing of it left, nothing done
    assert set(net.chains()) == {f"{other}-in", f"{other}-out"}

    assert _bash(network.build_nft_revert(), fault_id=other).returncode == 0
    assert net.nft() == {}
    assert _bash(network.build_nft_revert(), fault_id=other).returncode == 0  # no table: nothing to do


def test_nft_scripts_refuse_to_run_outside_the_ledger(net: FakeNet) -> None:
    for script in (_partition_inject(), network.build_nft_revert()):
        done = _bash(script, fault_id="")
        assert done.returncode == 2
        assert "CHAOSGPU_FAULT_ID is not a fault id" in done.stderr
    done = _bash(_partition_inject(), fault_id="x; nft flush ruleset")
    assert done.returncode == 2
    assert net.nft_calls() == []


def test_a_failing_nft_load_fails_the_inject(net: FakeNet) -> None:
    (net.state / "nft.fail").touch()
    done = _bash(_partition_inject())
    assert done.returncode != 0
    assert "Operation not permitted" in done.stderr


def test_partition_of_the_ssh_session_is_refused_on_the_host(net: FakeNet) -> None:
    session = {"SSH_CONNECTION": "172.30.99.1 41000 172.30.99.12 22"}
    ssh_port = network.Scope(port=22)
    by_address = _bash(_partition_inject("172.30.99.0/24"), **session)
    by_port = _bash(
        network.build_nft_inject(network.partition_rules(ssh_port), ssh_port, guard=True, allow_cut=False), **session
    )

    for done in (by_address, by_port):
        assert done.returncode == network.REFUSED, done.stderr
        assert "would cut off the SSH session from 172.30.99.1 (the controller)" in done.stderr
        assert "allow_cut_controller=true" in done.stderr
    assert net.nft_calls() == []  # refused before nft ran at all


@pytest.mark.usefixtures("net")
def test_partition_that_spares_the_ssh_session_goes_ahead() -> None:
    session = {"SSH_CONNECTION": "172.30.99.1 41000 172.30.99.12 22"}
    assert _bash(_partition_inject("172.30.99.10/32"), **session).returncode == 0
    other_port = network.Scope((ipaddress.ip_network("172.30.99.0/24"),), 9100)
    script = network.build_nft_inject(network.partition_rules(other_port), other_port, guard=True, allow_cut=False)
    assert _bash(script, fault_id="net-partition-b", **session).returncode == 0


def test_allowed_cut_waits_a_second_then_cuts(net: FakeNet) -> None:
    session = {"SSH_CONNECTION": "::ffff:172.30.99.1 41000 172.30.99.12 22"}  # an IPv4-mapped client is the same
    started = time.monotonic()
    done = _bash(_partition_inject("172.30.99.0/24", allow_cut=True), **session)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 1
    assert f"{FAULT_ID}-in" in net.chains()


def test_loss_spares_the_ssh_session_once(net: FakeNet) -> None:
    controller = [ipaddress.ip_network(CONTROLLER)]
    scope = network.Scope()
    script = network.build_nft_inject(
        network.loss_rules(scope, 30, ("in", "out"), []), scope, guard=False, allow_cut=False
    )
    assert _bash(script, SSH_CONNECTION="172.30.99.1 41000 172.30.99.12 22").returncode == 0
    assert net.chains()[f"{FAULT_ID}-in"]["rules"][:2] == ['iif "lo" accept', "ip saddr 172.30.99.1 accept"]

    spared = network.build_nft_inject(
        network.loss_rules(scope, 30, ("in",), controller),
        scope,
        guard=False,
        allow_cut=False,
        spared_networks=controller,
    )
    assert _bash(spared, fault_id="net-loss-b", SSH_CONNECTION="172.30.99.1 41000 172.30.99.12 22").returncode == 0
    assert net.chains()["net-loss-b-in"]["rules"] == [
        'iif "lo" accept',
        "ip saddr 172.30.99.1/32 accept",
        "numgen random mod 100 < 30 drop",
    ]


@pytest.mark.skipif(
    shutil.which("nft") is None or os.geteuid() != 0, reason="needs nft and root to check rulesets (nft -c)"
)
def test_every_ruleset_is_valid_nft(tmp_path: Path) -> None:
    """``nft -c`` parses and checks the rulesets the actions build, without applying anything."""
    scope = network.Scope((ipaddress.ip_network("172.30.99.10/32"), ipaddress.ip_network("fd00::/64")), 9100, "any")
    rulesets = [
        network.partition_rules(scope),
        network.loss_rules(scope, 12.5, ("in", "out"), [ipaddress.ip_network(CONTROLLER)]),
        {"out": ["meta l4proto { tcp, udp } th dport 53 drop"], "in": ["meta l4proto { tcp, udp } th sport 53 drop"]},
    ]
    for rules in rulesets:
        text = network._ruleset(rules).replace("@ID@", FAULT_ID)
        text = text.replace("@SESSION_IN@", "ip saddr 172.30.99.1 accept").replace("@SESSION_OUT@", "")
        path = tmp_path / "ruleset.nft"
        path.write_text(text)
        checked = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, f"{checked.stderr}\n{text}"


# --- the tc scripts ----------------------------------------------------------------------------------------------

_TBF = "tbf rate 4000kbit burst 50000 latency 200ms"


def test_tbf_goes_on_the_interface_toward_the_peer_and_its_revert_restores_the_default(net: FakeNet) -> None:
    done = _bash(network.build_qdisc_inject("172.30.99.10", _TBF, "a bandwidth limit"))
    assert done.returncode == 0, done.stderr
    assert net.qdiscs() == [f"qdisc tbf cafe: root refcnt 2 {_TBF.removeprefix('tbf ')}"]
    assert (net.run_dir / f"{FAULT_ID}.tc").read_text() == "eth0\nqdisc noqueue 0: root\n"

    reverted = _bash(network.build_qdisc_revert())
    assert reverted.returncode == 0, reverted.stderr
    assert net.qdiscs() == ["qdisc noqueue 0: root refcnt 2"]
    assert not (net.run_dir / f"{FAULT_ID}.tc").exists()
    assert _bash(network.build_qdisc_revert()).returncode == 0  # again: nothing recorded, nothing done
    assert [c[1] for c in net.tc_calls()].count("del") == 1


def test_a_multiqueue_default_is_accepted_and_must_come_back_whole(net: FakeNet) -> None:
    mq = ["qdisc mq 0: root", "qdisc fq_codel 0: parent :1 limit 10240p", "qdisc fq_codel 0: parent :2 limit 10240p"]
    net.set_qdiscs("eth0", mq)
    assert _bash(network.build_qdisc_inject("172.30.99.10", _TBF, "a bandwidth limit")).returncode == 0
    assert _bash(network.build_qdisc_revert()).returncode == 0
    assert net.qdiscs() == mq


def test_a_configured_or_shaped_interface_is_refused_untouched(net: FakeNet) -> None:
    for lines, said in (
        (["qdisc fq 8001: root refcnt 2 limit 10000p"], "has a configured qdisc (fq 8001:)"),
        (["qdisc tbf cafe: root refcnt 2 rate 1Mbit"], "already shaped by another chaosgpu fault"),
        (["qdisc mq 0: root", "qdisc htb 1: parent :1"], "has a configured qdisc (htb 1:)"),
    ):
        net.set_qdiscs("eth0", lines)
        done = _bash(network.build_qdisc_inject("172.30.99.10", _TBF, "a bandwidth limit"))
        assert done.returncode == network.REFUSED, done.stderr
        assert said in done.stderr
        assert net.qdiscs() == lines
    assert not any(c[1] == "add" for c in net.tc_calls())
    assert list(net.run_dir.glob("*.tc")) == []


def test_no_route_to_the_peer_changes_nothing(net: FakeNet) -> None:
    done = _bash(network.build_qdisc_inject("203.0.113.99", _TBF, "a bandwidth limit"))
    assert done.returncode == 2
    assert "no route to 203.0.113.99" in done.stderr
    assert net.tc_calls() == []


def test_netem_missing_from_the_kernel_is_said_and_changes_nothing(net: FakeNet) -> None:
    done = _bash(network.build_qdisc_inject("172.30.99.10", "netem delay 50ms", "latency"), FAKE_TC_UNKNOWN="netem")
    assert done.returncode == network.NO_NETEM
    assert "the kernel of this host lacks sch_netem" in done.stderr
    assert "Specified qdisc kind is unknown" in done.stderr
    assert net.qdiscs() == ["qdisc noqueue 0: root refcnt 2"]
    assert list(net.run_dir.glob("*.tc")) == []  # the revert that follows has nothing to undo
    assert _bash(network.build_qdisc_revert()).returncode == 0


def test_a_revert_that_cannot_restore_exactly_fails_showing_both(net: FakeNet) -> None:
    net.set_qdiscs("eth0", ["qdisc noqueue 0: root refcnt 2"], after_delete=["qdisc fq_codel 0: root refcnt 2"])
    assert _bash(network.build_qdisc_inject("172.30.99.10", _TBF, "a bandwidth limit")).returncode == 0
    done = _bash(network.build_qdisc_revert())
    assert done.returncode == 1
    assert "the qdiscs of eth0 differ from before the fault" in done.stderr
    assert "qdisc noqueue 0: root" in done.stderr
    assert "qdisc fq_codel 0: root" in done.stderr
    assert (net.run_dir / f"{FAULT_ID}.tc").exists()  # kept: the ledger marks the fault failed, cleanup retries


# --- the actions, through the ledger -----------------------------------------------------------------------------


class CutTransport(BashTransport):
    """Runs the script, then answers like ssh when the connection died after the fault was armed."""

    def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:
        done = super().run(host, command, timeout, stdin)
        return CommandResult(host.name, command, 255, done.stdout, "Timeout, server not responding.", 15.0)


@pytest.fixture
def fleet(
    root: FakeRoot,  # noqa: F811 - the fixture
    net: FakeNet,  # noqa: ARG001 - the fakes must be in place
    monkeypatch: pytest.MonkeyPatch,
) -> BashTransport:
    """The fake inventory, a BashTransport as the run's transport, the ledger in a temporary directory."""
    transport = BashTransport()
    monkeypatch.setattr(activity, "load_inventory", lambda _source: INVENTORY)
    monkeypatch.setattr(activity, "_inventories", {})
    monkeypatch.setattr(activity, "_transport", transport)
    monkeypatch.setattr(ledger, "LedgerConfig", functools.partial(ledger.LedgerConfig, **root.config.__dict__))
    return transport


def _revert_all(transport: BashTransport, faults: Sequence[dict[str, Any]]) -> None:
    for fault in faults:
        assert ledger.revert_fault(transport, INVENTORY.hosts[fault["host"]], fault["id"]) is True


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: actions.partition("gpu-node-2", configuration=CONFIGURATION), "give a peer, a port or both"),
        (lambda: actions.partition("gpu-node-2", "ops-1", port=70000, configuration=CONFIGURATION), "^port must"),
        (lambda: actions.partition("gpu-node-2", "ops-1", protocol="icmp", configuration=CONFIGURATION), "protocol"),
        (lambda: actions.partition("gpu-node-2", "nosuch", configuration=CONFIGURATION), "peer: 'nosuch'"),
        (lambda: actions.partition("gpu-node-2", "ops-1", duration_s=-1, configuration=CONFIGURATION), "duration_s"),
        (lambda: actions.partition("gpu-node-2", "ops-1", allow_cut_controller="yes", configuration=CONFIGURATION),
         "allow_cut_controller must be true or false"),
        (lambda: actions.packet_loss("gpu-node-2", 100, configuration=CONFIGURATION),
         r"loss_percent must be in \(0, 100\)"),
        (lambda: actions.packet_loss("gpu-node-2", 0, configuration=CONFIGURATION), "loss_percent"),
        (lambda: actions.packet_loss("gpu-node-2", 10, direction="up", configuration=CONFIGURATION), "direction"),
        (lambda: actions.bandwidth_limit("gpu-node-2", "ops-1", 8, configuration=CONFIGURATION), "rate_kbit"),
        (lambda: actions.bandwidth_limit("gpu-node-2", "ops-1", 1.5, configuration=CONFIGURATION), "rate_kbit"),
        (lambda: actions.bandwidth_limit("gpu-node-2", "gpu_nodes", 1000, configuration=CONFIGURATION),
         "peer: 'gpu_nodes' is neither a host"),
        (lambda: actions.latency("gpu-node-2", "ops-1", 0, configuration=CONFIGURATION), "delay_ms"),
        (lambda: actions.latency("gpu-node-2", "ops-1", 10, jitter_ms=20, configuration=CONFIGURATION), "jitter_ms"),
        (lambda: actions.dns_failure("gpu-node-2", mode="servfail", configuration=CONFIGURATION), "mode must be"),
        (lambda: actions.partition("gpu-node-2", "172.30.99.0/24", configuration=CONFIGURATION),
         r"would cut off the controller \(172.30.99.1/32, chaosgpu_controller_addresses\)"),
        (lambda: actions.partition("gpu-node-2", port=2222, configuration=CONFIGURATION),
         "would cut off the controller"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_by_name_before_any_host_is_reached(fleet: BashTransport, call: Any, match: str) -> None:
    with pytest.raises(ActivityFailed, match=match):
        call()
    assert fleet.calls == []


def test_partition_is_recorded_injected_and_reverted(fleet: BashTransport, net: FakeNet) -> None:
    faults = actions.partition("gpu-node-2", "ops-1", port=9100, duration_s=30, configuration=CONFIGURATION)

    [fault] = faults
    assert fault["kind"] == "net-partition"
    assert fault["deadline"] - fault["created"] == 30
    assert [call[0] for call in fleet.calls] == ["run"]  # one call: record, arm, inject
    rules = net.chains()[f"{fault['id']}-in"]["rules"]
    assert rules == [
        'iif "lo" accept',
        "ip saddr { 172.30.99.10/32 } meta l4proto tcp th dport 9100 drop",
        "ip saddr { 172.30.99.10/32 } meta l4proto tcp th sport 9100 drop",
    ]
    _revert_all(fleet, faults)
    assert net.nft() == {}


def test_allowed_cut_of_the_controller_counts_as_injected_when_the_call_breaks(
    fleet: BashTransport, net: FakeNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut = CutTransport()
    monkeypatch.setattr(activity, "_transport", cut)
    monkeypatch.setenv("SSH_CONNECTION", "172.30.99.1 41000 172.30.99.12 22")

    with pytest.raises(ActivityFailed, match="after the fault was recorded and armed"):
        actions.packet_loss("gpu-node-2", 50, duration_s=30, configuration=CONFIGURATION)  # not meant to cut
    faults = actions.partition(
        "gpu-node-2", "172.30.99.0/24", duration_s=30, allow_cut_controller=True, configuration=CONFIGURATION
    )

    [fault] = faults
    assert fault["kind"] == "net-partition"
    assert f"{fault['id']}-in" in net.chains()
    assert [f.kind for f in ledger.list_faults(fleet, [NODE2])["gpu-node-2"]] == ["net-loss", "net-partition"]


def test_loss_spares_the_controller_unless_allowed(fleet: BashTransport, net: FakeNet) -> None:
    [spared] = actions.packet_loss("gpu-node-2", 25, duration_s=30, configuration=CONFIGURATION)
    [cut] = actions.packet_loss(
        "gpu-node-2", 25, direction="out", duration_s=30, allow_cut_controller=True, configuration=CONFIGURATION
    )

    assert net.chains()[f"{spared['id']}-out"]["rules"] == [
        'oif "lo" accept',
        "ip daddr 172.30.99.1/32 accept",
        "ip daddr 198.51.100.7 accept",
        "numgen random mod 100 < 25 drop",
    ]
    assert net.chains()[f"{cut['id']}-out"]["rules"] == ['oif "lo" accept', "numgen random mod 100 < 25 drop"]
    assert f"{cut['id']}-in" not in net.chains()
    _revert_all(fleet, [spared, cut])
    assert net.nft() == {}


def test_dns_failure_drops_queries_out_or_answers_in(fleet: BashTransport, net: FakeNet) -> None:
    [drop] = actions.dns_failure("gpu-node-2", duration_s=30, configuration=CONFIGURATION)
    [late] = actions.dns_failure("gpu-node-2", mode="timeout", duration_s=30, configuration=CONFIGURATION)

    chains = net.chains()
    assert chains[f"{drop['id']}-out"]["rules"] == ["meta l4proto { tcp, udp } th dport 53 drop"]
    assert chains[f"{late['id']}-in"]["rules"] == ["meta l4proto { tcp, udp } th sport 53 drop"]
    assert chains[f"{late['id']}-in"]["hook"] == "input"
    _revert_all(fleet, [drop, late])
    assert net.nft() == {}


def test_bandwidth_limit_shapes_and_restores(fleet: BashTransport, net: FakeNet) -> None:
    faults = actions.bandwidth_limit("gpu-node-2", "ops-1", 4000, duration_s=30, configuration=CONFIGURATION)

    assert net.qdiscs() == ["qdisc tbf cafe: root refcnt 2 rate 4000kbit burst 16384 latency 200ms"]
    _revert_all(fleet, faults)
    assert net.qdiscs() == ["qdisc noqueue 0: root refcnt 2"]


@pytest.mark.usefixtures("fleet")
def test_latency_without_netem_fails_clearly_and_leaves_nothing(
    net: FakeNet,
    root: FakeRoot,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TC_UNKNOWN", "netem")
    with pytest.raises(ActivityFailed) as err:
        actions.latency("gpu-node-2", "ops-1", 100, duration_s=30, configuration=CONFIGURATION)

    said = str(err.value)
    assert said.startswith("latency: the kernel lacks sch_netem")
    assert "nothing was changed" in said
    assert "packet_loss or bandwidth_limit" in said
    assert "gpu-node-2" in said
    assert net.qdiscs() == ["qdisc noqueue 0: root refcnt 2"]
    assert root.files() == []  # the ledger entry went with the immediate revert


def test_latency_with_netem_delays_and_restores(fleet: BashTransport, net: FakeNet) -> None:
    faults = actions.latency("gpu-node-2", "ops-1", 100, jitter_ms=10, duration_s=30, configuration=CONFIGURATION)

    assert net.qdiscs() == ["qdisc netem cafe: root refcnt 2 delay 100ms 10ms"]
    _revert_all(fleet, faults)
    assert net.qdiscs() == ["qdisc noqueue 0: root refcnt 2"]


# --- the probes --------------------------------------------------------------------------------------------------


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> LocalTransport:
    transport = LocalTransport()
    monkeypatch.setattr(activity, "load_inventory", lambda _source: INVENTORY)
    monkeypatch.setattr(activity, "_inventories", {})
    monkeypatch.setattr(activity, "_transport", transport)
    return transport


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _fake_tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    path.chmod(0o755)


@pytest.mark.usefixtures("local")
def test_peer_reachable_opens_a_tcp_connection_from_the_host(listener: int) -> None:
    assert probes.peer_reachable("gpu-node-2", "127.0.0.1", listener, configuration=CONFIGURATION) is True
    assert probes.peer_reachable("gpu-node-2", "127.0.0.1", _closed_port(), configuration=CONFIGURATION) is False


@pytest.mark.usefixtures("local")
def test_packet_loss_counts_only_time_outs_as_lost(
    listener: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert probes.packet_loss_percent("gpu-node-2", "127.0.0.1", listener, 10, configuration=CONFIGURATION) == 0
    assert probes.packet_loss_percent("gpu-node-2", "127.0.0.1", _closed_port(), 5, configuration=CONFIGURATION) == 0

    # Every other connect times out (timeout(1) exits 124): half lost.
    counter = tmp_path / "count"
    _fake_tool(tmp_path, "timeout", f'n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n >{counter}\n'
               '[ $((n % 2)) -eq 0 ] && exit 124\nshift; exec "$@"\n')  # fmt: skip
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert probes.packet_loss_percent("gpu-node-2", "127.0.0.1", listener, 10, configuration=CONFIGURATION) == 50


@pytest.mark.usefixtures("local")
def test_packet_loss_over_icmp_reads_pings_statistics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statistics = "20 packets transmitted, 13 received, 35% packet loss, time 3800ms"
    _fake_tool(
        tmp_path,
        "ping",
        f'echo "$*" >>"$(dirname "$0")/ping.log"\necho "--- ping statistics ---"\necho "{statistics}"\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")

    assert (
        probes.packet_loss_percent("gpu-node-2", "ops-1", attempts=20, method="icmp", configuration=CONFIGURATION) == 35
    )
    assert (tmp_path / "ping.log").read_text() == "-n -q -c 20 -i 0.2 -W 1 172.30.99.10\n"


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 400, "timeout_s": 1.0}, r"attempts x timeout_s must be at most 120"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"method": "udp"}, "method"),
        ({"port": 0}, "the tcp method connects to a port"),
        ({"peer": "a b"}, "peer: 'a b' is neither"),
    ],
)
@pytest.mark.usefixtures("local")
def test_loss_probe_refuses_unbounded_or_bad_input(arguments: dict[str, Any], match: str) -> None:
    with pytest.raises(ActivityFailed, match=match):
        probes.packet_loss_percent(**{"pattern": "gpu-node-2", "peer": "ops-1", "port": 9090, **arguments},
                                   configuration=CONFIGURATION)  # fmt: skip


@pytest.mark.usefixtures("local")
def test_dns_resolves_asks_getent_within_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert probes.dns_resolves("gpu-node-2", "localhost", configuration=CONFIGURATION) is True
    _fake_tool(tmp_path, "getent", "exit 2\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert probes.dns_resolves("gpu-node-2", "ops-1", configuration=CONFIGURATION) is False
    with pytest.raises(ActivityFailed, match="name must be a host name"):
        probes.dns_resolves("gpu-node-2", "ops-1; reboot", configuration=CONFIGURATION)


@pytest.mark.usefixtures("local")
def test_a_probe_whose_host_cannot_be_reached_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity, "_transport", BashTransport(down={"gpu-node-2"}))
    with pytest.raises(ActivityFailed, match=r"gpu-node-2: the probe did not run \(exit 255\).*Connection refused"):
        probes.dns_resolves("gpu-node-2", "ops-1", configuration=CONFIGURATION)


@pytest.mark.usefixtures("net", "local")
def test_network_faults_lists_chains_and_qdiscs_by_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity, "_transport", BashTransport())  # runs the root script as it is, without sudo
    assert probes.network_faults("gpu-node-2", configuration=CONFIGURATION) == []
    assert _bash(_partition_inject()).returncode == 0
    assert _bash(network.build_qdisc_inject("172.30.99.10", _TBF, "bw"), fault_id="net-bandwidth-x").returncode == 0

    faults = probes.network_faults("gpu-node-2", configuration=CONFIGURATION)

    assert faults == [
        {
            "host": "gpu-node-2",
            "fault_id": FAULT_ID,
            "mechanism": "nftables",
            "chains": [f"{FAULT_ID}-in", f"{FAULT_ID}-out"],
            "rules": [
                f'{FAULT_ID}-in: iif "lo" accept',
                f"{FAULT_ID}-in: ip saddr {{ 172.30.99.10/32 }} drop",
                f'{FAULT_ID}-out: oif "lo" accept',
                f"{FAULT_ID}-out: ip daddr {{ 172.30.99.10/32 }} drop",
            ],
        },
        {
            "host": "gpu-node-2",
            "fault_id": "net-bandwidth-x",
            "mechanism": "tc",
            "device": "eth0",
            "qdisc": f"qdisc tbf cafe: root refcnt 2 {_TBF.removeprefix('tbf ')}",
        },
    ]
