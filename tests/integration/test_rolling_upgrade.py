"""playbooks/rolling_driver_upgrade.yml against the lab: the three GPU nodes move between the two STAND-IN driver
releases of ops-1's mirror of NVIDIA's CUDA repository (535.183.01 and 535.216.01), one node per batch, each
rebooted (a container restart) and gated; the GPUs and nvidia-smi are the simulator's, which reports the driver
installed when the node last booted, so "the loaded driver is the target" holds only after a real reboot.

1. Upgrade all three 535.183.01 -> 535.216.01: each ends at the target, loaded, held and pinned, not drained.
2. Roll back with dcgm-exporter disabled on gpu-node-2 (it does not come back after the reboot): gpu-node-1 rolls
   back, gpu-node-2's gate stops the rollout naming the host and the check, gpu-node-3 is untouched.
3. The exporter enabled again, the same command resumes: gpu-node-2 passes its gate, gpu-node-3 rolls back; the lab
   ends at 535.183.01 as it was found.

The rollout drains through the gpu_health agent of each node (its maintenance drain: drain file and Slurm, even
where the agent itself runs in dry-run mode), so the node that fails its gate stays drained in Slurm, for maintenance.
Runs in lab-test phase 3 (every node, nothing else at the same time), before test_reboot.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from labhosts import ROOT, Host, ansible_playbook

OLD, NEW = "535.183.01", "535.216.01"
PLAYBOOK = ROOT / "playbooks" / "rolling_driver_upgrade.yml"
PACKAGES = "nvidia-smi libnvidia-ml1 nvidia-persistenced"
FAULTY = "gpu-node-2"
RUN_TIMEOUT_S = 1800
AGENT_CONFIG = "/etc/gpu_health/agent.json"


def _playbook(target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return ansible_playbook(PLAYBOOK, "-e", f"nvidia_driver_version={target}", "-e", "rolling_upgrade_batch=1", *extra,
                            timeout=RUN_TIMEOUT_S)  # fmt: skip


def _packages(node: Host) -> list[str]:
    """`<package> <version> <status>` of the driver's lockstep packages."""
    return node.check(f"dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {PACKAGES}").split("\n")[
        :-1
    ]


def _loaded(node: Host) -> set[str]:
    return set(node.check("nvidia-smi --query-gpu=driver_version --format=csv,noheader").split())


def _boot(node: Host) -> str:
    """PID 1's start time: changes with every boot of the container."""
    return node.check("cut -d' ' -f22 /proc/1/stat").strip()


def _at(node: Host, version: str) -> list[str]:
    """What is wrong with ``node`` being at ``version`` (installed, held, pinned, loaded); empty when nothing."""
    problems = [
        line for line in _packages(node) if not line.startswith(tuple(f"{p} {version}-" for p in PACKAGES.split()))
    ]
    problems += [f"not held: {line}" for line in _packages(node) if not line.rstrip().endswith("hi")]
    pin = node.check("cat /etc/apt/preferences.d/gpuops-nvidia-driver.pref")
    if f"Pin: version {version}-*" not in pin:
        problems.append(f"pin: {pin}")
    if _loaded(node) != {version}:
        problems.append(f"nvidia-smi reports {_loaded(node)}")
    return problems


def _drained(node: Host) -> list[str]:
    """Traces of a maintenance drain left on the node (marker, drain file)."""
    left = node.run("sudo ls /var/lib/gpu_health/maintenance.json /var/lib/gpu_health/drain.json 2>/dev/null")
    return left.stdout.split()


@pytest.fixture(scope="module")
def gpu_health_installed(gpu_nodes: list[Host]) -> None:
    """The lab's site.yml installs gpu_health on every GPU node; the rollout must drain through it and gate on it
    there (the playbook refuses a node without it by default)."""
    missing = [node.name for node in gpu_nodes if node.run(f"sudo test -f {AGENT_CONFIG}").returncode != 0]
    assert not missing, f"gpu_health is not installed on {missing}: run `make lab`"


@pytest.fixture(scope="module")
def lab_restored(gpu_nodes: list[Host], gpu_health_installed: None) -> Iterator[None]:  # noqa: ARG001 - order
    """The lab starts at 535.183.01 and is left there, with dcgm-exporter enabled, whatever the tests did."""
    found = {node.name: _at(node, OLD) for node in gpu_nodes}
    if any(found.values()):
        pytest.fail(f"the lab is not at driver {OLD} before the test: {found}", pytrace=False)
    yield
    faulty = next(node for node in gpu_nodes if node.name == FAULTY)
    faulty.run("sudo systemctl enable --now dcgm-exporter.service")
    if any(_at(node, OLD) for node in gpu_nodes):
        _playbook(OLD, "-e", "rolling_upgrade_allow_downgrade=true")


@pytest.fixture(scope="module")
def upgraded(lab_restored: None) -> subprocess.CompletedProcess[str]:  # noqa: ARG001 - order
    return _playbook(NEW)


def test_upgrade_moves_every_node_to_the_target(upgraded, gpu_nodes: list[Host]) -> None:
    assert upgraded.returncode == 0, upgraded.stdout[-6000:] + upgraded.stderr[-2000:]
    problems = {node.name: _at(node, NEW) for node in gpu_nodes}
    assert not any(problems.values()), problems


def test_upgrade_goes_one_node_at_a_time_behind_the_gate(upgraded, gpu_nodes: list[Host]) -> None:
    out = upgraded.stdout
    assert out.count("PLAY [Upgrade the driver one batch at a time, each behind the health gate]") == len(gpu_nodes)
    reports = [out.find(f"{node.name}: upgraded, driver installed {OLD}") for node in gpu_nodes]
    assert all(pos >= 0 for pos in reports), out[-6000:]
    assert reports == sorted(reports), f"hosts finished out of order: {reports}"
    assert out.count("TASK [Reboot to load the target driver]") == len(gpu_nodes)


@pytest.mark.usefixtures("upgraded")
def test_upgrade_leaves_no_node_drained(gpu_nodes: list[Host], ops: Host) -> None:
    left = {node.name: _drained(node) for node in gpu_nodes}
    assert not any(left.values()), left
    sinfo = ops.check("sinfo -h -N -o '%N %t'")
    assert all(line.split()[1] == "idle" for line in sinfo.splitlines()), sinfo


@pytest.fixture(scope="module")
def stopped(upgraded, gpu_nodes: list[Host]) -> dict[str, object]:
    """A roll back to 535.183.01 with dcgm-exporter disabled on gpu-node-2 (so it is not up after the reboot)."""
    assert upgraded.returncode == 0, "the upgrade failed; see test_upgrade_moves_every_node_to_the_target"
    faulty = next(node for node in gpu_nodes if node.name == FAULTY)
    last = gpu_nodes[-1]
    boot_before = _boot(last)
    faulty.check("sudo systemctl disable --now dcgm-exporter.service")
    run = _playbook(OLD, "-e", "rolling_upgrade_allow_downgrade=true", "-e", "rolling_upgrade_gate_retries=4")
    return {"run": run, "boot_before": boot_before, "boot_after": _boot(last)}


def test_a_failed_gate_stops_the_rollout_and_names_host_and_check(stopped) -> None:
    run = stopped["run"]
    assert isinstance(run, subprocess.CompletedProcess)
    assert run.returncode != 0, run.stdout[-4000:]
    assert f"ROLLOUT STOPPED at {FAULTY}: check 'dcgm-exporter answers' failed" in run.stdout, run.stdout[-6000:]
    assert ":9400/metrics" in run.stdout


@pytest.mark.usefixtures("stopped")
def test_hosts_before_the_failed_batch_are_rolled_back(gpu_nodes: list[Host]) -> None:
    first = gpu_nodes[0]
    assert not _at(first, OLD), _at(first, OLD)


@pytest.mark.usefixtures("stopped")
def test_the_failed_host_is_not_undrained(gpu_nodes: list[Host], ops: Host) -> None:
    faulty = next(node for node in gpu_nodes if node.name == FAULTY)
    assert _loaded(faulty) == {OLD}  # it was rolled back and rebooted; only the gate failed
    # Drained through gpu_health (whose agent on this node is in dry-run mode: maintenance drains all the same).
    assert _drained(faulty) == ["/var/lib/gpu_health/drain.json", "/var/lib/gpu_health/maintenance.json"]
    slurm = ops.check(f"scontrol -o show node {FAULTY}")
    assert "DRAIN" in slurm, slurm
    assert "maintenance" in slurm, slurm


def test_later_batches_are_untouched(stopped, gpu_nodes: list[Host]) -> None:
    last = gpu_nodes[-1]
    assert stopped["boot_after"] == stopped["boot_before"], f"{last.name} rebooted"
    assert not _at(last, NEW), _at(last, NEW)


@pytest.fixture(scope="module")
def resumed(stopped, gpu_nodes: list[Host]) -> subprocess.CompletedProcess[str]:  # noqa: ARG001
    faulty = next(node for node in gpu_nodes if node.name == FAULTY)
    faulty.check("sudo systemctl enable --now dcgm-exporter.service")
    return _playbook(OLD, "-e", "rolling_upgrade_allow_downgrade=true")


def test_the_same_command_resumes_and_leaves_the_lab_as_found(resumed, gpu_nodes: list[Host], ops: Host) -> None:
    assert resumed.returncode == 0, resumed.stdout[-6000:] + resumed.stderr[-2000:]
    assert f"{gpu_nodes[0].name}: already at target" in resumed.stdout
    problems = {node.name: _at(node, OLD) for node in gpu_nodes}
    assert not any(problems.values()), problems
    left = {node.name: _drained(node) for node in gpu_nodes}
    assert not any(left.values()), left
    sinfo = ops.check("sinfo -h -N -o '%N %t'")
    assert all(line.split()[1] == "idle" for line in sinfo.splitlines()), sinfo
