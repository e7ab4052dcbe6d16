"""bench/provisioning.py without the lab: the grown inventory and the per-host task statistics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import provisioning

ROOT = Path(__file__).resolve().parents[3]


def test_the_grown_inventory_keeps_the_lab_and_adds_nodes_after_it(tmp_path: Path) -> None:
    inventory = provisioning.grown_inventory(8, tmp_path / "inv")
    tree = yaml.safe_load((inventory / "hosts.yml").read_text())
    nodes = tree["all"]["children"]["lab"]["children"]["gpu_nodes"]["hosts"]
    assert list(nodes) == [f"gpu-node-{i}" for i in range(1, 9)]
    assert nodes["gpu-node-3"]["ansible_port"] == 2223  # the lab's own, untouched
    assert "gpu_health_dry_run" not in nodes["gpu-node-3"]  # still the one agent that remediates
    assert (nodes["gpu-node-8"]["ansible_port"], nodes["gpu-node-8"]["lab_address"]) == (2228, "172.30.99.18")
    assert nodes["gpu-node-8"]["gpu_health_dry_run"] is True
    assert (inventory / "group_vars").resolve() == (provisioning.LAB / "group_vars").resolve()
    assert {v["lab_checkout_dir"] for v in nodes.values()} == {str(provisioning.ROOT)}
    listing = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inventory), "--graph", "slurm_nodes"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "gpu-node-8" in listing  # Slurm learns the new nodes through the groups
    key = subprocess.run(  # the lab key as Ansible resolves it (a debug task on the controller, no connection)
        [
            str(Path(sys.executable).parent / "ansible"),
            "-i",
            str(inventory),
            "gpu-node-8",
            "-c",
            "local",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "var=ansible_ssh_private_key_file",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(provisioning.ROOT / "ansible.cfg")},
    ).stdout
    assert f"{provisioning.ROOT}/.cache/lab/ssh/id_ed25519" in key, key


def test_task_stats_split_package_time_and_count_fact_gathering() -> None:
    def task(action: str, start: str, end: str, changed: bool = False) -> dict[str, object]:
        return {
            "task": {"duration": {"start": f"2026-11-30T00:00:{start}Z", "end": f"2026-11-30T00:00:{end}Z"}},
            "hosts": {"gpu-node-1": {"action": action, "changed": changed}},
        }

    parsed = {
        "plays": [
            {
                "tasks": [
                    task("gather_facts", "00.000000", "02.000000"),
                    task("ansible.builtin.apt", "02.000000", "12.500000", changed=True),
                    task("ansible.builtin.template", "12.500000", "13.000000"),
                    {"task": {"duration": {"start": "x", "end": "x"}}, "hosts": {"ops-1": {}}},
                ]
            }
        ]
    }
    stats = provisioning.task_stats(parsed, "gpu-node-1")
    assert stats["tasks"] == 3
    assert stats["changed"] == 1
    assert stats["facts"] == 1
    assert abs(stats["package_s"] - 10.5) < 1e-6
    assert abs(stats["other_s"] - 2.5) < 1e-6


def test_rerun_ab_refuses_a_base_that_is_not_a_revision_and_leaves_no_worktree(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench import rerun_ab  # noqa: PLC0415 - the module under test

    before = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert rerun_ab.main(["--base", "no-such-revision-anywhere"]) == 2
    assert "--base 'no-such-revision-anywhere' is not a revision of this repository" in capsys.readouterr().err
    after = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert after == before
