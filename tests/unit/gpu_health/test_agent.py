"""The whole agent against the GPU simulator's stand-ins (nvidia-smi, dcgmi with its host engine, the kernel-log
file, `gpusim boot` for a reboot): the proven reactions of issue 8 end to end, with a fake clock."""

from __future__ import annotations

import io
import json
import sys

import pytest
from agenthelpers import FakeClock, hog, sim_runner
from gpu_health_agent.agent import Agent, build_sources, request_clear_rma
from gpu_health_agent.cli import main
from gpu_health_agent.config import parse_config
from gpu_health_agent.journal import Journal
from gpu_health_agent.runner import RunResult
from simhelpers import make_sim

from chaosgpu.exporter.exposition import parse_exposition

SLURM_DRAINED = "NodeName=gpu-node-1 State=IDLE+DRAIN Reason=gpu_health: XID [root@2026-01-01T00:00:00]"


class Node:
    """One simulated GPU node with its host engine, and agents started on it the way systemd would start them."""

    def __init__(self, tmp_path, **overrides):
        self.tmp = tmp_path
        self.sim = make_sim(tmp_path / "sim")
        self.port = self.sim.hostengine()
        self.clock = FakeClock()
        self.calls = []
        self.stream = io.StringIO()
        self.runner = sim_runner(self.sim, self.calls, boot_marker=tmp_path / "run" / "boot-marker")
        self.runner.responders.append(
            lambda argv: RunResult(argv, 0, SLURM_DRAINED) if argv[:3] == ("scontrol", "-o", "show") else None
        )
        self.config = parse_config(
            {
                "node_name": "gpu-node-1",
                "state_dir": str(tmp_path / "state"),
                "runtime_dir": str(tmp_path / "run"),
                "textfile_dir": str(tmp_path / "textfile"),
                "sources": {
                    "kernel_log": {"path": str(self.sim.kernel_log)},
                    "dcgm": {"host": f"127.0.0.1:{self.port}", "set_watches": False},
                },
                "policy": {"undrain_after_s": 60, "reset_grace_s": 0},
                "actions": {"drain_file": {"path": str(tmp_path / "state" / "drain.json")}, "slurm": {"enabled": True}},
                **overrides,
            }
        )

    def agent(self):
        """A freshly started agent process (after a boot, or a restart of the service)."""
        sources = build_sources(self.config, self.runner, self.clock, uptime=lambda: 1000.0, kernel_boot_id="kb")
        agent = Agent(self.config, self.runner, self.clock, Journal(self.stream, self.clock), sources=sources)
        agent.start()
        return agent

    def cycles(self, agent, count=1, every=10):
        for _ in range(count):
            self.clock.advance(every)
            agent.cycle()

    def xid(self, gpu, number):
        assert self.sim.run("admin", "xid", "--gpu", str(gpu), "--xid", str(number)).returncode == 0

    @property
    def drain_file(self):
        path = self.tmp / "state" / "drain.json"
        return json.loads(path.read_text()) if path.exists() else None

    def metric(self, name, **labels):
        text = (self.tmp / "textfile" / "gpu_health.prom").read_text()
        values = [v for n, lab, v in parse_exposition(text) if n == name and lab == labels]
        assert len(values) == 1, (name, labels, text)
        return values[0]

    def journal(self):
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def ran(self, *prefix):
        return [call for call in self.calls if call[: len(prefix)] == prefix]


@pytest.fixture
def node(tmp_path):
    simulated = Node(tmp_path)
    yield simulated
    simulated.sim.stop()


def test_xid79_drained_rebooted_back_and_undrained(node):
    agent = node.agent()
    node.cycles(agent)
    assert node.metric("gpu_health_gpu_healthy", gpu="2", uuid=node.sim.state()["gpus"][2]["uuid"]) == 1
    node.xid(2, 79)
    node.cycles(agent)
    assert "XID 79 on GPU 2 (0000:3a:00)" in node.drain_file["reason"]
    assert node.ran("scontrol", "update", "nodename=gpu-node-1", "state=drain")
    assert node.ran("systemctl", "reboot")
    assert agent.state.phase == "awaiting_boot"
    assert node.metric("gpu_health_node_drained") == 1
    assert node.metric("gpu_health_last_xid", gpu="2") == 79
    # the node is back: systemd starts the agent again
    agent = node.agent()
    assert agent.state.phase == "recovering"
    node.cycles(agent)
    assert node.drain_file is not None
    node.cycles(agent, 1, every=60)
    assert node.drain_file is None
    assert node.ran("scontrol", "update", "nodename=gpu-node-1", "state=resume")
    assert agent.state.phase == "healthy"
    assert node.metric("gpu_health_node_drained") == 0
    assert node.metric("gpu_health_action_total", action="reboot", outcome="ok") == 1
    assert node.metric("gpu_health_action_total", action="undrain", outcome="ok") == 1
    assert len(node.ran("systemctl", "reboot")) == 1
    events = [r["GPU_HEALTH_EVENT"] for r in node.journal()]
    for expected in ("xid", "incident_opened", "action_result", "booted", "recovering", "incident_closed"):
        assert expected in events
    assert all({"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER"} <= set(r) for r in node.journal())


def test_second_xid79_inside_the_window_is_rma_without_a_second_reboot(node):
    agent = node.agent()
    node.cycles(agent)
    node.xid(2, 79)
    node.cycles(agent)
    agent = node.agent()
    node.cycles(agent, 2, every=61)
    assert agent.state.phase == "healthy"
    node.xid(2, 79)
    node.cycles(agent)
    assert agent.state.rma
    assert node.drain_file["rma"] is True
    assert len(node.ran("systemctl", "reboot")) == 1
    node.cycles(agent, 3, every=3600)
    assert node.drain_file["rma"] is True
    assert node.metric("gpu_health_node_rma") == 1


def test_xid48_drained_gpu_reset_once_idle_back(node):
    agent = node.agent()
    node.cycles(agent)
    job = hog(node.sim, 1)
    node.xid(1, 48)
    node.cycles(agent, 2)
    assert node.drain_file is not None
    assert node.ran("nvidia-smi", "-r") == []  # the job still holds the GPU
    assert node.metric("gpu_health_action_held", action="reset", reason="busy") == 1
    job.terminate()
    job.wait(timeout=10)
    node.cycles(agent)
    assert node.ran("nvidia-smi", "-r") == [("nvidia-smi", "-r", "-i", "1")]
    assert agent.state.phase == "recovering"
    node.cycles(agent, 2, every=60)
    assert node.drain_file is None
    assert agent.state.phase == "healthy"
    assert node.ran("systemctl", "reboot") == []


@pytest.mark.parametrize(("gpu", "number"), [(3, 94), (4, 13)])
def test_application_xids_leave_the_node_in_service(node, gpu, number):
    agent = node.agent()
    node.cycles(agent)
    node.xid(gpu, number)
    node.cycles(agent, 3, every=60)
    assert node.drain_file is None
    assert agent.state.phase == "healthy"
    assert node.ran("scontrol") == node.ran("nvidia-smi", "-r") == node.ran("systemctl") == []
    assert node.metric("gpu_health_last_xid", gpu=str(gpu)) == number
    assert node.metric("gpu_health_node_drained") == 0


def test_row_remap_failure_drained_and_stays_drained_for_rma(node):
    agent = node.agent()
    node.cycles(agent)
    argv = ("test", "--inject", "--gpuid", "3", "-f", "395", "-v", "1", "--host", f"127.0.0.1:{node.port}")
    injected = node.sim.run("dcgmi", *argv)
    assert injected.returncode == 0
    node.cycles(agent)
    assert node.drain_file["rma"] is True
    assert node.ran("scontrol", "update")[-1][-1].startswith("reason=gpu_health: RMA: remap_failure on GPU 3")
    node.cycles(agent, 3, every=8 * 3600)
    assert node.drain_file["rma"] is True
    assert node.ran("scontrol", "update", "nodename=gpu-node-1", "state=resume") == []
    assert node.ran("systemctl") == node.ran("nvidia-smi", "-r") == []
    # the GPU is replaced: the operator clears the RMA, and the node comes back once healthy
    node.sim.run("admin", "reset-state")
    request_clear_rma(agent.config, "alice")
    node.cycles(agent, 2, every=61)
    assert node.drain_file is None
    assert agent.state.phase == "healthy"


def test_dry_run_only_logs_what_it_would_do(tmp_path):
    node = Node(tmp_path, dry_run=True)
    try:
        agent = node.agent()
        node.cycles(agent)
        node.xid(0, 79)
        node.cycles(agent)
        assert node.drain_file is None
        assert node.ran("systemctl") == node.ran("scontrol", "update") == []
        done = [line for r in node.journal() for line in r.get("DONE", [])]
        assert "would run: systemctl reboot" in done
        assert any(line.startswith("would run: scontrol update nodename=gpu-node-1 state=drain") for line in done)
        assert node.metric("gpu_health_dry_run") == 1
        assert node.metric("gpu_health_node_drained") == 0
        assert node.metric("gpu_health_action_total", action="reboot", outcome="dry_run") == 1
    finally:
        node.sim.stop()


def test_a_corrupt_state_file_is_kept_aside_and_the_agent_starts_afresh(node):
    state_dir = node.tmp / "state"
    state_dir.mkdir()
    (state_dir / "state.json").write_text("{truncated")
    agent = node.agent()
    assert agent.state.phase == "healthy"
    assert (state_dir / "state.corrupt").read_text() == "{truncated"
    assert "state_corrupt" in [r["GPU_HEALTH_EVENT"] for r in node.journal()]


def test_command_line_once_with_the_real_runner(tmp_path, monkeypatch, capsys):
    """`python3 -m gpu_health_agent --config ... --once --dry-run` path: real subprocesses run the stand-ins."""
    sim = make_sim(tmp_path / "sim")
    try:
        port = sim.hostengine()
        for key, value in sim.env.items():
            monkeypatch.setenv(key, value)
        sim.run("admin", "xid", "--gpu", "5", "--xid", "79")
        config = {
            "node_name": "gpu-node-1",
            "state_dir": str(tmp_path / "state"),
            "runtime_dir": str(tmp_path / "run"),
            "textfile_dir": str(tmp_path / "textfile"),
            "sources": {
                "nvidia_smi": {"command": [sys.executable, "-m", "gpusim.nvsmi"]},
                "dcgm": {"command": [sys.executable, "-m", "gpusim.dcgmi"], "host": f"127.0.0.1:{port}"},
                "kernel_log": {"path": str(sim.kernel_log), "read_existing": True},
            },
            "actions": {"drain_file": {"path": str(tmp_path / "state" / "drain.json")}},
        }
        path = tmp_path / "agent.json"
        path.write_text(json.dumps(config))
        assert main(["--config", str(path), "--once", "--dry-run"]) == 0
    finally:
        sim.stop()
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    events = [r["GPU_HEALTH_EVENT"] for r in records]
    assert "source_warning" in events  # the stand-in has no `dcgmi health -s a`
    assert [r["XID"] for r in records if r["GPU_HEALTH_EVENT"] == "xid"] == [79]
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert (state["phase"], state["drained"]) == ("awaiting_boot", False)
    assert not (tmp_path / "state" / "drain.json").exists()
    assert (tmp_path / "textfile" / "gpu_health.prom").exists()


class _BrokenSource:
    name = "broken"

    def start(self):
        return []

    def poll(self):
        raise KeyError("children")

    def commit(self):
        return None


def test_a_source_that_breaks_is_a_source_error_and_the_agent_carries_on(tmp_path):
    config = parse_config(
        {
            "node_name": "n1",
            "state_dir": str(tmp_path / "state"),
            "runtime_dir": str(tmp_path / "run"),
            "textfile_dir": str(tmp_path / "textfile"),
        }
    )
    stream = io.StringIO()
    agent = Agent(config, clock=FakeClock(), journal=Journal(stream), sources=[_BrokenSource()], plugins=[])
    agent.start()
    agent.cycle()
    assert agent.state.phase == "healthy"
    assert agent.sources_up == {"broken": False}
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(r["GPU_HEALTH_EVENT"] == "condition" and "KeyError" in r["DETAIL"] for r in records)
    text = (tmp_path / "textfile" / "gpu_health.prom").read_text()
    assert 'gpu_health_source_up{source="broken"} 0' in text
