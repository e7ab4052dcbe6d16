"""The Kubernetes experiments (experiments/kubernetes/*.yaml): each passes the real ``chaos validate`` (which imports
every activity and checks its arguments against the function's signature), and each one's probes, with the
configuration as ``chaos run`` builds it from the environment, judge a fake cluster (127.0.0.1) as the experiment
means: a healthy cluster holds, an unset expected count stops the run before its fault."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8sfake import FakeCluster, gpu_node, pod, serve

from chaosgpu.objectives import parse_objectives

ROOT = Path(__file__).resolve().parents[3]
EXPERIMENTS = sorted((ROOT / "experiments" / "kubernetes").glob("*.yaml"))
CHAOS = Path(sys.executable).with_name("chaos")

# What each experiment needs set (no usable default) for a fake cluster of 2 GPU nodes with 8 GPUs each.
CLUSTER_ENV = {
    "CHAOSGPU_K8S_GPU_NODES": "2",
    "CHAOSGPU_K8S_EXPECTED_GPUS": "16",
    "CHAOSGPU_K8S_WORKLOAD_PODS": "2",
    "CHAOSGPU_K8S_RECOVERY_S": "0",
}


def _chaos(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    chaos = CHAOS if CHAOS.exists() else Path(shutil.which("chaos") or "chaos")
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHAOSGPU_K8S_")}
    return subprocess.run(
        [str(chaos), "--no-version-check", "--log-file", str(cwd / "chaostoolkit.log"), *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_there_are_the_four_experiments() -> None:
    names = {p.name for p in EXPERIMENTS}
    assert {"drain-gpu-node.yaml", "terminate-gpu-pods.yaml", "kill-device-plugin.yaml", "kill-dcgm-exporter.yaml"} <= (
        names
    )


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_chaos_validate_accepts_the_experiment(experiment: Path, tmp_path: Path) -> None:
    done = _chaos("validate", str(experiment), cwd=tmp_path)
    assert done.returncode == 0, f"chaos validate {experiment.name}: {done.stdout}{done.stderr}"


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("func: pods_ready", "func: pods_readyy", "does not expose a function called 'pods_readyy'"),
        ("min_count:", "min_cnt:", "argument 'min_cnt' is not part of the function signature"),
        ("module: chaosk8s.pod.actions", "module: chaosk8s.pods.actions", "chaosk8s.pods.actions"),
    ],
)
def test_chaos_validate_refuses_a_broken_experiment(old: str, new: str, complaint: str, tmp_path: Path) -> None:
    """The check above can fail: the same experiment with a misspelt probe, argument or module is refused."""
    text = (ROOT / "experiments" / "kubernetes" / "terminate-gpu-pods.yaml").read_text()
    assert old in text
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace(old, new, 1))
    done = _chaos("validate", str(broken), cwd=tmp_path)
    assert done.returncode != 0
    assert complaint in done.stdout + done.stderr


def _load(experiment: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(experiment.read_text()))


def _activities(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from doc["steady-state-hypothesis"]["probes"]
    yield from doc["method"]
    yield from doc.get("rollbacks") or []


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_every_setting_is_overridable_from_the_environment(experiment: Path) -> None:
    doc = _load(experiment)
    for key, value in doc["configuration"].items():
        assert isinstance(value, dict), f"{key} is fixed"
        assert value["type"] == "env", key
        assert value["key"].startswith("CHAOSGPU_K8S_"), key
    used = {
        arg[2:-1]
        for activity in _activities(doc)
        for arg in activity["provider"].get("arguments", {}).values()
        if isinstance(arg, str) and arg.startswith("${")
    }
    assert used == set(doc["configuration"]), "a setting unused, or an argument naming no setting"


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_the_hypothesis_uses_chaosgpu_k8s_probes(experiment: Path) -> None:
    probes = _load(experiment)["steady-state-hypothesis"]["probes"]
    assert probes
    assert all(p["provider"]["module"] == "chaosgpu.k8s.probes" and p["tolerance"] is True for p in probes)


def test_the_drain_is_rolled_back_by_uncordoning_the_nodes_it_drained() -> None:
    doc = _load(ROOT / "experiments" / "kubernetes" / "drain-gpu-node.yaml")
    drain = doc["method"][0]["provider"]
    assert (drain["module"], drain["func"], drain["arguments"]["count"]) == ("chaosk8s.node.actions", "drain_nodes", 1)
    rollback = doc["rollbacks"][0]["provider"]
    assert (rollback["module"], rollback["func"]) == ("chaosk8s.node.actions", "uncordon_node")
    assert rollback["arguments"]["label_selector"] == drain["arguments"]["label_selector"]


@pytest.fixture
def healthy_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeCluster]:
    """Two GPU nodes with 8 GPUs each, the GPU operator's daemonset pods and a GPU workload, all ready."""
    for state in serve(monkeypatch, tmp_path):
        state.nodes = [gpu_node("gpu-a"), gpu_node("gpu-b")]
        state.pods["gpu-operator"] = [
            pod(f"{app}-{n}", {"app": app}, node=f"gpu-{n}")
            for app in ("nvidia-device-plugin-daemonset", "nvidia-dcgm-exporter")
            for n in "ab"
        ]
        state.pods["gpu-workload"] = [pod(f"train-{n}", {"app": "gpu-workload"}, node=f"gpu-{n}") for n in "ab"]
        yield state


def _dry_run(experiment: Path, tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """``chaos run --dry=actions``: every probe runs against the cluster, no action (no fault)."""
    journal = tmp_path / "journal.json"
    done = _chaos("run", "--dry=actions", "--journal-path", str(journal), str(experiment), cwd=tmp_path, env=env)
    assert journal.exists(), f"no journal: {done.stdout}{done.stderr}"
    return dict(json.loads(journal.read_text()))


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_a_healthy_cluster_holds_the_hypothesis_before_and_after(
    experiment: Path, healthy_cluster: FakeCluster, tmp_path: Path
) -> None:
    env = {**CLUSTER_ENV, "KUBECONFIG": os.environ["KUBECONFIG"], "KUBERNETES_HOST": healthy_cluster.url}
    journal = _dry_run(experiment, tmp_path, env)
    assert journal["status"] == "completed", json.dumps(journal["steady_states"], indent=1)
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    assert journal["steady_states"]["after"]["steady_state_met"] is True
    assert any("/api/v1/nodes" in r or "/pods" in r for r in healthy_cluster.requests)


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_unset_expected_counts_stop_the_run_before_the_fault(
    experiment: Path, healthy_cluster: FakeCluster, tmp_path: Path
) -> None:
    env = {"KUBECONFIG": os.environ["KUBECONFIG"], "KUBERNETES_HOST": healthy_cluster.url}
    journal = _dry_run(experiment, tmp_path, env)
    assert journal["steady_states"]["before"]["steady_state_met"] is False
    assert journal["run"] == [], "the method ran although the hypothesis did not hold"
    errors = " ".join(str(p.get("exception", "")) for p in journal["steady_states"]["before"]["probes"])
    assert "must be an integer >= " in errors
    assert "got -1" in errors


def test_a_cordoned_gpu_node_stops_the_drain_before_it_starts(healthy_cluster: FakeCluster, tmp_path: Path) -> None:
    """The drain's rollback uncordons every GPU node, so it must not start while one is cordoned already."""
    healthy_cluster.nodes[1] = gpu_node("gpu-b", cordoned=True)
    env = {**CLUSTER_ENV, "KUBECONFIG": os.environ["KUBECONFIG"], "KUBERNETES_HOST": healthy_cluster.url}
    journal = _dry_run(ROOT / "experiments" / "kubernetes" / "drain-gpu-node.yaml", tmp_path, env)
    assert journal["steady_states"]["before"]["steady_state_met"] is False
    assert journal["run"] == []


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.name)
def test_each_declares_a_time_to_recover_judged_on_its_steady_state(experiment: Path) -> None:
    doc = _load(experiment)
    assert [c["provider"]["module"] for c in doc["controls"]] == ["chaosgpu.controls.objectives"]
    objectives = parse_objectives(doc)
    assert objectives is not None
    assert objectives.ttr_s is not None
    assert objectives.ttr_s > 0
    assert [p["name"] for p in objectives.recover] == [p["name"] for p in doc["steady-state-hypothesis"]["probes"]]
