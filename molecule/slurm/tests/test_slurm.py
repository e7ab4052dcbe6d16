"""The two-host cluster as a user and an operator see it: the GPU node idle with its 8 GPUs, a job with 2 GPUs
gets CUDA_VISIBLE_DEVICES, drain and resume change the node's state. The GPUs are STAND-INs: character devices
195:N made in prepare, as the NVIDIA driver makes them; Slurm, munge and the scheduling are real."""

from __future__ import annotations

import os
import time

import pytest
import testinfra

testinfra_hosts = ["ansible://slurm_controllers"]

NODE = "molecule-slurm-gpu"
# Bounds for the cluster to settle (registration, state changes); generous so a slow machine passes too.
SETTLE_S = 90


def _node_host():
    return testinfra.get_host(f"ansible://{NODE}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def _node_line(host) -> str:
    return host.check_output(f"sinfo -h -N -n {NODE} -o '%N|%t|%G|%P|%E'")


def _wait_for_state(host, state: str) -> list[str]:
    deadline = time.monotonic() + SETTLE_S
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = _node_line(host).splitlines()
        if lines and all(line.split("|")[1] == state for line in lines):
            return lines
        time.sleep(2)
    pytest.fail(
        f"{NODE} not {state} within {SETTLE_S} s; sinfo says {lines}; "
        f"slurmctld log:\n{host.run('tail -n 30 /var/log/slurm/slurmctld.log').stdout}"
    )


def test_services_run(host):
    assert host.service("munge").is_running
    assert host.service("slurmctld").is_running
    node = _node_host()
    assert node.service("munge").is_running
    assert node.service("slurmd").is_running


@pytest.mark.parametrize("name", ["molecule-slurm-ctl", NODE])
def test_munge_key_is_private_and_the_same_everywhere(host, name):
    target = host if name == "molecule-slurm-ctl" else _node_host()
    key = target.file("/etc/munge/munge.key")
    assert (key.user, key.group, key.mode) == ("munge", "munge", 0o400)
    assert key.sha256sum == host.file("/etc/munge/munge.key").sha256sum


def test_slurm_conf_is_the_same_on_both_hosts(host):
    assert _node_host().file("/etc/slurm/slurm.conf").sha256sum == host.file("/etc/slurm/slurm.conf").sha256sum


def test_gres_conf_names_the_device_files():
    content = _node_host().file("/etc/slurm/gres.conf").content_string
    assert "Name=gpu Type=h100 File=/dev/nvidia[0-7]" in content


def test_node_is_idle_with_eight_gpus_in_its_partitions(host):
    lines = _wait_for_state(host, "idle")
    gres = {line.split("|")[2] for line in lines}
    partitions = {line.split("|")[3] for line in lines}
    assert gres == {"gpu:h100:8"}
    assert partitions == {"h100", "gpu*"}  # its GPU type's partition and the default one


def test_node_has_its_weight_and_memory(host):
    show = host.check_output(f"scontrol show node {NODE}")
    assert "Weight=10 " in show
    assert "RealMemory=0 " not in show


def test_a_job_with_two_gpus_sees_two_devices(host):
    _wait_for_state(host, "idle")
    out = host.run("timeout 120 srun -N1 --gres=gpu:2 -t 2 env")
    assert out.rc == 0, out.stderr
    visible = [line.split("=", 1)[1] for line in out.stdout.splitlines() if line.startswith("CUDA_VISIBLE_DEVICES=")]
    assert len(visible) == 1, out.stdout
    assert len(visible[0].split(",")) == 2, out.stdout
    node = [line for line in out.stdout.splitlines() if line.startswith("SLURMD_NODENAME=")]
    assert node == [f"SLURMD_NODENAME={NODE}"]


def test_an_ordinary_user_runs_a_gpu_job(host):
    """Jobs run as the submitting user on the node (root's jobs alone would hide a plugin that fails for users)."""
    _wait_for_state(host, "idle")
    out = host.run("timeout 120 runuser -u researcher -- srun -N1 --gres=gpu:1 -t 2 sh -c 'id -un; env'")
    assert out.rc == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "researcher", out.stdout
    assert "CUDA_VISIBLE_DEVICES=0" in lines, out.stdout


def test_a_job_asking_for_more_gpus_than_exist_is_refused(host):
    out = host.run("timeout 60 srun -N1 --gres=gpu:9 -t 1 true")
    assert out.rc != 0
    assert "Requested node configuration is not available" in out.stderr


def test_drain_then_resume(host):
    _wait_for_state(host, "idle")
    host.check_output(f'scontrol update nodename={NODE} state=drain reason="molecule test"')
    try:
        lines = _wait_for_state(host, "drain")
        assert {line.split("|")[4] for line in lines} == {"molecule test"}
    finally:
        host.check_output(f"scontrol update nodename={NODE} state=resume")
    _wait_for_state(host, "idle")
