"""Every plugin's DOCUMENTATION, EXAMPLES and RETURN parse as YAML (ansible-doc and the collection docs read
them; a stray ': ' in a description makes the plugin undocumented without failing anything else)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PLUGINS = sorted(p for p in (ROOT / "plugins").glob("*/*.py") if p.name != "__init__.py")
DOCUMENTED = ("modules", "filter", "lookup", "callback", "inventory", "test")


def _strings(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                    found[target.id] = node.value.value
    return found


@pytest.mark.parametrize("path", [p for p in PLUGINS if p.parent.name in DOCUMENTED], ids=lambda p: p.stem)
def test_the_plugin_documentation_parses(path: Path) -> None:
    strings = _strings(path)
    assert set(strings) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, f"{path}: missing {strings.keys()}"
    documentation = yaml.safe_load(strings["DOCUMENTATION"])
    key = "module" if path.parent.name == "modules" else "name"
    assert documentation[key] == path.stem
    assert documentation["short_description"]
    for name, option in (documentation.get("options") or {}).items():
        assert option.get("description"), f"{path.stem}: option {name} has no description"
    yaml.safe_load(strings["EXAMPLES"])
    yaml.safe_load(strings["RETURN"])
