"""The lab's Slurm cluster (gpuops.fleet.slurm: slurmctld on ops-1, slurmd on the GPU nodes): every node idle with
its 8 GPUs as gres, a job asking for 2 GPUs gets them in CUDA_VISIBLE_DEVICES on the node with the lowest weight,
and an operator's drain and resume of a node. The GPUs are the lab's stand-ins (device files of the simulated GPUs
made by lab_up.yml); Slurm, munge and the scheduling are real. Runs alone (scripts/lab-test.sh phase 3): it
drains gpu-node-3 for a moment."""

from __future__ import annotations

import re
import shlex

import pytest
from labhosts import ROOT, Host, ansible_playbook, recap, wait_for

GPUS_PER_NODE = 8
DRAINED_NODE = "gpu-node-3"
# Bounds for Slurm to settle (a node registering, a state change reaching sinfo); generous for a slow machine.
SETTLE_S = 90.0
SITE = ROOT / "playbooks" / "site.yml"
LIMITED = "gpu-node-1"


def node_states(ops: Host) -> dict[str, tuple[str, str, str]]:
    """sinfo per node: name -> (state, gres, reason)."""
    lines = ops.check("sinfo -h -N -o '%N|%t|%G|%E'").splitlines()
    states: dict[str, tuple[str, str, str]] = {}
    for line in lines:
        name, state, gres, reason = line.split("|", 3)
        states[name] = (state, gres, reason)
    return states


def wait_until_idle(ops: Host, names: list[str]) -> None:
    ok, _ = wait_for(lambda: all(node_states(ops).get(n, ("",))[0] == "idle" for n in names), SETTLE_S, 2.0)
    assert ok, f"not all of {names} idle within {SETTLE_S:g} s: {node_states(ops)}"


@pytest.fixture(scope="module")
def node_names(gpu_nodes: list[Host]) -> list[str]:
    return [node.name for node in gpu_nodes]


def test_every_gpu_node_is_idle_with_eight_gpus(ops: Host, node_names: list[str]) -> None:
    wait_until_idle(ops, node_names)
    states = node_states(ops)
    assert sorted(states) == sorted(node_names), f"sinfo lists {sorted(states)}"
    for name in node_names:
        assert states[name][1] == f"gpu:h100:{GPUS_PER_NODE}", f"{name}: {states[name]}"


def test_a_job_with_two_gpus_gets_two_devices_on_the_lightest_node(ops: Host, node_names: list[str]) -> None:
    wait_until_idle(ops, node_names)
    result = ops.run("timeout 120 srun -N1 --gres=gpu:2 -t 2 env", timeout=150)
    assert result.returncode == 0, f"srun exited {result.returncode}: {result.stderr}"
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert len(env.get("CUDA_VISIBLE_DEVICES", "").split(",")) == 2, result.stdout
    # Lab weights: gpu-node-1 10, gpu-node-2 20, gpu-node-3 30; the lowest weight is allocated first.
    assert env.get("SLURMD_NODENAME") == "gpu-node-1", result.stdout


def test_drain_and_resume_a_node(ops: Host, node_names: list[str]) -> None:
    wait_until_idle(ops, [DRAINED_NODE])
    reason = "lab-test drain"
    ops.check(f"sudo scontrol update nodename={DRAINED_NODE} state=drain reason={shlex.quote(reason)}")
    try:
        ok, _ = wait_for(lambda: node_states(ops)[DRAINED_NODE][0] == "drain", SETTLE_S, 2.0)
        assert ok, f"{DRAINED_NODE} not drained: {node_states(ops)[DRAINED_NODE]}"
        assert node_states(ops)[DRAINED_NODE][2] == reason
        others = [name for name in node_names if name != DRAINED_NODE]
        assert all(node_states(ops)[name][0] == "idle" for name in others), node_states(ops)
    finally:
        ops.check(f"sudo scontrol update nodename={DRAINED_NODE} state=resume")
    wait_until_idle(ops, [DRAINED_NODE])


def _slurm_conf_sha1(hosts: list[Host]) -> dict[str, str]:
    return {host.name: host.check("sha1sum /etc/slurm/slurm.conf").split()[0] for host in hosts}


def test_a_run_limited_to_one_node_reads_the_others_and_changes_nothing(ops: Host, gpu_nodes: list[Host]) -> None:
    """--limit gpu-node-1: slurm.conf is rendered from every host (the others' facts read, not changed), so the
    re-run on a converged lab changes nothing and only gpu-node-1 is in the play."""
    hosts = [ops, *gpu_nodes]
    before = _slurm_conf_sha1(hosts)
    assert len(set(before.values())) == 1, f"slurm.conf differs between hosts before the run: {before}"
    result = ansible_playbook(SITE, "--limit", LIMITED, "--tags", "slurm", timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    counts = recap(result.stdout)
    assert list(counts) == [LIMITED], f"hosts in the recap: {counts}"
    assert counts[LIMITED]["changed"] == 0, result.stdout[-4000:]
    assert _slurm_conf_sha1(hosts) == before


def test_a_limited_run_that_would_change_slurm_conf_is_refused_before_any_change(
    ops: Host, gpu_nodes: list[Host]
) -> None:
    """A setting that changes slurm.conf, run on one node only: the others would keep the old file, so preflight
    refuses, naming them, and slurm.conf stays as it was everywhere."""
    hosts = [ops, *gpu_nodes]
    before = _slurm_conf_sha1(hosts)
    result = ansible_playbook(SITE, "--limit", LIMITED, "--tags", "slurm", "-e", "slurm_partition_max_time=7-00:00:00",
                              timeout=600)  # fmt: skip
    assert result.returncode != 0, result.stdout[-4000:]
    refusal = re.search(r"slurm\.conf would change .*?, but (.*?) are outside this play", result.stdout)
    assert refusal, result.stdout[-4000:]
    assert sorted(refusal.group(1).split(", ")) == sorted(host.name for host in hosts if host.name != LIMITED)
    assert recap(result.stdout)[LIMITED]["changed"] == 0, result.stdout[-4000:]
    assert _slurm_conf_sha1(hosts) == before
