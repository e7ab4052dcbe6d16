#!/usr/bin/env python3
"""Read containerd's configuration as containerd itself would, and print what the role needs as JSON. Read-only.

containerd 1.x loads config.toml, then every file it imports (breadth-first, globs sorted), and an imported file's
plugin section *replaces* the whole section loaded before it; it is not merged key by key. A drop-in that only held
the NVIDIA runtime would therefore silently drop every other CRI setting of config.toml (CNI paths, registry
mirrors, sandbox image...). This script reports the CRI section in force without the role's own drop-in, so the
role can carry it over into the drop-in and add only its own keys on top.

    containerd_config_facts.py --config /etc/containerd/config.toml --dropin /etc/containerd/conf.d/99-nvidia.toml
        --import '/etc/containerd/conf.d/*.toml' --plugin io.containerd.grpc.v1.cri

Output: {"exists", "version", "imports", "imports_on_one_line", "disabled_plugins", "cri", "cri_from",
"shadowing", "problems"}. Needs Python 3.11 (tomllib), which Debian 12 and later have.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import re
import sys
import tomllib
from typing import Any


def load(path: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def resolve_imports(parent: str, imports: list[str], dropin: str) -> list[str]:
    """containerd's resolveImports: globs expand sorted, relative paths are relative to the importing file.

    The role's drop-in counts as present even before it is first written, so its place in the order is known.
    """
    resolved: list[str] = []
    for entry in imports:
        path = entry if os.path.isabs(entry) else os.path.join(os.path.dirname(parent), entry)
        if any(char in path for char in "*?["):
            matches = set(glob.glob(path)) | ({dropin} if fnmatch.fnmatchcase(dropin, path) else set())
            resolved.extend(sorted(matches))
        else:
            resolved.append(path)
    return resolved


def inline_tables_in_lists(value: Any, path: str = "") -> list[str]:
    """Paths of arrays that hold tables: the role's TOML writer only writes arrays of plain values."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += inline_tables_in_lists(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        found.append(path)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--dropin", required=True)
    parser.add_argument("--import", dest="import_glob", required=True, help="the import the role ensures")
    parser.add_argument("--plugin", required=True)
    args = parser.parse_args()

    facts: dict[str, Any] = {
        "exists": os.path.isfile(args.config),
        "version": None,
        "imports": [],
        "imports_on_one_line": True,
        "disabled_plugins": [],
        "cri": {},
        "cri_from": None,
        "shadowing": [],
        "problems": [],
    }
    if not facts["exists"]:
        print(json.dumps(facts))
        return 0

    dropin = os.path.realpath(args.dropin)
    pending, loaded, seen_dropin = [args.config], set(), False
    while pending:
        path, pending = pending[0], pending[1:]
        real = os.path.realpath(path)
        if real in loaded:
            continue
        loaded.add(real)
        if real == dropin:
            seen_dropin = True
            continue
        try:
            config = load(path)
        except (OSError, tomllib.TOMLDecodeError) as error:
            facts["problems"].append(f"{path}: {error}")
            continue
        if path == args.config:
            facts["version"] = config.get("version")
            facts["imports"] = list(config.get("imports", []))
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            facts["imports_on_one_line"] = not re.search(r"(?m)^\s*imports\s*=\s*\[[^\]\n]*$", text)
        facts["disabled_plugins"] += list(config.get("disabled_plugins", []))
        section = config.get("plugins", {}).get(args.plugin)
        if section is not None:
            if seen_dropin:
                facts["shadowing"].append(path)
            else:
                facts["cri"], facts["cri_from"] = section, path
        imports = list(config.get("imports", []))
        if path == args.config and args.import_glob not in imports:
            imports.append(args.import_glob)  # as the role is about to add it
        pending += resolve_imports(path, imports, args.dropin)

    for where in inline_tables_in_lists(facts["cri"]):
        facts["problems"].append(
            f'{facts["cri_from"]}: plugins."{args.plugin}".{where} is an array of tables, which this role cannot '
            "carry over into its drop-in"
        )
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
