"""The real ``chaos discover chaosgpu --no-install`` lists every activity chaosgpu exports, as the right type, with
its docstring."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import chaosgpu

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def discovery(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    chaos = Path(sys.executable).with_name("chaos")
    if not chaos.exists():
        chaos = Path(shutil.which("chaos") or "chaos")
    workdir = tmp_path_factory.mktemp("discover")
    done = subprocess.run(
        [
            str(chaos),
            "--no-version-check",
            "--log-file",
            str(workdir / "chaostoolkit.log"),
            "discover",
            "chaosgpu",
            "--no-install",
        ],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"chaos discover exited {done.returncode}: {done.stdout}{done.stderr}"
    return dict(json.loads((workdir / "discovery.json").read_text()))


def _exported() -> dict[tuple[str, str], tuple[str, str]]:
    """(module, name) -> (type, docstring) for every function in each activity module's __all__."""
    expected = {}
    for module_name in chaosgpu._ACTIVITY_MODULES:
        module = importlib.import_module(module_name)
        assert module.__all__, f"{module_name} exports nothing"
        kind = "action" if module_name.endswith(".actions") else "probe"
        for name in module.__all__:
            expected[(module_name, name)] = (kind, inspect.getdoc(getattr(module, name)) or "")
    return expected


def test_discover_lists_every_exported_activity_with_its_type_and_docstring(discovery: dict[str, Any]) -> None:
    assert discovery["extension"]["name"] == "chaosgpu"
    listed = {(a["mod"], a["name"]): (a["type"], a["doc"]) for a in discovery["activities"]}
    expected = _exported()
    assert sorted(set(expected) - set(listed)) == [], "exported but not discovered"
    assert sorted(set(listed) - set(expected)) == [], "discovered but not exported by an activity module"
    for key, (kind, doc) in expected.items():
        assert listed[key][0] == kind, f"{key} is discovered as {listed[key][0]}, not {kind}"
        assert doc, f"{key} has no docstring"
        assert listed[key][1] == doc, f"{key}: discovered docstring differs"


def test_discover_covers_every_activity_module(discovery: dict[str, Any]) -> None:
    assert {a["mod"] for a in discovery["activities"]} == set(chaosgpu._ACTIVITY_MODULES)


def test_node_activities_show_their_builtin_argument_types(discovery: dict[str, Any]) -> None:
    """chaosgpu.node's modules keep their annotations real types (no postponed evaluation), so discovery can name
    them."""
    arguments = {
        (a["name"], arg["name"]): arg.get("type")
        for a in discovery["activities"]
        if a["mod"].startswith("chaosgpu.node.")
        for arg in a["arguments"]
    }
    assert arguments[("stop_service", "service")] == "string"
    assert arguments[("stress_cpu", "workers")] == "integer"
    assert arguments[("fill_disk", "min_free_percent")] == "number"
    assert arguments[("kill_process", "full_command_line")] == "boolean"
    assert arguments[("http_check", "expected_status")] == "integer"


def test_no_activity_module_postpones_its_annotations(discovery: dict[str, Any]) -> None:
    """Every argument whose annotation is one builtin type is discovered with that type, in every module (with
    `from __future__ import annotations` discovery would call them all "object"); only unions such as
    `int | None` stay "object", which Chaos Toolkit's type names cannot express."""
    plain = {str, int, float, bool, list, dict}
    for activity in discovery["activities"]:
        module = importlib.import_module(activity["mod"])
        signature = inspect.signature(getattr(module, activity["name"]), eval_str=True)
        for arg in activity["arguments"]:
            annotation = signature.parameters[arg["name"]].annotation
            if annotation in plain:
                assert arg.get("type") != "object", f"{activity['mod']}.{activity['name']}({arg['name']})"
