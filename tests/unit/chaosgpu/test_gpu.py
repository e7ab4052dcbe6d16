"""chaosgpu.gpu: the GPU faults' commands run for real with bash against a simulated node on this machine (the lab's
GPU simulator in a temporary directory, gpushims), their refusals, the actions through the ledger (test_ledger's
fakes), and the probes' parsers, host fan-out and Prometheus calls (a local HTTP server)."""

from __future__ import annotations

import base64
import http.server
import importlib.util
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from gpushims import GpuNode, make_node, write_fake_cuda
from test_ledger import BashTransport, FakeRoot, root  # noqa: F401 - root is a fixture

from chaosgpu import activity, ledger
from chaosgpu.gpu import actions, commands, probes
from chaosgpu.inventory import Inventory
from chaosgpu.types import CommandResult, Host

NODE = Host("gpu-node-1", "127.0.0.1", 2221, "root", groups=("gpu_nodes", "lab"))
OTHERS = [Host(f"gpu-node-{n}", "127.0.0.1", 2220 + n, "operator", groups=("gpu_nodes", "lab")) for n in (2, 3)]
CONFIG = {"chaosgpu_inventory": "fake-inventory"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[GpuNode]:
    yield from make_node(tmp_path / "node")


@pytest.fixture
def saved(tmp_path: Path) -> str:
    return str(tmp_path / "saved")


def ok(node: GpuNode, command: str) -> subprocess.CompletedProcess[str]:
    result = node.bash(command)
    assert result.returncode == 0, f"exited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result


def failed(node: GpuNode, command: str) -> subprocess.CompletedProcess[str]:
    result = node.bash(command)
    assert result.returncode != 0, f"succeeded:\n{result.stdout}{result.stderr}"
    return result


def wrap_nvidia_smi(node: GpuNode, before: str) -> None:
    """Put bash ``before`` in front of the simulator's nvidia-smi (it sees the arguments as "$@")."""
    real = node.bin / "nvidia-smi.real"
    (node.bin / "nvidia-smi").rename(real)
    (node.bin / "nvidia-smi").write_text(f'#!/bin/bash\n{before}\nexec {real} "$@"\n')
    (node.bin / "nvidia-smi").chmod(0o755)


def gpu_fields(node: GpuNode, *keys: str) -> list[dict[str, Any]]:
    return [{k: gpu[k] for k in keys} for gpu in node.gpus()]


def query(node: GpuNode, fields: str, gpu: int) -> str:
    return ok(node, f"nvidia-smi --query-gpu={fields} --format=csv,noheader,nounits -i {gpu}").stdout.strip()


# --- refusals: before any command is built ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        ([], "non-empty list"),
        ("0", "non-empty list"),
        ([0, 0], "names a GPU twice"),
        ([64], "GPU indices 0-63"),
        ([-1], "GPU indices 0-63"),
        ([True], "GPU indices 0-63"),
        ([1.0], "GPU indices 0-63"),
    ],
)
def test_gpu_lists_are_checked(gpus: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        commands.check_gpus(gpus)
    assert "gpus" in str(caught.value)


def test_no_gpu_list_means_gpu_zero() -> None:
    assert commands.check_gpus(None) == (0,)


@pytest.mark.parametrize(
    ("build", "parameter"),
    [
        (lambda: commands.xid_dcgm_commands([0], 0), "xid"),
        (lambda: commands.xid_dcgm_commands([0], True), "xid"),
        (lambda: commands.xid_kmsg_commands([0], 79, "dev/kmsg"), "chaosgpu_kmsg_path"),
        (lambda: commands.xid_kmsg_commands([0], 79, "/dev/kmsg; reboot"), "chaosgpu_kmsg_path"),
        (lambda: commands.memory_error_commands([0], "tbe", 1, "abcdef"), "event"),
        (lambda: commands.memory_error_commands([0], "dbe", 0, "abcdef"), "errors"),
        (lambda: commands.memory_error_commands([0], "dbe", 1, "abcdef", "relative/dir"), "state_dir"),
        (lambda: commands.memory_error_commands([0], "dbe", 1, "AB; rm"), "key"),
        (lambda: commands.compute_mode_commands([0], "EXCLUSIVE_THREAD", "abcdef"), "mode"),
        (lambda: commands.services_stop_commands(["sshd"], "abcdef"), "services"),
        (lambda: commands.services_stop_commands([], "abcdef"), "services"),
        (lambda: commands.kill_commands([0], "HUP"), "signal"),
        (lambda: commands.kill_commands([0], "KILL", [1]), "only_pids"),
        (lambda: commands.load_commands([0], key="abcdef"), "memory_mib or memory_fraction"),
        (lambda: commands.load_commands([0], key="abcdef", memory_fraction=1.5), "memory_fraction"),
        (lambda: commands.load_commands([0], key="abcdef", memory_mib=1, memory_fraction=0.5), "not both"),
        (lambda: commands.load_commands([0], key="abcdef", memory_mib=-1), "memory_mib"),
        (lambda: commands.load_commands([0], key="abcdef", memory_mib=1, tool="jax"), "chaosgpu_gpu_load_tool"),
        (lambda: commands.load_commands([0], key="abcdef", memory_mib=1, python="py thon"), "chaosgpu_gpu_load_py"),
        (lambda: commands.kernel_log_command("kmsg"), "chaosgpu_kmsg_path"),
    ],
)
def test_bad_input_is_refused_naming_the_parameter(build: Any, parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        build()


# --- XIDs ----------------------------------------------------------------------------------------------------------


def test_xid_through_dcgm_is_an_xid_on_each_gpu(node: GpuNode) -> None:
    inject, _ = commands.xid_dcgm_commands([0, 3], 79)
    ok(node, inject)

    gpus = gpu_fields(node, "last_xid", "lost")
    assert [g["last_xid"] for g in gpus] == [79, 0, 0, 79, 0, 0, 0, 0]
    assert [g["lost"] for g in gpus] == [True, False, False, True, False, False, False, False]
    dcgm_calls = [c for c in node.calls() if c[0] == "dcgmi"]
    assert [c[:9] for c in dcgm_calls] == [
        ["dcgmi", "test", "--inject", "--gpuid", str(gpu), "-f", "230", "-v", "79"] for gpu in (0, 3)
    ]


def test_xid_through_dcgm_fails_naming_the_gpu_dcgm_refused(node: GpuNode) -> None:
    inject, _ = commands.xid_dcgm_commands([1, 12], 48)
    result = failed(node, inject)
    assert "could not inject XID 48 on GPU 12" in result.stderr
    assert "Unable to inject info" in result.stderr  # dcgmi's own words come along


def test_xid_revert_is_a_recorded_no_op_without_a_recovery_command(node: GpuNode) -> None:
    inject, revert = commands.xid_dcgm_commands([2], 79)
    ok(node, inject)
    said = ok(node, revert).stdout
    assert "nothing to revert: XID 79 on GPU(s) 2 cannot be undone" in said
    assert "gpu_health" in said
    assert node.gpus()[2]["lost"], "a no-op revert must leave the GPU as the XID left it"


def test_xid_revert_runs_the_hosts_recovery_command_with_the_gpus(node: GpuNode, tmp_path: Path) -> None:
    seen = tmp_path / "recovery"
    _, revert = commands.xid_dcgm_commands([2, 5], 79, f'echo "$CHAOSGPU_GPUS/$CHAOSGPU_XID" >{seen}; gpusim boot')
    inject, _ = commands.xid_dcgm_commands([2, 5], 79)
    ok(node, inject)
    ok(node, revert)
    ok(node, revert)  # idempotent: a second boot finds nothing to recover
    assert seen.read_text().strip() == "2 5/79"
    assert not any(g["lost"] or g["last_xid"] for g in node.gpus())


def test_xid_kernel_log_line_has_the_drivers_format(node: GpuNode) -> None:
    log = node.sim.kernel_log
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    inject, revert = commands.xid_kmsg_commands([1, 7], 79, str(log))
    ok(node, inject)

    lines = log.read_text().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "NVRM: Xid (PCI:0000:2a:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
        "NVRM: Xid (PCI:0000:db:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
    ]
    assert all(line.startswith("[") for line in lines)  # the uptime stamp, as the simulator writes it
    assert not any(g["lost"] for g in node.gpus()), "a kernel-log line alone leaves the GPUs alone"
    assert "nothing to revert" in ok(node, revert).stdout
    assert len(log.read_text().splitlines()) == 2


def test_xid_kernel_log_line_of_a_lost_gpu_takes_the_bus_id_from_nvidia_smis_error(node: GpuNode) -> None:
    node.sim.edit(gpu3={"lost": True})
    log = node.sim.kernel_log
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    ok(node, commands.xid_kmsg_commands([3], 79, str(log))[0])
    assert "NVRM: Xid (PCI:0000:5d:00): 79," in log.read_text()


def test_xid_kernel_log_source_must_exist(node: GpuNode, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "kmsg"
    result = failed(node, commands.xid_kmsg_commands([0], 79, str(missing))[0])
    assert "neither a character device nor a file" in result.stderr
    assert not missing.parent.exists()


def test_xid_line_names_the_gpu_as_the_driver_does() -> None:
    assert commands.xid_line("00000000:AB:00.0", 48).startswith("NVRM: Xid (PCI:0000:ab:00): 48, pid='<unknown>',")
    assert commands.xid_line("0000:18:00", 999).endswith(", Unknown XID error")


# --- memory errors -----------------------------------------------------------------------------------------------


def test_memory_error_raises_the_counters_and_the_revert_restores_them(node: GpuNode, saved: str) -> None:
    node.sim.edit(gpu2={"ecc": {"sbe_volatile": 5, "dbe_volatile": 1, "sbe_aggregate": 9, "dbe_aggregate": 4}})
    before = gpu_fields(node, "ecc", "remap", "retired")
    inject, revert = commands.memory_error_commands([0, 2], "dbe", 3, "abcdef01", saved)

    ok(node, inject)
    ecc = [g["ecc"] for g in node.gpus()]
    assert (ecc[0]["dbe_volatile"], ecc[0]["dbe_aggregate"]) == (3, 3)
    assert (ecc[2]["dbe_volatile"], ecc[2]["dbe_aggregate"]) == (4, 7)
    assert ecc[2]["sbe_volatile"] == 5

    ok(node, revert)
    assert gpu_fields(node, "ecc", "remap", "retired") == before
    assert not list(Path(saved).iterdir()), "the saved values go once restored"
    ok(node, revert)  # idempotent
    assert gpu_fields(node, "ecc", "remap", "retired") == before


@pytest.mark.parametrize(
    ("event", "group", "expected"),
    [
        ("sbe", "ecc", {"sbe_volatile": 2, "sbe_aggregate": 2}),
        ("retired-sbe", "retired", {"sbe": 2}),
        ("retired-dbe", "retired", {"dbe": 2}),
        ("retired-pending", "retired", {"pending": 1}),
        ("remap-correctable", "remap", {"correctable": 2}),
        ("remap-uncorrectable", "remap", {"uncorrectable": 2, "pending": 1}),
        ("remap-pending", "remap", {"pending": 1}),
        ("remap-failure", "remap", {"failure": 1}),
    ],
)
def test_each_memory_event_sets_its_dcgm_fields(
    node: GpuNode, saved: str, event: str, group: str, expected: dict[str, int]
) -> None:
    before = node.gpus()[1][group]
    inject, revert = commands.memory_error_commands([1], event, 2, "abcdef02", saved)
    ok(node, inject)
    after = node.gpus()[1][group]
    assert {k: v for k, v in after.items() if v != before[k]} == expected
    ok(node, revert)
    assert node.gpus()[1][group] == before


def test_memory_error_is_refused_for_a_counter_the_gpu_reports_as_not_available(node: GpuNode, saved: str) -> None:
    # A GPU without page retirement (it remaps rows instead) reports [N/A].
    wrap_nvidia_smi(node, 'case "$*" in *retired_pages*) echo "[N/A]"; exit 0;; esac')
    inject, _ = commands.memory_error_commands([0], "retired-dbe", 1, "abcdef03", saved)
    result = failed(node, inject)
    assert "GPU 0 reports retired_pages.double_bit.count as '[N/A]'" in result.stderr
    assert not [c for c in node.calls() if c[0] == "dcgmi"], "nothing injected"
    assert not Path(saved).exists() or not list(Path(saved).iterdir())


def test_memory_error_on_a_lost_gpu_fails_before_injecting(node: GpuNode, saved: str) -> None:
    node.sim.edit(gpu4={"lost": True})
    result = failed(node, commands.memory_error_commands([0, 4], "sbe", 1, "abcdef04", saved)[0])
    assert "cannot read the counters of GPU 4" in result.stderr
    assert "GPU is lost" in result.stderr
    assert node.gpus()[0]["ecc"]["sbe_volatile"] == 0


# --- compute mode --------------------------------------------------------------------------------------------------


def test_compute_mode_is_set_and_each_gpus_own_mode_restored(node: GpuNode, saved: str) -> None:
    node.sim.edit(gpu2={"compute_mode": "Exclusive_Process"})
    before = [g["compute_mode"] for g in node.gpus()]
    inject, revert = commands.compute_mode_commands([1, 2], "prohibited", "abcdef05", saved)

    ok(node, inject)
    assert [g["compute_mode"] for g in node.gpus()][:3] == ["Default", "Prohibited", "Prohibited"]
    assert ["nvidia-smi", "-c", "PROHIBITED", "-i", "1,2"] in node.calls()

    ok(node, revert)
    assert [g["compute_mode"] for g in node.gpus()] == before
    ok(node, revert)
    assert [g["compute_mode"] for g in node.gpus()] == before


def test_compute_mode_that_cannot_be_set_fails_and_keeps_the_saved_modes(node: GpuNode, saved: str) -> None:
    wrap_nvidia_smi(
        node, 'case "$*" in *"-c "*) echo "Unable to set the compute mode: Insufficient Permissions"; exit 4;; esac'
    )
    inject, revert = commands.compute_mode_commands([0], "EXCLUSIVE_PROCESS", "abcdef06", saved)
    result = failed(node, inject)
    assert "nvidia-smi -c EXCLUSIVE_PROCESS failed" in result.stderr
    assert "Insufficient Permissions" in result.stderr
    assert [p.name for p in Path(saved).iterdir()] == ["abcdef06.compute-mode"], "kept for the revert"
    assert "not restored on every GPU" in failed(node, revert).stderr


# --- services ------------------------------------------------------------------------------------------------------


def test_services_stop_consumers_first_and_the_revert_starts_what_was_active(node: GpuNode, saved: str) -> None:
    node.set_service("nvidia-fabricmanager", "inactive")
    inject, revert = commands.services_stop_commands(None, "abcdef07", saved)

    said = ok(node, inject).stdout
    assert said.splitlines() == [
        "chaosgpu: stopped dcgm-exporter.service",
        "chaosgpu: stopped nvidia-dcgm.service",
        "chaosgpu: stopped nvidia-persistenced.service",
    ]
    assert {s: node.service(s) for s in commands.GPU_SERVICES} == {
        "dcgm-exporter": "inactive",
        "nvidia-dcgm": "inactive",
        "dcgm": None,
        "nvidia-fabricmanager": "inactive",
        "nvidia-persistenced": "inactive",
    }

    ok(node, revert)
    started = [c[2] for c in node.calls() if c[:2] == ["systemctl", "start"]]
    assert started == ["nvidia-persistenced.service", "nvidia-dcgm.service", "dcgm-exporter.service"]
    assert node.service("nvidia-fabricmanager") == "inactive", "it was not running before: it stays stopped"
    ok(node, revert)
    assert [c[2] for c in node.calls() if c[:2] == ["systemctl", "start"]] == started


def test_a_service_that_stopped_along_with_another_comes_back(node: GpuNode, saved: str) -> None:
    inject, revert = commands.services_stop_commands(["nvidia-dcgm"], "abcdef08", saved)
    ok(node, inject)
    node.set_service("dcgm-exporter", "inactive")  # as if it had Requires=nvidia-dcgm
    ok(node, revert)
    assert node.service("nvidia-dcgm") == "active"
    assert node.service("dcgm-exporter") == "active"


def test_stopping_services_none_of_which_runs_fails(node: GpuNode, saved: str) -> None:
    result = failed(node, commands.services_stop_commands(["nvidia-fabricmanager", "dcgm"], "abcdef09", saved)[0])
    assert "none of dcgm, nvidia-fabricmanager is running" in result.stderr


def test_a_service_that_does_not_start_keeps_the_saved_list_for_a_retry(node: GpuNode, saved: str) -> None:
    inject, revert = commands.services_stop_commands(["dcgm-exporter"], "abcdef10", saved)
    ok(node, inject)
    (node.units / "dcgm-exporter.service.fail-start").touch()
    assert "not every service came back" in failed(node, revert).stderr
    (node.units / "dcgm-exporter.service.fail-start").unlink()
    ok(node, revert)
    assert node.service("dcgm-exporter") == "active"


# --- killing GPU processes ----------------------------------------------------------------------------------------


def hog(node: GpuNode, gpu: int, name: str = "gpusim-hog") -> subprocess.Popen[str]:
    child = subprocess.Popen(
        ["gpusim-hog", "--gpu", str(gpu), "--memory-mib", "100", "--name", name], env=node.env, text=True
    )
    node.sim.children.append(child)
    deadline = time.monotonic() + 10
    while str(child.pid) not in ok(node, "nvidia-smi --query-compute-apps=pid --format=csv,noheader").stdout.split():
        assert time.monotonic() < deadline, "the hog did not register"
        time.sleep(0.1)
    return child


def register(node: GpuNode, pid: int, gpu: int, name: str) -> None:
    procs = node.sim.root / "state" / "procs"
    record = {"pid": pid, "name": name, "gpus": [gpu], "used_memory_mib": 1, "util": 0}
    (procs / f"{pid}.json").write_text(json.dumps(record))


def test_kill_ends_the_processes_on_the_chosen_gpus_only(node: GpuNode) -> None:
    on_3, also_3, on_5 = hog(node, 3), hog(node, 3), hog(node, 5)
    inject, revert = commands.kill_commands([3])

    said = ok(node, inject).stdout
    assert f"sent SIGKILL to pid {on_3.pid}" in said
    assert on_3.wait(5) == -9
    assert also_3.wait(5) == -9
    assert on_5.poll() is None
    assert "killed processes are not brought back" in ok(node, revert).stdout
    assert on_5.poll() is None


def test_kill_with_sigterm_lets_processes_end_themselves(node: GpuNode) -> None:
    child = hog(node, 2)
    ok(node, commands.kill_commands([2], "TERM")[0])
    assert child.wait(5) == 0


def test_kill_of_only_given_pids_spares_the_others(node: GpuNode) -> None:
    mine, other = hog(node, 1), hog(node, 1)
    ok(node, commands.kill_commands([1], "KILL", [mine.pid])[0])
    assert mine.wait(5) == -9
    assert other.poll() is None


@pytest.mark.parametrize("victim", ["pid1", "sshd"])
def test_kill_refuses_pid_1_and_sshd_and_kills_nothing(node: GpuNode, tmp_path: Path, victim: str) -> None:
    child = hog(node, 6)
    if victim == "pid1":
        register(node, 1, 6, "init")
        expected = "refusing to kill pid 1"
    else:
        sshd = tmp_path / "sshd"
        sshd.write_bytes(Path("/bin/sleep").read_bytes())
        sshd.chmod(0o755)
        fake = subprocess.Popen([str(sshd), "30"])
        node.sim.children.append(fake)  # type: ignore[arg-type]
        register(node, fake.pid, 6, "sshd")
        expected = f"refusing to kill pid {fake.pid} (sshd)"
    result = failed(node, commands.kill_commands([6])[0])
    assert expected in result.stderr
    assert child.poll() is None, "nothing is killed when any process is refused"


def test_kill_with_nothing_on_the_gpus_fails(node: GpuNode) -> None:
    hog(node, 0)
    result = failed(node, commands.kill_commands([4, 5])[0])
    assert "no compute processes on GPU(s) 4,5" in result.stderr


# --- GPU load -------------------------------------------------------------------------------------------------------


def apps(node: GpuNode) -> list[dict[str, Any]]:
    return commands.parse_compute_apps(ok(node, commands.compute_apps_command()).stdout)


def test_memory_pressure_with_gpusim_hog_holds_a_fraction_until_the_revert(node: GpuNode, saved: str) -> None:
    inject, revert = commands.load_commands([0, 1], key="abcdef11", memory_fraction=0.5, state_dir=saved)
    said = ok(node, inject).stdout
    assert "chaosgpu-gpuload-abcdef11.service (gpusim-hog) holds GPU(s)" in said

    held = apps(node)
    assert {a["gpu_uuid"] for a in held} == {g["uuid"] for g in node.gpus()[:2]}
    assert {a["used_memory_mib"] for a in held} == {81559 // 2}
    run = next(c for c in node.calls() if c[0] == "systemd-run")
    assert run[1:3] == ["--unit", "chaosgpu-gpuload-abcdef11"]
    assert "--collect" in run
    assert "--property=RuntimeMaxSec=3600" in run
    assert run[-8:] == ["--gpu", "0,1", "--memory-mib", "40779", "--util", "0", "--name", "chaosgpu-gpuload"]

    ok(node, revert)
    assert apps(node) == []
    assert node.running_units() == []
    ok(node, revert)  # the unit is gone: nothing to stop


def test_compute_burn_with_gpusim_hog_runs_the_gpu_at_full_utilisation(node: GpuNode, saved: str) -> None:
    inject, revert = commands.load_commands([2], key="abcdef12", memory_mib=512, burn=True, state_dir=saved)
    ok(node, inject)
    assert query(node, "utilization.gpu,memory.used", 2) == "100, 512"
    ok(node, revert)
    assert query(node, "utilization.gpu,memory.used", 2) == "0, 0"


def test_a_load_that_cannot_start_fails_with_its_output(node: GpuNode, saved: str) -> None:
    inject, revert = commands.load_commands([3], key="abcdef13", memory_mib=90000, state_dir=saved)
    result = failed(node, inject)
    assert "ended before it held its GPUs" in result.stderr
    assert "CUDA error: out of memory" in result.stderr  # the unit's journal
    ok(node, revert)


@pytest.fixture
def cuda(node: GpuNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake torch and cupy importable by the node's python3 (PYTHONPATH), registering with the simulator."""
    log = tmp_path / "cuda.log"
    fake = write_fake_cuda(tmp_path / "fakecuda", node.sim.root / "state" / "procs", log, total_mib=81559)
    monkeypatch.setenv("PYTHONPATH", str(fake))
    return log


def cuda_calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("tool", ["auto", "cupy"])
def test_memory_pressure_with_a_cuda_stack_runs_the_load_program(
    node: GpuNode, saved: str, cuda: Path, tool: str
) -> None:
    inject, revert = commands.load_commands([0, 2], key="abcdef14", memory_fraction=0.25, tool=tool, state_dir=saved)
    said = ok(node, inject).stdout
    expected = "torch" if tool == "auto" else tool
    assert f"({expected}) holds GPU(s)" in said
    allocations = [(c["gpu"], c["bytes"]) for c in cuda_calls(cuda) if c["call"] == "alloc"]
    assert allocations == [(0, (81559 << 20) // 4), (2, (81559 << 20) // 4)]
    run = next(c for c in node.calls() if c[0] == "systemd-run")
    assert "--setenv=CUDA_DEVICE_ORDER=PCI_BUS_ID" in run
    assert run[-8:-1] == ["--tool", expected, "--gpus", "0,2", "--memory-fraction", "0.250000", "--ready-file"]
    assert (Path(saved) / "abcdef14.gpuload.py").read_text() == commands.LOADER_PROGRAM

    ok(node, revert)
    assert apps(node) == []
    assert sorted(p.name for p in Path(saved).iterdir()) == []


def test_compute_burn_with_a_cuda_stack_multiplies_matrices(node: GpuNode, saved: str, cuda: Path) -> None:
    inject, revert = commands.load_commands([5], key="abcdef15", memory_mib=100, burn=True, state_dir=saved)
    ok(node, inject)
    calls = cuda_calls(cuda)
    assert {"call": "mm", "gpu": 5} in calls
    assert (5, 100 << 20) in [(c["gpu"], c["bytes"]) for c in calls if c["call"] == "alloc"]
    assert query(node, "utilization.gpu", 5) == "100"
    ok(node, revert)


@pytest.mark.usefixtures("cuda")
def test_the_load_program_refuses_more_memory_than_is_free(node: GpuNode, saved: str) -> None:
    inject, revert = commands.load_commands([1], key="abcdef16", memory_mib=90000, tool="torch", state_dir=saved)
    result = failed(node, inject)
    assert "GPU 1: 90000 MiB wanted, 81559 MiB free" in result.stderr
    ok(node, revert)
    assert not list(Path(saved).iterdir())


def test_no_cuda_stack_and_no_hog_is_a_clear_failure(node: GpuNode, saved: str) -> None:
    (node.bin / "gpusim-hog").unlink()
    inject, _ = commands.load_commands([0], key="abcdef17", memory_mib=1, python="python3", state_dir=saved)
    result = failed(node, inject)
    assert "no CUDA stack for a GPU load" in result.stderr


# --- the actions: refusals before any host, one call per host through the ledger ---------------------------------


@dataclass
class Recording:
    """A Transport that records every call and answers like a host whose inject succeeded."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
        self.calls.append((host.name, command, stdin or ""))
        return CommandResult(host.name, command, 1, "", "not a real host", 0.0)

    def check(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
        raise AssertionError("not used")

    def run_many(self, hosts: Any, command: str, timeout: float = 60, stdin: str | None = None) -> Any:
        return {h.name: self.run(h, command, timeout, stdin) for h in hosts}


def fake_inventory(monkeypatch: pytest.MonkeyPatch, hosts: list[Host], production: bool = False) -> None:
    inventory = Inventory(
        source="fake-inventory",
        hosts={h.name: h for h in hosts},
        groups={"all": tuple(h.name for h in hosts), "gpu_nodes": tuple(h.name for h in hosts)},
        production=production,
        power_drivers={},
        production_hosts=tuple(h.name for h in hosts) if production else (),
    )
    monkeypatch.setattr(activity, "get_inventory", lambda _configuration: inventory)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Recording:
    transport = Recording()
    monkeypatch.setattr(activity, "_transport", transport)
    fake_inventory(monkeypatch, [NODE, *OTHERS])
    return transport


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: actions.inject_xid("gpu-node-1", xid=-3, configuration=CONFIG), "xid"),
        (lambda: actions.inject_xid("gpu-node-1", gpus=[0, 0], configuration=CONFIG), "gpus"),
        (lambda: actions.log_xid("gpu-node-1", xid=79, gpus=[99], configuration=CONFIG), "gpus"),
        (lambda: actions.inject_memory_error("gpu-node-1", event="ecc", configuration=CONFIG), "event"),
        (lambda: actions.inject_memory_error("gpu-node-1", errors=0, configuration=CONFIG), "errors"),
        (lambda: actions.pressure_gpu_memory("gpu-node-1", memory_fraction=2, configuration=CONFIG), "memory_fraction"),
        (lambda: actions.pressure_gpu_memory("gpu-node-1", memory_fraction=0, configuration=CONFIG), "memory_mib"),
        (lambda: actions.burn_gpu_compute("gpu-node-1", memory_mib=-5, configuration=CONFIG), "memory_mib"),
        (lambda: actions.kill_gpu_processes("gpu-node-1", signal="STOP", configuration=CONFIG), "signal"),
        (lambda: actions.stop_gpu_services("gpu-node-1", services=["sshd"], configuration=CONFIG), "services"),
        (lambda: actions.set_compute_mode("gpu-node-1", mode="SHARED", configuration=CONFIG), "mode"),
        (lambda: actions.set_compute_mode("gpu-node-1", duration_s=0, configuration=CONFIG), "duration_s"),
        (lambda: actions.set_compute_mode("gpu-node-1", duration_s="5", configuration=CONFIG), "duration_s"),
        (lambda: actions.set_compute_mode("gpu_nodes", configuration=CONFIG), "max_share"),
        (lambda: actions.set_compute_mode("gpu-node-9", configuration=CONFIG), "gpu-node-9"),
    ],
)
def test_actions_refuse_bad_input_before_any_host_is_reached(recording: Recording, call: Any, parameter: str) -> None:
    with pytest.raises(ActivityFailed, match=parameter):
        call()
    assert recording.calls == []


def test_a_bad_host_variable_is_refused_before_any_host_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = Recording()
    monkeypatch.setattr(activity, "_transport", transport)
    bad = Host("gpu-node-2", "127.0.0.1", 2222, "operator", groups=("gpu_nodes",), vars={"chaosgpu_kmsg_path": "x"})
    fake_inventory(monkeypatch, [NODE, bad, *OTHERS[1:]])
    monkeypatch.setitem(CONFIG, "chaosgpu_max_share", 1.0)
    with pytest.raises(ActivityFailed, match="gpu-node-2: chaosgpu_kmsg_path must be an absolute path"):
        actions.log_xid("gpu-node-1:gpu-node-2", configuration=CONFIG)
    assert transport.calls == []


def test_production_inventories_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = Recording()
    monkeypatch.setattr(activity, "_transport", transport)
    fake_inventory(monkeypatch, [NODE, *OTHERS], production=True)
    with pytest.raises(ActivityFailed, match="production"):
        actions.inject_xid("gpu-node-1", configuration=CONFIG)
    assert transport.calls == []


def test_each_host_gets_one_call_with_its_own_variables(recording: Recording, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CONFIG, "chaosgpu_max_share", 1.0)
    recovering = Host(
        "gpu-node-2", "127.0.0.1", 2222, "operator", groups=("gpu_nodes",), vars={"chaosgpu_xid_recovery_command": "x"}
    )
    fake_inventory(monkeypatch, [NODE, recovering])
    with pytest.raises(ActivityFailed):  # the recording transport's hosts fail; what was sent is what matters
        actions.inject_xid("gpu_nodes", xid=48, gpus=[1], duration_s=30, configuration=CONFIG)
    by_host = {name: script for name, _, script in recording.calls}
    assert sorted(by_host) == ["gpu-node-1", "gpu-node-2"]
    assert len(recording.calls) == 2
    assert "cannot be undone" in by_host["gpu-node-1"]
    assert "bash -c x" in by_host["gpu-node-2"]


# --- the actions through the ledger, on the simulated node --------------------------------------------------------


@pytest.fixture
def ledgered(
    node: GpuNode,
    root: FakeRoot,  # noqa: F811 - the fixture
    saved: str,
    monkeypatch: pytest.MonkeyPatch,
) -> BashTransport:
    """gpu-node-1 is this machine: the ledger's fakes in a temporary directory, the simulated GPUs on PATH."""
    transport = BashTransport()
    monkeypatch.setattr(activity, "_transport", transport)
    fake_inventory(monkeypatch, [NODE, *OTHERS])
    monkeypatch.setattr(ledger, "LedgerConfig", lambda: root.config)
    monkeypatch.setattr(commands, "SAVED_STATE_DIR", saved)
    monkeypatch.setenv("PATH", node.env["PATH"])
    return transport


def test_a_fault_is_in_the_ledger_and_its_revert_restores_the_gpus(
    node: GpuNode,
    root: FakeRoot,  # noqa: F811
    ledgered: BashTransport,
) -> None:
    before = gpu_fields(node, "compute_mode", "ecc")
    faults = actions.set_compute_mode("gpu-node-1", mode="EXCLUSIVE_PROCESS", gpus=[3, 4], configuration=CONFIG)
    faults += actions.inject_memory_error("gpu-node-1", event="sbe", gpus=[3], errors=7, configuration=CONFIG)

    assert [f["kind"] for f in faults] == ["gpu-compute-mode", "gpu-memory-error"]
    assert [f["description"] for f in faults] == [
        "compute mode EXCLUSIVE_PROCESS on GPUs 3,4 (previous modes restored)",
        "sbe x7 on GPU 3 through DCGM field injection (previous values restored)",
    ]
    assert [c[0] for c in ledgered.calls] == ["run", "run"], "one call per fault and host"
    assert node.gpus()[3]["compute_mode"] == "Exclusive_Process"
    assert node.gpus()[3]["ecc"]["sbe_volatile"] == 7
    assert len(root.entries()) == 2

    for fault in reversed(faults):
        assert ledger.revert_fault(ledgered, NODE, fault["id"], config=root.config)
    assert gpu_fields(node, "compute_mode", "ecc") == before
    assert root.entries() == []


def test_an_inject_that_fails_leaves_nothing_behind(
    node: GpuNode,
    root: FakeRoot,  # noqa: F811
    ledgered: BashTransport,  # noqa: ARG001 - the fixture sets the node up
) -> None:
    node.sim.edit(gpu1={"lost": True})
    with pytest.raises(ActivityFailed, match="cannot read the compute mode of GPU 1"):
        actions.set_compute_mode("gpu-node-1", gpus=[0, 1], configuration=CONFIG)
    assert [g["compute_mode"] for g in node.gpus()] == ["Default"] * 8
    assert root.entries() == []


# --- probes: parsers -------------------------------------------------------------------------------------------------


LOST_LIST = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5ca68801-a81c-e9c0-86ca-2c6313d73ec0)
Unable to determine the device handle for GPU 0000:2A:00.0: GPU is lost. Reboot the system to recover this GPU
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-6fd9563e-c2cb-1e69-fb06-ec5285b3dd7a)
"""


def test_gpu_list_counts_listed_gpus_and_names_lost_ones() -> None:
    listed = commands.parse_gpu_list(LOST_LIST)
    assert listed.count == 2
    assert [g[0] for g in listed.gpus] == [0, 2]
    assert listed.lost == {"0000:2A:00.0": "GPU is lost. Reboot the system to recover this GPU"}
    assert listed.other == ()


def test_gpu_list_of_a_host_without_driver_is_empty_and_keeps_the_message() -> None:
    text = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    listed = commands.parse_gpu_list(text)
    assert (listed.count, listed.other) == (0, (text.strip(),))


def test_gpu_health_rows_convert_values_and_not_available_is_none() -> None:
    text = (
        "0, GPU-a, 00000000:18:00.0, NVIDIA H100 80GB HBM3, 33, 71.20, 0, 81559, 0, Default, 0, No, No\n"
        "1, GPU-b, 00000000:2A:00.0, Tesla T4, 40, [N/A], 5, 15360, 7, Exclusive_Process, 2, [N/A], [N/A]\n"
    )
    parsed = commands.parse_gpu_health(text)
    assert parsed.gpus[0]["power.draw"] == pytest.approx(71.2)
    assert parsed.gpus[0]["remapped_rows.pending"] is False
    assert parsed.gpus[1]["power.draw"] is None
    assert parsed.gpus[1]["remapped_rows.failure"] is None
    assert parsed.gpus[1]["ecc.errors.uncorrected.volatile.total"] == 2


def test_compute_apps_rows() -> None:
    text = "4242, GPU-a, python3, 1024\n4243, GPU-b, [Not Found], [N/A]\nNo running processes found\n"
    assert commands.parse_compute_apps(text) == [
        {"pid": 4242, "gpu_uuid": "GPU-a", "process_name": "python3", "used_memory_mib": 1024},
        {"pid": 4243, "gpu_uuid": "GPU-b", "process_name": "[Not Found]", "used_memory_mib": None},
    ]


def test_dcgm_health_of_the_simulator_is_parsed(node: GpuNode) -> None:
    ok(node, commands.xid_dcgm_commands([2], 48)[0])
    ok(node, commands.memory_error_commands([5], "remap-pending", 1, "abcdef18", str(node.sim.root / "s"))[0])
    health = commands.parse_dcgm_health(ok(node, commands.dcgm_health_command()).stdout)
    assert health.overall == "Failure"
    assert health.gpus["2"]["health"] == "Failure"
    assert health.gpus["2"]["incidents"]["Memory system"]["messages"] == ["Detected XID 48 on GPU 2."]
    assert health.gpus["5"]["health"] == "Warning"
    assert sorted(health.gpus) == ["2", "5"]


def test_dcgm_health_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError, match="no JSON"):
        commands.parse_dcgm_health("Error: Unable to connect to host engine. Host engine connection invalid.\n")


def test_kernel_log_reader_finds_xids_since_a_time(node: GpuNode, tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    log.write_text(
        f"[{uptime - 600:12.6f}] NVRM: Xid (PCI:0000:18:00): 13, pid=42, name=python3, Graphics Exception\n"
        f"[{uptime - 5:12.6f}] NVRM: Xid (PCI:0000:2A:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off\n"
        f"[{uptime - 4:12.6f}] usb 1-1: new device\n"
    )
    since = time.time() - 60
    found, now = commands.parse_kernel_log(ok(node, commands.kernel_log_command(str(log), since)).stdout)
    assert [(x.xid, x.pci) for x in found] == [(79, "0000:2a:00")]
    assert found[0].line.startswith("NVRM: Xid (PCI:0000:2A:00): 79,")
    assert now is not None
    assert found[0].time == pytest.approx(now - 5, abs=2)
    everything, _ = commands.parse_kernel_log(ok(node, commands.kernel_log_command(str(log), 0)).stdout)
    assert [x.xid for x in everything] == [13, 79]


def test_kernel_log_reader_reads_dev_kmsg_records_when_it_may() -> None:
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("/dev/kmsg is not readable here")
    result = subprocess.run(
        ["bash", "-c", commands.kernel_log_command("/dev/kmsg", 0)], capture_output=True, text=True, check=False
    )
    if "Operation not permitted" in result.stderr or "Permission denied" in result.stderr:
        pytest.skip("/dev/kmsg cannot be opened here")
    assert result.returncode == 0, result.stderr
    _, now = commands.parse_kernel_log(result.stdout)
    assert now is not None


# --- probes: host fan-out ---------------------------------------------------------------------------------------


@dataclass
class Answers:
    """A Transport answering each host with a fixed result."""

    results: dict[str, tuple[int, str]]
    commands: list[tuple[str, str]] = field(default_factory=list)

    def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
        self.commands.append((host.name, command))
        rc, out = self.results[host.name]
        return CommandResult(host.name, command, rc, out, "ssh: connect: refused" if rc == 255 else "", 0.0)

    def check(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
        raise AssertionError("not used")

    def run_many(self, hosts: Any, command: str, timeout: float = 60, stdin: str | None = None) -> Any:
        return {h.name: self.run(h, command, timeout, stdin) for h in hosts}


def answering(monkeypatch: pytest.MonkeyPatch, results: dict[str, tuple[int, str]]) -> Answers:
    transport = Answers(results)
    monkeypatch.setattr(activity, "_transport", transport)
    fake_inventory(monkeypatch, [NODE, *OTHERS])
    return transport


def test_gpu_count_of_every_host_without_the_share_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = answering(
        monkeypatch,
        {"gpu-node-1": (0, LOST_LIST.replace("Unable", "x")), "gpu-node-2": (15, LOST_LIST), "gpu-node-3": (6, "")},
    )
    assert probes.gpu_count("gpu_nodes", configuration=CONFIG) == {"gpu-node-1": 2, "gpu-node-2": 2, "gpu-node-3": 0}
    assert {c for _, c in transport.commands} == {"nvidia-smi -L 2>&1"}


def test_gpu_count_fails_naming_hosts_it_could_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    answering(monkeypatch, {"gpu-node-1": (0, ""), "gpu-node-2": (255, ""), "gpu-node-3": (127, "not found")})
    with pytest.raises(ActivityFailed) as caught:
        probes.gpu_count("gpu_nodes", configuration=CONFIG)
    assert "gpu-node-2: unreachable" in str(caught.value)
    assert "gpu-node-3: nvidia-smi -L exited 127" in str(caught.value)


def test_gpu_health_says_what_is_wrong_per_host(monkeypatch: pytest.MonkeyPatch, node: GpuNode) -> None:
    node.sim.edit(
        gpu2={"lost": True}, gpu4={"remap": {"correctable": 0, "uncorrectable": 1, "pending": 1, "failure": 0}}
    )
    sick = node.bash(commands.gpu_health_command())
    well = subprocess.run(
        ["bash", "-c", commands.gpu_health_command()],
        env={**node.env, "GPUSIM_STATE": str(node.sim.root / "fresh.json")},
        capture_output=True,
        text=True,
        check=False,
    )
    answering(
        monkeypatch,
        {
            "gpu-node-1": (sick.returncode, sick.stdout),
            "gpu-node-2": (well.returncode, well.stdout),
            "gpu-node-3": (255, ""),
        },
    )
    health = probes.gpu_health("gpu_nodes", configuration=CONFIG)
    assert health["gpu-node-1"]["ok"] is False
    assert health["gpu-node-1"]["count"] == 7
    assert health["gpu-node-1"]["lost"] == ["0000:3A:00.0"]
    assert health["gpu-node-1"]["problems"] == [
        "GPU 0000:3A:00.0 is lost: GPU is lost. Reboot the system to recover this GPU",
        "GPU 4 (00000000:9A:00.0) has a row remap pending (reset the GPU)",
    ]
    gpu0 = health["gpu-node-1"]["gpus"][0]
    assert set(gpu0) == {
        "index", "uuid", "pci_bus_id", "name", "temperature_c", "power_w", "memory_used_mib", "memory_total_mib",
        "utilization_pct", "compute_mode", "ecc_uncorrected_volatile", "remap_pending", "remap_failure",
    }  # fmt: skip
    assert health["gpu-node-2"] == {**health["gpu-node-2"], "ok": True, "count": 8, "lost": [], "problems": []}
    assert health["gpu-node-3"]["ok"] is False
    assert "unreachable" in health["gpu-node-3"]["problems"][0]


def test_dcgm_health_fails_when_the_host_engine_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    healthy = json.dumps({"header": ["Health Monitor Report"], "body": {"Overall Health": {"value": "Healthy"}}})
    down = (
        "Error: unable to establish a connection to the specified host: localhost\n"
        "Error: Unable to connect to host engine. Host engine connection invalid/disconnected.\n"
    )
    answering(monkeypatch, {"gpu-node-1": (0, healthy), "gpu-node-2": (236, down), "gpu-node-3": (0, healthy)})
    assert probes.dcgm_health("gpu-node-1", configuration=CONFIG) == {"gpu-node-1": {"overall": "Healthy", "gpus": {}}}
    with pytest.raises(ActivityFailed, match="gpu-node-2: dcgmi health -c -j exited 236"):
        probes.dcgm_health("gpu_nodes", configuration=CONFIG)


def test_xid_seen_reads_each_hosts_kernel_log_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    line = {"time": 1795970000.5, "pci": "0000:18:00", "xid": 79, "line": "NVRM: Xid (PCI:0000:18:00): 79, x"}
    other = {**line, "xid": 13}
    out = "\n".join(json.dumps(x) for x in (other, line, {"now": 1795970001.0})) + "\n"
    transport = answering(monkeypatch, {"gpu-node-1": (0, out), "gpu-node-2": (0, out), "gpu-node-3": (0, out)})
    seen = probes.xid_seen("gpu-node-1:gpu-node-2", xid=79, since="2026-11-29T10:00:00Z", configuration=CONFIG)
    assert seen == {"gpu-node-1": [line], "gpu-node-2": [line]}
    sent = dict(transport.commands)
    assert sent["gpu-node-1"].startswith("python3 -c ")  # root logs in as root
    assert sent["gpu-node-2"].startswith("sudo -n python3 -c ")
    assert sent["gpu-node-1"].endswith(" /dev/kmsg 1795946400.0")


@pytest.mark.parametrize("since", ["yesterday", True, [1]])
def test_xid_seen_refuses_a_time_it_cannot_read(monkeypatch: pytest.MonkeyPatch, since: Any) -> None:
    transport = answering(monkeypatch, {})
    with pytest.raises(ActivityFailed, match="since"):
        probes.xid_seen("gpu-node-1", since=since, configuration=CONFIG)
    assert transport.commands == []


# --- probes: Prometheus ---------------------------------------------------------------------------------------------


@dataclass
class FakePrometheus:
    """Answers /api/v1/query and /api/v1/alerts with what the test sets; records each request."""

    query: dict[str, Any] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    status: int = 200
    redirect: str = ""
    url: str = ""


def prometheus_handler(prom: FakePrometheus) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            prom.requests.append((self.path, self.headers.get("Authorization")))
            if prom.redirect:
                self.send_response(302)
                self.send_header("Location", prom.redirect)
                self.end_headers()
                return
            if self.path.startswith("/api/v1/alerts"):
                body: dict[str, Any] = {"status": "success", "data": {"alerts": prom.alerts}}
            else:
                body = prom.query
            data = json.dumps(body).encode()
            self.send_response(prom.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def serve_prometheus(prom: FakePrometheus, context: ssl.SSLContext | None = None) -> Iterator[FakePrometheus]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), prometheus_handler(prom))
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    prom.url = f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    try:
        yield prom
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    yield from serve_prometheus(FakePrometheus())


VECTOR = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {"metric": {"__name__": "up", "instance": "172.30.99.11:9400"}, "value": [1795970000.1, "1"]},
            {"metric": {"__name__": "up", "instance": "172.30.99.12:9400"}, "value": [1795970000.1, "0"]},
        ],
    },
}


def test_prometheus_query_returns_each_series_with_its_value(prometheus: FakePrometheus) -> None:
    prometheus.query = VECTOR
    result = probes.prometheus_query('up{job="dcgm_exporter"}', url=prometheus.url + "/", configuration=CONFIG)
    assert result == [
        {"metric": {"__name__": "up", "instance": "172.30.99.11:9400"}, "value": 1.0},
        {"metric": {"__name__": "up", "instance": "172.30.99.12:9400"}, "value": 0.0},
    ]
    assert prometheus.requests == [("/api/v1/query?query=up%7Bjob%3D%22dcgm_exporter%22%7D", None)]


def test_prometheus_query_of_a_scalar_and_from_the_configuration(prometheus: FakePrometheus) -> None:
    prometheus.query = {"status": "success", "data": {"resultType": "scalar", "result": [1795970000, "42"]}}
    configuration = {**CONFIG, "chaosgpu_prometheus_url": prometheus.url}
    assert probes.prometheus_query("6*7", time="1795970000", configuration=configuration) == [
        {"metric": {}, "value": 42.0}
    ]
    assert prometheus.requests[0][0] == "/api/v1/query?query=6%2A7&time=1795970000"


def test_prometheus_basic_auth_comes_from_the_secrets(prometheus: FakePrometheus) -> None:
    prometheus.query = VECTOR
    secrets = {"prometheus": {"prometheus_username": "chaos", "prometheus_password": "pa55"}}
    probes.prometheus_query("up", url=prometheus.url, configuration=CONFIG, secrets=secrets)
    assert prometheus.requests[0][1] == "Basic " + base64.b64encode(b"chaos:pa55").decode()


def test_prometheus_errors_name_the_url_and_prometheus_words(prometheus: FakePrometheus) -> None:
    prometheus.status = 400
    prometheus.query = {"status": "error", "errorType": "bad_data", "error": 'parse error at char 3: unexpected "}"'}
    with pytest.raises(ActivityFailed) as caught:
        probes.prometheus_query("up}", url=prometheus.url, configuration=CONFIG)
    assert f"{prometheus.url}/api/v1/query: HTTP 400" in str(caught.value)
    assert "parse error at char 3" in str(caught.value)


def test_prometheus_redirects_are_refused(prometheus: FakePrometheus) -> None:
    prometheus.redirect = "http://elsewhere.invalid/api/v1/query"
    secrets = {"prometheus_username": "chaos", "prometheus_password": "pa55"}
    with pytest.raises(ActivityFailed, match=r"redirect to http://elsewhere\.invalid/api/v1/query refused"):
        probes.prometheus_query("up", url=prometheus.url, configuration=CONFIG, secrets=secrets)
    assert len(prometheus.requests) == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [("", "no Prometheus URL"), ("ftp://prometheus:9090", "http:// or https://")],
)
def test_prometheus_url_is_required_and_checked(url: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAOSGPU_PROMETHEUS_URL", raising=False)
    with pytest.raises(ActivityFailed, match=message):
        probes.prometheus_query("up", url=url, configuration=CONFIG)


@pytest.fixture
def tls_prometheus(localhost_tls: tuple[ssl.SSLContext, Path]) -> Iterator[tuple[FakePrometheus, Path]]:
    context, cert_file = localhost_tls
    for served in serve_prometheus(FakePrometheus(query=VECTOR), context):
        yield served, cert_file


def test_prometheus_over_tls_is_verified(tls_prometheus: tuple[FakePrometheus, Path]) -> None:
    prom, ca_file = tls_prometheus
    with pytest.raises(ActivityFailed, match="CERTIFICATE_VERIFY_FAILED"):
        probes.prometheus_query("up", url=prom.url, configuration=CONFIG)
    assert len(probes.prometheus_query("up", url=prom.url, ca_file=str(ca_file), configuration=CONFIG)) == 2
    assert len(probes.prometheus_query("up", url=prom.url, verify_tls=False, configuration=CONFIG)) == 2


def alert(name: str, state: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, **labels}, "state": state, "activeAt": "2026-11-29T10:00:00Z", "value": "1"}


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (None, "firing"),
        ({"hostname": "gpu-node-1"}, "pending"),
        ({"hostname": "gpu-node-2"}, "firing"),
        ({"hostname": "gpu-node-3"}, "inactive"),
        ({"hostname": "gpu-node-1", "gpu": "7"}, "inactive"),
    ],
)
def test_alert_state_for_matching_labels(
    prometheus: FakePrometheus, labels: dict[str, str] | None, expected: str
) -> None:
    prometheus.alerts = [
        alert("GpuXidFatal", "pending", hostname="gpu-node-1", gpu="0"),
        alert("GpuXidFatal", "firing", hostname="gpu-node-2", gpu="0"),
        alert("DcgmExporterDown", "firing", hostname="gpu-node-3"),
    ]
    assert probes.alert_state("GpuXidFatal", labels, url=prometheus.url, configuration=CONFIG) == expected
    assert prometheus.requests[-1][0] == "/api/v1/alerts"


def test_alert_state_refuses_labels_that_are_not_strings(prometheus: FakePrometheus) -> None:
    with pytest.raises(ActivityFailed, match="labels"):
        probes.alert_state("GpuXidFatal", {"gpu": 0}, url=prometheus.url, configuration=CONFIG)  # type: ignore[dict-item]
    assert prometheus.requests == []


# --- scripts/gpu-check.py against the simulator's nvidia-smi -------------------------------------------------------

GPU_CHECK = Path(__file__).resolve().parents[3] / "scripts" / "gpu-check.py"
# nvidia-smi options that change a card: the check script must never pass one.
SETTING_OPTIONS = ("-pm", "-c", "-pl", "-r", "-e", "-ac", "-rac", "-lgc", "-rgc", "-lmc", "-rmc", "-mig", "-cc")


def gpu_check(node: GpuNode, out: Path, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(GPU_CHECK), "--out", str(out), *args],
        env={**node.env, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    summary = json.loads((out / "summary.json").read_text())
    return done.returncode, summary


def test_gpu_check_captures_fixtures_and_passes_its_round_trips_on_the_simulator(node: GpuNode, tmp_path: Path) -> None:
    rc, summary = gpu_check(node, tmp_path / "out", "--tool", "gpusim-hog", "--gpu", "3")

    assert (rc, summary["status"]) == (0, "passed")
    assert summary["probes"]["gpu_count"] == 8
    assert summary["probes"]["problems"] == []
    assert all(summary["probes"]["memory_events_supported"].values())
    trips = summary["round_trips"]
    assert [trips[n]["status"] for n in ("memory_pressure", "compute_burn", "process_kill")] == ["passed"] * 3
    assert trips["memory_pressure"]["used_during_mib"] == 81559 // 2
    assert trips["process_kill"]["exit_status"] == -9
    assert trips["systemd_load"]["status"] == "skipped"

    fixtures = json.loads((tmp_path / "out" / "fixtures" / "nvidia_smi_calls.json").read_text())
    assert fixtures["source"].startswith("captured on ")
    listed = next(c for c in fixtures["calls"] if c["argv"] == ["nvidia-smi", "-L"])
    assert listed["stdout"] == ok(node, "nvidia-smi -L").stdout
    health = next(c for c in fixtures["calls"] if c["argv"][1].startswith("--query-gpu=index,uuid,pci.bus_id,name"))
    assert health["argv"][1] == "--query-gpu=" + ",".join(commands.GPU_HEALTH_FIELDS)
    assert (tmp_path / "out" / "fixtures" / "query.txt").read_text().startswith("\n==============NVSMI LOG")
    assert json.loads((tmp_path / "out" / "fixtures" / "dcgm_health.txt").read_text())["body"]


def test_gpu_check_never_passes_nvidia_smi_an_option_that_changes_a_card(node: GpuNode, tmp_path: Path) -> None:
    gpu_check(node, tmp_path / "out", "--tool", "gpusim-hog", "--gpu", "1")
    smi_calls = [c[1:] for c in node.calls() if c[0] == "nvidia-smi"]
    assert len(smi_calls) > 10
    used = {arg.split("=", 1)[0] for call in smi_calls for arg in call if arg.startswith("-")}
    assert not used & set(SETTING_OPTIONS), used
    assert [g["compute_mode"] for g in node.gpus()] == ["Default"] * 8


def test_gpu_check_refuses_a_setting_option_before_running_nvidia_smi() -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.check_read_only(["--query-gpu=index", "--format=csv", "-i", "0"])
    for args in (["-c", "PROHIBITED"], ["-i", "0", "-pm", "1"], ["--compute-mode=3"], ["-r", "-i", "0"]):
        with pytest.raises(ValueError, match="not a read-only option"):
            module.check_read_only(args)


def test_gpu_check_uses_torch_when_it_imports_and_skips_without_a_cuda_stack(
    node: GpuNode, tmp_path: Path, cuda: Path
) -> None:
    rc, summary = gpu_check(node, tmp_path / "torch", "--gpu", "2")
    assert (rc, summary["round_trips"]["tool"]) == (0, "torch")
    assert summary["round_trips"]["compute_burn"]["utilization_pct"] == 100
    assert {"call": "mm", "gpu": 2} in cuda_calls(cuda)

    rc, summary = gpu_check(node, tmp_path / "none", "--gpu", "2", PYTHONPATH="")
    assert (rc, summary["status"], summary["round_trips"]["tool"]) == (0, "passed", None)
    assert {summary["round_trips"][n]["status"] for n in ("memory_pressure", "compute_burn", "process_kill")} == {
        "skipped"
    }
    assert "neither torch nor cupy" in summary["round_trips"]["memory_pressure"]["why"]


def test_gpu_check_without_nvidia_smi_fails_and_says_why(node: GpuNode, tmp_path: Path) -> None:
    wrap_nvidia_smi(
        node, 'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9'
    )
    rc, summary = gpu_check(node, tmp_path / "out")
    assert (rc, summary["status"]) == (2, "failed")
    assert "nvidia-smi -L exited 9" in summary["why"]
