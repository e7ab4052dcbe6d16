"""The nvidia-smi stand-in against the recorded nvidia-smi calls of the nvidia_smi_info fixtures.

The H100 and T4 fixtures are labelled synthetic (written from NVIDIA's documented formats, not captured from a
GPU); the comparisons below say so in their ids. A real capture replacing them makes these tests stricter.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

import pytest
from simhelpers import FIXTURES, make_sim

FIXTURE_EPOCH = "1795946400"  # Sun Nov 29 10:00:00 2026 UTC, the timestamp in the fixtures' -q output


def _calls(name):
    data = json.loads((FIXTURES / name).read_text())
    return data["source"], data["calls"]


def _rows(stdout):
    return [line.split(", ") for line in stdout.splitlines()]


def _adopt_identities(sim, query_stdout, **extra):
    """Give the simulated GPUs the fixture's UUIDs and bus ids (the rest comes from the profile)."""
    per_gpu = {}
    for row in _rows(query_stdout):
        per_gpu[f"gpu{row[0]}"] = {"uuid": row[1], "pci_bus_id": row[3], **extra}
    sim.edit(**per_gpu)


@pytest.mark.parametrize("call_index", [0, 1], ids=["synthetic-fixture-query-gpu", "synthetic-fixture-q-d-compute"])
def test_h100_output_is_byte_identical_to_the_fixture(sim, call_index):
    """h100_x8_hgx.json (synthetic): the module's two calls, byte for byte."""
    source, calls = _calls("h100_x8_hgx.json")
    assert source.startswith("synthetic")
    _adopt_identities(sim, calls[0]["stdout"], persistence_forced=True)
    call = calls[call_index]
    result = sim.run("nvsmi", *call["argv"][1:], GPUSIM_NOW=FIXTURE_EPOCH)
    assert (result.returncode, result.stdout) == (call["rc"], call["stdout"])


def test_t4_query_is_byte_identical_to_the_fixture(tmp_path):
    """t4_no_mig_persistence_off.json (synthetic): one T4, no MIG ([N/A]), persistence off, exclusive process."""
    source, calls = _calls("t4_no_mig_persistence_off.json")
    assert source.startswith("synthetic")
    sim = make_sim(tmp_path, gpu_count=1, profile="t4")
    _adopt_identities(sim, calls[0]["stdout"], compute_mode="Exclusive_Process")
    result = sim.run("nvsmi", *calls[0]["argv"][1:])
    assert (result.returncode, result.stdout) == (calls[0]["rc"], calls[0]["stdout"])


def test_list_shows_eight_h100_with_stable_uuids(sim, tmp_path):
    first = sim.run("nvsmi", "-L")
    assert first.returncode == 0
    lines = first.stdout.splitlines()
    assert len(lines) == 8
    assert all(
        re.fullmatch(r"GPU \d: NVIDIA H100 80GB HBM3 \(UUID: GPU-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\)", x)
        for x in lines
    )
    assert sim.run("nvsmi", "-L").stdout == first.stdout
    other = make_sim(tmp_path / "other", hostname="gpu-node-2")
    assert other.run("nvsmi", "-L").stdout != first.stdout


def test_header_carries_units_and_nounits_strips_them(sim):
    fields = "index,temperature.gpu,power.draw,utilization.gpu,memory.used,clocks.sm,fan.speed"
    result = sim.run("nvsmi", f"--query-gpu={fields}", "--format=csv", "-i", "0")
    header, row = result.stdout.splitlines()
    assert header == (
        "index, temperature.gpu, power.draw [W], utilization.gpu [%], memory.used [MiB], clocks.current.sm [MHz], "
        "fan.speed [%]"
    )
    assert re.fullmatch(r"0, \d+, \d+\.\d\d W, 0 %, 0 MiB, \d+ MHz, \[N/A\]", row)
    bare = sim.run("nvsmi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", "0").stdout
    assert re.fullmatch(r"0, \d+, \d+\.\d\d, 0, 0, \d+, \[N/A\]\n", bare)


def test_every_module_and_reliability_field_is_queryable(sim):
    fields = [
        "index", "uuid", "name", "pci.bus_id", "memory.total", "persistence_mode", "mig.mode.current",
        "ecc.mode.current", "compute_mode", "driver_version", "temperature.gpu", "power.draw", "utilization.gpu",
        "memory.used", "memory.free", "clocks.sm", "clocks.mem", "clocks.gr", "ecc.errors.corrected.volatile.total",
        "ecc.errors.uncorrected.volatile.total", "ecc.errors.uncorrected.aggregate.total",
        "retired_pages.single_bit_ecc.count", "retired_pages.double_bit.count", "retired_pages.pending",
        "remapped_rows.correctable", "remapped_rows.uncorrectable", "remapped_rows.pending", "remapped_rows.failure",
    ]  # fmt: skip
    result = sim.run("nvsmi", "--query-gpu=" + ",".join(fields), "--format=csv,noheader")
    assert result.returncode == 0, result.stdout
    assert all(len(row) == len(fields) for row in _rows(result.stdout))


def test_unknown_field_is_refused_like_the_real_tool(sim):
    result = sim.run("nvsmi", "--query-gpu=index,gpu.bogus", "--format=csv")
    assert result.returncode == 2
    assert result.stdout == 'Field "gpu.bogus" is not a valid field to query.\n\n'


def test_unknown_gpu_id_finds_no_device(sim):
    result = sim.run("nvsmi", "-L", "-i", "12")
    assert (result.returncode, result.stdout) == (6, "No devices were found\n")


def test_selection_by_index_uuid_and_bus_id(sim):
    uuid = sim.state()["gpus"][3]["uuid"]
    by_index = sim.run("nvsmi", "--query-gpu=index", "--format=csv,noheader", "-i", "1,3").stdout
    by_uuid = sim.run("nvsmi", "--query-gpu=index", "--format=csv,noheader", "-i", uuid).stdout
    by_bus = sim.run("nvsmi", "--query-gpu=index", "--format=csv,noheader", "-i", "00000000:5D:00.0").stdout
    assert (by_index, by_uuid, by_bus) == ("1\n3\n", "3\n", "3\n")


def test_hog_shows_in_compute_apps_and_load(sim):
    hog = sim.spawn([*_hog_argv(), "--gpu", "2", "--memory-mib", "2048", "--util", "90", "--name", "python3"])
    _wait_registered(sim, hog.pid)
    apps = sim.run("nvsmi", "--query-compute-apps=pid,process_name,gpu_uuid,used_memory", "--format=csv")
    uuid = sim.state()["gpus"][2]["uuid"]
    assert apps.stdout == (
        f"pid, process_name, gpu_uuid, used_gpu_memory [MiB]\n{hog.pid}, python3, {uuid}, 2048 MiB\n"
    )
    load = sim.run("nvsmi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "2")
    assert load.stdout == "90, 2048\n"


def _hog_argv():
    return [sys.executable, "-c", "import sys; from gpusim.admin import hog_main; sys.exit(hog_main())"]


def _wait_registered(sim, pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (sim.state_path.parent / "procs" / f"{pid}.json").exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"hog {pid} never registered")


def test_reset_is_refused_while_a_process_holds_the_gpu_and_works_after(sim):
    hog = sim.spawn([*_hog_argv(), "--gpu", "0", "--memory-mib", "512"])
    _wait_registered(sim, hog.pid)
    refused = sim.run("nvsmi", "-r", "-i", "0")
    assert refused.returncode == 255
    assert refused.stdout.startswith(
        "The following GPUs could not be reset:\n  GPU 00000000:18:00.0: In use by another client\n\n"
        "1 device is currently being used by one or more other processes"
    )
    hog.terminate()
    assert hog.wait(timeout=10) == 0
    assert not (sim.state_path.parent / "procs" / f"{hog.pid}.json").exists()
    done = sim.run("nvsmi", "-r", "-i", "0")
    assert (done.returncode, done.stdout) == (0, "GPU 00000000:18:00.0 was successfully reset.\n")


def test_stale_process_entries_are_pruned(sim):
    procs = sim.state_path.parent / "procs"
    (procs / "999999.json").write_text(json.dumps({"pid": 999999, "name": "ghost", "gpus": [0], "util": 50}))
    assert sim.run("nvsmi", "--query-compute-apps=pid", "--format=csv,noheader").stdout == ""
    assert not (procs / "999999.json").exists()


def test_compute_mode_changes_only_the_simulated_state(sim):
    result = sim.run("nvsmi", "-c", "EXCLUSIVE_PROCESS", "-i", "1")
    assert result.stdout == "Set compute mode to EXCLUSIVE_PROCESS for GPU 00000000:2A:00.0.\nAll done.\n"
    again = sim.run("nvsmi", "-c", "3", "-i", "1")
    assert again.stdout.startswith("Compute mode is already set to EXCLUSIVE_PROCESS")
    assert sim.state()["gpus"][1]["compute_mode"] == "Exclusive_Process"
    assert sim.run("nvsmi", "--query-gpu=compute_mode", "--format=csv,noheader", "-i", "0").stdout == "Default\n"


def test_lost_gpu_behaves_like_a_gpu_off_the_bus(sim):
    assert sim.run("admin", "xid", "--gpu", "0", "--xid", "79").returncode == 0
    listing = sim.run("nvsmi", "-L")
    assert listing.returncode == 15
    assert listing.stdout.splitlines()[0] == (
        "Unable to determine the device handle for GPU 0000:18:00.0: GPU is lost. Reboot the system to recover this GPU"
    )
    assert len(listing.stdout.splitlines()) == 8
    reset = sim.run("nvsmi", "-r", "-i", "0")
    assert reset.returncode == 15
    assert sim.run("admin", "boot").returncode == 0
    assert sim.run("nvsmi", "-L").returncode == 0


def test_xid_writes_the_driver_kernel_log_line(sim):
    sim.run("admin", "xid", "--gpu", "3", "--xid", "79")
    sim.run("admin", "xid", "--gpu", "1", "--xid", "48", "--pid", "4242", "--name", "python3")
    lines = sim.kernel_log.read_text().splitlines()
    assert re.fullmatch(
        r"\[\s*\d+\.\d{6}\] NVRM: Xid \(PCI:0000:5D:00\): 79, pid='<unknown>', name=<unknown>, "
        r"GPU has fallen off the bus\.",
        lines[0],
    )
    assert re.fullmatch(
        r"\[\s*\d+\.\d{6}\] NVRM: Xid \(PCI:0000:2A:00\): 48, pid=4242, name=python3, An uncorrectable double bit "
        r"error \(DBE\) has been detected on GPU in the framebuffer at partition 0, subpartition 0\.",
        lines[1],
    )


def test_full_query_lists_every_gpu_with_processes_section(sim):
    result = sim.run("nvsmi", "-q")
    assert result.returncode == 0
    assert result.stdout.count("    Product Name                          : NVIDIA H100 80GB HBM3\n") == 8
    assert "    Processes                             : None\n" in result.stdout


def test_persistenced_daemon_turns_persistence_mode_on_while_it_runs(sim):
    started = sim.run("persistenced", "--verbose")
    assert started.returncode == 0, started.stderr
    pidfile = sim.root / "persistenced" / "nvidia-persistenced.pid"
    pid = int(pidfile.read_text())
    query = ["--query-gpu=persistence_mode", "--format=csv,noheader", "-i", "0"]
    assert sim.run("nvsmi", *query).stdout == "Enabled\n"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.run("nvsmi", *query).stdout == "Disabled\n"
