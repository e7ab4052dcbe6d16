"""bench/task_cost.py without the lab: the container's CPU reader (cgroup v1 and v2), the playbooks, the figures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import task_cost
from bench.common import Bench

CID = "4ae8590b40b4"


@pytest.fixture
def docker_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        assert argv[:3] == ["docker", "inspect", "-f"]
        known = argv[-1] == "gpuops-lab-gpu-node-1"
        return subprocess.CompletedProcess(argv, 0 if known else 1, CID + "\n" if known else "", "")

    monkeypatch.setattr(task_cost.subprocess, "run", run)


@pytest.mark.usefixtures("docker_knows")
def test_cgroup_v1_cpuacct_is_read_in_seconds(tmp_path: Path) -> None:
    usage = tmp_path / "cpuacct" / "docker" / CID / "cpuacct.usage"
    usage.parent.mkdir(parents=True)
    usage.write_text("2500000000\n")
    read = task_cost.cgroup_cpu_reader("gpuops-lab-gpu-node-1", root=tmp_path)
    assert read is not None
    assert read() == pytest.approx(2.5)
    usage.write_text("4000000000\n")
    assert read() == pytest.approx(4.0)


@pytest.mark.usefixtures("docker_knows")
@pytest.mark.parametrize("where", ["system.slice/docker-{cid}.scope", "docker/{cid}"])
def test_cgroup_v2_cpu_stat_is_read_in_seconds(tmp_path: Path, where: str) -> None:
    stat = tmp_path / where.format(cid=CID) / "cpu.stat"
    stat.parent.mkdir(parents=True)
    stat.write_text("usage_usec 1750000\nuser_usec 1000000\nsystem_usec 750000\n")
    read = task_cost.cgroup_cpu_reader("gpuops-lab-gpu-node-1", root=tmp_path)
    assert read is not None
    assert read() == pytest.approx(1.75)


@pytest.mark.usefixtures("docker_knows")
def test_no_accounting_or_no_container_gives_no_reader(tmp_path: Path) -> None:
    assert task_cost.cgroup_cpu_reader("gpuops-lab-gpu-node-1", root=tmp_path) is None
    assert task_cost.cgroup_cpu_reader("gpuops-lab-nope", root=tmp_path) is None


def test_each_kind_gets_a_playbook_of_that_many_tasks_on_the_host(tmp_path: Path) -> None:
    paths = task_cost.write_playbooks(tmp_path, "gpu-node-2", 7)
    assert set(paths) == set(task_cost.TASKS)
    for kind, path in paths.items():
        (play,) = json.loads(path.read_text())
        assert play["hosts"] == "gpu-node-2"
        assert play["gather_facts"] is False
        assert len(play["tasks"]) == (0 if kind == "empty" else 7)
    (skipped,) = json.loads(paths["skipped"].read_text())
    assert "when" in skipped["tasks"][0]
    (fast,) = json.loads(paths["apt_installed"].read_text())
    assert fast["tasks"][0]["gpuops.fleet.apt_installed"] == {"name": task_cost.PACKAGE, "state": "present"}


def test_figures_take_the_empty_playbook_off_every_kind() -> None:
    bench = Bench("task_cost")
    samples = {"empty": [1.0, 1.0], "module": [5.0, 5.0], "skipped": [1.5, 1.5], "apt": [11.0, 11.0],
               "apt_installed": [2.0, 2.0]}  # fmt: skip
    controller = {"empty": 2.0, "module": 6.0, "skipped": 3.0, "apt": 8.0, "apt_installed": 4.0}
    node = {"empty": 0.0, "module": 4.0, "skipped": 0.0, "apt": 16.0, "apt_installed": 0.8}
    task_cost.figures(bench, samples, controller, node, tasks=10, runs=2)
    got = {f.figure: f.value for f in bench.figures}
    assert got["task cost: module: wall per task (median)"] == pytest.approx(0.4)
    assert got["task cost: module: controller CPU per task"] == pytest.approx(0.2)
    assert got["task cost: module: node CPU per task"] == pytest.approx(0.2)
    assert got["task cost: skipped: wall per task (median)"] == pytest.approx(0.05)
    assert got["task cost: apt_installed: node CPU per task"] == pytest.approx(0.04)
    assert got["task cost: apt / apt_installed (wall per task, package installed)"] == pytest.approx(10.0)


def test_without_node_accounting_the_figure_says_so() -> None:
    bench = Bench("task_cost")
    samples = {kind: [2.0] for kind in task_cost.TASKS} | {"empty": [1.0]}
    controller = dict.fromkeys(task_cost.TASKS, 1.0)
    task_cost.figures(bench, samples, controller, None, tasks=1, runs=1)
    assert not any("node CPU per task" in f.figure for f in bench.figures)
    (last,) = [f for f in bench.figures if f.figure == "task cost: node CPU"]
    assert last.value is None
    assert "cgroup" in last.detail
