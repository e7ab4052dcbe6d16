"""chaosgpu is a discoverable Chaos Toolkit extension that follows the activity conventions."""

from __future__ import annotations

import importlib
import inspect

import chaosgpu
from chaosgpu.cli import main


def test_discover_lists_probes_as_probes():
    discovery = chaosgpu.discover(discover_system=False)
    assert discovery["extension"]["name"] == "chaosgpu"
    kinds = {(a["mod"], a["name"]): a["type"] for a in discovery["activities"]}
    assert kinds[("chaosgpu.exporter.probes", "exporter_sample_value")] == "probe"


def test_every_activity_follows_the_conventions():
    for activity in chaosgpu.load_exported_activities():
        module = importlib.import_module(activity["mod"])
        assert activity["name"] in module.__all__
        function = getattr(module, activity["name"])
        assert inspect.getdoc(function), activity["name"]
        params = list(inspect.signature(function).parameters.values())
        assert [p.name for p in params[-2:]] == ["configuration", "secrets"], activity["name"]
        assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in params), activity["name"]


def test_cli_lists_activities(capsys):
    assert main(["activities"]) == 0
    assert "probe  chaosgpu.exporter.probes.exporter_sample_value" in capsys.readouterr().out
