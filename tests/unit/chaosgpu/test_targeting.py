"""chaosgpu.targeting: host patterns, counts and shares, seeded choice, and the guards, over an inventory built
here (pure computation: no host, no ansible-inventory)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from chaosgpu.inventory import Inventory
from chaosgpu.targeting import TargetingRefused, parse_pattern, select_targets
from chaosgpu.types import Host

RACKS = {
    "rack_a": ["gpu-1", "gpu-2", "gpu-3"],
    "rack_b": ["gpu-4", "gpu-5", "gpu-6"],
    "rack_c": ["gpu-7", "gpu-8", "gpu-9"],
}


def make_inventory(production: bool = False) -> Inventory:
    groups: dict[str, tuple[str, ...]] = {name: tuple(members) for name, members in RACKS.items()}
    groups["gpu_nodes"] = tuple(h for members in RACKS.values() for h in members)
    groups["ops"] = ("ops-1",)
    groups["canary"] = ("gpu-1", "gpu-4", "ops-1")
    groups["all"] = (*groups["gpu_nodes"], "ops-1")
    hosts = {
        name: Host(name=name, address=name, groups=tuple(g for g, m in groups.items() if g != "all" and name in m))
        for name in groups["all"]
    }
    return Inventory(
        source="inventories/test",
        hosts=hosts,
        groups=groups,
        production=production,
        power_drivers=dict.fromkeys(hosts, "systemd"),
        production_hosts=("gpu-1",) if production else (),
    )


@pytest.fixture
def inventory() -> Inventory:
    return make_inventory()


def matched(inventory: Inventory, pattern: str) -> tuple[str, ...]:
    return select_targets(inventory, pattern, max_share=1.0).matched


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("rack_a", ("gpu-1", "gpu-2", "gpu-3")),
        ("gpu-5", ("gpu-5",)),
        ("rack_a:rack_c", ("gpu-1", "gpu-2", "gpu-3", "gpu-7", "gpu-8", "gpu-9")),
        ("rack_a,gpu-5", ("gpu-1", "gpu-2", "gpu-3", "gpu-5")),
        ("gpu_nodes:&canary", ("gpu-1", "gpu-4")),
        ("gpu_nodes:!rack_b:!rack_c", ("gpu-1", "gpu-2", "gpu-3")),
        # Ansible's order whatever the order written: unions, then intersections, then exclusions.
        ("!rack_a:&canary:gpu_nodes", ("gpu-4",)),
        # Only exclusions: start from all.
        ("!gpu_nodes", ("ops-1",)),
        ("all", ("gpu-1", "gpu-2", "gpu-3", "gpu-4", "gpu-5", "gpu-6", "gpu-7", "gpu-8", "gpu-9", "ops-1")),
        ("*", ("gpu-1", "gpu-2", "gpu-3", "gpu-4", "gpu-5", "gpu-6", "gpu-7", "gpu-8", "gpu-9", "ops-1")),
        ("gpu-?", ("gpu-1", "gpu-2", "gpu-3", "gpu-4", "gpu-5", "gpu-6", "gpu-7", "gpu-8", "gpu-9")),
    ],
)
def test_patterns_match_like_ansible(inventory, pattern, expected):
    assert matched(inventory, pattern) == expected


def test_wildcards_match_group_names_too(inventory):
    assert matched(inventory, "rack_*") == matched(inventory, "rack_a:rack_b:rack_c")
    assert matched(inventory, "ops*") == ("ops-1",)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("rack_z", r"'rack_z' is not a host or group of inventory inventories/test"),
        ("gpu_nodes:!rack_bb", r"'rack_bb' is not a host or group"),  # a misspelt exclusion must not widen it
        ("gpu-1*x", r"'gpu-1\*x' is not a host or group"),
        ("~gpu-[12]", r"regular-expression terms .* are not supported"),
        ("gpu_nodes[0:2]", r"subscripts and ranges .* are not supported"),
        ("", r"is empty"),
        ("rack_a::rack_b", r"has an empty term"),
        ("rack_a:!", r"'!' names nothing"),
        ("rack_a:!rack_a", r"matches no host"),
    ],
)
def test_bad_patterns_are_refused_by_name(inventory, pattern, message):
    with pytest.raises(TargetingRefused, match=message):
        select_targets(inventory, pattern, max_share=1.0)


def test_parse_pattern_reports_operators():
    assert parse_pattern("a:&b,!c") == [("", "a"), ("&", "b"), ("!", "c")]


def test_count_chooses_that_many_matching_hosts(inventory):
    plan = select_targets(inventory, "gpu_nodes", count=3, seed=7)
    assert plan.count == 3
    assert len(plan.hosts) == 3
    assert set(plan.names) <= set(RACKS["rack_a"] + RACKS["rack_b"] + RACKS["rack_c"])
    # Chosen hosts come back in inventory order.
    order = list(inventory.hosts)
    assert list(plan.names) == sorted(plan.names, key=order.index)


@pytest.mark.parametrize(("percentage", "expected"), [(1, 1), (10, 1), (11.2, 2), (33.3333, 3), (100 / 3, 3)])
def test_percentage_rounds_up_to_at_least_one(inventory, percentage, expected):
    assert select_targets(inventory, "gpu_nodes", percentage=percentage, seed=1).count == expected


def test_same_seed_same_hosts_and_other_seeds_vary(inventory):
    first = select_targets(inventory, "gpu_nodes", count=3, seed=42)
    again = select_targets(inventory, "gpu_nodes", count=3, seed=42)
    assert first.names == again.names
    assert first.seed == 42
    choices = {select_targets(inventory, "gpu_nodes", count=3, seed=seed).names for seed in range(20)}
    assert len(choices) > 1


def test_without_a_seed_the_plan_records_one_that_repeats_the_choice(inventory):
    plan = select_targets(inventory, "gpu_nodes", count=2)
    assert select_targets(inventory, "gpu_nodes", count=2, seed=plan.seed).names == plan.names


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 1, "percentage": 10}, r"count or percentage, not both"),
        ({"count": 0}, r"count must be a whole number of at least 1, got 0"),
        ({"count": 2.5}, r"got 2.5"),
        ({"count": True}, r"got True"),
        ({"count": 10}, r"count 10 is more than the 9 host\(s\) pattern 'gpu_nodes' matches"),
        ({"percentage": 0}, r"percentage must be more than 0 and at most 100, got 0"),
        ({"percentage": 150}, r"got 150"),
        ({"max_share": 0}, r"max_share must be more than 0 and at most 1, got 0"),
        ({"max_share": 1.5}, r"got 1.5"),
    ],
)
def test_bad_amounts_are_refused_naming_them(inventory, kwargs, message):
    with pytest.raises(TargetingRefused, match=message):
        select_targets(inventory, "gpu_nodes", **kwargs)


def test_a_third_of_a_group_is_allowed_by_default(inventory):
    plan = select_targets(inventory, "gpu_nodes", count=3, seed=3)
    assert plan.group_shares == {"gpu_nodes": (3, 9)}


def test_more_than_the_share_of_a_named_group_is_refused(inventory):
    with pytest.raises(TargetingRefused) as refused:
        select_targets(inventory, "gpu_nodes", count=4, seed=3)
    message = str(refused.value)
    assert "group gpu_nodes" in message
    assert "4 of the 9 hosts" in message
    assert "(44%)" in message
    assert "max_share 33%" in message
    assert "at most 3 host(s)" in message


def test_the_guard_applies_to_each_group_the_pattern_names(inventory):
    # Two hosts of six is a third of the union, but the seed below puts both in rack_a: two thirds of it.
    seed = next(
        s
        for s in range(1000)
        if set(select_targets(inventory, "rack_a:rack_b", count=2, seed=s, max_share=1.0).names) <= set(RACKS["rack_a"])
    )
    with pytest.raises(TargetingRefused, match=r"2 of the 3 hosts of group rack_a \(67%\)"):
        select_targets(inventory, "rack_a:rack_b", count=2, seed=seed)


def test_intersection_groups_are_guarded_too(inventory):
    with pytest.raises(TargetingRefused, match="group canary"):
        select_targets(inventory, "gpu_nodes:&canary", count=2, seed=1, max_share=0.5)


def test_a_one_host_group_needs_max_share_raised(inventory):
    with pytest.raises(TargetingRefused, match=r"1 of the 1 hosts of group ops \(100%\).*at most 0 host"):
        select_targets(inventory, "ops")
    assert select_targets(inventory, "ops", max_share=1.0).names == ("ops-1",)


def test_hosts_named_directly_are_not_a_group_share(inventory):
    plan = select_targets(inventory, "gpu-1:gpu-2")
    assert plan.names == ("gpu-1", "gpu-2")
    assert plan.group_shares == {}


def test_production_inventory_is_refused_unless_allowed():
    production = make_inventory(production=True)
    with pytest.raises(TargetingRefused) as refused:
        select_targets(production, "gpu_nodes", count=1)
    assert "inventory inventories/test is production (chaosgpu_environment: production on gpu-1)" in str(refused.value)
    assert "allow_production" in str(refused.value)
    assert select_targets(production, "gpu_nodes", count=1, seed=5, allow_production=True).count == 1


def test_select_targets_reaches_no_host(inventory, monkeypatch):
    # Selection is pure computation: it must not start processes or open connections, refused or not.
    def forbidden(*_args, **_kwargs):
        raise AssertionError("select_targets tried to reach something")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(socket, "socket", forbidden)
    select_targets(inventory, "gpu_nodes", count=3, seed=1)
    with pytest.raises(TargetingRefused):
        select_targets(inventory, "gpu_nodes", count=5, seed=1)
