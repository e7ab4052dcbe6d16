"""`chaos run --dry=activities` runs an experiment's whole flow and touches no host: every lab host's state (the
faultcheck snapshot: nftables, qdiscs, services, GPUs, fault ledger, ...) is the same before and after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from faultcheck import differences, snapshot
from labhosts import INVENTORY, ROOT, Lab

from chaosgpu.gameday import suite_files

# The lab suite's experiments as the game day runs them (preflight.yaml is its health check, not an experiment).
EXPERIMENTS = suite_files(ROOT / "experiments" / "lab")


def chaos(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("chaos")
    return subprocess.run(
        [str(executable), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "CHAOSGPU_INVENTORY": str(INVENTORY)},
        check=False,
    )


def test_lab_experiments_are_valid(tmp_path: Path) -> None:
    assert EXPERIMENTS, "no experiment in experiments/lab"
    for experiment in EXPERIMENTS:
        result = chaos("validate", str(experiment), cwd=tmp_path)
        assert result.returncode == 0, f"{experiment.name}: {result.stdout}{result.stderr}"


def test_dry_run_touches_no_host(lab: Lab, tmp_path: Path) -> None:
    hosts = list(lab.hosts.values())
    before = {host.name: snapshot(host) for host in hosts}
    for experiment in EXPERIMENTS:
        journal = tmp_path / f"{experiment.stem}.journal.json"
        result = chaos("run", "--dry=activities", "--journal-path", str(journal), str(experiment), cwd=tmp_path)
        assert result.returncode == 0, f"{experiment.name}: {result.stdout}{result.stderr}"
        ran = json.loads(journal.read_text())
        assert ran["status"] == "completed", f"{experiment.name}: {ran['status']}"
        assert ran["run"], f"{experiment.name}: the dry run went through no activity"
    changed = {name: differences(before[name], snapshot(host)) for name, host in lab.hosts.items()}
    assert not any(changed.values()), f"a dry run changed hosts: {changed}"
