"""Planned maintenance through the agent's drain plugins: --maintenance-start / --maintenance-end, the marker in the
state dir, and the running agent holding back undrain, reset and reboot while it exists. Real files in tmp dirs;
scontrol and kubectl answered by a recording runner."""

from __future__ import annotations

import json

import pytest
from agenthelpers import GPUS, IDLE, Driver, FakeClock, RecordingRunner, config, engine, healthy_poll, xid
from gpu_health_agent import maintenance
from gpu_health_agent.agent import Agent
from gpu_health_agent.cli import main
from gpu_health_agent.engine import RECOVERING, State
from gpu_health_agent.events import Poll
from gpu_health_agent.journal import Journal
from gpu_health_agent.runner import RunResult

REASON = "driver upgrade 535.216.01"
OURS = "NodeName=gpu-node-1 State=IDLE+DRAIN Reason=gpu_health: maintenance: driver upgrade [root@2026-01-01]"


def _config(tmp_path, dry_run=False, slurm=True, kubernetes=False):
    actions = {"drain_file": {"path": str(tmp_path / "drain.json")}, "slurm": {"enabled": slurm}}
    if kubernetes:
        actions["kubernetes"] = {"enabled": True}
    return config(state_dir=str(tmp_path / "state"), actions=actions, dry_run=dry_run)


def _runner(shown=OURS, fail=None):
    """scontrol show answers ``shown``; a command starting with ``fail`` fails with rc 1."""

    def respond(argv):
        if fail and argv[: len(fail)] == fail:
            return RunResult(argv, 1, "", "slurm_update error: Invalid node name specified")
        if argv[:3] == ("scontrol", "-o", "show"):
            return RunResult(argv, 0, shown)
        return None

    return RecordingRunner([respond])


def _agent_state(tmp_path, **values):
    (tmp_path / "state").mkdir(parents=True, exist_ok=True)
    (tmp_path / "state" / "state.json").write_text(json.dumps(State(**values).to_json()))


def _marker(tmp_path):
    return maintenance.active(str(tmp_path / "state"))


def test_start_writes_the_marker_and_drains_through_every_enabled_plugin(tmp_path):
    runner = _runner()
    out = maintenance.start(_config(tmp_path, kubernetes=True), REASON, "ops", runner, FakeClock())
    assert (out.rc, out.changed) == (0, True)
    assert _marker(tmp_path) == {"reason": REASON, "since": 1_800_000_000.0, "by": "ops", "drained": True}
    drain = json.loads((tmp_path / "drain.json").read_text())
    assert (drain["drained"], drain["rma"], drain["reason"]) == (True, False, f"gpu_health: maintenance: {REASON}")
    assert (
        "scontrol",
        "update",
        "nodename=gpu-node-1",
        "state=drain",
        f"reason=gpu_health: maintenance: {REASON}",
    ) in (runner.calls)
    assert any(call[1:3] == ("cordon", "gpu-node-1") for call in runner.calls)


def test_start_twice_changes_nothing_the_second_time(tmp_path):
    cfg, runner = _config(tmp_path), _runner()
    maintenance.start(cfg, REASON, "ops", runner, FakeClock())
    before, calls = (tmp_path / "drain.json").read_text(), len(runner.calls)
    again = maintenance.start(cfg, REASON, "ops", runner, FakeClock(1_800_000_100.0))
    assert (again.rc, again.changed) == (0, False)
    assert "already under maintenance" in again.message
    assert (tmp_path / "drain.json").read_text() == before
    assert len(runner.calls) == calls


def test_a_failed_drain_keeps_the_marker_and_says_which_backend(tmp_path):
    cfg = _config(tmp_path)
    out = maintenance.start(cfg, REASON, "ops", _runner(fail=("scontrol", "update")), FakeClock())
    assert out.rc == maintenance.RC_FAILED
    assert "slurm" in out.message
    assert "Invalid node name" in out.message
    assert _marker(tmp_path)["drained"] is False  # the agent must not undrain a half-drained node
    retry = maintenance.start(cfg, REASON, "ops", _runner(), FakeClock())  # not "already": the drain runs again
    assert (retry.rc, retry.changed, _marker(tmp_path)["drained"]) == (0, True, True)


def test_start_keeps_the_incident_drain_of_a_node_the_agent_holds(tmp_path):
    _agent_state(tmp_path, phase=RECOVERING, drained=True)
    runner = _runner()
    out = maintenance.start(_config(tmp_path), REASON, "ops", runner, FakeClock())
    assert (out.rc, out.changed) == (0, True)
    assert "stays drained by gpu_health" in out.message
    assert runner.calls == []  # the incident's drain and its reason stay as they are
    assert not (tmp_path / "drain.json").exists()
    assert _marker(tmp_path)["drained"] is True


def test_end_undrains_and_removes_the_marker(tmp_path):
    cfg, runner = _config(tmp_path), _runner()
    maintenance.start(cfg, REASON, "ops", runner, FakeClock())
    out = maintenance.end(cfg, runner, FakeClock())
    assert (out.rc, out.changed) == (0, True)
    assert _marker(tmp_path) is None
    assert not (tmp_path / "drain.json").exists()
    assert runner.calls[-1] == ("scontrol", "update", "nodename=gpu-node-1", "state=resume")


def test_end_on_a_node_not_under_maintenance_does_nothing(tmp_path):
    runner = _runner()
    out = maintenance.end(_config(tmp_path), runner, FakeClock())
    assert (out.rc, out.changed) == (0, False)
    assert "not under maintenance" in out.message
    assert runner.calls == []


@pytest.mark.parametrize(
    ("held", "words"),
    [
        ({"drained": True, "phase": RECOVERING}, "drained for an incident"),
        ({"drained": True, "rma": True, "rma_reason": "XID 79 twice", "phase": "rma"}, "marked for RMA (XID 79 twice)"),
    ],
)
def test_end_never_undrains_a_node_the_agent_holds_for_an_incident_or_rma(tmp_path, held, words):
    cfg, runner = _config(tmp_path), _runner()
    maintenance.start(cfg, REASON, "ops", runner, FakeClock())
    _agent_state(tmp_path, **held)  # an incident during the maintenance: the agent drained the node itself
    calls = len(runner.calls)
    out = maintenance.end(cfg, runner, FakeClock())
    assert out.rc == maintenance.RC_HELD
    assert words in out.message
    assert "stays drained" in out.message
    assert (tmp_path / "drain.json").exists()
    assert all("state=resume" not in call for call in runner.calls[calls:])
    assert _marker(tmp_path) is None  # maintenance is over; the agent undrains when its incident is


def test_a_failed_undrain_keeps_the_maintenance(tmp_path):
    cfg = _config(tmp_path)
    maintenance.start(cfg, REASON, "ops", _runner(), FakeClock())
    out = maintenance.end(cfg, _runner(fail=("scontrol", "update")), FakeClock())
    assert out.rc == maintenance.RC_FAILED
    assert _marker(tmp_path) is not None


def test_dry_run_describes_and_changes_nothing(tmp_path):
    cfg, runner = _config(tmp_path, dry_run=True), _runner()
    out = maintenance.start(cfg, REASON, "ops", runner, FakeClock())
    assert (out.rc, out.changed) == (0, False)
    assert out.message.startswith("dry run")
    assert _marker(tmp_path) is None
    assert not (tmp_path / "drain.json").exists()
    assert all(call[:2] != ("scontrol", "update") for call in runner.calls)
    assert any("would run: scontrol update" in step for step in out.done)
    maintenance.start(_config(tmp_path), REASON, "ops", _runner(), FakeClock())  # now for real
    ended = maintenance.end(cfg, runner, FakeClock())
    assert (ended.rc, ended.changed) == (0, False)
    assert _marker(tmp_path) is not None
    assert (tmp_path / "drain.json").exists()


def test_hold_names_the_maintenance_for_undrain_reset_and_reboot_only(tmp_path):
    why = maintenance.hold(str(tmp_path / "state"))
    assert why("undrain") == ""
    maintenance.start(_config(tmp_path), REASON, "ops", _runner(), FakeClock())
    assert all(REASON in why(step) for step in ("undrain", "reset", "reboot"))
    assert why("drain") == ""
    assert why("rma") == ""


def test_the_engine_holds_the_undrain_until_maintenance_ends(tmp_path):
    cfg = _config(tmp_path)
    eng = engine(undrain_after_s=60, reset_grace_s=0)
    eng.hold = maintenance.hold(cfg.state_dir)
    drv = Driver(eng)
    drv.boot("boot-1")
    drv.send(healthy_poll())
    assert drv.names(drv.send(Poll((xid(48, 1),), GPUS, IDLE))) == ["drain", "reset"]
    maintenance.start(cfg, REASON, "ops", _runner(), FakeClock())
    for _ in range(5):  # healthy long past undrain_after_s: held, not undrained
        drv.clock.advance(60)
        assert drv.send(healthy_poll()) == []
    assert drv.state.drained
    assert drv.state.incident.blocked == "undrain:maintenance"
    assert any(n.event == "action_held" and REASON in n.message for n in drv.notes)
    (tmp_path / "state" / "state.json").write_text(json.dumps(drv.state.to_json()))  # as the agent saves it
    assert maintenance.end(cfg, _runner(), FakeClock()).rc == maintenance.RC_HELD  # the agent's drain stays
    assert (tmp_path / "drain.json").exists()
    drv.clock.advance(10)
    assert drv.names(drv.send(healthy_poll())) == ["undrain"]  # now the agent's own undrain runs


def test_the_engine_holds_a_reboot_during_maintenance(tmp_path):
    cfg = _config(tmp_path)
    maintenance.start(cfg, REASON, "ops", _runner(), FakeClock())
    eng = engine(undrain_after_s=60)
    eng.hold = maintenance.hold(cfg.state_dir)
    drv = Driver(eng)
    drv.boot("boot-1")
    drv.send(healthy_poll())
    lost = Poll((xid(79, 2),), tuple(g for g in GPUS if g.index != 2), IDLE)
    assert drv.names(drv.send(lost)) == ["drain"]  # drained (harmless), the reboot waits
    assert drv.state.incident.blocked == "reboot:maintenance"
    maintenance.end(cfg, _runner(), FakeClock())
    drv.clock.advance(10)
    assert drv.names(drv.send(lost)) == ["reboot"]


def test_the_agent_consults_the_marker_in_its_state_dir(tmp_path):
    cfg = _config(tmp_path)
    agent = Agent(cfg, _runner(), FakeClock(), Journal(clock=FakeClock()), sources=[], plugins=[])
    assert agent.engine.hold is not None
    assert agent.engine.hold("undrain") == ""
    maintenance.start(cfg, REASON, "ops", _runner(), FakeClock())
    assert REASON in agent.engine.hold("undrain")


def test_cli_prints_json_and_exits_with_the_outcome(tmp_path, capsys):
    cfg_file = tmp_path / "agent.json"
    state = tmp_path / "state"
    data = {"node_name": "gpu-node-1", "state_dir": str(state),
            "actions": {"drain_file": {"path": str(tmp_path / "drain.json")}}}  # fmt: skip
    cfg_file.write_text(json.dumps(data))
    assert main(["--config", str(cfg_file), "--maintenance-start", REASON]) == 0
    started = json.loads(capsys.readouterr().out)
    assert (started["command"], started["changed"], started["node"]) == ("maintenance-start", True, "gpu-node-1")
    assert main(["--config", str(cfg_file), "--dry-run", "--maintenance-end"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
    assert (tmp_path / "drain.json").exists()
    (state / "state.json").write_text(json.dumps(State(drained=True, phase=RECOVERING).to_json()))
    assert main(["--config", str(cfg_file), "--maintenance-end"]) == maintenance.RC_HELD
    assert "stays drained" in json.loads(capsys.readouterr().out)["message"]
    assert main(["--config", str(cfg_file), "--maintenance-end"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False


def test_cli_maintenance_drains_even_when_the_agent_is_on_trial(tmp_path, capsys):
    """The config's dry_run is a trial of the agent's own reactions; an operator's maintenance drain still happens
    (an upgrade must not run under live jobs), and only the command line's --dry-run previews it."""
    cfg_file = tmp_path / "agent.json"
    drain = tmp_path / "drain.json"
    data = {"node_name": "gpu-node-1", "state_dir": str(tmp_path / "state"), "dry_run": True,
            "actions": {"drain_file": {"path": str(drain)}}}  # fmt: skip
    cfg_file.write_text(json.dumps(data))
    assert main(["--config", str(cfg_file), "--dry-run", "--maintenance-start", REASON]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
    assert not drain.exists()
    assert main(["--config", str(cfg_file), "--maintenance-start", REASON]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True
    assert json.loads(drain.read_text())["drained"] is True
    assert main(["--config", str(cfg_file), "--maintenance-end"]) == 0
    assert not drain.exists()
