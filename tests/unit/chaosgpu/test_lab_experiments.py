"""The lab experiment catalogue (experiments/lab): at least 15 experiments, all in suite.txt's run order; each passes
the real ``chaos validate`` (every activity imported, its arguments checked against the function's signature) and
``chaos run --dry=activities`` without the lab; each declares recovery objectives (TTD and TTR on a detect probe,
judged on signals that reset) and rollbacks; the experiments that expect a gpu_health reaction target a node whose
agent remediates for real (not one in dry-run mode)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaosgpu.objectives import parse_objectives

ROOT = Path(__file__).resolve().parents[3]
LAB = ROOT / "experiments" / "lab"
EXPERIMENTS = sorted(p for p in LAB.glob("*.yaml") if p.name != "preflight.yaml")
CHAOS = Path(sys.executable).with_name("chaos")
# Probes whose answer is a gpu_health reaction: on a dry-run agent they can never hold.
REACTION_FUNCS = {"node_drained", "node_stays_drained", "gpu_health_ready", "gpu_health_live", "clear_rma"}
ROLLBACK_FUNCS = {"revert_faults", "power_on", "cancel_training_job", "clear_rma"}


def _chaos(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    chaos = CHAOS if CHAOS.exists() else Path(shutil.which("chaos") or "chaos")
    return subprocess.run(
        [str(chaos), "--no-version-check", "--log-file", str(cwd / "chaostoolkit.log"), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _activities(exp: dict[str, Any]) -> list[dict[str, Any]]:
    """Every activity and probe of the experiment, the objectives' detect/recover probes included."""
    found = list(exp.get("method") or []) + list(exp.get("rollbacks") or [])
    found += list((exp.get("steady-state-hypothesis") or {}).get("probes") or [])
    for extension in exp.get("extensions") or []:
        if extension.get("detect"):
            found.append(extension["detect"])
        recover = extension.get("recover") or []
        found += recover if isinstance(recover, list) else [recover]
    return found


def _dry_run_hosts() -> set[str]:
    hosts = yaml.safe_load((ROOT / "inventories" / "lab" / "hosts.yml").read_text())
    found: set[str] = set()

    def walk(group: dict[str, Any]) -> None:
        for name, variables in (group.get("hosts") or {}).items():
            if (variables or {}).get("gpu_health_dry_run"):
                found.add(name)
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(hosts["all"])
    return found


def test_the_lab_preflight_checks_what_the_experiments_start_from() -> None:
    from chaosgpu import gameday  # noqa: PLC0415

    preflight = gameday.load_preflight(LAB)
    assert preflight is not None
    funcs = {p["provider"]["func"] for p in preflight["steady-state-hypothesis"]["probes"]}
    assert {"gpu_count", "slurm_node_available", "gpu_health_ready", "prometheus_holds", "sli"} <= funcs
    assert "chaosgpu_prometheus_url" in preflight["configuration"]
    assert "preflight.yaml" not in [p.name for p in gameday.suite_files(LAB)]


def test_the_catalogue_has_at_least_15_experiments_all_in_the_suite_order() -> None:
    assert len(EXPERIMENTS) >= 15, [p.name for p in EXPERIMENTS]
    listed = [
        line.strip()
        for line in (LAB / "suite.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(listed) == [p.name for p in EXPERIMENTS], "suite.txt must list every lab experiment once"


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_chaos_validate_accepts_the_experiment(experiment: Path, tmp_path: Path) -> None:
    done = _chaos("validate", str(experiment), cwd=tmp_path)
    assert done.returncode == 0, f"chaos validate {experiment.name}: {done.stdout}{done.stderr}"


def test_chaos_validate_refuses_a_broken_lab_experiment(tmp_path: Path) -> None:
    """The check above can fail: an argument the activity does not take is refused."""
    text = (LAB / "02-xid48-drain-reset-undrain.yaml").read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace('{"pattern": "gpu-node-3", "wait_s": 60}', '{"pattern": "gpu-node-3", "wait": 60}'))
    assert broken.read_text() != text
    done = _chaos("validate", str(broken), cwd=tmp_path)
    assert done.returncode != 0
    assert "wait" in done.stdout + done.stderr


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_a_dry_run_goes_through_without_the_lab(experiment: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal.json"
    done = _chaos("run", "--dry=activities", "--journal-path", str(journal), str(experiment), cwd=tmp_path)
    assert done.returncode == 0, f"{experiment.name}: {done.stdout}{done.stderr}"
    result = json.loads(journal.read_text())
    assert result["status"] == "completed", result["status"]
    assert len(result["run"]) == len(_load(experiment)["method"])


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_each_declares_ttd_ttr_on_a_detect_probe_and_rollbacks(experiment: Path) -> None:
    exp = _load(experiment)
    modules = [c.get("provider", {}).get("module") for c in exp.get("controls") or []]
    assert "chaosgpu.controls.objectives" in modules, f"{experiment.name}: no objectives control"
    objectives = parse_objectives(exp)
    assert objectives is not None, f"{experiment.name}: no chaosgpu_objectives extension"
    assert objectives.ttd_s, f"{experiment.name}: ttd_s is required"
    assert objectives.ttr_s, f"{experiment.name}: ttr_s is required"
    assert objectives.detect is not None, f"{experiment.name}: no detect probe"
    assert objectives.recover, f"{experiment.name}: no recover probe"
    assert objectives.deadline_s >= objectives.ttr_s, f"{experiment.name}: the deadline ends before the TTR objective"
    rollbacks = {a["provider"].get("func") for a in exp.get("rollbacks") or []}
    assert rollbacks & ROLLBACK_FUNCS, f"{experiment.name}: no rollback that reverts its fault ({rollbacks})"
    assert "#" in experiment.read_text().split("controls:")[0], f"{experiment.name}: no comment deriving the numbers"


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_recovery_is_never_judged_on_the_sticky_xid_gauge(experiment: Path) -> None:
    exp = _load(experiment)
    for extension in exp.get("extensions") or []:
        signals = [extension.get("detect"), *(extension.get("recover") or [])]
        text = json.dumps([s for s in signals if s])
        assert "DCGM_FI_DEV_XID_ERRORS" not in text, f"{experiment.name}: the XID gauge never resets"


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_an_experiment_that_asks_prometheus_says_where_it_is(experiment: Path) -> None:
    exp = _load(experiment)
    asks = "prometheus_holds" in json.dumps(exp) or "prometheus_query" in json.dumps(exp)
    if asks:
        assert "chaosgpu_prometheus_url" in (exp.get("configuration") or {}), (
            f"{experiment.name}: queries Prometheus without configuration chaosgpu_prometheus_url"
        )


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_gpu_health_reactions_are_expected_only_from_a_live_agent(experiment: Path) -> None:
    dry = _dry_run_hosts()
    assert dry, "the lab inventory names no dry-run agent: this check would prove nothing"
    for activity in _activities(_load(experiment)):
        provider = activity.get("provider") or {}
        if provider.get("func") in REACTION_FUNCS:
            pattern = (provider.get("arguments") or {}).get("pattern", "")
            assert pattern not in dry, (
                f"{experiment.name}: {activity['name']} expects a reaction from {pattern}'s dry-run agent"
            )


def test_the_xid94_experiment_fails_on_a_drain() -> None:
    """XID 94 must not drain: the hypothesis (checked after the method too) watches that no drain happens."""
    exp = _load(LAB / "01-xid94-no-drain.yaml")
    funcs = [p["provider"]["func"] for p in exp["steady-state-hypothesis"]["probes"]]
    assert "node_stays_undrained" in funcs
    assert exp["extensions"][0]["detect"]["provider"]["func"] == "gpu_health_saw_xid"


def test_the_rma_experiment_clears_the_mark_after_reverting_the_fault() -> None:
    exp = _load(LAB / "04-row-remap-failure-rma.yaml")
    funcs = [a["provider"]["func"] for a in exp["rollbacks"]]
    assert funcs.index("revert_faults") < funcs.index("clear_rma"), funcs
    assert exp["rollbacks"][funcs.index("clear_rma")]["provider"]["arguments"]["wait_s"] > 0


@pytest.mark.parametrize("experiment", [*EXPERIMENTS, LAB / "preflight.yaml"], ids=lambda p: p.name)
def test_no_lab_activity_sleeps_a_fixed_time(experiment: Path) -> None:
    """Issue #10: a game day polls for what it waits on; a ``pauses`` would be a fixed sleep (bench/gameday_time)."""
    paused = [a.get("name") for a in _activities(_load(experiment)) if a.get("pauses")]
    assert not paused, f"{experiment.name}: {paused} pause; wait with a probe's wait_s instead"
