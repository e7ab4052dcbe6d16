"""Action plugins (argv each one runs, the drain file), the executor, dry-run, and the fleet guards."""

from __future__ import annotations

import json

import pytest
from agenthelpers import FakeClock, RecordingRunner, config
from gpu_health_agent.actions import (
    DRAIN_ANNOTATION,
    DrainFilePlugin,
    Executor,
    GpuResetPlugin,
    KubernetesPlugin,
    RebootPlugin,
    SlurmPlugin,
    build_plugins,
)
from gpu_health_agent.config import (
    DrainFileConfig,
    FleetGuardConfig,
    GpuResetConfig,
    KubernetesConfig,
    RebootConfig,
    SlurmConfig,
)
from gpu_health_agent.events import Action
from gpu_health_agent.fleet import CommandGuard, PrometheusGuard, make_guard, prometheus_value
from gpu_health_agent.runner import RunResult, subprocess_runner

DRAIN = Action("drain", "XID 79 on GPU 2 (0000:3a:00): GPU has fallen off the bus.")
UNDRAIN = Action("undrain", "healthy for 600 s")
RMA = Action("rma", "RMA: row remapping failure on GPU 3")


def _answer(prefix, rc=0, stdout=""):
    def respond(argv):
        return RunResult(argv, rc, stdout) if argv[: len(prefix)] == tuple(prefix) else None

    return respond


def _run(plugin, action, runner=None, dry_run=False):
    runner = runner or RecordingRunner()
    result, done = Executor([plugin], runner, dry_run).execute(action)
    return result, done, runner.calls


# --- slurm --------------------------------------------------------------------------------------------------------


def test_slurm_drain_sets_state_drain_with_gpu_health_reason():
    result, _, calls = _run(SlurmPlugin(SlurmConfig(True, ("scontrol",), "gpu-node-1")), DRAIN)
    assert result.outcome == "ok"
    assert calls == [
        (
            "scontrol",
            "update",
            "nodename=gpu-node-1",
            "state=drain",
            "reason=gpu_health: XID 79 on GPU 2 (0000:3a:00): GPU has fallen off the bus.",
        )
    ]


def test_slurm_rma_reason_says_rma():
    _, _, calls = _run(SlurmPlugin(SlurmConfig(True, ("scontrol",), "n1")), RMA)
    assert calls[0][-1] == "reason=gpu_health: RMA: row remapping failure on GPU 3"


@pytest.mark.parametrize(
    ("shown", "resumed"),
    [
        ("NodeName=n1 State=IDLE+DRAIN Reason=gpu_health: XID 79 [root@2026-01-01T00:00:00]", True),
        ("NodeName=n1 State=MIXED+DRAIN Reason=maintenance [alice@2026-01-01T00:00:00]", False),
        ("NodeName=n1 State=IDLE Reason=gpu_health: old", False),
    ],
    ids=["ours", "someone-elses", "not-drained"],
)
def test_slurm_undrain_resumes_only_its_own_drain(shown, resumed):
    runner = RecordingRunner([_answer(("scontrol", "-o", "show", "node", "n1"), 0, shown)])
    result, _, calls = _run(SlurmPlugin(SlurmConfig(True, ("scontrol",), "n1")), UNDRAIN, runner)
    assert result.outcome == "ok"
    assert calls[0] == ("scontrol", "-o", "show", "node", "n1")
    assert (("scontrol", "update", "nodename=n1", "state=resume") in calls) is resumed


def test_slurm_failure_is_reported_with_the_tools_words():
    runner = RecordingRunner([_answer(("scontrol",), 1, "slurm_update error: Invalid node name specified")])
    result, _, _ = _run(SlurmPlugin(SlurmConfig(True, ("scontrol",), "n1")), DRAIN, runner)
    assert result.outcome == "failed"
    assert "Invalid node name" in result.detail


# --- kubernetes ---------------------------------------------------------------------------------------------------


def _kube(**extra):
    return KubernetesPlugin(KubernetesConfig(True, ("kubectl",), node="gpu-node-1", **extra))


def test_kubernetes_drain_cordons_and_evicts_honouring_pdbs():
    result, _, calls = _run(_kube(kubeconfig="/etc/gpu_health/kubeconfig", drain_timeout_s=600), DRAIN)
    assert result.outcome == "ok"
    base = ("kubectl", "--kubeconfig", "/etc/gpu_health/kubeconfig")
    assert calls[0][: len(base) + 3] == (*base, "annotate", "node", "gpu-node-1")
    assert calls[1] == (*base, "cordon", "gpu-node-1")
    assert calls[2] == (
        *base,
        "drain",
        "gpu-node-1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=600s",
    )
    assert not any("--disable-eviction" in arg or arg == "--force" for call in calls for arg in call)


def test_kubernetes_drain_grace_period_when_set_and_a_pdb_timeout_fails_the_drain():
    runner = RecordingRunner([_answer(("kubectl", "drain"), 1, "error: Cannot evict pod as it would violate the PDB")])
    result, _, calls = _run(_kube(grace_period_s=30), DRAIN, runner)
    assert "--grace-period=30" in calls[-1]
    assert result.outcome == "failed"
    assert "violate the PDB" in result.detail


def test_kubernetes_undrain_uncordons_only_a_node_it_cordoned():
    mine = RecordingRunner([_answer(("kubectl", "get", "node"), 0, "gpu_health: XID 79")])
    result, _, calls = _run(_kube(), UNDRAIN, mine)
    assert result.outcome == "ok"
    assert calls[0] == (
        "kubectl",
        "get",
        "node",
        "gpu-node-1",
        "-o",
        "jsonpath={.metadata.annotations.gpuops\\.fleet/gpu-health-drain}",
    )
    assert ("kubectl", "uncordon", "gpu-node-1") in calls
    assert f"{DRAIN_ANNOTATION}-" in calls[-1]
    theirs = RecordingRunner([_answer(("kubectl", "get", "node"), 0, "")])
    _, _, calls = _run(_kube(), UNDRAIN, theirs)
    assert calls == [calls[0]]  # only the look


# --- gpu reset, reboot, drain file --------------------------------------------------------------------------------


def test_gpu_reset_names_the_gpu_by_index_or_bus_id():
    plugin = GpuResetPlugin(GpuResetConfig(True, ("nvidia-smi",), 120))
    _, _, calls = _run(plugin, Action("reset", "XID 48", target="0000:18:00", gpu=3))
    assert calls == [("nvidia-smi", "-r", "-i", "3")]
    _, _, calls = _run(plugin, Action("reset", "XID 48", target="0000:18:00", pci="0000:18:00"))
    assert calls == [("nvidia-smi", "-r", "-i", "00000000:18:00.0")]


def test_reboot_runs_the_configured_command():
    _, _, calls = _run(RebootPlugin(RebootConfig()), Action("reboot", "XID 79"))
    assert calls == [("systemctl", "reboot")]
    custom = RebootPlugin(RebootConfig(True, ("/usr/local/sbin/safe-reboot", "--reason", "gpu")))
    _, _, calls = _run(custom, Action("reboot", "XID 79"))
    assert calls == [("/usr/local/sbin/safe-reboot", "--reason", "gpu")]


def test_drain_file_holds_the_reason_and_goes_away_on_undrain(tmp_path):
    path = tmp_path / "gpu_health" / "drain.json"
    plugin = DrainFilePlugin(DrainFileConfig(True, str(path)), "gpu-node-1", FakeClock(1234.5))
    assert _run(plugin, DRAIN)[0].outcome == "ok"
    data = json.loads(path.read_text())
    assert data == {
        "drained": True,
        "rma": False,
        "node": "gpu-node-1",
        "reason": "gpu_health: " + DRAIN.reason,
        "since": 1234.5,
        "by": "gpu_health",
    }
    _run(plugin, RMA)
    assert json.loads(path.read_text())["rma"] is True
    _run(plugin, UNDRAIN)
    assert not path.exists()
    assert _run(plugin, UNDRAIN)[0].outcome == "ok"  # already gone


# --- executor and dry run -----------------------------------------------------------------------------------------


def test_dry_run_describes_changes_runs_only_queries(tmp_path):
    path = tmp_path / "drain.json"
    plugins = [
        DrainFilePlugin(DrainFileConfig(True, str(path)), "n1"),
        SlurmPlugin(SlurmConfig(True, ("scontrol",), "n1")),
        KubernetesPlugin(KubernetesConfig(True, node="n1")),
    ]
    runner = RecordingRunner([_answer(("scontrol", "-o"), 0, "State=IDLE+DRAIN Reason=gpu_health: x")])
    executor = Executor(plugins, runner, dry_run=True)
    result, done = executor.execute(DRAIN)
    assert result.outcome == "dry_run"
    assert runner.calls == []
    assert not path.exists()
    assert done[0].startswith(f"would write {path}")
    assert "would run: scontrol update nodename=n1 state=drain 'reason=gpu_health: XID 79" in done[1]
    assert any(line.startswith("would run: kubectl drain n1 --ignore-daemonsets") for line in done)
    result, done = executor.execute(UNDRAIN)
    assert runner.calls == [("scontrol", "-o", "show", "node", "n1"), runner.calls[1]]  # the look-ups ran
    assert runner.calls[1][:3] == ("kubectl", "get", "node")
    assert "would run: scontrol update nodename=n1 state=resume" in done


def test_executor_needs_every_backend_and_says_which_failed():
    runner = RecordingRunner([_answer(("kubectl", "cordon"), 1, "Unauthorized")])
    plugins = [SlurmPlugin(SlurmConfig(True, node="n1")), KubernetesPlugin(KubernetesConfig(True, node="n1"))]
    result, _ = Executor(plugins, runner).execute(DRAIN)
    assert result.outcome == "failed"
    assert result.detail.startswith("kubernetes: kubectl cordon failed: rc 1: Unauthorized")
    assert runner.calls[0][0] == "scontrol"  # the other backend still drained


def test_an_action_without_an_enabled_plugin_is_disabled():
    result, done = Executor([], RecordingRunner()).execute(Action("reboot", "x"))
    assert (result.outcome, done) == ("disabled", [])


def test_plugins_follow_the_switches():
    names = [p.name for p in build_plugins(config())]
    assert names == ["drain_file", "gpu_reset", "reboot"]
    everything = config(actions={"slurm": {"enabled": True}, "kubernetes": {"enabled": True}})
    assert [p.name for p in build_plugins(everything)] == ["drain_file", "slurm", "kubernetes", "gpu_reset", "reboot"]
    nothing = config(
        actions={name: {"enabled": False} for name in ("drain_file", "gpu_reset", "reboot")},
    )
    assert build_plugins(nothing) == []


def test_subprocess_runner_reports_missing_programs_and_timeouts():
    assert subprocess_runner(["/nonexistent/nvidia-smi"], 5).rc == 127
    slow = subprocess_runner(["sleep", "5"], 0.2)
    assert (slow.rc, slow.stderr) == (124, "timed out after 0.2 s")
    ok = subprocess_runner(["sh", "-c", "echo out; echo err >&2; exit 3"], 5)
    assert (ok.rc, ok.stdout, ok.stderr) == (3, "out\n", "err\n")


# --- fleet guards -------------------------------------------------------------------------------------------------


def _vector(*values):
    result = [{"metric": {"instance": f"n{i}"}, "value": [1.0, str(v)]} for i, v in enumerate(values)]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def _prometheus(max_value=2, on_error="deny"):
    query = "sum(gpu_health_node_drained)"
    return FleetGuardConfig("prometheus", "http://ops-1:9090/", query, max_value, on_error=on_error)


def test_prometheus_guard_allows_below_max_and_holds_back_at_max():
    asked = []

    def fetch(url, timeout):
        asked.append((url, timeout))
        return _vector(1, 0, 0)

    assert PrometheusGuard(_prometheus(2), fetch)("drain").allowed
    assert asked == [("http://ops-1:9090/api/v1/query?query=sum%28gpu_health_node_drained%29", 5.0)]
    verdict = PrometheusGuard(_prometheus(1), fetch)("reboot")
    assert not verdict.allowed
    assert "sum(gpu_health_node_drained) = 1 >= max 1" in verdict.reason


def test_prometheus_value_of_scalar_and_empty_vector():
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "0.25"]}}
    assert prometheus_value(json.dumps(scalar).encode()) == 0.25
    assert prometheus_value(_vector()) == 0


@pytest.mark.parametrize(("on_error", "allowed"), [("deny", False), ("allow", True)])
def test_prometheus_guard_that_cannot_ask_follows_on_error(on_error, allowed):
    def fetch(_url, _timeout):
        raise OSError("connection refused")

    verdict = PrometheusGuard(_prometheus(on_error=on_error), fetch)("drain")
    assert verdict.allowed is allowed
    assert "connection refused" in verdict.reason


def test_command_guard_exit_status_decides():
    cfg = FleetGuardConfig("command", command=("/usr/local/bin/fleet-ok",))
    runner = RecordingRunner([_answer(("/usr/local/bin/fleet-ok", "reboot"), 1, "3 nodes drained")])
    guard = CommandGuard(cfg, runner)
    assert guard("drain").allowed
    assert not guard("reboot").allowed
    assert runner.calls == [("/usr/local/bin/fleet-ok", "drain"), ("/usr/local/bin/fleet-ok", "reboot")]
    broken = CommandGuard(cfg, RecordingRunner([_answer(("/usr/local/bin/fleet-ok",), 127)]))
    assert not broken("drain").allowed


def test_no_fleet_guard_by_default():
    assert make_guard(FleetGuardConfig(), RecordingRunner()) is None
