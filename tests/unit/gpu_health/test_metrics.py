"""The textfile metrics, parsed back (with chaosgpu's exposition parser and a strict line check), and the journal."""

from __future__ import annotations

import io
import json
import re

from agenthelpers import PCI, FakeClock, engine, healthy_poll, poll_without, started, xid
from gpu_health_agent.journal import Journal
from gpu_health_agent.metrics import FILE_NAME, render, write

from chaosgpu.exporter.exposition import parse_exposition

_LINE = re.compile(
    r'^(# HELP [a-z_]+ .+|# TYPE [a-z_]+ (gauge|counter)|[a-z_]+(\{([a-z_]+="(?:[^"\\]|\\.)*",?)+\})? -?[0-9.e+]+)$'
)


def _samples(text, name):
    return {tuple(sorted(labels.items())): value for n, labels, value in parse_exposition(text) if n == name}


def _one(text, name, **labels):
    return _samples(text, name)[tuple(sorted(labels.items()))]


def _after_xid79():
    drv = started(engine())
    drv.clock.advance(5)
    drv.send(poll_without(2, xid(79, 2, at=drv.clock.now - 3)))
    return drv


def test_every_line_is_valid_exposition_with_help_and_type_once():
    text = render(_after_xid79().state, FakeClock()(), sources_up={"nvidia_smi": True, "dcgm": False})
    assert text.endswith("\n")
    for line in text.splitlines():
        assert _LINE.match(line), line
    names = re.findall(r"^# TYPE (\S+)", text, re.M)
    assert len(names) == len(set(names))
    assert set(re.findall(r"^# HELP (\S+)", text, re.M)) == set(names)


def test_gpu_and_node_state_after_xid79_read_back():
    drv = _after_xid79()
    text = render(drv.state, drv.clock(), sources_up={"nvidia_smi": True, "dcgm": False})
    uuid2 = drv.state.gpus[PCI[2]].uuid
    assert _one(text, "gpu_health_gpu_healthy", gpu="2", uuid=uuid2) == 0
    assert _one(text, "gpu_health_gpu_healthy", gpu="0", uuid=drv.state.gpus[PCI[0]].uuid) == 1
    assert len(_samples(text, "gpu_health_gpu_healthy")) == 8
    assert _one(text, "gpu_health_last_xid", gpu="2") == 79
    assert _one(text, "gpu_health_last_xid", gpu="0") == 0
    assert _one(text, "gpu_health_last_xid_timestamp_seconds", gpu="2") == drv.clock.now - 3
    assert _one(text, "gpu_health_node_drained") == 1
    assert _one(text, "gpu_health_node_rma") == 0
    assert _one(text, "gpu_health_phase", phase="awaiting_boot") == 1
    assert sum(_samples(text, "gpu_health_phase").values()) == 1
    assert _one(text, "gpu_health_detection_timestamp_seconds") == drv.clock.now
    assert _one(text, "gpu_health_event_timestamp_seconds") == drv.clock.now - 3
    assert _one(text, "gpu_health_action_total", action="drain", outcome="ok") == 1
    assert _one(text, "gpu_health_action_total", action="reboot", outcome="ok") == 1
    assert _one(text, "gpu_health_action_last_timestamp_seconds", action="reboot", outcome="ok") == drv.clock.now
    assert _one(text, "gpu_health_reboots_last_hour") == 1
    assert _one(text, "gpu_health_source_up", source="dcgm") == 0
    assert _samples(text, "gpu_health_healthy_since_timestamp_seconds") == {}  # not healthy now
    assert "# TYPE gpu_health_action_total counter" in text


def test_held_action_and_dry_run_show():
    drv = started(engine(max_reboots_per_hour=0))
    drv.send(poll_without(1, xid(79, 1)))
    text = render(drv.state, drv.clock(), dry_run=True)
    assert _one(text, "gpu_health_action_held", action="reboot", reason="rate_limited") == 1
    assert _one(text, "gpu_health_action_total", action="reboot", outcome="rate_limited") == 1
    assert _one(text, "gpu_health_dry_run") == 1


def test_healthy_node_has_no_incident_series():
    drv = started(engine())
    drv.send(healthy_poll())
    text = render(drv.state, drv.clock())
    assert _one(text, "gpu_health_node_drained") == 0
    assert _one(text, "gpu_health_phase", phase="healthy") == 1
    assert _samples(text, "gpu_health_detection_timestamp_seconds") == {}
    assert _samples(text, "gpu_health_action_total") == {}
    assert _one(text, "gpu_health_healthy_since_timestamp_seconds") == drv.state.healthy_since


def test_label_values_are_escaped():
    drv = started(engine())
    drv.state.gpus[PCI[0]].uuid = 'GPU-"odd"\\uuid'
    text = render(drv.state, drv.clock())
    assert 'uuid="GPU-\\"odd\\"\\\\uuid"' in text


def test_write_replaces_the_file_atomically(tmp_path):
    path = write(str(tmp_path / "textfile"), "a 1\n")
    assert path.name == FILE_NAME
    write(str(tmp_path / "textfile"), "a 2\n")
    assert path.read_text() == "a 2\n"
    assert sorted(p.name for p in path.parent.iterdir()) == [FILE_NAME]  # no temporary file left behind
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_journal_lines_are_json_with_message_and_priority():
    stream = io.StringIO()
    journal = Journal(stream, FakeClock(1700000000.5))
    journal.emit("xid", "XID 79 on GPU 2", 3, gpu=2, xid=79, pci="0000:3a:00", missing=None)
    record = json.loads(stream.getvalue())
    assert record == {
        "MESSAGE": "XID 79 on GPU 2",
        "PRIORITY": "3",
        "SYSLOG_IDENTIFIER": "gpu_health",
        "GPU_HEALTH_EVENT": "xid",
        "TIMESTAMP": 1700000000.5,
        "GPU": 2,
        "XID": 79,
        "PCI": "0000:3a:00",
    }
