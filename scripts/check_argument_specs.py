#!/usr/bin/env python3
"""Check every role's meta/argument_specs.yml against its defaults/main.yml and its own use of variables.

- each option in defaults/main.yml is declared in the `main` entry point, and each declared option that has a
  default appears in defaults/main.yml with the same value (keys and values);
- each option has a type and a description;
- each public `<role>_*` variable that the role's tasks, handlers, templates or vars use is declared (facts the
  role itself sets with set_fact are its outputs, not options, and are exempt).

Exit status 1 and one line per problem when anything is off.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
_MISSING = object()


class _AnsibleLoader(yaml.SafeLoader):
    """SafeLoader that reads Ansible's !unsafe and !vault tags as plain strings."""


for _tag in ("!unsafe", "!vault"):
    _AnsibleLoader.add_constructor(_tag, lambda loader, node: loader.construct_scalar(node))


def load_yaml(path: Path) -> object:
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_AnsibleLoader)  # noqa: S506 - a SafeLoader subclass


def used_public_variables(role: Path) -> set[str]:
    """Public variables (<role>_*) referenced in the role's own files."""
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(role.name)}_[a-z0-9_]+")
    found: set[str] = set()
    for sub in ("tasks", "handlers", "templates", "vars"):
        for path in (role / sub).rglob("*"):
            if path.is_file():
                found.update(pattern.findall(path.read_text(encoding="utf-8")))
    # What the role ships under files/ is named in its tasks too (gpu_health's package gpu_health_agent).
    shipped = {path.name for path in (role / "files").iterdir()} if (role / "files").is_dir() else set()
    return found - shipped


def facts_set_by(role: Path) -> set[str]:
    """Names the role sets with set_fact: its outputs (documented in its README), not options."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("ansible.builtin.set_fact", "set_fact") and isinstance(value, dict):
                    names.update(k for k in value if k != "cacheable")
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in (role / "tasks").rglob("*.yml"):
        walk(load_yaml(path))
    return names


def check_role(role: Path) -> list[str]:
    problems: list[str] = []
    spec_path = role / "meta" / "argument_specs.yml"
    defaults_path = role / "defaults" / "main.yml"
    if not spec_path.is_file():
        return [f"{role.name}: meta/argument_specs.yml is missing"]
    spec = load_yaml(spec_path) or {}
    options = spec.get("argument_specs", {}).get("main", {}).get("options", {}) or {}
    defaults = (load_yaml(defaults_path) if defaults_path.is_file() else {}) or {}

    for name in sorted(set(defaults) - set(options)):
        problems.append(f"{role.name}: {name} is in defaults/main.yml but not in meta/argument_specs.yml")
    for name, option in sorted(options.items()):
        if not option.get("type"):
            problems.append(f"{role.name}: {name} has no type in meta/argument_specs.yml")
        if not option.get("description"):
            problems.append(f"{role.name}: {name} has no description in meta/argument_specs.yml")
        spec_default = option.get("default", _MISSING)
        if spec_default is _MISSING:
            if name in defaults:
                problems.append(f"{role.name}: {name} has a default in defaults/main.yml but none in the spec")
            elif not option.get("required"):
                problems.append(f"{role.name}: {name} is neither required nor given a default")
            continue
        if name not in defaults:
            problems.append(f"{role.name}: {name} has a default in the spec but is missing from defaults/main.yml")
        elif defaults[name] != spec_default:
            problems.append(
                f"{role.name}: {name} defaults differ: defaults/main.yml has {defaults[name]!r}, "
                f"meta/argument_specs.yml has {spec_default!r}"
            )
    for name in sorted(used_public_variables(role) - set(options) - facts_set_by(role)):
        problems.append(f"{role.name}: {name} is used by the role but not declared in meta/argument_specs.yml")
    return problems


def find_roles(roles_dir: Path) -> list[Path]:
    """The roles to check: directories with tasks (a role still being written may have none, and no options yet)."""
    return sorted(path for path in roles_dir.iterdir() if (path / "tasks").is_dir())


def main(argv: list[str]) -> int:
    roles_dir = Path(argv[1]) if len(argv) > 1 else ROOT / "roles"
    roles = find_roles(roles_dir)
    problems = [problem for role in roles for problem in check_role(role)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"argument specs: {len(roles)} role(s) consistent with their defaults")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
