"""The sources: kernel-log XID lines (/dev/kmsg records and a plain file, position kept across restarts), and
nvidia-smi / dcgmi fed with the GPU simulator's stand-in output."""

from __future__ import annotations

import json
import os

import pytest
from agenthelpers import FakeClock, RecordingRunner, hog, sim_runner
from gpu_health_agent.config import DcgmConfig, KernelLogConfig, NvidiaSmiConfig
from gpu_health_agent.events import full_bus_id, pci_key
from gpu_health_agent.runner import RunResult
from gpu_health_agent.sources import (
    SMI_FIELDS,
    DcgmHealthSource,
    KernelLogSource,
    NvidiaSmiSource,
    parse_dcgm_health,
    parse_kmsg_record,
    parse_xid,
)
from simhelpers import free_port, make_sim

STAND_IN_79 = "NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
UPTIME = 1000.0


# --- XID lines and /dev/kmsg records ------------------------------------------------------------------------------


def test_xid_line_of_the_stand_in_and_of_a_driver_with_a_process():
    assert parse_xid(STAND_IN_79) == parse_xid(f"[ 12.5] {STAND_IN_79}")
    line = parse_xid(STAND_IN_79)
    assert (line.pci, line.xid, line.pid, line.name, line.message) == (
        "0000:18:00",
        79,
        "<unknown>",
        "<unknown>",
        "GPU has fallen off the bus.",
    )
    real = parse_xid(
        "NVRM: Xid (PCI:0000:B3:00): 13, pid=40213, name=python3, Graphics SM Warp Exception on (GPC 1, TPC 0, SM 1)"
    )
    assert (real.pci, real.xid, real.pid, real.name) == ("0000:b3:00", 13, "40213", "python3")
    assert real.message.startswith("Graphics SM Warp Exception")
    old = parse_xid("NVRM: Xid (0000:03:00): 48, An uncorrectable double bit error")
    assert (old.pci, old.xid, old.message) == ("0000:03:00", 48, "An uncorrectable double bit error")
    assert parse_xid("NVRM: loading NVIDIA UNIX x86_64 Kernel Module  535.183.01") is None


def test_kmsg_record_format():
    record = parse_kmsg_record(f"4,1234,5678901,-;{STAND_IN_79}\n SUBSYSTEM=pci\n DEVICE=+pci:0000:18:00.0\n".encode())
    assert (record.facility, record.level, record.seq, record.ts_usec) == (0, 4, 1234, 5678901)
    assert record.message == STAND_IN_79
    assert record.fields == {"SUBSYSTEM": "pci", "DEVICE": "+pci:0000:18:00.0"}
    user = parse_kmsg_record(b"14,7,99,-,caller=T1;hello from user space\n")
    assert (user.facility, user.level, user.seq, user.message) == (1, 6, 7, "hello from user space")
    assert parse_kmsg_record(b"not a record") is None
    assert parse_kmsg_record(b"x,1,2,-;text") is None


class FakeKmsg:
    """/dev/kmsg as a non-blocking reader sees it: one record per read, None at the end, EPIPE after an overrun."""

    def __init__(self, records):
        self.records = list(records)
        self.closed = False

    def read_record(self):
        if not self.records:
            return None
        item = self.records.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self.closed = True


def _record(seq, usec, text, pri=4):
    return f"{pri},{seq},{usec},-;{text}\n".encode()


def _kmsg_source(tmp_path, device, boot_id="kernel-boot-1", clock=None):
    clock = clock or FakeClock()
    config = KernelLogConfig(path="/dev/kmsg")
    return KernelLogSource(config, tmp_path / "pos.json", boot_id, clock, lambda: UPTIME, lambda _path: device)


def test_kmsg_source_reads_xids_with_their_kernel_time_and_survives_an_overrun(tmp_path):
    clock = FakeClock()
    device = FakeKmsg(
        [
            _record(1, 2_000_000, "Linux version 6.1.0"),
            BrokenPipeError(),
            _record(5, 500_250_000, STAND_IN_79),
            _record(6, 501_000_000, "NVRM: Xid (PCI:0000:2a:00): 94, pid=77, name=train, Contained: SM (0x1)."),
        ]
    )
    source = _kmsg_source(tmp_path, device, clock=clock)
    report = source.poll()
    assert [(f.xid, f.pci, f.at) for f in report.findings] == [
        (79, "0000:18:00", clock.now - UPTIME + 500.25),
        (94, "0000:2a:00", clock.now - UPTIME + 501.0),
    ]
    assert source.overruns == 1
    assert source.poll().findings == ()  # nothing new


def test_kmsg_position_survives_a_restart_within_the_same_kernel_boot(tmp_path):
    first = [_record(1, 1, STAND_IN_79), _record(2, 2, "eth0: link up")]
    source = _kmsg_source(tmp_path, FakeKmsg(first))
    assert len(source.poll().findings) == 1
    source.commit()
    assert json.loads((tmp_path / "pos.json").read_text())["seq"] == 2
    # the agent restarts: a new open of /dev/kmsg starts at the oldest record again
    again = _kmsg_source(tmp_path, FakeKmsg([*first, _record(3, 3, STAND_IN_79.replace("79", "48", 1))]))
    assert [f.xid for f in again.poll().findings] == [48]


def test_kmsg_after_a_new_kernel_boot_reads_the_whole_buffer(tmp_path):
    source = _kmsg_source(tmp_path, FakeKmsg([_record(10, 1, STAND_IN_79)]))
    source.poll()
    source.commit()
    rebooted = _kmsg_source(tmp_path, FakeKmsg([_record(1, 1, STAND_IN_79)]), boot_id="kernel-boot-2")
    assert [f.xid for f in rebooted.poll().findings] == [79]


def test_kmsg_position_is_saved_only_on_commit(tmp_path):
    source = _kmsg_source(tmp_path, FakeKmsg([_record(1, 1, STAND_IN_79)]))
    source.poll()
    assert not (tmp_path / "pos.json").exists()  # the agent had not saved what the line led to
    again = _kmsg_source(tmp_path, FakeKmsg([_record(1, 1, STAND_IN_79)]))
    assert [f.xid for f in again.poll().findings] == [79]


# --- a plain kernel-log file --------------------------------------------------------------------------------------


def _file_source(tmp_path, path, read_existing=False):
    config = KernelLogConfig(path=str(path), read_existing=read_existing)
    return KernelLogSource(config, tmp_path / "pos.json", "kb", FakeClock(), lambda: UPTIME)


def _append(path, text):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def test_file_source_starts_at_the_end_and_reads_what_is_appended(tmp_path):
    log = tmp_path / "kmsg"
    log.write_text(f"[   10.000000] {STAND_IN_79}\n")  # from an earlier boot: not acted on again
    source = _file_source(tmp_path, log)
    assert source.poll().findings == ()
    _append(log, f"[  900.500000] {STAND_IN_79.replace('79', '48', 1)}\n[  901.0] NVRM: Xid (PCI:0000:2a")
    found = source.poll().findings
    assert [(f.xid, f.at) for f in found] == [(48, FakeClock().now - UPTIME + 900.5)]
    _append(log, ":00): 13, pid=1, name=a, x\n")  # the line being written is read once complete
    assert [(f.xid, f.pci) for f in source.poll().findings] == [(13, "0000:2a:00")]


def test_file_source_read_existing_reads_the_file_from_its_start(tmp_path):
    log = tmp_path / "kmsg"
    log.write_text(f"{STAND_IN_79}\n")
    assert [f.at for f in _file_source(tmp_path, log, read_existing=True).poll().findings] == [None]


def test_file_source_keeps_its_position_across_restarts(tmp_path):
    log = tmp_path / "kmsg"
    log.write_text("")
    source = _file_source(tmp_path, log)
    source.poll()
    _append(log, f"{STAND_IN_79}\n")
    assert len(source.poll().findings) == 1
    source.commit()
    restarted = _file_source(tmp_path, log)
    assert restarted.poll().findings == ()
    _append(log, f"{STAND_IN_79}\n")
    assert len(restarted.poll().findings) == 1


def test_file_source_reads_a_new_or_truncated_file_from_its_start(tmp_path):
    log = tmp_path / "kmsg"
    source = _file_source(tmp_path, log)
    assert source.poll().findings == ()  # not there yet
    _append(log, f"{STAND_IN_79}\n")
    assert len(source.poll().findings) == 1  # it appeared: all of it is new
    rotated = tmp_path / "kmsg.new"
    rotated.write_text(f"{STAND_IN_79}\n{STAND_IN_79}\n")
    os.replace(rotated, log)
    assert len(source.poll().findings) == 2
    log.write_text(f"{STAND_IN_79}\n")  # cut short (same inode)
    assert len(source.poll().findings) == 1


# --- nvidia-smi and dcgmi: the stand-ins' real output -------------------------------------------------------------


@pytest.fixture
def node(tmp_path):
    sim = make_sim(tmp_path / "sim")
    yield sim
    sim.stop()


def _smi(sim, **config):
    return NvidiaSmiSource(NvidiaSmiConfig(**config), sim_runner(sim))


def _dcgm(sim, port):
    return DcgmHealthSource(DcgmConfig(host=f"127.0.0.1:{port}", timeout_s=10), sim_runner(sim))


def _pci_of(sim, gpu):
    return pci_key(sim.state()["gpus"][gpu]["pci_bus_id"])


def test_nvidia_smi_source_lists_eight_idle_gpus_without_findings(node):
    report = _smi(node).poll()
    assert report.findings == ()
    assert [g.index for g in report.gpus] == list(range(8))
    assert report.gpus[0].pci == "0000:18:00"
    assert full_bus_id(report.gpus[0].pci) == node.state()["gpus"][0]["pci_bus_id"]
    assert report.gpus[3].uuid == node.state()["gpus"][3]["uuid"]
    assert report.busy == dict.fromkeys(range(8), 0)


def test_nvidia_smi_source_reports_a_lost_gpu_and_the_kernel_log_names_the_same_gpu(node, tmp_path):
    kernel_log = KernelLogSource(KernelLogConfig(path=str(node.kernel_log)), tmp_path / "p.json", "kb")
    kernel_log.poll()
    assert node.run("admin", "xid", "--gpu", "2", "--xid", "79").returncode == 0
    report = _smi(node).poll()
    assert [(f.kind, f.pci) for f in report.findings] == [("gpu_lost", _pci_of(node, 2))]
    assert "GPU is lost" in report.findings[0].detail
    assert 2 not in [g.index for g in report.gpus]
    assert [(f.kind, f.xid, f.pci) for f in kernel_log.poll().findings] == [("xid", 79, _pci_of(node, 2))]


def test_nvidia_smi_source_counts_compute_processes(node):
    child = hog(node, 1)
    try:
        assert _smi(node).poll().busy == {**dict.fromkeys(range(8), 0), 1: 1}
    finally:
        child.terminate()
        child.wait(timeout=10)


def test_nvidia_smi_source_reads_remap_failure_pending_and_temperature(node):
    port = node.hostengine()
    for gpu, field, value in (("3", "395", "1"), ("4", "396", "1"), ("5", "150", "95")):  # failure, pending, 95 C
        argv = ("test", "--inject", "--gpuid", gpu, "-f", field, "-v", value, "--host", f"127.0.0.1:{port}")
        injected = node.run("dcgmi", *argv)
        assert injected.returncode == 0
    found = {(f.kind, f.gpu) for f in _smi(node, temperature_max_c=90).poll().findings}
    assert found == {("remap_failure", 3), ("remap_pending", 4), ("temperature_high", 5)}


def test_nvidia_smi_source_without_a_driver_is_an_nvml_error(node):
    node.state_path.write_text("{not json")
    report = _smi(node).poll()
    assert [f.kind for f in report.findings] == ["nvml_error"]
    assert "Failed to initialize NVML" in report.findings[0].detail
    assert report.gpus is None


def test_nvidia_smi_source_timeout_is_an_nvml_error():
    runner = RecordingRunner([lambda argv: RunResult(argv, 124, "", "timed out after 30 s")])
    report = NvidiaSmiSource(NvidiaSmiConfig(), runner).poll()
    assert [f.kind for f in report.findings] == ["nvml_error"]
    assert runner.calls[0] == ("nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits")
    assert "remapped_rows.failure" in SMI_FIELDS


def test_nvidia_smi_missing_is_a_source_error_not_a_gpu_failure():
    runner = RecordingRunner([lambda argv: RunResult(argv, 127, "", "nvidia-smi: command not found")])
    assert [f.cause for f in NvidiaSmiSource(NvidiaSmiConfig(), runner).poll().findings] == ["source_error:nvidia_smi"]


def test_nvidia_smi_killed_by_a_signal_is_a_source_error_not_a_gpu_failure():
    # A host shutting down (a reboot during a poll) sends SIGTERM to nvidia-smi: that says nothing about the GPUs.
    runner = RecordingRunner([lambda argv: RunResult(argv, -15, "", "")])
    report = NvidiaSmiSource(NvidiaSmiConfig(), runner).poll()
    assert [f.cause for f in report.findings] == ["source_error:nvidia_smi"]
    assert "killed by signal 15" in report.findings[0].detail


def test_dcgm_source_healthy_then_failure_and_warning_per_gpu_and_system(node):
    port = node.hostengine()
    source = _dcgm(node, port)
    assert source.poll().findings == ()
    node.run("admin", "xid", "--gpu", "2", "--xid", "79")
    node.run("admin", "xid", "--gpu", "6", "--xid", "94")
    found = {(f.kind, f.gpu, f.system) for f in source.poll().findings}
    assert found == {("dcgm_fail", 2, "PCIe"), ("dcgm_warn", 6, "Memory")}


def test_dcgm_source_without_a_host_engine_is_a_source_error(node):
    report = _dcgm(node, free_port()).poll()
    assert [(f.kind, f.cause) for f in report.findings] == [("source_error", "source_error:dcgm")]
    assert "rc 236" in report.findings[0].detail


def test_dcgm_source_sets_the_health_watches_at_start():
    runner = RecordingRunner()
    assert DcgmHealthSource(DcgmConfig(host="10.0.0.5:5555"), runner).start() == []
    assert runner.calls == [("dcgmi", "health", "-s", "a", "--host", "10.0.0.5:5555")]
    refusing = RecordingRunner([lambda argv: RunResult(argv, 255, "Usage: dcgmi ...")])
    warnings = DcgmHealthSource(DcgmConfig(), refusing).start()
    assert len(warnings) == 1
    assert "health -s a" in warnings[0]


def test_dcgm_health_json_overall_failure_without_gpu_details():
    text = json.dumps({"header": ["Health Monitor Report"], "body": {"Overall Health": {"value": "Failure"}}})
    assert parse_dcgm_health(text).overall == "Failure"
    runner = RecordingRunner([lambda argv: RunResult(argv, 0, text)])
    assert [f.kind for f in DcgmHealthSource(DcgmConfig(), runner).poll().findings] == ["dcgm_fail"]
    with pytest.raises(ValueError, match="no JSON"):
        parse_dcgm_health("Error: unable to establish a connection")
    odd = {"body": {"Overall Health": {"value": "Healthy"}, "GPU": [], "x": 1}}
    assert parse_dcgm_health(json.dumps(odd)).gpus == {}
    odd["body"]["GPU"] = {"children": {"0": {"value": "Warning", "children": ["x"]}, "all": {}}}
    assert parse_dcgm_health(json.dumps(odd)).gpus == {0: {}}
