"""The game day's interrupt safety on the real lab: SIGINT while an experiment holds a fault runs its rollbacks,
leaves no fault on the hosts and writes a partial report marked interrupted (exit 130).

The game day runs as a user runs it (`chaosgpu gameday`, its own process) with a suite of one experiment that
partitions gpu-node-2 from ops-1 and holds it. Its inventory is the lab's, cut down to those two hosts (same
group_vars), so the pre-flight does not see the faults other lanes of this phase put on their own hosts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from labhosts import INVENTORY, ROOT, Host, Lab

from chaosgpu.fleet.probes import active_faults

NODE, OPS = "gpu-node-2", "ops-1"
CHAOSGPU = Path(sys.executable).parent / "chaosgpu"


def _cut_inventory(directory: Path) -> Path:
    """inventories/lab with only NODE and OPS (same hosts.yml structure, group_vars linked, the checkout named)."""
    tree = yaml.safe_load((INVENTORY / "hosts.yml").read_text())

    def prune(group: dict[str, Any]) -> None:
        if group.get("hosts"):
            # lab_checkout_dir: the lab key and the rest are found from the checkout, not from this directory.
            group["hosts"] = {
                n: {**(v or {}), "lab_checkout_dir": str(ROOT)} for n, v in group["hosts"].items() if n in (NODE, OPS)
            }
        for child in (group.get("children") or {}).values():
            if child:
                prune(child)

    prune(tree["all"])
    directory.mkdir()
    (directory / "hosts.yml").write_text(yaml.safe_dump(tree))
    (directory / "group_vars").symlink_to(INVENTORY / "group_vars")
    return directory


def _experiment(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "version": "1.0.0",
                "title": "gpu-node-2 partitioned from ops-1, held until interrupted",
                "description": "interrupt-safety test: the fault is held by a pause that SIGINT cuts short",
                "configuration": {"chaosgpu_max_share": 1.0},  # one node of a one-node inventory
                "method": [
                    {
                        "type": "action",
                        "name": "partition-gpu-node-2-from-ops",
                        "provider": {
                            "type": "python",
                            "module": "chaosgpu.network.actions",
                            "func": "partition",
                            "arguments": {"pattern": NODE, "peer": OPS, "duration_s": 300},
                        },
                        "pauses": {"after": 240},
                    }
                ],
                "rollbacks": [
                    {
                        "type": "action",
                        "name": "revert-this-runs-faults",
                        "provider": {
                            "type": "python",
                            "module": "chaosgpu.fleet.actions",
                            "func": "revert_faults",
                            "arguments": {"pattern": NODE},
                        },
                    }
                ],
            }
        )
    )
    return path


def _reaches(ops: Host, node: Host, port: int = 9100) -> bool:
    return ops.run(f"timeout 2 bash -c 'exec 3<>/dev/tcp/{node.address}/{port}'", timeout=30).returncode == 0


def test_sigint_during_an_experiment_rolls_back_and_reports_interrupted(lab: Lab, tmp_path: Path) -> None:
    node, ops = lab.hosts[NODE], lab.hosts[OPS]
    assert _reaches(ops, node), f"{OPS} cannot reach {NODE}:9100 before the test"
    inventory = _cut_inventory(tmp_path / "inventory")
    configuration = {"chaosgpu_inventory": str(inventory)}
    assert active_faults("all", configuration=configuration) == []
    reports = tmp_path / "reports"
    argv = [str(CHAOSGPU), "gameday", "-i", str(inventory), "-s", str(_experiment(tmp_path / "hold.json"))]
    run = subprocess.Popen(
        [*argv, "--reports", str(reports)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        faults: list[dict[str, Any]] = []
        while time.monotonic() < deadline and run.poll() is None and not faults:
            time.sleep(1)
            faults = active_faults(NODE, configuration=configuration)
        assert faults, f"no fault appeared in {NODE}'s ledger within 120 s (game day exit {run.poll()})"
        assert not _reaches(ops, node), "the partition is recorded but not in force"
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=180)
    finally:
        if run.poll() is None:  # the game day did not end: kill it and revert what it left, then fail below
            run.kill()
            run.communicate()
            subprocess.run([str(CHAOSGPU), "cleanup", "-i", str(inventory)], check=False, timeout=300)
    assert run.returncode == 130, out
    assert "interrupted" in out
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["passed"] is False
    (entry,) = summary["experiments"]
    assert entry["status"] == "interrupted"
    assert entry["leftover_faults"] == 0
    assert active_faults("all", configuration=configuration) == [], "a fault was left on the hosts"
    assert _reaches(ops, node), f"{OPS} still cannot reach {NODE}:9100: the partition was not rolled back"
    for name in ("report.html", "summary.md", "junit.xml"):
        assert (reports / "latest" / name).is_file(), name
