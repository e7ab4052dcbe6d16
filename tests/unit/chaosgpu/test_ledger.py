"""chaosgpu.ledger: the scripts it sends run for real here, with bash, against a temporary ledger directory and
recording fakes of systemd-run and systemctl (the same scripts run on hosts as root over SSH)."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chaosgpu import ledger
from chaosgpu.ledger import FaultPlan, LedgerConfig, LedgerError
from chaosgpu.types import CommandResult, Host

HOST = Host(name="gpu-node-1", address="127.0.0.1", port=2221, user="operator")


@dataclass
class BashTransport:
    """Runs each script with bash on this machine (as the host would after ROOT_SHELL) and counts the calls.

    ``down`` hosts answer like ssh does when it cannot connect."""

    calls: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)

    def _bash(self, host: Host, command: str, timeout: float, stdin: str | None) -> CommandResult:
        if host.name in self.down:
            return CommandResult(host.name, command, 255, "", "ssh: connect to host: Connection refused", 0.0)
        done = subprocess.run(
            ["bash", "-s"], input=stdin, capture_output=True, text=True, timeout=min(timeout, 30), check=False
        )
        return CommandResult(host.name, command, done.returncode, done.stdout, done.stderr, 0.0)

    def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:
        self.calls.append(("run", (host.name,), command))
        return self._bash(host, command, timeout, stdin)

    def check(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
        raise AssertionError("the ledger interprets results itself and never calls check()")

    def run_many(
        self, hosts: Sequence[Host], command: str, timeout: float = 60, stdin: str | None = None
    ) -> dict[str, CommandResult]:
        self.calls.append(("run_many", tuple(h.name for h in hosts), command))
        return {host.name: self._bash(host, command, timeout, stdin) for host in hosts}


@dataclass
class FakeRoot:
    """A temporary ledger with recording fakes of systemd-run and systemctl."""

    tmp: Path
    config: LedgerConfig

    @property
    def ledger(self) -> Path:
        return Path(self.config.ledger_dir)

    def calls(self, tool: str) -> list[list[str]]:
        log = self.tmp / f"{tool}.log"
        return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []

    def files(self) -> list[str]:
        return sorted(p.name for p in self.ledger.iterdir()) if self.ledger.exists() else []

    def entries(self) -> list[dict[str, object]]:
        return [json.loads(p.read_text()) for p in sorted(self.ledger.glob("*.json"))]

    def lines(self, name: str) -> list[str]:
        path = self.tmp / name
        return path.read_text().splitlines() if path.exists() else []


def _fake_tool(path: Path, log: Path, body: str) -> None:
    path.write_text(
        f'#!/bin/bash\nprintf "%q " "$@" >>{shlex.quote(str(log))}\necho >>{shlex.quote(str(log))}\n{body}\n'
    )
    path.chmod(0o755)


@pytest.fixture
def root(tmp_path: Path) -> FakeRoot:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fail = shlex.quote(str(tmp_path / "systemd-run.fail"))
    _fake_tool(
        bin_dir / "systemd-run",
        tmp_path / "systemd-run.log",
        f'if [ -e {fail} ]; then echo "Failed to start transient timer unit: Access denied" >&2; exit 1; fi',
    )
    state = shlex.quote(str(tmp_path / "timer-state"))
    _fake_tool(
        bin_dir / "systemctl",
        tmp_path / "systemctl.log",
        f'if [ "$1" = is-active ]; then s=$(cat {state} 2>/dev/null || echo active); echo "$s"; '
        '[ "$s" = active ]; exit; fi',
    )
    config = LedgerConfig(
        ledger_dir=str(tmp_path / "var" / "lib" / "chaosgpu" / "faults"),
        systemd_run=str(bin_dir / "systemd-run"),
        systemctl=str(bin_dir / "systemctl"),
        inject_timeout_s=5,
        revert_timeout_s=5,
    )
    return FakeRoot(tmp_path, config)


def _apply(root: FakeRoot, transport: BashTransport, inject: str, revert: str, duration_s: float = 30, **kw: str):
    return ledger.apply_fault(
        transport, HOST, "test-fault", inject, revert, duration_s, config=root.config, run_id="run-1", **kw
    )


def _marker(root: FakeRoot, name: str) -> str:
    return shlex.quote(str(root.tmp / name))


# --- apply --------------------------------------------------------------------------------------------------------


def test_entry_revert_script_and_timer_exist_before_inject_runs(root: FakeRoot) -> None:
    snapshot = root.tmp / "at-inject"
    copy_to = shlex.quote(str(snapshot))
    inject = (
        f"mkdir {copy_to} && cp {shlex.quote(root.config.ledger_dir)}/* {copy_to}/"
        f" && cp {_marker(root, 'systemd-run.log')} {copy_to}/"
    )
    record = _apply(root, BashTransport(), inject, "true")

    seen = sorted(p.name for p in snapshot.iterdir())
    assert f"{record.id}.json" in seen
    assert f"{record.id}.revert" in seen
    assert "systemd-run.log" in seen, "the timer was not armed before the inject ran"
    assert json.loads((snapshot / f"{record.id}.json").read_text())["id"] == record.id


def test_entry_records_the_fault_on_the_hosts_clock(root: FakeRoot) -> None:
    description = 'it\'s a "quoted" $HOME `test`\nsecond line'
    revert = "echo 'single' \"double\" $((1 + 1)) >/dev/null"
    before = time.time()
    record = _apply(root, BashTransport(), "true", revert, 90, description=description)

    [entry] = root.entries()
    assert entry["id"] == record.id
    assert entry["kind"] == "test-fault"
    assert entry["description"] == description
    assert entry["revert"] == revert
    assert entry["inject"] == "true"
    assert entry["run_id"] == "run-1"
    assert entry["host"] == "gpu-node-1"
    assert entry["unit"] == f"chaosgpu-revert-{record.id}"
    assert int(before) <= entry["created"] <= time.time()
    assert entry["deadline"] == entry["created"] + 90
    assert entry["deadline_iso"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["deadline"]))
    assert record.deadline - record.created == 90
    assert record.state == "active"


def test_ledger_directory_and_revert_script_are_root_only(root: FakeRoot) -> None:
    record = _apply(root, BashTransport(), "true", "true")

    assert stat.S_IMODE(root.ledger.stat().st_mode) == 0o700
    assert stat.S_IMODE((root.ledger / f"{record.id}.revert").stat().st_mode) == 0o700
    assert stat.S_IMODE((root.ledger / f"{record.id}.json").stat().st_mode) == 0o600


@pytest.mark.parametrize(("duration_s", "seconds"), [(5, "5"), (2.2, "3"), (3600, "3600")])
def test_deadline_timer_is_armed_with_the_duration(root: FakeRoot, duration_s: float, seconds: str) -> None:
    record = _apply(root, BashTransport(), "true", "true", duration_s)

    [argv] = root.calls("systemd-run")
    assert argv[argv.index("--unit") + 1] == f"chaosgpu-revert-{record.id}"
    assert f"--on-active={seconds}" in argv
    assert "--timer-property=AccuracySec=1s" in argv
    assert argv[-1] == f"{root.config.ledger_dir}/{record.id}.revert"


def test_the_timers_command_reverts_and_clears_the_ledger(root: FakeRoot) -> None:
    flag = root.tmp / "fault-on"
    record = _apply(root, BashTransport(), f"touch {shlex.quote(str(flag))}", f"rm {shlex.quote(str(flag))}")
    assert flag.exists()

    [argv] = root.calls("systemd-run")
    fired = subprocess.run([argv[-1]], capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, check=False)

    assert fired.returncode == 0, fired.stderr
    assert not flag.exists()
    assert root.files() == []
    assert ["stop", f"chaosgpu-revert-{record.id}.timer"] in root.calls("systemctl")


def test_inject_failure_is_reverted_at_once_and_leaves_nothing(root: FakeRoot) -> None:
    reverts = _marker(root, "reverts")
    with pytest.raises(LedgerError, match=r"inject exited 3 and was reverted at once.*boom"):
        _apply(root, BashTransport(), "echo boom >&2; exit 3", f"echo reverted >>{reverts}")

    assert root.lines("reverts") == ["reverted"]
    assert root.files() == []
    [stop] = [argv for argv in root.calls("systemctl") if argv[0] == "stop"]
    assert stop[1].startswith("chaosgpu-revert-test-fault-")


def test_inject_and_revert_both_failing_keeps_the_entry_marked_failed(root: FakeRoot) -> None:
    transport = BashTransport()
    with pytest.raises(LedgerError, match=r"revert failed too.*marked failed.*cannot undo"):
        _apply(root, transport, "exit 3", "echo cannot undo >&2; exit 4")

    [record] = ledger.list_faults(transport, [HOST], config=root.config)["gpu-node-1"]
    assert record.state == "failed"
    assert record.failure.startswith("rc 4\n")
    assert "cannot undo" in record.failure


def test_inject_that_times_out_is_reverted(root: FakeRoot) -> None:
    config = LedgerConfig(**{**root.config.__dict__, "inject_timeout_s": 1})
    reverts = _marker(root, "reverts")
    with pytest.raises(LedgerError, match="inject exited 124"):
        ledger.apply_fault(BashTransport(), HOST, "slow", "sleep 10", f"echo r >>{reverts}", 30, config=config)

    assert root.lines("reverts") == ["r"]
    assert root.files() == []


def test_no_timer_means_no_inject(root: FakeRoot) -> None:
    (root.tmp / "systemd-run.fail").touch()
    injected = root.tmp / "injected"
    with pytest.raises(LedgerError, match=r"(?s)not injected.*Access denied"):
        _apply(root, BashTransport(), f"touch {shlex.quote(str(injected))}", "true")

    assert not injected.exists()
    assert root.files() == []


def test_inject_reading_stdin_does_not_eat_the_script(root: FakeRoot) -> None:
    record = _apply(root, BashTransport(), "cat >/dev/null; true", "true")

    assert record.state == "active"
    assert [e["id"] for e in root.entries()] == [record.id]


def test_inject_and_revert_run_with_a_root_shells_umask_and_no_stdin(root: FakeRoot) -> None:
    seen = _marker(root, "seen")
    transport = BashTransport()
    record = _apply(root, transport, f"umask >>{seen}; cat >>{seen}", f"umask >>{seen}; cat >>{seen}")
    ledger.revert_fault(transport, HOST, record.id, config=root.config)

    assert root.lines("seen") == ["0022", "0022"]


def test_inject_and_revert_see_the_faults_id(root: FakeRoot) -> None:
    seen = _marker(root, "seen")
    transport = BashTransport()
    record = _apply(root, transport, f'echo "$CHAOSGPU_FAULT_ID" >>{seen}', f'echo "$CHAOSGPU_FAULT_ID" >>{seen}')
    ledger.revert_fault(transport, HOST, record.id, config=root.config)

    assert root.lines("seen") == [record.id, record.id]


def test_a_daemon_started_by_inject_does_not_hold_the_faults_lock(root: FakeRoot) -> None:
    transport = BashTransport()
    record = _apply(root, transport, "setsid sleep 4 >/dev/null 2>&1 &", "true")

    started = time.monotonic()
    assert ledger.revert_fault(transport, HOST, record.id, config=root.config) is True
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("duration_s", [0, -5, 3601, float("nan"), float("inf"), True, "60"])
def test_duration_outside_its_range_is_refused_before_any_call(root: FakeRoot, duration_s: object) -> None:
    transport = BashTransport()
    with pytest.raises(LedgerError, match="duration_s"):
        _apply(root, transport, "true", "true", duration_s)  # type: ignore[arg-type]
    assert transport.calls == []


def test_max_duration_is_configurable(root: FakeRoot) -> None:
    config = LedgerConfig(**{**root.config.__dict__, "max_duration_s": 60})
    with pytest.raises(LedgerError, match=r"duration_s=61 is above the maximum of 60 s \(max_duration_s\)"):
        ledger.apply_fault(BashTransport(), HOST, "k", "true", "true", 61, config=config)


@pytest.mark.parametrize(
    ("kind", "inject", "revert", "match"),
    [("Bad Kind", "true", "true", "kind"), ("k", " ", "true", "inject"), ("k", "true", "", "revert")],
)
def test_bad_fault_is_refused_naming_the_parameter(root: FakeRoot, kind: str, inject: str, revert: str, match: str):
    transport = BashTransport()
    with pytest.raises(LedgerError, match=match):
        ledger.apply_fault(transport, HOST, kind, inject, revert, 10, config=root.config)
    assert transport.calls == []


def test_unreachable_host_is_reported_as_not_applied(root: FakeRoot) -> None:
    with pytest.raises(LedgerError, match=r"not applied.*exited 255.*Connection refused"):
        _apply(root, BashTransport(down={"gpu-node-1"}), "true", "true")


def test_connection_lost_after_arming_says_the_host_reverts_it(root: FakeRoot) -> None:
    plan = FaultPlan("gpu-node-1", "k-1", "k", "true", "true", 30)
    script = ledger.build_apply_script(plan, root.config)
    armed = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, check=True).stdout
    entry_line = next(line for line in armed.splitlines() if line.startswith("@chaosgpu entry "))

    class CutOff(BashTransport):
        def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
            return CommandResult(host.name, command, 124, entry_line + "\n", "timed out after 245 s", 245.0)

    with pytest.raises(LedgerError, match=r"after the fault was recorded and armed.*reverts on the host by 20") as err:
        _apply(root, CutOff(), "true", "true")
    # The error carries the recorded fault, so a caller that meant to cut itself off can count it as injected.
    assert err.value.record is not None
    assert (err.value.record.id, err.value.record.kind) == ("k-1", "k")


def test_a_fault_not_applied_carries_no_record(root: FakeRoot) -> None:
    with pytest.raises(LedgerError) as err:
        _apply(root, BashTransport(down={"gpu-node-1"}), "true", "true")
    assert err.value.record is None


# --- revert -------------------------------------------------------------------------------------------------------


def test_reverting_twice_runs_the_revert_once(root: FakeRoot) -> None:
    transport = BashTransport()
    reverts = _marker(root, "reverts")
    record = _apply(root, transport, "true", f"echo r >>{reverts}")

    assert ledger.revert_fault(transport, HOST, record.id, config=root.config) is True
    assert ledger.revert_fault(transport, HOST, record.id, config=root.config) is False
    assert root.lines("reverts") == ["r"]
    assert root.files() == []


def test_timer_and_rollback_at_the_same_moment_revert_once(root: FakeRoot) -> None:
    reverts = _marker(root, "reverts")
    record = _apply(root, BashTransport(), "true", f"sleep 1; echo r >>{reverts}")
    script = root.ledger / f"{record.id}.revert"

    racers = [subprocess.Popen([script], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [racer.communicate(timeout=30)[0] for racer in racers]

    assert [racer.returncode for racer in racers] == [0, 0, 0]
    assert root.lines("reverts") == ["r"]
    assert sorted(out.split()[-2] for out in outputs) == ["absent", "absent", "reverted"]
    assert root.files() == []


def test_failed_revert_keeps_the_entry_marked_failed_until_a_retry_succeeds(root: FakeRoot) -> None:
    transport = BashTransport()
    allowed = _marker(root, "allowed")
    revert = f"if [ ! -e {allowed} ]; then echo device busy >&2; exit 4; fi"
    record = _apply(root, transport, "true", revert)

    with pytest.raises(LedgerError, match=r"revert exited 4; the entry stays, marked failed.*device busy"):
        ledger.revert_fault(transport, HOST, record.id, config=root.config)
    [failed] = ledger.list_faults(transport, [HOST], config=root.config)["gpu-node-1"]
    assert (failed.id, failed.state) == (record.id, "failed")
    assert "device busy" in failed.failure

    (root.tmp / "allowed").touch()
    assert ledger.revert_fault(transport, HOST, record.id, config=root.config) is True
    assert ledger.list_faults(transport, [HOST], config=root.config) == {"gpu-node-1": []}
    assert root.files() == []


def test_revert_of_an_unknown_fault_is_a_no_op(root: FakeRoot) -> None:
    assert ledger.revert_fault(BashTransport(), HOST, "never-applied-1", config=root.config) is False


@pytest.mark.parametrize("fault_id", ["../../etc/passwd", "a b", "", "-rf"])
def test_fault_id_that_is_not_a_plain_name_is_refused(root: FakeRoot, fault_id: str) -> None:
    transport = BashTransport()
    with pytest.raises(LedgerError, match="fault_id"):
        ledger.revert_fault(transport, HOST, fault_id, config=root.config)
    assert transport.calls == []


# --- status and cleanup -------------------------------------------------------------------------------------------


def test_status_reads_states_from_the_host(root: FakeRoot) -> None:
    transport = BashTransport()
    active = _apply(root, transport, "true", "true")
    overdue = _apply(root, transport, "true", "true")
    entry_path = root.ledger / f"{overdue.id}.json"
    entry = json.loads(entry_path.read_text())
    entry["deadline"] = entry["created"] - 10
    entry_path.write_text(json.dumps(entry))

    states = {r.id: r.state for r in ledger.list_faults(transport, [HOST], config=root.config)["gpu-node-1"]}
    assert states == {active.id: "active", overdue.id: "overdue"}

    (root.tmp / "timer-state").write_text("inactive\n")
    [record] = [r for r in ledger.list_faults(transport, [HOST], config=root.config)["gpu-node-1"] if r.id == active.id]
    assert (record.state, record.timer) == ("unarmed", "inactive")
    assert 0 <= record.age_s() < 5
    assert 25 < record.remaining_s() <= 30


def test_status_shows_a_fault_whose_lock_is_held_as_busy(root: FakeRoot) -> None:
    transport = BashTransport()
    record = _apply(root, transport, "true", "true")
    with (root.ledger / f"{record.id}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        [busy] = ledger.list_faults(transport, [HOST], config=root.config)["gpu-node-1"]
    assert busy.state == "busy"


def test_status_of_a_host_without_a_ledger_is_empty(root: FakeRoot) -> None:
    assert ledger.list_faults(BashTransport(), [HOST], config=root.config) == {"gpu-node-1": []}
    assert not root.ledger.exists(), "a read-only status created the ledger"


def test_status_across_hosts_is_one_fan_out_and_names_unreachable_hosts(root: FakeRoot) -> None:
    hosts = [HOST, Host("gpu-node-2", "127.0.0.1"), Host("gpu-node-3", "127.0.0.1")]
    transport = BashTransport(down={"gpu-node-3"})

    scan = ledger.scan_ledgers(transport, hosts, config=root.config)
    assert [call[:2] for call in transport.calls] == [("run_many", ("gpu-node-1", "gpu-node-2", "gpu-node-3"))]
    assert set(scan.faults) == {"gpu-node-1", "gpu-node-2"}
    assert "Connection refused" in scan.errors["gpu-node-3"]
    with pytest.raises(LedgerError, match="gpu-node-3: exited 255"):
        ledger.list_faults(transport, hosts, config=root.config)


def test_cleanup_reverts_everything_newest_first(root: FakeRoot) -> None:
    transport = BashTransport()
    order = _marker(root, "order")
    first = _apply(root, transport, "true", f"echo first >>{order}")
    time.sleep(0.05)
    second = _apply(root, transport, "true", f"echo second >>{order}")
    transport.calls.clear()

    report = ledger.cleanup(transport, [HOST], config=root.config)

    assert [call[0] for call in transport.calls] == ["run_many"]
    assert report.clean
    assert report.hosts["gpu-node-1"].reverted == [second.id, first.id]
    assert root.lines("order") == ["second", "first"]
    assert root.files() == []


def test_cleanup_reports_what_is_left_and_is_not_clean(root: FakeRoot) -> None:
    transport = BashTransport(down={"gpu-node-2"})
    ok = _apply(root, transport, "true", "true")
    stuck = _apply(root, transport, "true", "echo stuck >&2; exit 9")

    report = ledger.cleanup(transport, [HOST, Host("gpu-node-2", "127.0.0.1")], config=root.config)

    node1 = report.hosts["gpu-node-1"]
    assert node1.reverted == [ok.id]
    assert "exited 9" in node1.failed[stuck.id]
    assert "stuck" in node1.failed[stuck.id]
    assert [(r.id, r.state) for r in node1.left] == [(stuck.id, "failed")]
    assert "exited 255" in (report.hosts["gpu-node-2"].error or "")
    assert not report.clean
    assert (report.reverted, report.left) == (1, 1)


def test_cleanup_removes_a_revert_script_whose_entry_was_never_written(root: FakeRoot) -> None:
    record = _apply(root, BashTransport(), "true", "true")
    (root.ledger / f"{record.id}.json").unlink()

    assert ledger.cleanup(BashTransport(), [HOST], config=root.config).clean
    assert root.files() == []


# --- reverting one run's faults (a rollback) ----------------------------------------------------------------------


def _apply_for(root: FakeRoot, transport: BashTransport, run_id: str, kind: str, revert: str) -> ledger.FaultRecord:
    return ledger.apply_fault(transport, HOST, kind, "true", revert, 30, config=root.config, run_id=run_id)


def test_revert_run_faults_reverts_only_that_run_newest_first_in_one_call(root: FakeRoot) -> None:
    transport = BashTransport()
    order = _marker(root, "order")
    first = _apply_for(root, transport, "run-1", "fill-disk", f"echo first >>{order}")
    time.sleep(0.05)
    second = _apply_for(root, transport, "run-1", "stop-service", f"echo second >>{order}")
    # Run ids that share a prefix with run-1, or hold quotes, are other runs.
    others = [_apply_for(root, transport, run, "fill-disk", "true") for run in ("run-10", 'run-1", x', "RUN-1")]
    transport.calls.clear()

    report = ledger.revert_run_faults(transport, [HOST], "run-1", config=root.config)

    assert [call[0] for call in transport.calls] == ["run_many"]
    node = report["gpu-node-1"]
    assert [(r.id, r.kind, r.run_id, r.state) for r in node.reverted] == [
        (second.id, "stop-service", "run-1", "reverted"),
        (first.id, "fill-disk", "run-1", "reverted"),
    ]
    assert (node.reverted[1].created, node.reverted[1].deadline) == (first.created, first.deadline)
    assert (node.failed, node.error) == ([], None)
    assert root.lines("order") == ["second", "first"]
    assert sorted(e["id"] for e in root.entries()) == sorted(o.id for o in others)


def test_revert_run_faults_of_one_kind_leaves_the_others_of_the_run(root: FakeRoot) -> None:
    transport = BashTransport()
    disk = _apply_for(root, transport, "run-1", "fill-disk", "true")
    service = _apply_for(root, transport, "run-1", "stop-service", "true")

    report = ledger.revert_run_faults(transport, [HOST], "run-1", "fill-disk", config=root.config)

    assert [r.id for r in report["gpu-node-1"].reverted] == [disk.id]
    assert [e["id"] for e in root.entries()] == [service.id]


def test_revert_run_faults_names_what_failed_and_the_host_it_could_not_reach(root: FakeRoot) -> None:
    transport = BashTransport(down={"gpu-node-2"})
    ok = _apply_for(root, transport, "run-1", "fill-disk", "true")
    stuck = _apply_for(root, transport, "run-1", "fill-disk", "echo still mounted >&2; exit 9")

    report = ledger.revert_run_faults(transport, [HOST, Host("gpu-node-2", "127.0.0.1")], "run-1", config=root.config)

    node1 = report["gpu-node-1"]
    assert [r.id for r in node1.reverted] == [ok.id]
    [failed] = node1.failed
    assert failed.startswith(f"gpu-node-1: fault {stuck.id}: revert exited 9; the entry stays, marked failed")
    assert "still mounted" in failed
    assert "@chaosgpu" not in failed
    assert [e["id"] for e in root.entries()] == [stuck.id]
    assert (root.ledger / f"{stuck.id}.failed").exists()
    node2 = report["gpu-node-2"]
    assert (node2.reverted, node2.failed) == ([], [])
    assert "gpu-node-2: cannot revert the faults of run run-1: exited 255" in (node2.error or "")


def test_revert_run_faults_refuses_an_empty_run_id_or_a_bad_kind(root: FakeRoot) -> None:
    transport = BashTransport()
    with pytest.raises(LedgerError, match="run_id must be a non-empty string"):
        ledger.revert_run_faults(transport, [HOST], "", config=root.config)
    with pytest.raises(LedgerError, match="kind must be lower-case"):
        ledger.revert_run_faults(transport, [HOST], "run-1", "Fill Disk", config=root.config)
    assert transport.calls == []


# --- running as root ----------------------------------------------------------------------------------------------


def _fake_id_and_sudo(tmp_path: Path, uid: int) -> dict[str, str]:
    bin_dir = tmp_path / "idbin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    log = shlex.quote(str(tmp_path / "sudo.log"))
    (bin_dir / "sudo").write_text(f'#!/bin/bash\necho "$*" >{log}\n[ "$1" = -n ] || exit 1\nshift\nexec "$@"\n')
    for tool in ("id", "sudo"):
        (bin_dir / tool).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize(("uid", "sudo"), [(1000, "-n bash -s"), (0, None)])
def test_root_shell_goes_through_sudo_only_for_other_users(tmp_path: Path, uid: int, sudo: str | None) -> None:
    done = subprocess.run(
        ["sh", "-c", ledger.ROOT_SHELL],
        input="echo ran as requested\n",
        capture_output=True,
        text=True,
        env=_fake_id_and_sudo(tmp_path, uid),
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "ran as requested\n")
    log = tmp_path / "sudo.log"
    assert (log.read_text().strip() if log.exists() else None) == sudo


def test_root_shell_under_bash_reads_euid_and_never_forks_id(tmp_path: Path) -> None:
    env = _fake_id_and_sudo(tmp_path, 0 if os.geteuid() else 1000)  # an id(1) that would lie, and log if run
    (tmp_path / "idbin" / "id").write_text(f"#!/bin/sh\ntouch {shlex.quote(str(tmp_path / 'id-ran'))}\necho 1\n")
    done = subprocess.run(
        ["bash", "-c", ledger.ROOT_SHELL], input="echo ok\n", capture_output=True, text=True, env=env, check=False
    )
    assert (done.returncode, done.stdout) == (0, "ok\n")
    assert not (tmp_path / "id-ran").exists()
    assert (tmp_path / "sudo.log").exists() == (os.geteuid() != 0)


def test_every_call_sends_root_shell_with_the_script_on_stdin(root: FakeRoot) -> None:
    transport = BashTransport()
    record = _apply(root, transport, "true", "true")
    ledger.list_faults(transport, [HOST], config=root.config)
    ledger.revert_fault(transport, HOST, record.id, config=root.config)
    ledger.cleanup(transport, [HOST], config=root.config)
    ledger.revert_run_faults(transport, [HOST], "run-1", config=root.config)

    assert [(method, command) for method, _, command in transport.calls] == [
        ("run", ledger.ROOT_SHELL),
        ("run_many", ledger.ROOT_SHELL),
        ("run", ledger.ROOT_SHELL),
        ("run_many", ledger.ROOT_SHELL),
        ("run_many", ledger.ROOT_SHELL),
    ]


def test_fault_ids_are_unique_and_usable_in_unit_names() -> None:
    ids = {ledger.new_fault_id("gpu-xid", now=0) for _ in range(200)}
    assert len(ids) == 200
    assert all(i.startswith("gpu-xid-19700101T000000Z-") for i in ids)


def test_run_id_comes_from_the_environment_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSGPU_RUN_ID", "gameday-42")
    assert ledger.current_run_id() == "gameday-42"
    monkeypatch.delenv("CHAOSGPU_RUN_ID")
    assert ledger.current_run_id() != "gameday-42"
