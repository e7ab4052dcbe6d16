"""Which hosts an experiment touches: an Ansible host pattern, a count or share of it, a seeded choice, and guards.

``select_targets`` is pure computation over a loaded ``Inventory``: it reaches no host, and every refusal happens
there, before anything is touched. Actions take the ``TargetPlan`` it returns.

Host patterns, a subset of Ansible's (https://docs.ansible.com/ansible/latest/inventory_guide/intro_patterns.html):

- a group name or a host name; ``all`` (or ``*``) is every host;
- ``*`` and ``?`` wildcards, matched against group names and host names (``gpu-node-*``, ``rack?_gpus``);
- terms joined by ``:`` or ``,``: ``a:b`` union, ``a:&b`` intersection, ``a:!b`` exclusion. As in Ansible,
  unions are taken first, then intersections, then exclusions, whatever the order of the terms; a pattern of
  only ``&``/``!`` terms starts from ``all``.

Not supported (refused, not guessed at): ``~regex`` terms and ``[i:j]`` subscripts. Unlike Ansible, a term that
matches no host or group is refused by name instead of matching nothing, so a misspelt exclusion cannot widen
the selection.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from chaoslib.exceptions import ActivityFailed

from chaosgpu.inventory import ENVIRONMENT_VAR, Inventory
from chaosgpu.types import Host

__all__ = ["DEFAULT_MAX_SHARE", "TargetPlan", "TargetingRefused", "parse_pattern", "select_targets"]

DEFAULT_MAX_SHARE = 1 / 3
# Float shares such as 1/3 are not exact: a selection of 1 out of 3 must not count as exceeding 1/3.
_EPSILON = 1e-9


class TargetingRefused(ActivityFailed):  # type: ignore[misc]  # chaoslib is untyped
    """The selection was refused before any host was touched; the message names the input that was refused."""


@dataclass(frozen=True)
class TargetPlan:
    """The hosts chosen for a fault, and how they were chosen (enough to choose them again)."""

    pattern: str
    hosts: tuple[Host, ...]
    matched: tuple[str, ...]  # every host the pattern matched, in inventory order
    seed: int
    count: int
    # For each group the pattern names: (selected hosts in it, hosts in it).
    group_shares: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(host.name for host in self.hosts)


@dataclass(frozen=True)
class _Term:
    kind: str  # "", "&" or "!"
    name: str


def parse_pattern(pattern: str) -> list[tuple[str, str]]:
    """Split ``pattern`` into (operator, name) terms; the operator is "" (union), "&" or "!". Refuses what it
    does not support."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise TargetingRefused(f"host pattern {pattern!r} is empty")
    terms: list[tuple[str, str]] = []
    for raw in re.split(r"[:,]", pattern):
        text = raw.strip()
        if not text:
            raise TargetingRefused(f"host pattern {pattern!r} has an empty term")
        kind = text[0] if text[0] in "&!" else ""
        name = text[len(kind) :].strip()
        if not name:
            raise TargetingRefused(f"host pattern {pattern!r}: {text!r} names nothing")
        if name.startswith("~"):
            raise TargetingRefused(f"host pattern {pattern!r}: regular-expression terms ({name!r}) are not supported")
        if "[" in name or "]" in name:
            raise TargetingRefused(f"host pattern {pattern!r}: subscripts and ranges ({name!r}) are not supported")
        terms.append((kind, name))
    return terms


def select_targets(
    inventory: Inventory,
    pattern: str,
    count: int | None = None,
    percentage: float | None = None,
    seed: int | None = None,
    max_share: float = DEFAULT_MAX_SHARE,
    allow_production: bool = False,
) -> TargetPlan:
    """Choose hosts of ``inventory`` matching ``pattern``: ``count`` of them, or ``percentage`` (rounded up, at
    least one), or all when neither is given; the same ``seed`` chooses the same hosts.

    Refuses (TargetingRefused) a production inventory unless ``allow_production``, a pattern term that names no
    host or group, a pattern that matches nothing, a count larger than the match, and a selection that holds more
    than ``max_share`` of any group the pattern names.
    """
    if inventory.production and not allow_production:
        where = ", ".join(inventory.production_hosts[:5]) + ("..." if len(inventory.production_hosts) > 5 else "")  # noqa: PLR2004
        raise TargetingRefused(
            f"inventory {inventory.source} is production ({ENVIRONMENT_VAR}: production on {where}); "
            "refusing to target it without allow_production"
        )
    if not 0 < max_share <= 1:
        raise TargetingRefused(f"max_share must be more than 0 and at most 1, got {max_share!r}")
    matched, named_groups = _evaluate(inventory, pattern)
    if not matched:
        raise TargetingRefused(f"host pattern {pattern!r} matches no host in inventory {inventory.source}")
    wanted = _how_many(pattern, len(matched), count, percentage)
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    chosen = set(random.Random(seed).sample(matched, wanted))  # noqa: S311 - reproducible choice, not crypto
    selected = tuple(name for name in matched if name in chosen)
    shares = _guard_blast_radius(inventory, pattern, selected, named_groups, max_share)
    return TargetPlan(
        pattern=pattern,
        hosts=tuple(inventory.hosts[name] for name in selected),
        matched=tuple(matched),
        seed=seed,
        count=len(selected),
        group_shares=shares,
    )


def _evaluate(inventory: Inventory, pattern: str) -> tuple[list[str], list[str]]:
    """The hosts ``pattern`` matches (inventory order) and the groups it names."""
    terms = [_Term(kind, name) for kind, name in parse_pattern(pattern)]
    # Ansible's order: unions, then intersections, then exclusions; only &/! terms start from all.
    ordered = (
        [t for t in terms if t.kind == ""] + [t for t in terms if t.kind == "&"] + [t for t in terms if t.kind == "!"]
    )
    if ordered[0].kind != "":
        ordered.insert(0, _Term("", "all"))
    selected: set[str] = set()
    named_groups: list[str] = []
    for term in ordered:
        hosts, groups = _match(inventory, pattern, term.name)
        if term.kind != "!":
            named_groups += [g for g in groups if g not in named_groups]
        if term.kind == "":
            selected |= hosts
        elif term.kind == "&":
            selected &= hosts
        else:
            selected -= hosts
    order = list(inventory.hosts)
    return [name for name in order if name in selected], named_groups


def _match(inventory: Inventory, pattern: str, name: str) -> tuple[set[str], list[str]]:
    """Hosts and groups one term names; refuses a term that names neither."""
    if name in ("all", "*"):
        return set(inventory.hosts), ["all"] if "all" in inventory.groups else []
    if any(c in name for c in "*?"):
        groups = [g for g in inventory.groups if fnmatchcase(g, name)]
        hosts = {h for h in inventory.hosts if fnmatchcase(h, name)}
    else:
        groups = [name] if name in inventory.groups else []
        hosts = {name} if name in inventory.hosts else set()
    for group in groups:
        hosts |= set(inventory.groups[group])
    if not groups and not hosts:
        raise TargetingRefused(
            f"host pattern {pattern!r}: {name!r} is not a host or group of inventory {inventory.source}"
        )
    return hosts, groups


def _how_many(pattern: str, matched: int, count: int | None, percentage: float | None) -> int:
    if count is not None and percentage is not None:
        raise TargetingRefused(f"give count or percentage, not both (count={count!r}, percentage={percentage!r})")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise TargetingRefused(f"count must be a whole number of at least 1, got {count!r}")
        if count > matched:
            raise TargetingRefused(f"count {count} is more than the {matched} host(s) pattern {pattern!r} matches")
        return count
    if percentage is not None:
        if isinstance(percentage, bool) or not isinstance(percentage, int | float) or not 0 < percentage <= 100:  # noqa: PLR2004
            raise TargetingRefused(f"percentage must be more than 0 and at most 100, got {percentage!r}")
        return max(1, math.ceil(matched * percentage / 100 - _EPSILON))
    return matched


def _guard_blast_radius(
    inventory: Inventory, pattern: str, selected: tuple[str, ...], named_groups: list[str], max_share: float
) -> dict[str, tuple[int, int]]:
    shares: dict[str, tuple[int, int]] = {}
    chosen = set(selected)
    for group in named_groups:
        members = inventory.groups[group]
        if not members:
            continue
        hit = sum(1 for name in members if name in chosen)
        shares[group] = (hit, len(members))
        if hit > max_share * len(members) + _EPSILON:
            allowed = math.floor(max_share * len(members) + _EPSILON)
            raise TargetingRefused(
                f"host pattern {pattern!r}: selecting {hit} of the {len(members)} hosts of group {group} "
                f"({hit / len(members):.0%}) exceeds max_share {max_share:.0%} (at most {allowed} host(s)); "
                "choose fewer hosts or raise max_share"
            )
    return shares
