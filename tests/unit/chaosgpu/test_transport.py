"""chaosgpu.transport: SSHTransport against a fake ``ssh`` that records its argument list and runs the remote
command here with bash; LocalTransport directly."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

from chaosgpu.transport import TIMEOUT_RC, LocalTransport, SSHTransport
from chaosgpu.types import Host, TransportError

FAKE_SSH = f"""#!{sys.executable}
# Records argv (and when it ran) in $FAKE_SSH_LOG, then runs the remote command here with bash, like sshd would.
import json, os, subprocess, sys, time
args = sys.argv[1:]
entry = {{"argv": sys.argv, "start": time.time(), "pid": os.getpid()}}
if "-O" in args:
    entry["end"] = time.time()
    with open(os.environ["FAKE_SSH_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\\n")
    sys.exit(0)
address, command = args[args.index("--") + 1:]
rc = subprocess.call(["bash", "-c", command])
entry["end"] = time.time()
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\\n")
sys.exit(rc)
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """The fake ssh's path and its log."""
    ssh = tmp_path / "bin" / "ssh"
    ssh.parent.mkdir()
    ssh.write_text(FAKE_SSH)
    ssh.chmod(0o755)
    log = tmp_path / "ssh.log"
    log.touch()
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    return ssh, log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def ends_soon(pid: int, within: float = 10) -> bool:
    """Whether ``pid`` ends within ``within`` seconds (a SIGKILL takes effect when the process is next scheduled)."""
    deadline = time.monotonic() + within
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def host(name: str = "gpu-node-1", **kwargs) -> Host:
    values = {"address": "127.0.0.1", "port": 2221, "user": "operator", "key_file": "/keys/id_ed25519"}
    values.update(kwargs)
    return Host(name=name, **values)


@pytest.fixture
def transport(fake_ssh):
    with SSHTransport(ssh=str(fake_ssh[0]), connect_timeout=7) as ssh_transport:
        yield ssh_transport


def test_argv_carries_the_hosts_connection_variables(transport, fake_ssh):
    target = host(ssh_args=("-o", "StrictHostKeyChecking=no", "-o", "ProxyJump=bastion"))
    assert transport.run(target, "hostname -s").ok
    argv = calls(fake_ssh[1])[0]["argv"]
    assert argv[-3:] == ["--", "127.0.0.1", "hostname -s"]
    options = argv[1:-3]
    for pair in (["-p", "2221"], ["-l", "operator"], ["-i", "/keys/id_ed25519"], ["-o", "ConnectTimeout=7"]):
        assert any(options[i : i + 2] == pair for i in range(len(options) - 1)), pair
    assert "BatchMode=yes" in options
    assert "ControlMaster=auto" in options
    assert "ControlPersist=120s" in options
    # ssh keeps the first value of an option: BatchMode and the control socket come before the host's arguments,
    # which come before the defaults they may override.
    assert options.index("BatchMode=yes") < options.index("ProxyJump=bastion") < options.index("ConnectTimeout=7")
    control = next(o for o in options if o.startswith("ControlPath="))
    assert options.index(control) < options.index("StrictHostKeyChecking=no")


def test_no_user_or_key_means_no_flags(transport, fake_ssh):
    transport.run(host(user=None, key_file=None), "true")
    argv = calls(fake_ssh[1])[0]["argv"]
    assert "-l" not in argv
    assert "-i" not in argv


def test_control_sockets_live_in_a_private_short_directory(transport):
    mode = stat.S_IMODE(os.stat(transport.control_dir).st_mode)
    assert mode == 0o700
    path = transport.control_path(host())
    assert Path(path).parent == transport.control_dir
    assert len(path) + 17 < 104  # ssh adds a suffix while it sets the master up
    assert transport.control_path(host()) == path
    assert transport.control_path(host(name="gpu-node-2", port=2222)) != path


def test_a_long_temporary_directory_falls_back_to_tmp(fake_ssh, tmp_path, monkeypatch):
    long_tmp = tmp_path / ("x" * 90)
    long_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_tmp))
    with SSHTransport(ssh=str(fake_ssh[0])) as ssh_transport:
        assert ssh_transport.control_dir.parent == Path("/tmp")  # noqa: S108 - the fallback under test
        assert len(ssh_transport.control_path(host())) + 17 < 104


def test_command_output_status_and_stdin_come_back(transport):
    result = transport.run(host(), "read line; echo \"got $line\"; echo 'a b' | tr a x >&2; exit 3", stdin="hi\n")
    assert (result.rc, result.stdout, result.stderr) == (3, "got hi\n", "x b\n")
    assert result.host == "gpu-node-1"
    assert result.seconds >= 0


def test_timeout_kills_the_command_and_says_so(transport, tmp_path):
    pid_file = tmp_path / "pid"
    result = transport.run(host(), f"echo $$ > {pid_file}; echo started; exec sleep 60", timeout=2)
    assert result.rc == TIMEOUT_RC
    assert result.stdout == "started\n"
    assert result.stderr.endswith("timed out after 2 s")
    assert result.seconds < 30
    # The sleeping process ends (killed with its process group) instead of running on for a minute.
    assert ends_soon(int(pid_file.read_text()))


def test_check_raises_naming_host_command_and_stderr(transport):
    with pytest.raises(TransportError, match=r"gpu-node-1: `echo boom >&2; exit 2` exited 2: boom") as failed:
        transport.check(host(), "echo boom >&2; exit 2")
    assert failed.value.result.rc == 2
    assert transport.check(host(), "echo fine").stdout == "fine\n"


def test_check_says_a_timeout_is_a_timeout(transport):
    with pytest.raises(TransportError, match=r"gpu-node-1: `sleep 30` timed out after 0.3 s"):
        transport.check(host(), "sleep 30", timeout=0.3)


def test_run_many_runs_in_parallel(transport):
    hosts = [host(name=f"n{i}", port=2200 + i) for i in range(5)]
    started = time.monotonic()
    for target in hosts:
        transport.run(target, "sleep 1")
    serial = time.monotonic() - started
    started = time.monotonic()
    results = transport.run_many(hosts, "sleep 1")
    parallel = time.monotonic() - started
    assert all(result.ok for result in results.values())
    # Five one-second calls side by side take about one call's time, not five.
    assert parallel / serial < 0.5, (parallel, serial)


def test_run_many_keeps_to_max_workers(fake_ssh):
    hosts = [host(name=f"n{i}", port=2200 + i) for i in range(6)]
    with SSHTransport(ssh=str(fake_ssh[0]), max_workers=2) as limited:
        limited.run_many(hosts, "sleep 0.5")
    intervals = [(c["start"], c["end"]) for c in calls(fake_ssh[1]) if "-O" not in c["argv"]]
    assert len(intervals) == 6
    overlap = max(sum(1 for s, e in intervals if s <= start < e) for start, _ in intervals)
    assert overlap <= 2
    assert overlap == 2  # and it does use both


def test_run_many_returns_results_by_host_in_order(transport):
    hosts = [host(name=name, port=port) for name, port in (("b", 2202), ("a", 2201), ("c", 2203))]
    results = transport.run_many(hosts, "echo $((6 * 7))")
    assert list(results) == ["b", "a", "c"]
    assert {result.stdout for result in results.values()} == {"42\n"}
    assert transport.run_many([], "true") == {}
    with pytest.raises(ValueError, match="hosts given more than once: a"):
        transport.run_many([hosts[1], hosts[1]], "true")


def test_close_stops_the_masters_and_removes_the_socket_directory(fake_ssh):
    ssh_transport = SSHTransport(ssh=str(fake_ssh[0]))
    up, never = host(name="up"), host(name="never", port=2299)
    ssh_transport.run(up, "true")
    ssh_transport.run(never, "true")
    Path(ssh_transport.control_path(up)).touch()  # a master is listening for "up" only
    directory = ssh_transport.control_dir
    ssh_transport.close()
    exits = [c["argv"] for c in calls(fake_ssh[1]) if "-O" in c["argv"]]
    assert len(exits) == 1
    argv = exits[0]
    assert argv[argv.index("-O") + 1] == "exit"
    assert f"ControlPath={ssh_transport.control_path(up)}" in argv
    assert argv[-2:] == ["--", "127.0.0.1"]
    assert not directory.exists()


def test_forget_stops_one_master(transport, fake_ssh):
    target = host()
    transport.run(target, "true")
    Path(transport.control_path(target)).touch()
    transport.forget(target)
    assert [c["argv"][-2:] for c in calls(fake_ssh[1]) if "-O" in c["argv"]] == [["--", "127.0.0.1"]]


def test_a_given_control_dir_is_kept(fake_ssh, tmp_path):
    control = tmp_path / "c"
    control.mkdir(mode=0o700)
    with SSHTransport(ssh=str(fake_ssh[0]), control_dir=str(control)) as ssh_transport:
        assert ssh_transport.control_path(host()).startswith(str(control))
    assert control.exists()


def test_missing_ssh_is_an_error_result(tmp_path):
    with SSHTransport(ssh=str(tmp_path / "no-ssh")) as ssh_transport:
        result = ssh_transport.run(host(), "true")
    assert result.rc == 127
    assert "cannot run" in result.stderr
    assert "no-ssh" in result.stderr


def test_stdin_is_never_logged(transport, caplog):
    with caplog.at_level(logging.DEBUG, logger="chaostoolkit"):
        transport.run(host(), "cat >/dev/null", stdin="hunter2-secret")
    assert "cat >/dev/null" in caplog.text
    assert "hunter2-secret" not in caplog.text
    assert "/keys/id_ed25519" not in caplog.text  # nor the argument list


def test_local_transport_runs_bash_here_with_the_same_semantics(tmp_path):
    local = LocalTransport()
    result = local.run(host(), "echo $((1 + 1)); echo err >&2; exit 5")
    assert (result.rc, result.stdout, result.stderr) == (5, "2\n", "err\n")
    assert local.run(host(), "cat", stdin="piped").stdout == "piped"
    # A background child that keeps the output open is killed with the rest of the process group.
    pid_file = tmp_path / "pid"
    timed_out = local.run(host(), f"(echo $BASHPID > {pid_file}; exec sleep 60) & echo bg", timeout=2)
    assert timed_out.rc == TIMEOUT_RC
    assert timed_out.stdout == "bg\n"
    assert ends_soon(int(pid_file.read_text()))
