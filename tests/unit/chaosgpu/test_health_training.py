"""chaosgpu.health and chaosgpu.training against a fake transport (canned command output per host): the agent's
metrics and Slurm's lines parsed, waits bounded, bad input refused before any host is reached, the training
records' resume time and work lost computed from sample records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosgpu import activity, polling
from chaosgpu.health import actions as health_actions
from chaosgpu.health import probes as health
from chaosgpu.health.state import parse_gpu_health_metrics, parse_slurm_node
from chaosgpu.inventory import Inventory
from chaosgpu.training import actions as training_actions
from chaosgpu.training import probes as training
from chaosgpu.training.records import RecordsError, summarize
from chaosgpu.types import CommandResult, Host

CONFIG = {"chaosgpu_inventory": "fake-inventory"}
NODES = [Host(f"gpu-node-{i}", "127.0.0.1", 2220 + i, "operator", groups=("gpu_nodes",)) for i in (1, 2, 3)]
OPS = Host("ops-1", "127.0.0.1", 2220, "operator", groups=("ops", "slurm_controllers"))


def prom(
    drained: int = 0,
    rma: int = 0,
    dry_run: int = 0,
    phase: str = "healthy",
    xid: int = 0,
    poll: float = 1000,
    xid_at: float = 990,
) -> str:
    phases = "\n".join(
        f'gpu_health_phase{{phase="{p}"}} {int(p == phase)}'
        for p in ("healthy", "remediating", "awaiting_boot", "recovering", "rma")
    )
    return f"""# HELP gpu_health_node_drained 1 while drained.
# TYPE gpu_health_node_drained gauge
gpu_health_node_drained {drained}
gpu_health_node_rma {rma}
gpu_health_dry_run {dry_run}
{phases}
gpu_health_gpu_healthy{{gpu="0",uuid="GPU-a"}} 1
gpu_health_gpu_healthy{{gpu="1",uuid="GPU-b"}} {0 if drained else 1}
gpu_health_last_xid{{gpu="0"}} {xid}
gpu_health_last_xid{{gpu="1"}} 0
gpu_health_last_xid_timestamp_seconds{{gpu="0"}} {xid_at}
gpu_health_action_total{{action="drain",outcome="ok"}} {drained}
gpu_health_last_poll_timestamp_seconds {poll}
"""


@dataclass
class FakeTransport:
    """Answers each command by the first handler whose key the command contains; records every call."""

    answers: dict[str, Callable[[Host], tuple[int, str]]] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
        self.calls.append((host.name, command, stdin or ""))
        for key, answer in self.answers.items():
            if key in command:
                rc, out = answer(host)
                return CommandResult(host.name, command, rc, out, "" if rc == 0 else "failed", 0.0)
        return CommandResult(host.name, command, 127, "", f"unexpected command {command}", 0.0)

    def check(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
        raise AssertionError("not used")

    def run_many(self, hosts: Any, command: str, timeout: float = 60, stdin: str | None = None) -> Any:
        return {h.name: self.run(h, command, timeout, stdin) for h in hosts}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTransport:
    hosts = [*NODES, OPS]
    inventory = Inventory(
        source="fake-inventory",
        hosts={h.name: h for h in hosts},
        groups={
            "all": tuple(h.name for h in hosts),
            "gpu_nodes": tuple(h.name for h in NODES),
            "ops": ("ops-1",),
            "slurm_controllers": ("ops-1",),
        },
        production=False,
        power_drivers={},
    )
    monkeypatch.setattr(activity, "get_inventory", lambda _configuration: inventory)
    transport = FakeTransport()
    monkeypatch.setattr(activity, "_transport", transport)
    return transport


def serve_prom(fake: FakeTransport, texts: dict[str, str], clock: float = 1010) -> None:
    fake.answers["gpu_health.prom"] = lambda host: (0, f"{clock:.0f}\n{texts[host.name]}")


# --- gpu_health state ----------------------------------------------------------------------------------------------


def test_the_agents_metrics_are_read_per_host_in_one_call_each(fake: FakeTransport) -> None:
    serve_prom(fake, {"gpu-node-1": prom(), "gpu-node-3": prom(drained=1, phase="remediating", xid=79)})
    states = health.gpu_health_state("gpu-node-1:gpu-node-3", configuration=CONFIG)
    assert states["gpu-node-1"]["drained"] is False
    three = states["gpu-node-3"]
    assert (three["drained"], three["phase"], three["last_xid"], three["healthy_gpus"], three["gpus"]) == (
        True,
        "remediating",
        {"0": 79, "1": 0},
        1,
        2,
    )
    assert three["actions"] == {"drain": {"ok": 1}}
    assert three["host_time"] == 1010
    assert sorted(host for host, _, _ in fake.calls) == ["gpu-node-1", "gpu-node-3"]
    assert "/var/lib/node_exporter/textfile/gpu_health.prom" in fake.calls[0][1]
    assert fake.calls[0][1].count("sudo") == 0


def test_a_host_without_the_agent_or_unreachable_is_named(fake: FakeTransport) -> None:
    def answer(host: Host) -> tuple[int, str]:
        if host.name == "gpu-node-1":
            return 0, "1010\nchaosgpu: gpu_health.prom missing\n"
        return 255, ""

    fake.answers["gpu_health.prom"] = answer
    with pytest.raises(ActivityFailed, match=r"gpu-node-1: no gpu_health.prom.*gpu-node-2: unreachable"):
        health.gpu_health_state("gpu-node-1:gpu-node-2", configuration=CONFIG)


def test_metrics_of_something_else_are_refused() -> None:
    with pytest.raises(ValueError, match="no gpu_health_node_drained"):
        parse_gpu_health_metrics("node_load1 0.5\n")


def test_node_drained_waits_for_the_drain(fake: FakeTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = iter([prom(), prom(), prom(drained=1, phase="remediating")])
    fake.answers["gpu_health.prom"] = lambda _host: (0, "1010\n" + next(reads))
    monkeypatch.setattr(polling, "POLL_S", 0.0)
    assert health.node_drained("gpu-node-3", wait_s=30, configuration=CONFIG) is True
    assert len(fake.calls) == 3


def test_node_drained_gives_up_after_wait_s(fake: FakeTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    serve_prom(fake, {"gpu-node-3": prom()})
    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(polling.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(polling.time, "sleep", lambda _s: None)
    assert health.node_drained("gpu-node-3", wait_s=12, configuration=CONFIG) is False
    assert 2 <= len(fake.calls) <= 4


def test_node_drained_refuses_a_dry_run_agent(fake: FakeTransport) -> None:
    serve_prom(fake, {"gpu-node-1": prom(dry_run=1)})
    with pytest.raises(ActivityFailed, match="gpu-node-1 runs in dry-run mode"):
        health.node_drained("gpu-node-1", configuration=CONFIG)


def test_undrained_means_neither_drained_nor_rma(fake: FakeTransport) -> None:
    serve_prom(fake, {"gpu-node-1": prom(), "gpu-node-2": prom(rma=1, phase="rma")})
    assert health.node_undrained("gpu-node-1", configuration=CONFIG) is True
    assert health.node_undrained("gpu-node-1:gpu-node-2", configuration=CONFIG) is False


def test_stays_undrained_fails_at_the_first_drain(fake: FakeTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = iter([prom(), prom(drained=1), prom()])
    fake.answers["gpu_health.prom"] = lambda _host: (0, "1010\n" + next(reads))
    monkeypatch.setattr(polling, "POLL_S", 0.0)
    assert health.node_stays_undrained("gpu-node-3", watch_s=30, configuration=CONFIG) is False
    assert len(fake.calls) == 2


def test_stays_undrained_holds_through_the_watch(fake: FakeTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    serve_prom(fake, {"gpu-node-3": prom(xid=94)})
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(polling.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(polling.time, "sleep", lambda _s: None)
    assert health.node_stays_undrained("gpu-node-3", watch_s=40, configuration=CONFIG) is True
    assert len(fake.calls) >= 4


def test_stays_drained_needs_the_drain_and_the_rma_mark_throughout(
    fake: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(polling, "POLL_S", 0.0)
    reads = iter([prom(drained=1, rma=1, phase="rma"), prom(drained=1, rma=0, phase="recovering")])
    fake.answers["gpu_health.prom"] = lambda _host: (0, "1010\n" + next(reads))
    assert health.node_stays_drained("gpu-node-3", watch_s=50, configuration=CONFIG) is False
    serve_prom(fake, {"gpu-node-3": prom(drained=1, phase="recovering")})
    assert health.node_stays_drained("gpu-node-3", watch_s=0, rma=False, configuration=CONFIG) is True
    assert health.node_stays_drained("gpu-node-3", watch_s=0, configuration=CONFIG) is False


def test_a_wait_rides_out_an_unreachable_host_and_reraises_at_the_end(
    fake: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(polling, "POLL_S", 0.0)
    answers = iter([(255, ""), (255, ""), (0, "1010\n" + prom())])
    fake.answers["gpu_health.prom"] = lambda _host: next(answers)
    assert health.node_undrained("gpu-node-3", wait_s=30, configuration=CONFIG) is True
    fake.answers["gpu_health.prom"] = lambda _host: (255, "")
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(polling.time, "monotonic", lambda: float(next(clock)))
    with pytest.raises(ActivityFailed, match="gpu-node-3: unreachable"):
        health.node_undrained("gpu-node-3", wait_s=30, configuration=CONFIG)


def test_live_is_any_state_of_a_live_fresh_agent(fake: FakeTransport) -> None:
    serve_prom(fake, {"gpu-node-3": prom(drained=1, rma=1, phase="rma"), "gpu-node-1": prom(dry_run=1)})
    assert health.gpu_health_live("gpu-node-3", configuration=CONFIG) is True
    assert health.gpu_health_live("gpu-node-1", configuration=CONFIG) is False
    serve_prom(fake, {"gpu-node-3": prom()}, clock=5000)
    assert health.gpu_health_live("gpu-node-3", configuration=CONFIG) is False


def test_prometheus_holds_when_the_filter_returns_a_series(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[list[dict[str, Any]]] = [[{"metric": {"gpu": "2"}, "value": 80.0}], []]
    asked: list[str] = []

    def query(q: str, **_kwargs: Any) -> list[dict[str, Any]]:
        asked.append(q)
        return answers.pop(0)

    monkeypatch.setattr(health, "prometheus_query", query)
    assert health.prometheus_holds("DCGM_FI_DEV_GPU_TEMP >= 75", configuration=CONFIG) is True
    assert health.prometheus_holds("DCGM_FI_DEV_GPU_TEMP >= 75", configuration=CONFIG) is False
    assert asked == ["DCGM_FI_DEV_GPU_TEMP >= 75"] * 2


def test_prometheus_holds_waits_by_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Any] = [[], ActivityFailed("Prometheus restarting"), [{"metric": {}, "value": [0, "0"]}]]
    monkeypatch.setattr(health, "prometheus_query", lambda _q, **_kwargs: _next(answers))
    monkeypatch.setattr(polling.time, "sleep", lambda _s: None)
    assert health.prometheus_holds("up == 0", wait_s=30, configuration=CONFIG) is True
    assert answers == []
    answers += [[], [], []]  # never holds: three polls at 0, 10 and 40 s of a 30 s wait
    clock = iter([0.0, 0.0, 10.0, 40.0])
    monkeypatch.setattr(polling.time, "monotonic", lambda: next(clock))
    assert health.prometheus_holds("up == 0", wait_s=30, configuration=CONFIG) is False
    assert answers == []


def _next(answers: list[Any]) -> Any:
    answer = answers.pop(0)
    if isinstance(answer, Exception):
        raise answer
    return answer


@pytest.mark.parametrize(
    ("text", "clock", "ready"),
    [
        (prom(), 1010, True),
        (prom(dry_run=1), 1010, False),
        (prom(phase="recovering"), 1010, False),
        (prom(drained=1), 1010, False),
        (prom(), 1200, False),  # the last poll is 200 s old: the agent is stuck
    ],
)
def test_ready_is_a_live_healthy_fresh_agent(fake: FakeTransport, text: str, clock: float, ready: bool) -> None:
    serve_prom(fake, {"gpu-node-3": text}, clock)
    assert health.gpu_health_ready("gpu-node-3", configuration=CONFIG) is ready


def test_saw_xid_on_one_gpu_or_any(fake: FakeTransport) -> None:
    serve_prom(fake, {"gpu-node-3": prom(xid=94)})
    assert health.gpu_health_saw_xid("gpu-node-3", 94, configuration=CONFIG) is True
    assert health.gpu_health_saw_xid("gpu-node-3", 94, gpu=0, configuration=CONFIG) is True
    assert health.gpu_health_saw_xid("gpu-node-3", 94, gpu=1, configuration=CONFIG) is False
    assert health.gpu_health_saw_xid("gpu-node-3", 79, configuration=CONFIG) is False


def test_saw_xid_within_counts_only_a_recent_xid(fake: FakeTransport) -> None:
    # The host's clock says 1010; the agent read XID 94 at 990 (20 s ago), then at 900 (110 s ago, an earlier run).
    serve_prom(fake, {"gpu-node-3": prom(xid=94, xid_at=990)}, clock=1010)
    assert health.gpu_health_saw_xid("gpu-node-3", 94, within_s=30, configuration=CONFIG) is True
    assert health.gpu_health_saw_xid("gpu-node-3", 94, gpu=0, within_s=10, configuration=CONFIG) is False
    serve_prom(fake, {"gpu-node-3": prom(xid=94, xid_at=900)}, clock=1010)
    assert health.gpu_health_saw_xid("gpu-node-3", 94, configuration=CONFIG) is True  # the gauge alone is sticky
    assert health.gpu_health_saw_xid("gpu-node-3", 94, within_s=60, configuration=CONFIG) is False


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: health.node_drained("gpu-node-3", wait_s=-1, configuration=CONFIG), "wait_s"),
        (lambda: health.node_undrained("gpu-node-3", wait_s=4000, configuration=CONFIG), "wait_s"),
        (lambda: health.gpu_health_saw_xid("gpu-node-3", 0, configuration=CONFIG), "xid"),
        (lambda: health.gpu_health_saw_xid("gpu-node-3", 79, gpu=-2, configuration=CONFIG), "gpu"),
        (lambda: health.gpu_health_saw_xid("gpu-node-3", 79, within_s=-1, configuration=CONFIG), "within_s"),
        (lambda: health.gpu_health_ready("gpu-node-3", max_poll_age_s=0, configuration=CONFIG), "max_poll_age_s"),
        (lambda: health.slurm_node_state("gpu-node-3; reboot", configuration=CONFIG), "node"),
        (lambda: training.training_job("a job", configuration=CONFIG), "job_name"),
        (lambda: training.training_progress("relative/dir", configuration=CONFIG), "directory"),
        (lambda: training.training_resumed("/srv/shared/t", max_resume_s=-1, configuration=CONFIG), "max_resume_s"),
        (
            lambda: training_actions.submit_training_job("t", "x.py", "/srv/../etc", configuration=CONFIG),
            "directory",
        ),
        (
            lambda: training_actions.submit_training_job("t", "x.py", "/srv/t", step_s=0, configuration=CONFIG),
            "step_s",
        ),
    ],
)
def test_bad_input_is_refused_before_any_host_is_reached(fake: FakeTransport, call: Any, parameter: str) -> None:
    with pytest.raises(ActivityFailed, match=parameter):
        call()
    assert fake.calls == []


# --- Slurm -----------------------------------------------------------------------------------------------------------

DRAINED = (
    "NodeName=gpu-node-3 Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUTot=2 Gres=gpu:h100:8 NodeAddr=172.30.99.13 "
    "State=IDLE+DRAIN ThreadsPerCore=1 Partitions=h100 Reason=gpu_health: xid79@0000:18:00 drain_reboot "
    "[root@2024-05-01T10:00:00]\n"
)


@pytest.mark.parametrize(
    ("line", "state", "available"),
    [
        (DRAINED, "IDLE+DRAIN", False),
        (
            DRAINED.replace("IDLE+DRAIN", "IDLE").replace("Reason=gpu_health: xid79@0000:18:00 drain_reboot ", ""),
            "IDLE",
            True,
        ),
        (DRAINED.replace("IDLE+DRAIN", "DOWN*"), "DOWN*", False),
        (DRAINED.replace("IDLE+DRAIN", "MIXED"), "MIXED", True),
    ],
)
def test_slurm_node_lines_are_parsed(line: str, state: str, available: bool) -> None:
    parsed = parse_slurm_node(line)
    assert (parsed["node"], parsed["state"], parsed["available"]) == ("gpu-node-3", state, available)


def test_slurm_node_state_asks_the_controller(fake: FakeTransport) -> None:
    fake.answers["scontrol -o show node gpu-node-3"] = lambda _host: (0, DRAINED)
    state = health.slurm_node_state("gpu-node-3", configuration=CONFIG)
    assert state["reason"].startswith("gpu_health: xid79")
    assert state["flags"] == ["IDLE", "DRAIN"]
    assert [host for host, _, _ in fake.calls] == ["ops-1"]
    assert health.slurm_node_available("gpu-node-3", configuration=CONFIG) is False


def test_slurm_without_an_answer_fails_naming_the_controller(fake: FakeTransport) -> None:
    fake.answers["scontrol"] = lambda _host: (1, "slurm_load_node error: Unable to contact slurm controller")
    with pytest.raises(ActivityFailed, match="ops-1: scontrol -o show node gpu-node-3 exited 1"):
        health.slurm_node_state("gpu-node-3", configuration=CONFIG)


# --- clear_rma -------------------------------------------------------------------------------------------------------


def test_clear_rma_runs_the_agents_cli_only_where_marked(fake: FakeTransport) -> None:
    serve_prom(fake, {"gpu-node-1": prom(), "gpu-node-3": prom(drained=1, rma=1, phase="rma")})
    fake.answers["--clear-rma"] = lambda _host: (0, "clear-rma requested")
    done = health_actions.clear_rma("gpu-node-1:gpu-node-3", configuration=CONFIG)
    assert done == {"cleared": ["gpu-node-3"], "undrained": None}
    cleared = [(host, command) for host, command, _ in fake.calls if "--clear-rma" in command]
    assert len(cleared) == 1
    host, command = cleared[0]
    assert host == "gpu-node-3"
    assert "sudo -n env PYTHONPATH=" in command
    assert "python3 -m gpu_health_agent --config /etc/gpu_health/agent.json --clear-rma" in command


def test_clear_rma_waits_for_the_undrain_and_fails_when_it_does_not_come(
    fake: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_prom(fake, {"gpu-node-3": prom(drained=1, rma=1, phase="rma")})
    fake.answers["--clear-rma"] = lambda _host: (0, "")
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(polling.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(polling.time, "sleep", lambda _s: None)
    with pytest.raises(ActivityFailed, match=r"still drained or marked 30 s later: gpu-node-3: drained=True rma=True"):
        health_actions.clear_rma("gpu-node-3", wait_s=30, configuration=CONFIG)


# --- training records ------------------------------------------------------------------------------------------------


def records(*lines: dict[str, Any]) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


def interrupted_run(torn: bool = False) -> str:
    """Job 7 on gpu-node-1: steps every second from t=100, checkpoints at steps 30 and 60; power lost after step 75
    (t=175); requeued, it starts on gpu-node-2 at t=400, resumes from step 60 and makes its first step at t=401."""
    lines: list[dict[str, Any]] = [
        {"event": "start", "time": 100.0, "host": "gpu-node-1", "job_id": "7", "restart": 0, "resumed_from": 0}
    ]
    for step in range(1, 76):
        lines.append({"event": "step", "time": 100.0 + step, "host": "gpu-node-1", "job_id": "7", "step": step})
        if step in (30, 60):
            lines.append({"event": "checkpoint", "time": 100.2 + step, "host": "gpu-node-1", "step": step})
    lines += [
        {"event": "start", "time": 400.0, "host": "gpu-node-2", "job_id": "7", "restart": 1, "resumed_from": 60},
        {"event": "step", "time": 401.0, "host": "gpu-node-2", "job_id": "7", "step": 61},
    ]
    text = records(*lines)
    return text + ('{"event": "step", "ti' if torn else "")


def test_resume_time_and_work_lost_come_from_the_records() -> None:
    summary = summarize(interrupted_run())
    assert [run["host"] for run in summary["runs"]] == ["gpu-node-1", "gpu-node-2"]
    assert summary["runs"][0]["checkpoints"] == 2
    assert summary["runs"][0]["last_checkpoint_time"] == pytest.approx(160.2)
    assert summary["runs"][1]["last_checkpoint_time"] is None
    (gap,) = summary["interruptions"]
    assert gap["moved"] is True
    assert gap["resumed_from"] == 60
    assert gap["lost_steps"] == 15
    assert gap["resume_s"] == pytest.approx(401.0 - 175.0)
    assert gap["work_lost_s"] == pytest.approx(175.0 - 160.2)
    assert summary["last_step"] == 61
    assert summary["done"] is False


def test_a_torn_last_line_is_skipped_but_a_torn_middle_line_is_refused() -> None:
    assert summarize(interrupted_run(torn=True))["last_step"] == 61
    broken = interrupted_run().replace('"step": 40}', '"step": 4', 1)
    with pytest.raises(RecordsError, match=r"line \d+: not JSON"):
        summarize(broken)


def test_a_resume_from_a_checkpoint_nobody_wrote_is_refused() -> None:
    with pytest.raises(RecordsError, match="resumed from step 50, a checkpoint no earlier run recorded"):
        summarize(interrupted_run().replace('"resumed_from": 60', '"resumed_from": 50'))


def test_a_restart_from_scratch_loses_the_whole_run() -> None:
    text = records(
        {"event": "start", "time": 10.0, "host": "a", "restart": 0, "resumed_from": 0},
        {"event": "step", "time": 11.0, "host": "a", "step": 1},
        {"event": "step", "time": 12.0, "host": "a", "step": 2},
        {"event": "start", "time": 50.0, "host": "a", "restart": 1, "resumed_from": 0},
    )
    (gap,) = summarize(text)["interruptions"]
    assert (gap["work_lost_s"], gap["lost_steps"], gap["resume_s"], gap["moved"]) == (2.0, 2, None, False)


@pytest.fixture
def served_records(fake: FakeTransport) -> Callable[[str], None]:
    def serve(text: str) -> None:
        fake.answers["records.jsonl"] = lambda _host: (0, "500\n" + text)

    return serve


def test_training_resumed_judges_the_bounds(fake: FakeTransport, served_records: Callable[[str], None]) -> None:
    served_records(interrupted_run())
    assert training.training_resumed("/srv/shared/t", configuration=CONFIG) is True
    assert training.training_resumed("/srv/shared/t", max_resume_s=300, max_work_lost_s=30, configuration=CONFIG)
    assert not training.training_resumed("/srv/shared/t", max_resume_s=200, configuration=CONFIG)
    assert not training.training_resumed("/srv/shared/t", max_work_lost_s=10, configuration=CONFIG)
    assert fake.calls[0][0] == "ops-1"
    assert "cat /srv/shared/t/records.jsonl" in fake.calls[0][1]


def test_training_resumed_wants_another_host_unless_told(served_records: Callable[[str], None]) -> None:
    served_records(interrupted_run().replace('"host": "gpu-node-2"', '"host": "gpu-node-1"'))
    assert training.training_resumed("/srv/shared/t", configuration=CONFIG) is False
    assert training.training_resumed("/srv/shared/t", other_host=False, configuration=CONFIG) is True


def test_training_checkpointed_waits_for_progress_past_a_checkpoint(served_records: Callable[[str], None]) -> None:
    # The current run: started at 100, checkpoint at 130.2, last step at 140: 9.8 s past its checkpoint.
    lines: list[dict[str, Any]] = [{"event": "start", "time": 100.0, "host": "gpu-node-1", "restart": 0}]
    lines += [{"event": "step", "time": 100.0 + n, "host": "gpu-node-1", "step": n} for n in range(1, 41)]
    lines.insert(31, {"event": "checkpoint", "time": 130.2, "host": "gpu-node-1", "step": 30})
    served_records(records(*lines))
    assert training.training_checkpointed("/srv/shared/t", past_checkpoint_s=9, configuration=CONFIG) is True
    assert training.training_checkpointed("/srv/shared/t", past_checkpoint_s=10, configuration=CONFIG) is False
    served_records(records(*[line for line in lines if line["event"] != "checkpoint"]))  # no checkpoint yet
    assert training.training_checkpointed("/srv/shared/t", configuration=CONFIG) is False
    # After a restart only the new run counts: it has not checkpointed yet.
    served_records(interrupted_run())
    assert training.training_checkpointed("/srv/shared/t", configuration=CONFIG) is False
    with pytest.raises(ActivityFailed, match="past_checkpoint_s"):
        training.training_checkpointed("/srv/shared/t", past_checkpoint_s=-1, configuration=CONFIG)


def test_training_checkpointed_waits_for_a_job_that_has_not_started(
    fake: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([(1, "500\ncat: records.jsonl: No such file or directory"), (0, "501\n" + interrupted_run())])
    answers_2 = (
        0,
        "502\n"
        + records(
            {"event": "start", "time": 1.0, "host": "a"}, {"event": "checkpoint", "time": 2.0, "host": "a", "step": 1}
        ),
    )
    fake.answers["records.jsonl"] = lambda _host: next(answers, answers_2)
    monkeypatch.setattr(polling.time, "sleep", lambda _s: None)
    assert training.training_checkpointed("/srv/shared/t", wait_s=30, configuration=CONFIG) is True
    fake.answers["records.jsonl"] = lambda _host: (1, "503\ncat: records.jsonl: No such file or directory")
    with pytest.raises(ActivityFailed, match="No such file"):  # never started within the wait: the reason is given
        training.training_checkpointed("/srv/shared/t", wait_s=0, configuration=CONFIG)


# --- Slurm jobs ------------------------------------------------------------------------------------------------------

JOBS = (
    "JobId=6 JobName=other UserId=operator(1000) JobState=RUNNING Reason=None Restarts=0 NodeList=gpu-node-1 "
    "BatchHost=gpu-node-1\n"
    "JobId=7 JobName=chaos-train UserId=operator(1000) JobState=RUNNING Reason=None Restarts=1 "
    "NodeList=gpu-node-2 BatchHost=gpu-node-2\n"
    "JobId=5 JobName=chaos-train UserId=operator(1000) JobState=CANCELLED Reason=None Restarts=0 "
    "NodeList=gpu-node-1 BatchHost=gpu-node-1\n"
)


def test_training_job_is_the_newest_job_of_that_name(fake: FakeTransport) -> None:
    fake.answers["scontrol -o show job"] = lambda _host: (0, JOBS)
    assert training.training_job("chaos-train", configuration=CONFIG) == {
        "job_id": "7",
        "state": "RUNNING",
        "node": "gpu-node-2",
        "restarts": 1,
        "reason": "None",
    }
    assert training.training_job("missing", configuration=CONFIG)["state"] == ""


def test_submit_sends_the_script_to_sbatch_requeue(fake: FakeTransport, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("#!/usr/bin/env python3\nprint('train')\n")
    fake.answers["scontrol -o show job"] = lambda _host: (0, "")
    fake.answers["sbatch"] = lambda _host: (0, "42\n")
    done = training_actions.submit_training_job(
        "chaos-train", str(script), "/srv/shared/chaos-train", checkpoint_interval_s=20, configuration=CONFIG
    )
    assert done == {"job_id": "42", "directory": "/srv/shared/chaos-train", "controller": "ops-1"}
    host, command, stdin = fake.calls[-1]
    assert host == "ops-1"
    assert (
        "sbatch --parsable --requeue --nodes=1 --ntasks=1 --gres=gpu:1 -J chaos-train -D /srv/shared/chaos-train"
        in command
    )
    assert "CHECKPOINT_INTERVAL_S=20" in command
    assert "rm -f /srv/shared/chaos-train/records.jsonl" in command
    assert stdin == script.read_text()


def test_submit_is_refused_while_the_job_still_runs(fake: FakeTransport, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("#!/bin/sh\n")
    fake.answers["scontrol -o show job"] = lambda _host: (0, JOBS)
    with pytest.raises(ActivityFailed, match=r"job chaos-train \(7\) is still RUNNING"):
        training_actions.submit_training_job("chaos-train", str(script), "/srv/shared/t", configuration=CONFIG)
    assert not any("sbatch" in command for _, command, _ in fake.calls)


def test_power_off_needs_a_running_job(fake: FakeTransport) -> None:
    fake.answers["scontrol -o show job"] = lambda _host: (
        0,
        JOBS.replace("JobState=RUNNING Reason=None Restarts=1", "JobState=PENDING Reason=BeginTime Restarts=1"),
    )
    with pytest.raises(ActivityFailed, match="job chaos-train is not running"):
        training_actions.power_off_training_node("chaos-train", configuration=CONFIG)


def test_the_trainer_script_writes_the_records_summarize_reads(tmp_path: Path) -> None:
    """The real trainer, two short runs: the second resumes from the first's checkpoint."""
    root = Path(__file__).resolve().parents[3]
    env = os.environ | {"TRAINING_DIR": str(tmp_path), "STEP_S": "0.01", "CHECKPOINT_INTERVAL_S": "0.05"}
    script = str(root / "experiments" / "lab" / "files" / "fake_training.py")
    subprocess.run([sys.executable, script], env=env | {"TOTAL_STEPS": "10"}, check=True, timeout=60)
    subprocess.run([sys.executable, script], env=env | {"TOTAL_STEPS": "15"}, check=True, timeout=60)
    summary = summarize((tmp_path / "records.jsonl").read_text())
    assert [run["resumed_from"] for run in summary["runs"]] == [0, 10]
    assert summary["done"] is True
    assert summary["last_step"] == 15
    (gap,) = summary["interruptions"]
    assert gap["lost_steps"] == 0


def _counter(value: float) -> list[dict[str, Any]]:
    return [{"metric": {"code": "200"}, "value": value}]


def test_prometheus_increases_waits_until_the_counter_grew_by_at_least(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 at the start; a failed scrape (no series) in between; a restart (2 < 11) counts from zero again
    answers: list[Any] = [_counter(10), _counter(10), _counter(11), [], _counter(2)]
    monkeypatch.setattr(health, "prometheus_query", lambda _q, **_kwargs: _next(answers))
    monkeypatch.setattr(polling.time, "sleep", lambda _s: None)
    assert health.prometheus_increases("scrapes_total", at_least=3, wait_s=60, configuration=CONFIG) is True
    assert answers == []


def test_prometheus_increases_is_false_when_the_wait_ends_first(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Any] = [_counter(10), _counter(11), _counter(12)]
    monkeypatch.setattr(health, "prometheus_query", lambda _q, **_kwargs: _next(answers))
    monkeypatch.setattr(polling.time, "sleep", lambda _s: None)
    clock = iter([0.0, 10.0, 40.0])  # a 30 s wait from 0: polls at 10 and 40 s, grew by 2 of 3
    monkeypatch.setattr(polling.time, "monotonic", lambda: next(clock))
    assert health.prometheus_increases("scrapes_total", at_least=3, wait_s=30, configuration=CONFIG) is False


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"at_least": 0}, "at_least must be a positive number"),
        ({"at_least": True}, "at_least must be a positive number"),
        ({"at_least": 3, "wait_s": -1}, "wait_s must be between"),
    ],
)
def test_prometheus_increases_refuses_bad_arguments(
    monkeypatch: pytest.MonkeyPatch, arguments: dict[str, Any], message: str
) -> None:
    monkeypatch.setattr(health, "prometheus_query", lambda _q, **_kwargs: pytest.fail("asked Prometheus"))
    with pytest.raises(ActivityFailed, match=message):
        health.prometheus_increases("scrapes_total", configuration=CONFIG, **arguments)


def test_prometheus_increases_fails_at_once_on_a_query_that_matches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "prometheus_query", lambda _q, **_kwargs: [])
    with pytest.raises(ActivityFailed, match="'scrapes_totl' matches no series"):
        health.prometheus_increases("scrapes_totl", at_least=3, wait_s=60, configuration=CONFIG)
