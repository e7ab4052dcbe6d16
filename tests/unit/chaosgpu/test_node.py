"""chaosgpu.node: refusals before any host is reached, the fault commands run for real here with bash (against
recording fakes of systemctl, systemd-run, df and fallocate, and real processes for kill_process), the load
generator, the controller-side power guard (a real detached process, a fake docker CLI), waiting for SSH, and the
probes against fake transports and an HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosgpu import polling
from chaosgpu.inventory import Inventory
from chaosgpu.node import actions, commands, power_guard, probes, reach
from chaosgpu.targeting import TargetPlan
from chaosgpu.transport import LocalTransport
from chaosgpu.types import CommandResult, Host

LAB_NODE = Host(name="gpu-node-1", address="127.0.0.1", port=2221, user="operator", groups=("lab", "gpu_nodes"))
METAL = Host(name="metal-1", address="metal-1", user="root", groups=("metal",))


def plan_of(*hosts: Host) -> TargetPlan:
    names = tuple(h.name for h in hosts)
    return TargetPlan(pattern=",".join(names), hosts=hosts, matched=names, seed=0, count=len(hosts))


# --- fakes ------------------------------------------------------------------------------------------------------

FAKE_SYSTEMCTL = f"""#!{sys.executable}
import json, os, sys
path = os.environ["FAKE_SYSTEMD_STATE"]
units = json.load(open(path))
with open(os.environ["FAKE_SYSTEMD_LOG"], "a") as log:
    log.write(json.dumps(["systemctl", *sys.argv[1:]]) + "\\n")
args = [a for a in sys.argv[1:] if a != "--"]
verb = args[0]
names = [a for a in args[1:] if not a.startswith("-")]
absent = {{"LoadState": "not-found", "ActiveState": "inactive", "MainPID": 0, "Transient": "no"}}
def save():
    json.dump(units, open(path, "w"))
if verb == "show":
    print(units.get(args[-1], absent).get(args[args.index("-p") + 1], ""))
elif verb == "is-active":
    states = [units.get(n, absent)["ActiveState"] for n in names]
    if "-q" not in args:
        print("\\n".join(states))
    sys.exit(0 if all(s == "active" for s in states) else 3)
elif verb == "stop":
    for name in names:
        if name not in units:
            sys.exit(5)
        for down in [name, *units[name].get("required_by", [])]:
            units[down].update(ActiveState="inactive", MainPID=0)
    save()
elif verb == "start":
    if any(n not in units or units[n].get("fail_start") for n in names):
        sys.stderr.write("Job failed. See journalctl -xe\\n")
        sys.exit(1)
    for name in names:
        units[name].update(ActiveState="active", MainPID=4242)
    save()
elif verb == "kill":
    units[args[-1]].update(ActiveState=units[args[-1]].get("after_kill", "inactive"), MainPID=0)
    save()
elif verb == "list-units":
    for name, unit in units.items():
        if name.endswith(".service") and unit["ActiveState"] in ("active", "activating", "reloading"):
            print(name, "loaded", unit["ActiveState"], "running", "fake")
elif verb != "reset-failed":
    sys.exit(64)
"""

FAKE_SYSTEMD_RUN = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_SYSTEMD_LOG"], "a") as log:
    log.write(json.dumps(["systemd-run", *sys.argv[1:]]) + "\\n")
sys.exit(int(os.environ.get("FAKE_SYSTEMD_RUN_RC", "0")))
"""

# ps answers -o unit= from FAKE_PS_UNITS (pid -> unit), everything else is the real ps.
FAKE_PS = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
if "unit=" in args:
    units = json.loads(os.environ.get("FAKE_PS_UNITS", "{{}}"))
    print(units.get(args[args.index("-p") + 1], "-"))
    sys.exit(0)
os.execv({shutil.which("ps")!r}, ["ps", *args])
"""

FAKE_DF = """#!/bin/sh
echo "1K-blocks Avail"
echo "$FAKE_DF_SIZE_KB $FAKE_DF_AVAIL_KB"
"""

FAKE_FALLOCATE = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_SYSTEMD_LOG"], "a") as log:
    log.write(json.dumps(["fallocate", *sys.argv[1:]]) + "\\n")
open(sys.argv[-1], "w").close()
"""

FAKE_DOCKER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_DOCKER_FAIL") in sys.argv:
    sys.stderr.write("Error response from daemon: No such container: " + sys.argv[-1] + "\\n")
    sys.exit(1)
"""


@dataclass
class FakeHost:
    """A host simulated here: fakes on PATH, a state directory, systemd's units in a JSON file."""

    root: Path
    bin: Path
    state_dir: Path
    units_file: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    fault_id: str = "node-fault-20260101T000000Z-0badc0de"  # what the ledger gives both commands

    def units(self, **units: dict[str, Any]) -> None:
        full = {
            name.replace("__", "-") + ("" if "." in name else ".service"): {
                "LoadState": "loaded",
                "ActiveState": "active",
                "MainPID": 100 + i,
                "Transient": "no",
                **unit,
            }
            for i, (name, unit) in enumerate(units.items())
        }
        self.units_file.write_text(json.dumps(full))

    def unit(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.units_file.read_text())[name])

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a fault command as the ledger does (bash -c, stdin from /dev/null)."""
        return subprocess.run(
            [shutil.which("bash") or "/bin/bash", "-c", script],
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def calls(self, tool: str = "") -> list[list[str]]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []
        return [line for line in lines if not tool or line[0] == tool]

    def state_files(self) -> list[str]:
        return sorted(p.name for p in self.state_dir.iterdir()) if self.state_dir.exists() else []


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name, text in (("systemctl", FAKE_SYSTEMCTL), ("systemd-run", FAKE_SYSTEMD_RUN), ("ps", FAKE_PS)):
        (fake_bin / name).write_text(text)
        (fake_bin / name).chmod(0o755)
    fake = FakeHost(tmp_path, fake_bin, tmp_path / "state", tmp_path / "units.json", tmp_path / "calls.log")
    fake.env = {
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "FAKE_SYSTEMD_STATE": str(fake.units_file),
        "FAKE_SYSTEMD_LOG": str(fake.log),
        "CHAOSGPU_FAULT_ID": fake.fault_id,
    }
    fake.units()
    return fake


class RecordingTransport:
    """Answers each command from ``answer`` (host, command -> result) and records the calls."""

    def __init__(self, answer: Any = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.forgotten: list[str] = []
        self.answer = answer or (lambda *_: (0, "", ""))

    def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:  # noqa: ARG002
        self.calls.append((host.name, command))
        rc, out, err = self.answer(host, command)
        return CommandResult(host.name, command, rc, out, err, 0.0)

    def check(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:
        return self.run(host, command, timeout, stdin)

    def run_many(
        self, hosts: Sequence[Host], command: str, timeout: float = 60, stdin: str | None = None
    ) -> dict[str, CommandResult]:
        return {h.name: self.run(h, command, timeout, stdin) for h in hosts}

    def forget(self, host: Host) -> None:
        self.forgotten.append(host.name)


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if an activity reaches for the inventory, the targets or a transport."""

    def reached(*_: Any, **__: Any) -> Any:
        raise AssertionError("an input that should have been refused reached the inventory or a transport")

    for module in (actions, probes):
        for name in ("targets", "get_transport", "get_inventory", "inject_fault", "run_on"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, reached)


@dataclass
class Injected:
    plan: TargetPlan
    kind: str
    inject: dict[str, str]
    revert: dict[str, str]
    seconds: float
    description: str


@pytest.fixture
def injected(monkeypatch: pytest.MonkeyPatch) -> list[Injected]:
    """Two lab hosts as targets; what the actions hand to inject_fault, per host."""
    seen: list[Injected] = []
    second = Host(name="gpu-node-2", address="127.0.0.1", port=2222, groups=("lab",))
    monkeypatch.setattr(actions, "targets", lambda *_: plan_of(LAB_NODE, second))
    monkeypatch.setattr(actions, "get_transport", RecordingTransport)

    def inject_fault(plan, kind, inject, revert, duration_s, description="", transport=None):  # noqa: ARG001
        seen.append(
            Injected(
                plan,
                kind,
                {h.name: inject if isinstance(inject, str) else inject(h) for h in plan.hosts},
                {h.name: revert if isinstance(revert, str) else revert(h) for h in plan.hosts},
                duration_s,
                description,
            )
        )
        return [{"host": h.name, "kind": kind} for h in plan.hosts]

    monkeypatch.setattr(actions, "inject_fault", inject_fault)
    return seen


# --- refusals before any host is reached ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "arguments", "parameter"),
    [
        ("stop_service", {"service": "ssh"}, "service"),
        ("stop_service", {"service": "sshd.service"}, "service"),
        ("stop_service", {"service": "systemd-journald"}, "service"),
        ("stop_service", {"service": "dbus"}, "service"),
        ("stop_service", {"service": "chaosgpu-revert-x"}, "service"),
        ("stop_service", {"service": "node_exporter; reboot"}, "service"),
        ("stop_service", {"service": "-node"}, "service"),
        ("stop_service", {"service": "ssh.socket"}, "service"),
        ("stop_service", {"service": "node_exporter", "duration_s": 0}, "duration_s"),
        ("stop_service", {"service": "node_exporter", "duration_s": 7200}, "duration_s"),
        ("stop_service", {"service": "node_exporter", "duration_s": "60"}, "duration_s"),
        ("kill_service", {"service": "node_exporter", "signal": "SIGSTOP"}, "signal"),
        ("kill_service", {"service": "node_exporter", "signal": "9; rm"}, "signal"),
        ("kill_service", {"service": "sshd"}, "service"),
        ("kill_process", {"process": "sshd"}, "process"),
        ("kill_process", {"process": "ssh"}, "process"),
        ("kill_process", {"process": "init"}, "process"),
        ("kill_process", {"process": "system"}, "process"),
        ("kill_process", {"process": "."}, "process"),
        ("kill_process", {"process": "exporter|sh"}, "process"),
        ("kill_process", {"process": "("}, "process"),
        ("kill_process", {"process": ""}, "process"),
        ("kill_process", {"process": "node\nsshd"}, "process"),
        ("kill_process", {"process": "node", "signal": "CONT"}, "signal"),
        ("kill_process", {"process": "node", "full_command_line": "yes"}, "full_command_line"),
        ("stress_cpu", {"workers": -1}, "workers"),
        ("stress_cpu", {"workers": True}, "workers"),
        ("stress_cpu", {"load_percent": 0}, "load_percent"),
        ("stress_cpu", {"load_percent": 101}, "load_percent"),
        ("stress_memory", {"size_mb": 0}, "size_mb"),
        ("stress_memory", {"size_mb": 1.5}, "size_mb"),
        ("stress_memory", {"size_mb": 64, "min_available_mb": -1}, "min_available_mb"),
        ("stress_memory", {"size_mb": 64, "min_available_percent": 100}, "min_available_percent"),
        ("stress_memory", {"size_mb": 64, "min_available_percent": float("nan")}, "min_available_percent"),
        ("fill_disk", {"path": "var/tmp", "size_mb": 1}, "path"),
        ("fill_disk", {"path": "/var/../etc", "size_mb": 1}, "path"),
        ("fill_disk", {"path": "/srv/scratch; rm -rf /", "size_mb": 1}, "path"),
        ("fill_disk", {"path": "/proc/self", "size_mb": 1}, "path"),
        ("fill_disk", {"path": "//dev/shm", "size_mb": 1}, "path"),
        ("fill_disk", {"path": "/srv/scratch", "size_mb": 0}, "size_mb"),
        ("fill_disk", {"path": "/srv/scratch", "size_mb": 1, "min_free_mb": -5}, "min_free_mb"),
        ("fill_disk", {"path": "/srv/scratch", "size_mb": 1, "min_free_percent": -1}, "min_free_percent"),
        ("power_off", {"force": "yes"}, "force"),
        ("power_off", {"duration_s": -1}, "duration_s"),
        ("power_on", {"wait_s": -1}, "wait_s"),
        ("reboot", {"wait_s": float("inf")}, "wait_s"),
        ("reboot", {"force": 1}, "force"),
    ],
)
@pytest.mark.usefixtures("nowhere")
def test_bad_input_is_refused_naming_the_parameter_before_any_host_is_reached(
    action: str, arguments: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(ActivityFailed, match=parameter):
        getattr(actions, action)(pattern="gpu-node-1", **arguments, configuration={})


@pytest.mark.parametrize(
    ("probe", "arguments", "parameter"),
    [
        ("service_active", {"service": "a b"}, "service"),
        ("host_reachable", {"timeout_s": 0}, "timeout_s"),
        ("http_check", {"url": "file:///etc/passwd"}, "url"),
        ("http_check", {"url": "http://"}, "url"),
        ("http_check", {"url": "http://x/ y"}, "url"),
        ("http_check", {"url": "http://x/", "expected_status": 700}, "expected_status"),
        ("http_check", {"url": "http://x/", "body_match": "("}, "body_match"),
        ("http_check", {"url": "http://x/", "timeout_s": -1}, "timeout_s"),
        ("http_check", {"url": "http://x/", "verify_tls": "no"}, "verify_tls"),
    ],
)
@pytest.mark.usefixtures("nowhere")
def test_probes_refuse_bad_input_naming_the_parameter(probe: str, arguments: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ActivityFailed, match=parameter):
        getattr(probes, probe)(**arguments, configuration={})


def test_signals_are_normalised() -> None:
    assert [commands.check_signal(s) for s in ("term", "SIGKILL", "HUP")] == ["SIGTERM", "SIGKILL", "SIGHUP"]


def test_service_names_get_their_unit_type() -> None:
    assert commands.check_service("node_exporter") == "node_exporter.service"
    assert commands.check_service("getty@tty1.service") == "getty@tty1.service"
    assert commands.check_service("ssh", protected_ok=True) == "ssh.service"
    assert commands.check_service("ssh.socket", protected_ok=True) == "ssh.socket"


def test_paths_are_normalised() -> None:
    assert commands.check_path("/srv/scratch/") == "/srv/scratch"
    assert commands.check_path("//srv//scratch") == "/srv/scratch"
    assert commands.check_path("/") == "/"


# --- what the actions hand to the ledger ------------------------------------------------------------------------


def test_faults_go_to_the_ledger_with_the_configured_default_deadline(injected: list[Injected]) -> None:
    result = actions.stop_service(
        pattern="gpu_nodes", service="node_exporter", configuration={"chaosgpu_fault_duration_s": 42}
    )
    assert [r["host"] for r in result] == ["gpu-node-1", "gpu-node-2"]
    (fault,) = injected
    assert (fault.kind, fault.seconds, fault.description) == (
        "stop-service",
        42,
        "systemctl stop node_exporter.service",
    )
    for script in (*fault.inject.values(), *fault.revert.values()):
        assert 'state="$state_dir/$CHAOSGPU_FAULT_ID"' in script, "inject and revert must name the same state"


@pytest.mark.parametrize(
    "pair",
    [
        commands.stop_service_commands("node_exporter.service"),
        commands.kill_service_commands("node_exporter.service", "SIGKILL"),
        commands.kill_process_commands("node", "SIGKILL"),
        commands.stress_commands("cpu", amount=100, runtime_max_s=60),
        commands.fill_disk_commands("/srv/scratch", 1, min_free_mb=0, min_free_ppm=0),
    ],
)
def test_a_command_run_outside_the_ledger_does_nothing(host: FakeHost, pair: tuple[str, str]) -> None:
    host.units(node_exporter={})
    for script in pair:
        done = host.run(script, CHAOSGPU_FAULT_ID="")
        assert done.returncode != 0
        assert "CHAOSGPU_FAULT_ID" in done.stderr
    assert host.calls() == []


def test_stress_units_are_bounded_a_minute_past_the_deadline(injected: list[Injected]) -> None:
    actions.stress_cpu(pattern="gpu-node-1", workers=2, load_percent=50, duration_s=30.2, configuration={})
    (fault,) = injected
    script = fault.inject["gpu-node-1"]
    assert "-p RuntimeMaxSec=91" in script
    assert "chaosgpu-stress cpu 2 50" in script
    assert fault.seconds == pytest.approx(30.2)


def test_kill_process_passes_pgrep_flags_and_the_signal(injected: list[Injected]) -> None:
    actions.kill_process(
        pattern="gpu-node-1", process="dcgm-exporter", signal="term", full_command_line=True, configuration={}
    )
    script = injected[0].inject["gpu-node-1"]
    assert "full=-f" in script
    assert "signal=TERM" in script
    assert injected[0].kind == "kill-process"


# --- stop_service / kill_service on a simulated host ------------------------------------------------------------


def test_stop_service_reverts_what_was_running_and_what_went_down_with_it(host: FakeHost) -> None:
    host.units(nvidia__dcgm={"required_by": ["dcgm-exporter.service"]}, dcgm__exporter={}, other={})
    inject, revert = commands.stop_service_commands("nvidia-dcgm.service", str(host.state_dir))
    done = host.run(inject)
    assert done.returncode == 0, done.stderr
    assert host.unit("nvidia-dcgm.service")["ActiveState"] == "inactive"
    assert host.unit("dcgm-exporter.service")["ActiveState"] == "inactive"
    assert (host.state_dir / host.fault_id).read_text().split() == ["nvidia-dcgm.service", "dcgm-exporter.service"]

    assert host.run(revert).returncode == 0
    starts = host.calls("systemctl")
    assert ["systemctl", "start", "--", "nvidia-dcgm.service", "dcgm-exporter.service"] in starts
    # The start limit (a unit stopped and started often) is cleared before the start, so it cannot block the revert.
    reset = ["systemctl", "reset-failed", "--", "nvidia-dcgm.service", "dcgm-exporter.service"]
    assert starts.index(reset) < starts.index(
        ["systemctl", "start", "--", "nvidia-dcgm.service", "dcgm-exporter.service"]
    )
    assert host.unit("dcgm-exporter.service")["ActiveState"] == "active"
    assert host.state_files() == []
    before = len(host.calls())
    assert host.run(revert).returncode == 0, "a second revert must succeed and do nothing"
    assert len(host.calls()) == before


def test_stop_service_does_not_start_on_revert_what_was_not_running(host: FakeHost) -> None:
    host.units(node_exporter={"ActiveState": "inactive"})
    inject, revert = commands.stop_service_commands("node_exporter.service", str(host.state_dir))
    assert host.run(inject).returncode == 0
    assert host.run(revert).returncode == 0
    assert not [c for c in host.calls("systemctl") if c[1] == "start"]
    assert host.unit("node_exporter.service")["ActiveState"] == "inactive"


def test_stop_service_refuses_a_unit_that_is_not_loaded(host: FakeHost) -> None:
    inject, revert = commands.stop_service_commands("nothere.service", str(host.state_dir))
    done = host.run(inject)
    assert done.returncode == 3
    assert "nothere.service is not a loaded unit" in done.stderr
    assert host.run(revert).returncode == 0
    assert not [c for c in host.calls("systemctl") if c[1] in ("stop", "start")]


def test_a_failed_start_keeps_the_state_so_that_the_next_revert_tries_again(host: FakeHost) -> None:
    host.units(node_exporter={})
    inject, revert = commands.stop_service_commands("node_exporter.service", str(host.state_dir))
    assert host.run(inject).returncode == 0
    host.units(node_exporter={"ActiveState": "inactive", "fail_start": True})
    failed = host.run(revert)
    assert failed.returncode == 1
    assert "could not start node_exporter.service again" in failed.stderr
    assert host.state_files() == [host.fault_id]
    host.units(node_exporter={"ActiveState": "inactive"})
    assert host.run(revert).returncode == 0
    assert host.unit("node_exporter.service")["ActiveState"] == "active"


def test_kill_service_signals_the_main_process_and_the_revert_starts_it(host: FakeHost) -> None:
    host.units(node_exporter={})
    inject, revert = commands.kill_service_commands("node_exporter.service", "SIGTERM", str(host.state_dir))
    done = host.run(inject)
    assert done.returncode == 0, done.stderr
    assert ["systemctl", "kill", "--kill-who=main", "--signal=SIGTERM", "--", "node_exporter.service"] in host.calls()
    assert host.unit("node_exporter.service")["ActiveState"] == "inactive"
    assert host.run(revert).returncode == 0
    assert host.unit("node_exporter.service")["ActiveState"] == "active"
    assert host.state_files() == []


def test_kill_service_refuses_a_service_that_is_not_running(host: FakeHost) -> None:
    host.units(node_exporter={"ActiveState": "failed", "MainPID": 0})
    inject, revert = commands.kill_service_commands("node_exporter.service", "SIGKILL", str(host.state_dir))
    done = host.run(inject)
    assert done.returncode == 3
    assert "is failed with no main process" in done.stderr
    assert host.run(revert).returncode == 0
    assert not [c for c in host.calls("systemctl") if c[1] in ("kill", "start")]


# --- kill_process on real processes here ------------------------------------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A sleeping process with a name of its own (its comm), killed afterwards if still there."""
    program = tmp_path / f"victim-{os.getpid() % 10000}"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    process = subprocess.Popen([str(program), "300"])
    yield process
    process.kill()
    process.wait()


def test_kill_process_kills_the_matching_process_and_records_its_service(
    host: FakeHost, victim: subprocess.Popen[bytes]
) -> None:
    host.units(victim={})
    name = Path(str(victim.args[0])).name  # type: ignore[index]
    inject, revert = commands.kill_process_commands(name, "SIGTERM", state_dir=str(host.state_dir))
    done = host.run(inject, FAKE_PS_UNITS=json.dumps({str(victim.pid): "victim.service"}))
    assert done.returncode == 0, done.stderr
    assert victim.wait(timeout=10) == -signal.SIGTERM
    assert f"{victim.pid} ({name})" in done.stdout
    assert (host.state_dir / host.fault_id).read_text().split() == ["victim.service"]
    assert host.run(revert).returncode == 0
    assert ["systemctl", "start", "--", "victim.service"] in host.calls()
    assert host.state_files() == []


def test_kill_process_on_the_command_line_spares_its_own_shells(
    host: FakeHost, victim: subprocess.Popen[bytes]
) -> None:
    """Every shell between the ledger and pgrep carries the pattern in its command line; only the victim dies."""
    name = Path(str(victim.args[0])).name  # type: ignore[index]
    inject, _ = commands.kill_process_commands(name, "SIGKILL", full=True, state_dir=str(host.state_dir))
    done = subprocess.run(
        ["bash", "-c", f"bash -c {shlex.quote(inject)}"],  # a shell above the inject, as the ledger has
        env=host.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert done.stdout.count("(") == 1, f"more than the victim was signalled: {done.stdout}"


def test_kill_process_skips_transient_units_when_recording(host: FakeHost, victim: subprocess.Popen[bytes]) -> None:
    host.units(chaosgpu__stress__x={"Transient": "yes"})
    name = Path(str(victim.args[0])).name  # type: ignore[index]
    inject, _ = commands.kill_process_commands(name, "SIGKILL", state_dir=str(host.state_dir))
    done = host.run(inject, FAKE_PS_UNITS=json.dumps({str(victim.pid): "chaosgpu-stress-x.service"}))
    assert done.returncode == 0, done.stderr
    assert (host.state_dir / host.fault_id).read_text() == ""


def test_kill_process_refuses_when_nothing_matches(host: FakeHost) -> None:
    inject, revert = commands.kill_process_commands("no-such-process-x", "SIGKILL", state_dir=str(host.state_dir))
    done = host.run(inject)
    assert done.returncode == 3
    assert "no process" in done.stderr
    assert host.run(revert).returncode == 0


def test_kill_process_refuses_on_the_host_a_process_named_sshd(host: FakeHost, tmp_path: Path) -> None:
    program = tmp_path / "sshd"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    sshd = subprocess.Popen([str(program), "301.25"])
    try:
        inject, _ = commands.kill_process_commands("301[.]25", "SIGKILL", full=True, state_dir=str(host.state_dir))
        done = host.run(inject)
        assert done.returncode == 3
        assert f"matches sshd (pid {sshd.pid})" in done.stderr
        assert sshd.poll() is None, "the refused kill was sent anyway"
    finally:
        sshd.kill()
        sshd.wait()


# --- stress -----------------------------------------------------------------------------------------------------


def test_stress_runs_a_notify_unit_that_the_revert_stops(host: FakeHost) -> None:
    inject, revert = commands.stress_commands("cpu", workers=3, amount=40, runtime_max_s=120)
    done = host.run(inject)
    assert done.returncode == 0, done.stderr
    (run,) = host.calls("systemd-run")
    assert run[1:3] == ["--unit", f"chaosgpu-{host.fault_id}.service"]
    assert {"--service-type=notify", "--collect", "RuntimeMaxSec=120"} <= set(run)
    assert run[run.index("--") + 1 : run.index("--") + 3] == ["python3", "-c"]
    assert run[-4:] == ["chaosgpu-stress", "cpu", "3", "40"]
    assert host.run(revert).returncode == 0
    assert ["systemctl", "stop", "--", f"chaosgpu-{host.fault_id}.service"] in host.calls()
    assert host.run(revert).returncode == 0, "a second revert must succeed"


def test_memory_stress_is_refused_below_the_margin_measured_on_the_host(host: FakeHost, tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16777216 kB\nMemFree:  1 kB\nMemAvailable:    4194304 kB\n")  # 16 GiB, 4 free

    def attempt(size_mb: int, min_mb: int, ppm: int) -> subprocess.CompletedProcess[str]:
        inject, _ = commands.stress_commands(
            "memory", amount=size_mb, runtime_max_s=60, min_available_mb=min_mb, min_available_ppm=ppm,
            margin="the margin", meminfo=str(meminfo),
        )  # fmt: skip
        return host.run(inject)

    refused = attempt(2049, 2048, 0)  # leaves 2047 MiB < 2048
    assert refused.returncode == 3
    assert "would leave 2047 MiB of 16384 MiB available, below the margin (the margin)" in refused.stderr
    assert attempt(2458, 0, 100_000).returncode == 3  # leaves 1638 MiB < 10 % of 16 GiB (1638.4)
    assert not host.calls("systemd-run")
    assert attempt(2048, 2048, 100_000).returncode == 0  # exactly at both margins
    (run,) = host.calls("systemd-run")
    assert "OOMScoreAdjust=1000" in run


def test_stress_refuses_a_host_without_python3(host: FakeHost, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for tool in ("hostname", "systemd-run"):
        (bare / tool).symlink_to(shutil.which(tool, path=host.env["PATH"]) or tool)
    inject, _ = commands.stress_commands("cpu", amount=100, runtime_max_s=60)
    done = host.run(inject, PATH=str(bare))
    assert done.returncode == 3
    assert "no python3 on" in done.stderr


def test_the_load_generator_has_nothing_systemd_would_expand() -> None:
    assert "$" not in commands.BURNER
    assert "%" not in commands.BURNER


def _burner(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], float]:
    """Start the load generator with a notify socket; (process, seconds until it said READY=1)."""
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(20)
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-c", commands.BURNER, "chaosgpu-stress", *args],
            env={**os.environ, "NOTIFY_SOCKET": address},
            start_new_session=True,
        )
        assert sock.recv(64) == b"READY=1"
        return process, time.monotonic() - started


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_cpu_load_generator_runs_its_workers_at_the_given_load(tmp_path: Path) -> None:
    process, _ = _burner(tmp_path, "cpu", "2", "30")
    try:
        workers = [int(p) for p in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        assert len(workers) == 2
        before = {pid: _cpu_seconds(pid) for pid in workers}
        time.sleep(2)
        share = [(_cpu_seconds(pid) - before[pid]) / 2 for pid in workers]
        # Busy 30 ms of every 100: never much above 30 % of a CPU, and clearly busy.
        assert all(0.05 < s < 0.30 + 0.15 for s in share), share
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def test_the_memory_load_generator_holds_its_memory_resident(tmp_path: Path) -> None:
    process, _ = _burner(tmp_path, "memory", "0", "64")
    try:
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        assert rss_kb >= 64 * 1024
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


# --- fill_disk --------------------------------------------------------------------------------------------------


def test_fill_disk_fills_a_real_directory_and_the_revert_removes_the_file(host: FakeHost, tmp_path: Path) -> None:
    target = tmp_path / "scratch"
    target.mkdir()
    inject, revert = commands.fill_disk_commands(str(target), 2, min_free_mb=0, min_free_ppm=0)
    done = host.run(inject)
    assert done.returncode == 0, done.stderr
    filled = target / f"chaosgpu-{host.fault_id}"
    assert filled.stat().st_size == 2 * 1024 * 1024
    assert filled.stat().st_mode & 0o777 == 0o600
    assert host.run(revert).returncode == 0
    assert not filled.exists()
    assert host.run(revert).returncode == 0


def test_fill_disk_keeps_the_margin_measured_on_the_host(host: FakeHost) -> None:
    for name, text in (("df", FAKE_DF), ("fallocate", FAKE_FALLOCATE)):
        (host.bin / name).write_text(text)
        (host.bin / name).chmod(0o755)
    size = {"FAKE_DF_SIZE_KB": str(100 * 1024 * 1024), "FAKE_DF_AVAIL_KB": str(15 * 1024 * 1024)}  # 100 GiB, 15 free

    def fill(size_mb: int, min_free_mb: int, ppm: int) -> subprocess.CompletedProcess[str]:
        inject, _ = commands.fill_disk_commands(
            str(host.root), size_mb, min_free_mb=min_free_mb, min_free_ppm=ppm, margin="the margin"
        )
        return host.run(inject, **size)

    refused = fill(5 * 1024 + 1, 0, 100_000)  # leaves just under 10 GiB = 10 %
    assert refused.returncode == 3
    assert "would leave 10239 MiB of 102400 MiB free, below the margin (the margin)" in refused.stderr
    assert fill(14 * 1024, 1025, 0).returncode == 3  # leaves 1024 MiB < 1025
    assert not host.calls("fallocate")
    assert fill(5 * 1024, 10 * 1024, 100_000).returncode == 0  # exactly at both margins
    (call,) = host.calls("fallocate")
    assert call[1:3] == ["-l", str(5 * 1024 * 1024 * 1024)]


def test_fill_disk_refuses_what_is_not_a_directory(host: FakeHost, tmp_path: Path) -> None:
    inject, _ = commands.fill_disk_commands(str(tmp_path / "absent"), 1, min_free_mb=0, min_free_ppm=0)
    done = host.run(inject)
    assert done.returncode == 3
    assert "is not a directory" in done.stderr


# --- power ------------------------------------------------------------------------------------------------------


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recording fake docker CLI first on PATH (the guard process inherits it); its log."""
    fake_bin = tmp_path / "docker-bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text(FAKE_DOCKER)
    (fake_bin / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return log


def docker_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """gpu-node-1 (lab, docker driver) and metal-1 (systemd driver); targets by name; a guard directory."""
    inventory = Inventory(
        source=str(tmp_path / "inventory.yml"),
        hosts={LAB_NODE.name: LAB_NODE, METAL.name: METAL},
        groups={"all": (LAB_NODE.name, METAL.name)},
        production=False,
        power_drivers={LAB_NODE.name: "docker", METAL.name: "systemd"},
    )
    transport = RecordingTransport()
    monkeypatch.setattr(
        actions,
        "targets",
        lambda _configuration, pattern, *_, **__: plan_of(*(inventory.hosts[p] for p in pattern.split(","))),
    )
    monkeypatch.setattr(actions, "get_inventory", lambda _configuration: inventory)
    monkeypatch.setattr(actions, "get_transport", lambda: transport)
    return {"configuration": {"chaosgpu_power_guard_dir": str(tmp_path / "guard")}, "transport": transport}


def _ended(process: subprocess.Popen[bytes], within_s: float) -> bool:
    try:
        process.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_power_off_refuses_a_host_its_driver_cannot_power_on_again(fleet: dict[str, Any], docker: Path) -> None:
    with pytest.raises(ActivityFailed, match="metal-1 could not be powered on again"):
        actions.power_off(pattern="gpu-node-1,metal-1", configuration=fleet["configuration"])
    assert docker_calls(docker) == []
    assert fleet["transport"].calls == []
    assert power_guard.pending(Path(fleet["configuration"]["chaosgpu_power_guard_dir"])) == []


def test_power_off_is_guarded_and_power_on_disarms_the_guard(fleet: dict[str, Any], docker: Path) -> None:
    configuration = fleet["configuration"]
    guard_dir = Path(configuration["chaosgpu_power_guard_dir"])
    off = actions.power_off(pattern="gpu-node-1", force=True, duration_s=600, configuration=configuration)
    assert off["hosts"] == {"gpu-node-1": "docker kill gpu-node-1"}
    (record,) = power_guard.pending(guard_dir)
    assert (record.id, record.hosts) == (off["guard"], ("gpu-node-1",))
    assert record.deadline - time.time() == pytest.approx(600, abs=30)
    assert oct(guard_dir.stat().st_mode & 0o777) == "0o700"
    assert oct(record.path.stat().st_mode & 0o777) == "0o600"
    guard = power_guard._spawned[-1]
    assert guard.poll() is None, "the guard process is not waiting for the deadline"

    on = actions.power_on(pattern="gpu-node-1", configuration=configuration)
    assert on["disarmed"] == [off["guard"]]
    assert docker_calls(docker) == [["kill", "gpu-node-1"], ["start", "gpu-node-1"]]
    assert power_guard.pending(guard_dir) == []
    assert _ended(guard, 10), "the disarmed guard process did not end"
    assert guard.returncode == 0


def test_power_on_takes_only_its_hosts_off_a_guard(tmp_path: Path) -> None:
    record = {"id": "g1", "inventory": "x", "hosts": ["a", "b"], "deadline": time.time() + 600}
    (tmp_path / "g1.json").write_text(json.dumps(record))
    assert power_guard.disarm(tmp_path, ["b", "c"]) == ["g1"]
    assert [r.hosts for r in power_guard.pending(tmp_path)] == [("a",)]
    assert power_guard.disarm(tmp_path, ["c"]) == []


INVENTORY = """\
all:
  children:
    lab:
      hosts:
        node-a:
          ansible_host: 127.0.0.1
          chaosgpu_power_driver: docker
          chaosgpu_docker_container: fake-node-a
"""


def test_the_guard_powers_the_host_on_at_the_deadline_after_the_controller_is_gone(
    tmp_path: Path, docker: Path
) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY)
    guard_dir = tmp_path / "guard"
    record = power_guard.arm(guard_dir, str(inventory), ["node-a"], 1.0)
    guard = power_guard._spawned[-1]
    assert _ended(guard, 60), "the guard did not finish after its deadline"
    assert guard.returncode == 0, (guard_dir / f"{record.id}.log").read_text()
    assert docker_calls(docker) == [["start", "fake-node-a"]]
    assert sorted(p.name for p in guard_dir.iterdir()) == [".lock"], "the record or its log is left"


def test_a_guard_that_cannot_power_on_keeps_its_record_marked_failed(
    tmp_path: Path, docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "fake-node-a")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY)
    guard_dir = tmp_path / "guard"
    record = power_guard.arm(guard_dir, str(inventory), ["node-a"], 0.5, attempts=2, retry_s=0.1)
    guard = power_guard._spawned[-1]
    assert _ended(guard, 60)
    assert guard.returncode == 1
    (left,) = power_guard.pending(guard_dir)
    assert left.id == record.id
    assert left.failed.startswith("attempt 2: ")
    assert "No such container: fake-node-a" in left.failed
    assert docker_calls(docker) == [["start", "fake-node-a"]] * 2
    assert "powering on node-a failed" in (guard_dir / f"{record.id}.log").read_text()


def test_reboot_waits_for_a_new_boot(fleet: dict[str, Any], docker: Path) -> None:
    boots = iter(["boot-a", "boot-a", "boot-b"])  # before; still the old boot; the new one
    fleet["transport"].answer = lambda *_: (0, next(boots) + "\n", "")
    result = actions.reboot(pattern="gpu-node-1", wait_s=30, configuration=fleet["configuration"])
    assert result["hosts"] == {"gpu-node-1": "docker restart -t 30 gpu-node-1"}
    assert list(result["back_after_s"]) == ["gpu-node-1"]
    assert [c[1] for c in fleet["transport"].calls] == [reach.BOOT_IDENTITY] * 3
    assert docker_calls(docker) == [["restart", "-t", "30", "gpu-node-1"]]


def test_reboot_fails_naming_the_host_that_did_not_come_back(fleet: dict[str, Any], docker: Path) -> None:
    fleet["transport"].answer = lambda *_: (255, "", "ssh: connect to host: Connection refused")
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match=r"not back within wait_s=2 s .*gpu-node-1"):
        actions.reboot(pattern="gpu-node-1", wait_s=2, configuration=fleet["configuration"])
    assert time.monotonic() - started < 2 + 5, "the wait was not bounded by wait_s"
    assert docker_calls(docker) == [["restart", "-t", "30", "gpu-node-1"]]


# --- probes -----------------------------------------------------------------------------------------------------


@pytest.fixture
def probe_hosts(monkeypatch: pytest.MonkeyPatch) -> RecordingTransport:
    transport = RecordingTransport()
    monkeypatch.setattr(probes, "targets", lambda *_, **__: plan_of(LAB_NODE, METAL))
    monkeypatch.setattr(probes, "get_transport", lambda: transport)
    return transport


def test_service_active_reports_each_hosts_state(probe_hosts: RecordingTransport) -> None:
    probe_hosts.answer = lambda host, _command: (
        (3, "inactive\n", "") if host.name == LAB_NODE.name else (255, "", "Connection refused")
    )
    assert probes.service_active(service="node_exporter", configuration={}) == {
        "gpu-node-1": "inactive",
        "metal-1": "unreachable",
    }
    assert probe_hosts.calls[0][1] == "systemctl is-active -- node_exporter.service"


def test_service_active_until_polls_until_every_host_is_in_the_state(
    probe_hosts: RecordingTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    states = iter(["activating", "activating", "active"])  # systemd's RestartSec, then the restart
    probe_hosts.answer = lambda host, _command: (0, next(states) + "\n", "") if host.name == LAB_NODE.name else None
    monkeypatch.setattr(probes, "targets", lambda *_, **__: plan_of(LAB_NODE))
    monkeypatch.setattr(polling.time, "sleep", lambda _s: None)
    assert probes.service_active("containerd", until="active", wait_s=30, configuration={}) == {"gpu-node-1": "active"}
    assert len(probe_hosts.calls) == 3
    probe_hosts.calls.clear()
    probe_hosts.answer = lambda *_: (3, "failed\n", "")
    clock = iter([0.0, 0.0, 31.0])  # the deadline, after the first asking, after the second: past it
    monkeypatch.setattr(polling.time, "monotonic", lambda: next(clock))
    assert probes.service_active("containerd", until="active", wait_s=30, configuration={}) == {"gpu-node-1": "failed"}
    assert len(probe_hosts.calls) == 2
    with pytest.raises(ActivityFailed, match="until must be a systemctl is-active state"):
        probes.service_active("containerd", until="active; reboot", wait_s=30, configuration={})
    with pytest.raises(ActivityFailed, match="wait_s must be a positive number"):
        probes.service_active("containerd", until="active", wait_s=-1, configuration={})


def test_host_reachable_tries_a_fresh_connection_before_saying_no(probe_hosts: RecordingTransport) -> None:
    def answer(host: Host, _command: str) -> tuple[int, str, str]:
        if host.name == LAB_NODE.name:
            return (0, "", "") if host.name in probe_hosts.forgotten else (255, "", "mux_client_request_session")
        return 255, "", "Connection refused"

    probe_hosts.answer = answer
    assert probes.host_reachable(configuration={}) == {"gpu-node-1": True, "metal-1": False}
    assert probe_hosts.forgotten == ["gpu-node-1", "metal-1"]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.end_headers()
            return
        status, body = (200, b"gpu healthy\n") if self.path == "/ok" else (503, b"draining\n")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_http_check_from_the_controller(server: str, free_port: int) -> None:
    ok = probes.http_check(url=f"{server}/ok", body_match="healthy", configuration={})["controller"]
    assert (ok["status"], ok["ok"], ok["body_matched"], ok["error"]) == (200, True, True, "")
    assert 0 < ok["latency_s"] < 5
    wrong_body = probes.http_check(url=f"{server}/ok", body_match="^sick", configuration={})["controller"]
    assert (wrong_body["ok"], wrong_body["body_matched"]) == (False, False)
    failing = probes.http_check(url=f"{server}/x", expected_status=503, body_match="drain", configuration={})
    assert failing["controller"]["ok"] is True
    moved = probes.http_check(url=f"{server}/moved", configuration={})["controller"]
    assert (moved["status"], moved["ok"]) == (302, False), "a redirect must be reported, not followed"
    down = probes.http_check(url=f"http://127.0.0.1:{free_port}/", timeout_s=2, configuration={})["controller"]
    assert (down["status"], down["ok"], down["latency_s"]) == (None, False, None)
    assert "refused" in down["error"].lower()


def test_http_check_from_hosts_uses_curl_there(monkeypatch: pytest.MonkeyPatch, server: str, free_port: int) -> None:
    if shutil.which("curl") is None:
        pytest.skip("no curl here to stand in for a host's")
    monkeypatch.setattr(probes, "targets", lambda *_, **__: plan_of(LAB_NODE))
    monkeypatch.setattr(probes, "get_transport", LocalTransport)
    ok = probes.http_check(url=f"{server}/ok", pattern="gpu-node-1", body_match="healthy", configuration={})
    assert ok["gpu-node-1"]["status"] == 200
    assert ok["gpu-node-1"]["ok"] is True
    assert ok["gpu-node-1"]["body_matched"] is True
    assert 0 < ok["gpu-node-1"]["latency_s"] < 5
    moved = probes.http_check(url=f"{server}/moved", pattern="gpu-node-1", configuration={})["gpu-node-1"]
    assert moved["status"] == 302
    down = probes.http_check(url=f"http://127.0.0.1:{free_port}/", pattern="gpu-node-1", configuration={})
    assert down["gpu-node-1"]["status"] is None
    assert down["gpu-node-1"]["ok"] is False
    assert "127.0.0.1" in down["gpu-node-1"]["error"]


def test_http_check_from_an_unreachable_host_says_so(probe_hosts: RecordingTransport) -> None:
    probe_hosts.answer = lambda *_: (255, "", "ssh: connect to host metal-1: No route to host")
    result = probes.http_check(url="http://10.0.0.1/", pattern="all", configuration={})
    assert result["metal-1"]["error"].startswith("unreachable: ssh: connect")
    assert result["metal-1"]["ok"] is False
