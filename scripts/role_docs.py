#!/usr/bin/env python3
"""Generate the variables section of each role's README.md from its meta/argument_specs.yml.

The section sits between the markers below; everything else in the README is written by hand.
`--check` changes nothing and exits 1 when a README is out of date (make lint runs it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- BEGIN GENERATED VARIABLES: scripts/role_docs.py -->"
END = "<!-- END GENERATED VARIABLES -->"


_MARKUP = re.compile(r"\b[COVIP]\(((?:[^()]|\([^()]*\))*)\)")


def cell(text: str) -> str:
    """One Markdown table cell: Ansible doc markup C(x)/O(x)/V(x) as code, on one line, pipes escaped."""
    flat = " ".join(str(text).split())
    return _MARKUP.sub(lambda m: f"`{m.group(1)}`", flat).replace("|", "\\|")


def render_default(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return f"`{cell(value)}`" if value else '`""`'
    return f"`{cell(yaml.safe_dump(value, default_flow_style=True).strip())}`"


def render(spec_path: Path) -> str:
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
    lines = [BEGIN, "", "| Variable | Type | Default | Description |", "|---|---|---|---|"]
    main = spec.get("argument_specs", {}).get("main", {})
    for name, option in (main.get("options") or {}).items():
        kind = option.get("type", "")
        if option.get("elements"):
            kind = f"{kind} of {option['elements']}"
        description = option.get("description", "")
        if isinstance(description, list):
            description = " ".join(description)
        if option.get("choices"):
            description += " Choices: " + ", ".join(f"`{c}`" for c in option["choices"]) + "."
        required = " **Required.**" if option.get("required") else ""
        default = render_default(option.get("default"))
        lines.append(f"| `{name}` | {kind} | {default} | {cell(description)}{required} |")
    lines += ["", END]
    return "\n".join(lines)


def update(readme: Path, section: str) -> str:
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        return head + section + tail
    return text.rstrip("\n") + "\n\n## Variables\n\n" + section + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for spec in sorted(ROOT.glob("roles/*/meta/argument_specs.yml")):
        readme = spec.parent.parent / "README.md"
        new = update(readme, render(spec))
        if readme.exists() and readme.read_text(encoding="utf-8") == new:
            continue
        if check:
            stale.append(readme.relative_to(ROOT))
        else:
            readme.write_text(new, encoding="utf-8")
            print(f"updated {readme.relative_to(ROOT)}")
    for path in stale:
        print(f"{path}: variables section is out of date; run 'make docs'", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
