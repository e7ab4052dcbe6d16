"""The policy engine as a state machine with a fake clock: the proven reactions of issue 8, guards, timings."""

from __future__ import annotations

import json
import re

import pytest
from agenthelpers import GPUS, IDLE, PCI, Driver, FakeClock, engine, healthy_poll, lost, poll_without, started, xid
from gpu_health_agent.engine import AWAITING_BOOT, HEALTHY, RECOVERING, RMA, State, Verdict
from gpu_health_agent.events import ActionResult, Boot, ClearRma, Finding, GpuInfo, Poll
from gpu_health_agent.metrics import render


def dcgm(kind: str, gpu: int, system: str) -> Finding:
    return Finding(kind, "dcgm", gpu=gpu, system=system, detail=f"{system} {kind}")


def recover_from_xid79(drv: Driver, gpu: int = 0, boot_id: str = "boot-2", undrain_after: float = 300) -> None:
    """XID 79 on ``gpu``: drained, rebooted, back, healthy for ``undrain_after`` s, undrained."""
    assert drv.names(drv.send(poll_without(gpu, xid(79, gpu)))) == ["drain", "reboot"]
    drv.clock.advance(90)
    assert drv.boot(boot_id) == []
    drv.send(healthy_poll())
    drv.clock.advance(undrain_after)
    assert drv.names(drv.send(healthy_poll())) == ["undrain"]


# --- the proven reactions -----------------------------------------------------------------------------------------


def test_xid79_drains_reboots_and_undrains_once_back_and_healthy():
    drv = started(engine(undrain_after_s=300))
    assert drv.names(drv.send(poll_without(2, xid(79, 2)))) == ["drain", "reboot"]
    assert (drv.state.phase, drv.state.drained) == (AWAITING_BOOT, True)
    assert drv.state.incident.decision == "drain_reboot"
    drv.clock.advance(10)
    assert drv.send(poll_without(2)) == []  # the lost GPU is the same incident: nothing more to do
    drv.clock.advance(110)
    assert drv.boot("boot-2") == []
    assert drv.state.phase == RECOVERING
    assert drv.send(healthy_poll()) == []
    drv.clock.advance(299)
    assert drv.send(healthy_poll()) == []
    drv.clock.advance(1)
    assert drv.names(drv.send(healthy_poll())) == ["undrain"]
    assert (drv.state.phase, drv.state.drained, drv.state.incident) == (HEALTHY, False, None)
    assert drv.names() == ["drain", "reboot", "undrain"]


def test_xid48_drains_resets_the_gpu_once_idle_and_undrains():
    drv = started(engine(undrain_after_s=300, reset_grace_s=30))
    sick = (xid(48, 1), dcgm("dcgm_fail", 1, "Memory"))
    acts = drv.send(Poll(sick, GPUS, {**IDLE, 1: 1}))  # the job that hit the error still holds the GPU
    assert drv.names(acts) == ["drain"]
    assert drv.state.incident.blocked == "reset:busy"
    drv.clock.advance(60)
    acts = drv.send(Poll(sick[1:], GPUS, IDLE))
    assert drv.names(acts) == ["reset"]
    assert (acts[0].gpu, acts[0].target) == (1, PCI[1])
    assert drv.state.phase == RECOVERING
    drv.clock.advance(10)
    assert drv.send(Poll(sick[1:], GPUS, IDLE)) == []  # what DCGM still says within the grace is not a new failure
    drv.clock.advance(30)
    assert drv.send(healthy_poll()) == []
    drv.clock.advance(300)
    assert drv.names(drv.send(healthy_poll())) == ["undrain"]
    assert drv.names() == ["drain", "reset", "undrain"]
    assert "reboot" not in drv.names()


@pytest.mark.parametrize(("number", "system"), [(94, "Memory"), (13, "SM"), (31, "SM"), (32, "SM"), (43, "SM")])
def test_application_xids_never_drain(number, system):
    """XID 94 and 13 (and 31, 32, 43): the application restarts; a drain would be over-remediation."""
    drv = started(engine())
    for _ in range(20):
        drv.send(healthy_poll(None, xid(number, 4), dcgm("dcgm_warn", 4, system)))
        drv.clock.advance(30)
    assert drv.actions == []
    assert (drv.state.phase, drv.state.drained, drv.state.incident, drv.state.rma) == (HEALTHY, False, None, False)
    assert "xid" in drv.events()
    assert "incident_opened" not in drv.events()


def test_row_remap_failure_drains_marks_rma_and_stays_drained():
    drv = started(engine(undrain_after_s=60))
    failure = Finding("remap_failure", "nvidia_smi", pci=PCI[3], gpu=3, detail="remapped_rows.failure: Yes")
    acts = drv.send(healthy_poll(None, failure, dcgm("dcgm_fail", 3, "Memory")))
    assert drv.names(acts) == ["drain", "rma"]
    assert (drv.state.phase, drv.state.rma, drv.state.drained) == (RMA, True, True)
    for _ in range(7 * 24):  # a week of healthy polls: no automatic undrain
        drv.clock.advance(3600)
        assert drv.send(healthy_poll()) == []
    assert drv.state.drained
    assert drv.names() == ["drain", "rma"]


def test_two_xid79_inside_the_window_mark_rma_without_a_second_reboot():
    drv = started(engine(undrain_after_s=300, repeat_window_s=86400))
    recover_from_xid79(drv, gpu=0)
    drv.clock.advance(3 * 3600)
    acts = drv.send(poll_without(0, xid(79, 0)))
    assert drv.names(acts) == ["drain", "rma"]
    assert drv.names() == ["drain", "reboot", "undrain", "drain", "rma"]
    assert drv.state.rma
    assert "repeated_failure" in drv.events()
    drv.clock.advance(86400)
    assert drv.send(healthy_poll()) == []


def test_second_xid79_before_the_undrain_marks_rma_without_a_reboot():
    drv = started(engine(undrain_after_s=300))
    drv.send(poll_without(0, xid(79, 0)))
    drv.clock.advance(90)
    drv.boot("boot-2")
    drv.send(healthy_poll())
    drv.clock.advance(100)
    assert drv.names(drv.send(poll_without(0, xid(79, 0)))) == ["rma"]  # still drained from the first
    assert drv.names() == ["drain", "reboot", "rma"]


def test_two_xid79_further_apart_than_the_window_reboot_again():
    drv = started(engine(undrain_after_s=300, repeat_window_s=86400))
    recover_from_xid79(drv, gpu=0)
    drv.clock.advance(2 * 86400)
    assert drv.names(drv.send(poll_without(0, xid(79, 0)))) == ["drain", "reboot"]
    assert not drv.state.rma


def test_gpu_still_lost_after_the_reboot_climbs_to_rma():
    drv = started(engine(undrain_after_s=300))
    drv.send(poll_without(5, xid(79, 5)))
    drv.clock.advance(90)
    drv.boot("boot-2")
    assert drv.names(drv.send(poll_without(5))) == ["rma"]
    assert "failure_recurred" in drv.events()
    assert drv.names() == ["drain", "reboot", "rma"]


def test_gpu_gone_from_nvidia_smi_drains_and_reboots():
    drv = started(engine())
    acts = drv.send(Poll((), tuple(g for g in GPUS if g.index != 6), IDLE))
    assert drv.names(acts) == ["drain", "reboot"]
    assert drv.state.incident.cause == "gpu_missing"


def test_fewer_gpus_than_expected_from_the_start_is_a_missing_gpu():
    drv = Driver(engine(expected_gpus=8))
    drv.boot("boot-1")
    acts = drv.send(Poll((), GPUS[:7], IDLE))
    assert drv.names(acts) == ["drain", "reboot"]


def test_dcgm_memory_failure_alone_drains_and_resets():
    drv = started(engine())
    assert drv.names(drv.send(healthy_poll(None, dcgm("dcgm_fail", 2, "Memory")))) == ["drain", "reset"]


def test_xid63_resets_when_idle_without_draining():
    drv = started(engine())
    acts = drv.send(healthy_poll(None, xid(63, 7)))
    assert drv.names(acts) == ["reset"]
    assert (drv.state.phase, drv.state.drained) == (HEALTHY, False)


# --- escalation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [48, 119])
def test_failed_gpu_reset_escalates_to_a_reboot(number):
    drv = started(engine(), outcomes={"reset": "failed"})
    assert drv.names(drv.send(healthy_poll(None, xid(number, 0)))) == ["drain", "reset", "reboot"]
    assert "escalated" in drv.events()
    assert drv.state.phase == AWAITING_BOOT


def test_lost_gpu_during_a_reset_incident_escalates_to_a_reboot():
    drv = started(engine())
    drv.send(Poll((xid(48, 0),), GPUS, {**IDLE, 0: 1}))  # drained, the reset waits for the job
    assert drv.names(drv.send(poll_without(3, xid(79, 3)))) == ["reboot"]


def test_policy_override_per_xid_changes_the_reaction():
    drv = started(engine(xid={"13": {"decision": "drain_reset"}, "79": {"rma_after": 3}}, undrain_after_s=60))
    assert drv.names(drv.send(healthy_poll(None, xid(13, 0)))) == ["drain", "reset"]
    drv.clock.advance(120)
    drv.send(healthy_poll())
    drv.clock.advance(60)
    drv.send(healthy_poll())
    recover_from_xid79(drv, gpu=1, boot_id="boot-2", undrain_after=60)
    drv.clock.advance(3600)
    recover_from_xid79(drv, gpu=1, boot_id="boot-3", undrain_after=60)  # rma_after 3: a second reboot
    drv.clock.advance(3600)
    assert drv.names(drv.send(poll_without(1, xid(79, 1)))) == ["drain", "rma"]


# --- guards -------------------------------------------------------------------------------------------------------


def test_reboots_per_hour_hold_a_reboot_until_the_hour_has_passed():
    eng = engine(max_reboots_per_hour=1, undrain_after_s=60, xid={"79": {"rma_after": 0}}, cooldown_s={"reboot": 0})
    drv = started(eng)
    first_reboot = drv.clock.now
    recover_from_xid79(drv, gpu=0, undrain_after=60)
    drv.clock.advance(600)
    assert drv.names(drv.send(poll_without(1, xid(79, 1)))) == ["drain"]
    assert drv.state.incident.blocked == "reboot:rate_limited"
    for _ in range(5):
        drv.clock.advance(300)
        assert drv.send(poll_without(1)) == []
    assert drv.state.action_total["reboot/rate_limited"] == 1  # counted (and logged) once while held
    drv.clock.now = first_reboot + 3600
    assert drv.names(drv.send(poll_without(1))) == ["reboot"]


def test_cooldown_spaces_the_retries_of_a_failed_drain():
    drv = started(engine(cooldown_s={"drain": 30}), outcomes={"drain": "failed"})
    assert drv.names(drv.send(healthy_poll(None, xid(95, 0)))) == ["drain"]
    drv.clock.advance(10)
    assert drv.send(healthy_poll()) == []
    assert drv.state.incident.blocked == "drain:cooldown"
    drv.clock.advance(25)
    assert drv.names(drv.send(healthy_poll())) == ["drain"]
    drv.outcomes["drain"] = "ok"
    drv.clock.advance(31)
    assert drv.names(drv.send(healthy_poll())) == ["drain", "reset"]
    assert drv.state.action_total["drain/failed"] == 2


def test_fleet_guard_holds_the_drain_back_until_it_allows_it():
    asked = []
    answer = {"allowed": False}

    def guard(action):
        asked.append(action)
        return Verdict(answer["allowed"], "3 nodes drained, max 3")

    drv = started(engine(guard))
    assert drv.send(healthy_poll(None, xid(48, 0))) == []
    assert drv.state.incident.blocked == "drain:vetoed"
    for _ in range(3):
        drv.clock.advance(10)
        assert drv.send(healthy_poll(None, dcgm("dcgm_fail", 0, "Memory"))) == []
    assert drv.state.action_total == {"drain/vetoed": 1}
    answer["allowed"] = True
    drv.clock.advance(10)
    assert drv.names(drv.send(healthy_poll())) == ["drain", "reset"]
    assert set(asked) == {"drain"}  # never asked about a reset


def test_fleet_guard_can_veto_a_reboot_but_not_the_drain():
    drv = started(engine(lambda action: Verdict(action != "reboot", "too many reboots in the fleet")))
    assert drv.names(drv.send(poll_without(0, xid(79, 0)))) == ["drain"]
    assert drv.state.incident.blocked == "reboot:vetoed"
    assert any("too many reboots" in n.message for n in drv.notes)


def test_reset_waits_while_compute_processes_are_unknown():
    drv = started(engine())
    assert drv.names(drv.send(Poll((xid(48, 0),), None, None))) == ["drain"]
    assert drv.state.incident.blocked == "reset:busy"


# --- undrain timing, dry run, operator ----------------------------------------------------------------------------


def test_undrain_needs_healthy_polls_for_the_whole_period():
    hot = {"temperature_high": {"decision": "watch", "severity": "fail"}}  # unhealthy, but no action of its own
    drv = started(engine(undrain_after_s=300, reset_grace_s=0, conditions=hot))
    drv.send(healthy_poll(None, xid(48, 0)))
    assert drv.state.phase == RECOVERING
    drv.clock.advance(200)
    drv.send(healthy_poll())
    drv.clock.advance(100)
    assert drv.send(healthy_poll(None, Finding("temperature_high", "nvidia_smi", gpu=0, pci=PCI[0]))) == []
    drv.clock.advance(299)
    assert drv.send(healthy_poll()) == []
    drv.clock.advance(300)
    assert drv.names(drv.send(healthy_poll())) == ["undrain"]


def test_dry_run_goes_through_the_steps_without_holding_the_node_drained():
    drv = started(engine(undrain_after_s=60), outcomes={"drain": "dry_run", "reset": "dry_run", "undrain": "dry_run"})
    assert drv.names(drv.send(healthy_poll(None, xid(48, 0)))) == ["drain", "reset"]
    assert (drv.state.phase, drv.state.drained) == (RECOVERING, False)
    drv.clock.advance(61)
    drv.send(healthy_poll())
    drv.clock.advance(61)
    assert drv.names(drv.send(healthy_poll())) == ["undrain"]
    assert drv.state.action_total == {"drain/dry_run": 1, "reset/dry_run": 1, "undrain/dry_run": 1}


def test_clear_rma_lets_the_node_undrain_once_healthy():
    drv = started(engine(undrain_after_s=120))
    drv.send(healthy_poll(None, Finding("remap_failure", "nvidia_smi", pci=PCI[2], gpu=2)))
    assert drv.state.rma
    drv.clock.advance(3600)
    assert drv.send(ClearRma("alice")) == []
    assert (drv.state.rma, drv.state.phase) == (False, RECOVERING)
    drv.send(healthy_poll())
    drv.clock.advance(120)
    assert drv.names(drv.send(healthy_poll())) == ["undrain"]
    assert drv.state.phase == HEALTHY


def test_clear_rma_on_a_healthy_node_is_ignored():
    drv = started(engine())
    drv.send(ClearRma("bob"))
    assert drv.events()[-1] == "clear_rma_ignored"
    assert drv.state.phase == HEALTHY


# --- restarts, boots, the saved state -----------------------------------------------------------------------------


def test_agent_restart_while_the_reboot_was_in_flight_waits_for_the_boot():
    eng = engine()
    clock = FakeClock()
    drv = started(eng, clock)
    step = eng.step(drv.state, poll_without(0, xid(79, 0)), clock())
    step = eng.step(step.state, ActionResult("drain", "ok"), clock())
    assert [a.name for a in step.actions] == ["reboot"]  # ... and the agent dies before the result
    assert step.state.in_flight == "reboot"
    restarted = eng.step(step.state, Boot("boot-1"), clock.advance(5))
    assert (restarted.state.phase, restarted.actions) == (AWAITING_BOOT, ())
    booted = eng.step(restarted.state, Boot("boot-2"), clock.advance(60))
    assert booted.state.phase == RECOVERING


def test_no_boot_after_the_reboot_timeout_requests_it_again():
    eng = engine(reboot_timeout_s=900, max_reboots_per_hour=2, cooldown_s={"reboot": 600})
    drv = started(eng)
    drv.send(poll_without(0, xid(79, 0)))
    drv.clock.advance(899)
    assert drv.send(poll_without(0)) == []
    drv.clock.advance(1)
    assert drv.names(drv.send(poll_without(0))) == ["reboot"]
    assert "reboot_timeout" in drv.events()


def test_a_manual_reboot_completes_a_pending_reset():
    drv = started(engine(undrain_after_s=60))
    drv.send(Poll((xid(48, 0),), GPUS, {**IDLE, 0: 1}))
    assert drv.state.incident.steps == ["reset"]
    drv.boot("boot-2")
    assert drv.state.phase == RECOVERING


def test_step_leaves_the_given_state_alone_and_the_state_survives_json():
    eng = engine()
    drv = started(eng)
    drv.send(Poll((xid(48, 1),), GPUS, {**IDLE, 1: 2}))
    before = json.dumps(drv.state.to_json(), sort_keys=True)
    eng.step(drv.state, healthy_poll(None, lost(4)), drv.clock())
    assert json.dumps(drv.state.to_json(), sort_keys=True) == before
    again = State.from_json(json.loads(before))
    assert again == drv.state
    assert again.incident.targets[PCI[1]].needs_reset


def test_state_from_older_or_foreign_json_keeps_what_it_knows():
    state = State.from_json({"phase": "bogus", "drained": True, "unknown": 1, "gpus": {PCI[0]: {"index": 0, "x": 1}}})
    assert (state.phase, state.drained, state.gpus[PCI[0]].index) == (HEALTHY, True, 0)


def test_an_action_that_fails_without_cooldown_is_tried_once_per_poll():
    drv = started(engine(cooldown_s={"rma": 0}), outcomes={"rma": "failed"})
    drv.send(healthy_poll(None, Finding("remap_failure", "nvidia_smi", pci=PCI[2], gpu=2)))
    assert drv.names() == ["drain", "rma"]
    drv.clock.advance(10)
    drv.send(healthy_poll())
    assert drv.names() == ["drain", "rma", "rma"]
    drv.outcomes["rma"] = "ok"
    drv.clock.advance(10)
    drv.send(healthy_poll())
    assert drv.state.rma


def test_a_gpu_gone_after_a_boot_gives_its_index_away():
    """nvidia-smi numbers the GPUs it finds: without GPU 2, the GPU at 0000:5d:00 becomes index 2."""
    drv = started(engine())
    renumbered = tuple(GpuInfo(i, g.uuid, g.pci) for i, g in enumerate(g for g in GPUS if g.index != 2))
    drv.send(Poll((), renumbered, dict.fromkeys(range(7), 0)))
    assert drv.state.gpus[PCI[3]].index == 2
    assert drv.state.gpus[PCI[2]].index is None
    assert drv.state.incident.targets[PCI[2]].cause == "gpu_missing"
    text = render(drv.state, drv.clock())
    assert len(re.findall(r'^gpu_health_last_xid\{gpu="2"\}', text, re.M)) == 1
    assert f'gpu_health_last_xid{{gpu="{PCI[2]}"}} 0' in text
