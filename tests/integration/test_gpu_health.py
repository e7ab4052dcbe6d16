"""The gpu_health agent's reactions on the lab's gpu-node-3, where it remediates for real (gpu-node-1 and gpu-node-2
run it in dry-run mode, so the chaos and alert tests there are not disturbed by drains and reboots; see
inventories/lab/host_vars). Faults come from chaosgpu (`dcgmi test --inject` on the simulated GPUs, which also writes
the driver's XID line to the node's kernel log, the source the agent reads), reactions are read from what the agent
publishes (its node_exporter textfile metrics and drain file), from Slurm on ops-1 where the agent drains through
Slurm, and from Docker (a reboot of a lab node is a restart of its container).

- XID 94 and XID 13: seen, no drain (a drain here is over-remediation).
- XID 48: drained, the GPU reset, undrained once healthy for `undrain_after_s`.
- XID 79: drained, the node rebooted, back and undrained.
- Two XID 79 on one GPU inside the repeat window: the second marks the node for RMA; no second reboot.
- Row-remap failure: drained and marked for RMA; it stays drained past `undrain_after_s`.

Every budget is derived from the agent's own configuration on the node (poll interval, undrain delay). The measured
times (detection, each action, relative to the injection) are written to reports/integration/gpu_health.json.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from faultcheck import CONFIGURATION
from labhosts import ROOT, Host, Lab, wait_for

from chaosgpu.fleet.actions import revert_faults
from chaosgpu.gpu import actions

NODE = "gpu-node-3"
CONFIG = "/etc/gpu_health/agent.json"
REPORT = ROOT / "reports" / "integration" / "gpu_health.json"
# A reboot of a lab node: the container stops, Docker starts it again, systemd boots, sshd and the agent start.
BOOT_BUDGET_S = 180
SSH_FAILED = 255  # ssh's own exit status: no connection (the node is down or going down)
# The chaos faults' own deadline: far beyond each test, so only the test's revert ends them.
FAULT_DEADLINE_S = 1800
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

timeline: dict[str, dict[str, Any]] = {}


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text exposition -> {(name, labels): value} (comments skipped)."""
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if not match or line.startswith("#"):
            continue
        labels = frozenset(_LABEL.findall(match.group("labels") or ""))
        samples[match.group("name"), labels] = float(match.group("value"))
    return samples


class Agent:
    """The gpu_health agent on one lab node, seen through its configuration, metrics and drain file."""

    def __init__(self, node: Host) -> None:
        self.node = node
        self.config: dict[str, Any] = json.loads(node.check(f"sudo cat {CONFIG}"))
        assert not self.config.get("dry_run"), f"{node.name}'s agent is in dry-run mode; the reactions need it live"
        self.poll_s = float(self.config.get("poll_interval_s", 10))
        policy = self.config.get("policy", {})
        self.undrain_after_s = float(policy.get("undrain_after_s", 600))
        self.textfile = f"{self.config.get('textfile_dir', '/var/lib/node_exporter/textfile')}/gpu_health.prom"
        self.drain_file = (
            self.config.get("actions", {}).get("drain_file", {}).get("path", "/var/lib/gpu_health/drain.json")
        )
        self.slurm = bool(self.config.get("actions", {}).get("slurm", {}).get("enabled"))
        self.pythonpath = self._pythonpath()

    def _pythonpath(self) -> str:
        env = self.node.check("systemctl show -p Environment --value gpu-health")
        match = re.search(r"PYTHONPATH=(\S+)", env)
        assert match, f"{self.node.name}: gpu-health.service sets no PYTHONPATH: {env!r}"
        return match.group(1)

    def read_textfile(self) -> subprocess.CompletedProcess[str]:
        """The agent's metrics file as read over SSH (never raises: exit 255 when the node does not answer)."""
        return self.node.run(f"sudo cat {shlex.quote(self.textfile)}")

    def metrics(
        self, read: subprocess.CompletedProcess[str] | None = None
    ) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The agent's metrics, from ``read`` (a read_textfile() already made) or a fresh read; a failed read fails."""
        result = read if read is not None else self.read_textfile()
        assert result.returncode == 0, (
            f"{self.node.name}: reading {self.textfile} exited {result.returncode}: {result.stderr}"
        )
        return parse_metrics(result.stdout)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, frozenset(labels.items())))

    def drained(self) -> bool:
        return self.value("gpu_health_node_drained") == 1

    def rma(self) -> bool:
        return self.value("gpu_health_node_rma") == 1

    def phase(self) -> str:
        return next(
            (
                dict(labels)["phase"]
                for (name, labels), v in self.metrics().items()
                if name == "gpu_health_phase" and v == 1
            ),
            "",
        )

    def action_at(self, action: str, outcome: str = "ok") -> float:
        """When the action last ended with the outcome (0: never)."""
        return self.value("gpu_health_action_last_timestamp_seconds", action=action, outcome=outcome) or 0.0

    def action_count(self, action: str, outcome: str = "ok") -> float:
        return self.value("gpu_health_action_total", action=action, outcome=outcome) or 0.0

    def drain_file_present(self) -> bool:
        return self.node.run(f"sudo test -e {shlex.quote(self.drain_file)}").returncode == 0

    def cli(self, *arguments: str) -> str:
        return self.node.check(
            f"sudo env PYTHONPATH={shlex.quote(self.pythonpath)} python3 -m gpu_health_agent --config {CONFIG} "
            + " ".join(map(shlex.quote, arguments))
        )

    def wait(self, what: str, predicate: Any, budget_s: float) -> float:
        """Wait (bounded) for predicate(); the seconds it took. The budget is stated in the failure."""
        ok, took = wait_for(predicate, budget_s, interval_s=1.0)
        assert ok, f"{self.node.name}: {what} did not happen within {budget_s:.0f} s ({self.state()})"
        return took

    def state(self) -> str:
        """The agent's decisive metrics in one line, for failure messages (never raises: the node may be down)."""
        result = self.read_textfile()
        if result.returncode != 0:
            return f"metrics unreadable: exit {result.returncode}: {result.stderr.strip()}"
        m = parse_metrics(result.stdout)
        keep = (
            "gpu_health_node_drained",
            "gpu_health_node_rma",
            "gpu_health_phase",
            "gpu_health_action_total",
            "gpu_health_action_held",
            "gpu_health_last_xid",
        )
        return ", ".join(f"{n}{dict(sorted(lab))}={v:g}" for (n, lab), v in sorted(m.items(), key=str) if n in keep)


def slurm_state(ops: Host) -> tuple[str, str]:
    """(State, Reason) of the node in Slurm, as slurmctld on ops-1 has it."""
    line = ops.check(f"scontrol -o show node {NODE}")
    state = re.search(r"\bState=(\S+)", line)
    reason = re.search(r"\bReason=(.*?)(?: \w+=|$)", line)
    return (state.group(1) if state else "", reason.group(1) if reason else "")


def started_at(node: Host) -> str:
    """When the node's container last started: a reboot of a lab node is a restart of its container."""
    return subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", f"gpuops-lab-{node.name}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()


@pytest.fixture(scope="module")
def node(lab: Lab) -> Host:
    return lab.hosts[NODE]


@pytest.fixture(scope="module")
def ops_host(lab: Lab) -> Host:
    return lab.group("ops")[0]


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"node": NODE, "seconds_after_injection": timeline}, indent=2) + "\n")


def _drained_or_down(agent: Agent) -> bool:
    """The agent's metrics say drained, or the node no longer answers SSH (it is going down for a reboot)."""
    result = agent.read_textfile()  # once: the node may go down between two reads
    if result.returncode == SSH_FAILED:
        return True
    return agent.metrics(result).get(("gpu_health_node_drained", frozenset())) == 1


def _wait_back(agent: Agent) -> None:
    """Wait (bounded by the boot budget) for the node to answer SSH with its agent running: a reboot the agent
    decided, in this test or at the end of a failed one, may still be under way."""
    ok, _ = wait_for(lambda: agent.node.run("systemctl is-active gpu-health").returncode == 0, BOOT_BUDGET_S, 2.0)
    assert ok, f"{NODE} did not answer SSH with gpu-health active within {BOOT_BUDGET_S} s"


def _settle(agent: Agent) -> None:
    """Back to a healthy, undrained node with an agent that remembers no earlier failure: the node up (a reboot may
    be under way), faults reverted (the lab's XID recovery is `gpusim boot`), an RMA mark cleared, then a fresh
    agent state (a new repeat window for every test). Bounded by the boot budget and the agent's undrain delay."""
    _wait_back(agent)
    revert_faults(NODE, configuration=CONFIGURATION)
    agent.node.check("sudo gpusim boot")
    if agent.rma():
        agent.cli("--clear-rma")
    agent.wait("undrain", lambda: not agent.drained(), agent.undrain_after_s + 6 * agent.poll_s + 30)
    agent.node.check(
        "sudo systemctl stop gpu-health && sudo find /var/lib/gpu_health -mindepth 1 -maxdepth 1 -delete "
        "&& sudo systemctl start gpu-health"
    )
    before = time.time()
    agent.wait(
        "a fresh poll",
        lambda: (agent.value("gpu_health_last_poll_timestamp_seconds") or 0) > before,
        4 * agent.poll_s + 30,
    )
    assert agent.phase() == "healthy", agent.state()
    assert not agent.drain_file_present(), f"{agent.drain_file} left on {NODE}"


@pytest.fixture(scope="module")
def live_agent(node: Host) -> Iterator[Agent]:
    """The agent, settled once more after the last test, so the lab is left as it was found."""
    live = Agent(node)
    yield live
    _settle(live)


@pytest.fixture
def agent(live_agent: Agent) -> Agent:
    """Each test starts from a settled node and a fresh agent state (the next test's settle is the previous one's
    clean-up)."""
    _settle(live_agent)
    return live_agent


def _inject(xid: int, gpu: int) -> float:
    at = time.time()
    actions.inject_xid(NODE, xid=xid, gpus=[gpu], duration_s=FAULT_DEADLINE_S, configuration=CONFIGURATION)
    return at


def _detected(agent: Agent, gpu: int, xid: int) -> float:
    """Wait (bounded: three polls) for the agent to show the XID on the GPU; the seconds it took to see it there."""
    return agent.wait(
        f"XID {xid} on GPU {gpu} seen",
        lambda: agent.value("gpu_health_last_xid", gpu=str(gpu)) == xid,
        3 * agent.poll_s + 30,
    )


def _since(stamp: float | None, at: float) -> float | None:
    """Seconds from the injection to a timestamp the agent published (None: it published none)."""
    return None if not stamp else round(stamp - at, 1)


def test_application_xids_do_not_drain(agent: Agent, ops_host: Host) -> None:
    """XID 94 on GPU 1 and XID 13 on GPU 2, one after the other: both seen, neither drains."""
    drains_before = agent.action_count("drain")
    seen = {}
    for xid, gpu in ((94, 1), (13, 2)):
        _inject(xid, gpu)
        seen[xid] = _detected(agent, gpu, xid)
    # Three more polls after both were seen: any reaction would have been decided on the first.
    time.sleep(3 * agent.poll_s)
    assert not agent.drained(), f"XID 94/13 drained {NODE} (over-remediation): {agent.state()}"
    assert not agent.drain_file_present()
    assert agent.action_count("drain") == drains_before
    if agent.slurm:
        state, reason = slurm_state(ops_host)
        assert "DRAIN" not in state, f"XID 94/13 drained {NODE} in Slurm: {state} {reason}"
    for xid, took in seen.items():
        timeline[f"xid{xid}"] = {"seen_s": round(took, 1)}


def test_xid_48_drains_resets_the_gpu_and_undrains(agent: Agent, ops_host: Host) -> None:
    at = _inject(48, 3)
    seen = _detected(agent, 3, 48)
    drained = agent.wait("drain", agent.drained, 3 * agent.poll_s + 30)
    assert agent.drain_file_present()
    if agent.slurm:
        state, reason = slurm_state(ops_host)
        assert "DRAIN" in state, (state, reason)
        assert reason.startswith("gpu_health"), (state, reason)
    agent.wait("GPU reset", lambda: agent.action_at("reset") > at, 6 * agent.poll_s + 30)
    agent.wait("undrain", lambda: not agent.drained(), agent.undrain_after_s + 6 * agent.poll_s + 30)
    assert not agent.drain_file_present()
    assert agent.action_count("reboot") == 0, f"XID 48 rebooted {NODE}: {agent.state()}"
    if agent.slurm:
        agent.wait("Slurm resume", lambda: "DRAIN" not in slurm_state(ops_host)[0], 30)
    timeline["xid48"] = {
        "seen_s": round(seen, 1),
        "detected_s": _since(agent.value("gpu_health_detection_timestamp_seconds"), at),
        "drained_s": _since(agent.action_at("drain"), at),
        "reset_s": _since(agent.action_at("reset"), at),
        "undrained_s": _since(agent.action_at("undrain"), at),
        "drain_observed_s": round(drained, 1),
    }


def _reboot_cycle(agent: Agent, ops_host: Host, gpu: int) -> dict[str, float | None]:
    """XID 79 on the GPU -> drained -> the node reboots -> back -> undrained; the measured times."""
    boot_before = started_at(agent.node)
    at = _inject(79, gpu)
    # The agent drains and then reboots, often inside one poll: the node may stop answering SSH before the drain
    # can be read from it. A node that no longer answers counts here; that the drain was done is checked from the
    # agent's own timestamp once it is back.
    ok, _ = wait_for(lambda: _drained_or_down(agent), 3 * agent.poll_s + 30)
    assert ok, f"{NODE}: drain did not happen within {3 * agent.poll_s + 30:.0f} s ({agent.state()})"
    if agent.slurm:
        # slurmctld on ops-1 keeps the drain while the node reboots, until the agent undrains it after the boot.
        state, reason = slurm_state(ops_host)
        assert "DRAIN" in state, (state, reason)
        assert reason.startswith("gpu_health"), (state, reason)
    ok, _ = wait_for(lambda: started_at(agent.node) != boot_before, 6 * agent.poll_s + BOOT_BUDGET_S, 2.0)
    assert ok, f"{NODE} was not rebooted after XID 79 ({agent.state()})"
    _wait_back(agent)
    assert agent.action_at("drain") > at, f"{NODE} came back without a drain for the XID 79 ({agent.state()})"
    agent.wait("undrain after the boot", lambda: not agent.drained(), agent.undrain_after_s + 6 * agent.poll_s + 60)
    assert agent.value("gpu_health_gpu_healthy", gpu=str(gpu), uuid=_uuid(agent, gpu)) == 1
    return {
        "detected_s": _since(agent.value("gpu_health_detection_timestamp_seconds"), at),
        "drained_s": _since(agent.action_at("drain"), at),
        "reboot_requested_s": _since(agent.action_at("reboot"), at),
        "undrained_s": _since(agent.action_at("undrain"), at),
    }


def _uuid(agent: Agent, gpu: int) -> str:
    return next(
        dict(labels)["uuid"]
        for (name, labels) in agent.metrics()
        if name == "gpu_health_gpu_healthy" and dict(labels).get("gpu") == str(gpu)
    )


def test_xid_79_drains_reboots_and_undrains(agent: Agent, ops_host: Host) -> None:
    timeline["xid79"] = _reboot_cycle(agent, ops_host, 0)
    assert agent.action_count("reboot") == 1
    assert not agent.rma()


def test_a_second_xid_79_on_the_gpu_marks_rma_without_a_second_reboot(agent: Agent, ops_host: Host) -> None:
    first = _reboot_cycle(agent, ops_host, 1)
    boot_before = started_at(agent.node)
    reboots = agent.action_count("reboot")
    at = _inject(79, 1)
    agent.wait("RMA mark", agent.rma, 3 * agent.poll_s + 30)
    assert agent.drained(), agent.state()
    assert agent.drain_file_present()
    # Long enough for a reboot to have been requested and carried out, had one been decided.
    time.sleep(3 * agent.poll_s)
    assert started_at(agent.node) == boot_before, f"{NODE} rebooted again after the second XID 79"
    assert agent.action_count("reboot") == reboots
    if agent.slurm:
        state, reason = slurm_state(ops_host)
        assert "DRAIN" in state, (state, reason)
        assert "rma" in reason.lower(), (state, reason)
    timeline["xid79_twice"] = {"first": first, "rma_s": _since(agent.action_at("rma"), at)}


def test_row_remap_failure_drains_and_marks_rma_and_stays_drained(agent: Agent, ops_host: Host) -> None:
    at = time.time()
    actions.inject_memory_error(
        NODE, event="remap-failure", gpus=[5], duration_s=FAULT_DEADLINE_S, configuration=CONFIGURATION
    )
    agent.wait("RMA mark", agent.rma, 3 * agent.poll_s + 30)
    assert agent.drained(), agent.state()
    assert agent.drain_file_present()
    # Past the undrain delay with the fault still there: no automatic undrain of an RMA node.
    time.sleep(agent.undrain_after_s + 2 * agent.poll_s)
    assert agent.drained(), agent.state()
    assert agent.rma(), agent.state()
    assert agent.action_count("reboot") == 0
    assert agent.action_count("undrain") == 0
    if agent.slurm:
        state, reason = slurm_state(ops_host)
        assert "DRAIN" in state, (state, reason)
        assert "rma" in reason.lower(), (state, reason)
    timeline["row_remap_failure"] = {
        "detected_s": _since(agent.value("gpu_health_detection_timestamp_seconds"), at),
        "rma_s": _since(agent.action_at("rma"), at),
    }
