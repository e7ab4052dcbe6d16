"""gpu_simulator on a lab instance where Debian's real nvidia-smi and nvidia-persistenced were installed first."""

from __future__ import annotations

import json
import re
import shlex

import pytest

DIVERTED = ["/usr/bin/nvidia-smi", "/usr/bin/dcgmi", "/usr/bin/nv-hostengine", "/usr/bin/nvidia-persistenced"]
HOSTENGINE_PORT = 5555


def journal(host, unit):
    return host.run(f"journalctl -u {unit} -n 40 --no-pager").stdout


@pytest.mark.parametrize("path", DIVERTED)
def test_real_tool_is_diverted_and_the_stand_in_installed(host, path):
    assert f"local diversion of {path} to {path}.distrib" in host.check_output(f"dpkg-divert --list {path}")
    stand_in = host.file(path)
    assert stand_in.is_file
    assert not stand_in.is_symlink
    assert "STAND-IN" in stand_in.content_string


@pytest.mark.parametrize("path", ["/usr/bin/nvidia-smi.distrib", "/usr/bin/nvidia-persistenced.distrib"])
def test_debian_real_tools_moved_aside(host, path):
    assert host.file(path).exists


def test_every_installed_module_says_stand_in(host):
    modules = host.check_output("ls /usr/local/lib/gpusim/gpusim/*.py").split()
    assert len(modules) >= 8
    for module in modules:
        assert host.file(module).content_string.startswith("# STAND-IN")


# Run as nobody: every module's bytecode, where Python looks for it, readable and stamped with the module's mtime.
_BYTECODE_CHECK = """
import glob, importlib.util, os
modules = sorted(glob.glob("/usr/local/lib/gpusim/gpusim/*.py"))
for path in modules:
    try:
        with open(importlib.util.cache_from_source(path), "rb") as handle:
            header = handle.read(16)
    except OSError as err:
        print(path, err)
        continue
    if header[8:12] != (int(os.stat(path).st_mtime) & 0xFFFFFFFF).to_bytes(4, "little"):
        print(path, "stale bytecode")
print("checked", len(modules))
"""


def test_every_module_has_current_bytecode_that_every_user_can_read(host):
    """Compiled by the role, readable by all: a tool run by a non-root user (the lab workload's nvidia-smi, every
    second) loads the bytecode instead of compiling the module again on every call."""
    out = host.check_output(f"runuser -u nobody -- python3 -c {shlex.quote(_BYTECODE_CHECK)}")
    lines = out.splitlines()
    assert lines[:-1] == [], lines
    assert int(lines[-1].split()[1]) >= 8, out


def test_nvidia_smi_lists_eight_h100(host):
    listing = host.run("nvidia-smi -L")
    assert listing.rc == 0, listing.stdout
    lines = listing.stdout.splitlines()
    assert len(lines) == 8
    assert all(re.fullmatch(r"GPU \d: NVIDIA H100 80GB HBM3 \(UUID: GPU-[0-9a-f-]{36}\)", line) for line in lines)


def test_nvidia_smi_answers_the_module_query(host):
    query = (
        "nvidia-smi --query-gpu=index,uuid,name,pci.bus_id,memory.total,persistence_mode,mig.mode.current,"
        "ecc.mode.current,compute_mode,driver_version --format=csv,noheader,nounits"
    )
    rows = [row.split(", ") for row in host.check_output(query).splitlines()]
    assert [row[4] for row in rows] == ["81559"] * 8
    assert rows[0][3] == "00000000:18:00.0"


def test_state_file_holds_eight_gpus(host):
    state = json.loads(host.file("/var/lib/gpusim/state.json").content_string)
    assert len(state["gpus"]) == 8
    assert host.file("/var/lib/gpusim/procs").mode == 0o1777


def test_a_packaged_tool_installed_after_the_diversion_lands_beside_the_stand_in(host):
    reinstall = host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall nvidia-persistenced")
    assert reinstall.rc == 0, reinstall.stderr
    assert "STAND-IN" in host.file("/usr/bin/nvidia-persistenced").content_string
    assert b"STAND-IN" not in host.file("/usr/bin/nvidia-persistenced.distrib").content


def test_packaged_persistenced_unit_runs_the_stand_in_daemon(host):
    restart = host.run("systemctl restart nvidia-persistenced.service")
    assert restart.rc == 0, journal(host, "nvidia-persistenced")
    assert host.service("nvidia-persistenced").is_running, journal(host, "nvidia-persistenced")
    pid = int(host.file("/var/run/nvidia-persistenced/nvidia-persistenced.pid").content_string)
    assert host.process.get(pid=pid).user == "nvpd"
    mode = host.check_output("nvidia-smi --query-gpu=persistence_mode --format=csv,noheader -i 0")
    assert mode == "Enabled"


@pytest.fixture
def hostengine(host):
    started = host.run(f"nv-hostengine -p {HOSTENGINE_PORT} --pid /run/gpusim-test-hostengine.pid")
    assert started.rc == 0, started.stdout + started.stderr
    assert host.run("timeout 10 sh -c 'until dcgmi discovery -l >/dev/null; do sleep 0.2; done'").rc == 0
    yield
    host.run("nv-hostengine -t --pid /run/gpusim-test-hostengine.pid")


def test_dcgmi_without_a_host_engine_fails_like_the_real_tool(host):
    result = host.run("dcgmi discovery -l --host 127.0.0.1:5599")
    assert result.rc == 236
    assert "Error: unable to establish a connection to the specified host: 127.0.0.1:5599" in result.stdout


@pytest.mark.usefixtures("hostengine")
def test_dcgmi_inject_through_the_host_engine_fails_health_and_logs_the_xid(host):
    assert host.check_output("dcgmi discovery -l").startswith("8 GPUs found.")
    inject = host.run("dcgmi test --inject --gpuid 5 -f 230 -v 95")
    assert (inject.rc, inject.stdout) == (0, "Successfully injected field info.\n")
    report = host.run("dcgmi health -c")
    assert "| Overall Health            | Failure" in report.stdout
    assert "| -> 5                      | Failure" in report.stdout
    assert "NVRM: Xid (PCI:0000:AB:00): 95," in host.file("/var/log/gpusim/kmsg").content_string
    reset = host.run("nvidia-smi -r -i 5")
    assert reset.rc == 0, reset.stdout
    assert "| Overall Health            | Healthy" in host.check_output("dcgmi health -c")


def test_hog_blocks_a_gpu_reset_until_it_ends(host):
    host.run("systemd-run --unit gpusim-test-hog /usr/local/bin/gpusim-hog --gpu 3 --memory-mib 4096 --seconds 60")
    try:
        assert host.run("timeout 10 sh -c 'until ls /var/lib/gpusim/procs/*.json; do sleep 0.2; done'").rc == 0
        refused = host.run("nvidia-smi -r -i 3")
        assert refused.rc == 255
        assert "In use by another client" in refused.stdout
        apps = host.check_output("nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits")
        assert apps.endswith(", 4096")
    finally:
        host.run("systemctl stop gpusim-test-hog")
    assert host.run("nvidia-smi -r -i 3").rc == 0
