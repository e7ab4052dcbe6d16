"""Running commands on hosts: OpenSSH with connection multiplexing (SSHTransport), or bash here (LocalTransport).

SSHTransport reaches a host as Ansible does, with the inventory's ``ansible_host``/``ansible_port``/
``ansible_user``/``ansible_ssh_private_key_file`` and ``ansible_ssh_common_args``/``ansible_ssh_extra_args``
(chaosgpu.inventory resolves them into a Host). Every call for a host goes through one master connection
(``ControlMaster=auto``, ``ControlPersist``) whose socket lives in a private directory (mode 0700) this transport
creates and removes; ``close()`` (or leaving the ``with`` block) stops the masters with ``ssh -O exit``.

ssh reads ``-o`` options first come, first served. The transport puts ``BatchMode=yes`` (never prompt) and its
ControlMaster/ControlPath first, so inventory arguments cannot turn them off; then the host's arguments; then its
defaults for ConnectTimeout, ControlPersist and ServerAlive*, which the host's arguments may override.

Commands run under the remote account's login shell, as ``ssh host COMMAND`` runs them; a command that needs root
carries its own ``sudo``. A call that outlives its timeout is killed (the ssh client; the remote command may run on
until it next writes) and comes back with rc 124 and "timed out after N s" in stderr. ssh's own failures (no
connection, authentication refused) come back as rc 255 with ssh's message.

Only the host name, the command, its exit status and duration are logged (debug level); stdin, where secrets
belong, and the ssh argument list are never logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from chaosgpu.types import CommandResult, Host, TransportError

__all__ = ["DEFAULT_MAX_WORKERS", "TIMEOUT_RC", "LocalTransport", "SSHTransport"]

logger = logging.getLogger("chaostoolkit")

DEFAULT_MAX_WORKERS = 32
TIMEOUT_RC = 124  # what timeout(1) returns
# A UNIX socket path holds at most 108 bytes (104 on BSDs); ssh adds a 17-character suffix while it sets a master up.
_MAX_SOCKET_PATH = 104 - 17
_GRACE_AFTER_KILL = 0.5  # seconds to collect what a killed command had written


class _SubprocessTransport:
    """Runs an argument list per call, with timeouts, and fans out over a bounded thread pool."""

    def __init__(self, max_workers: int = DEFAULT_MAX_WORKERS) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers

    def argv(self, host: Host, command: str) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the transport holds (nothing here)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def run(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:
        """Run ``command`` on ``host``; the result whatever the exit status (rc 124 on timeout)."""
        result = _run_argv(self.argv(host, command), host.name, command, timeout, stdin)
        logger.debug("%s: `%s` exited %d after %.1f s", host.name, command, result.rc, result.seconds)
        return result

    def check(self, host: Host, command: str, timeout: float = 60, stdin: str | None = None) -> CommandResult:
        """Run ``command`` on ``host``; raise TransportError unless it exits 0."""
        result = self.run(host, command, timeout=timeout, stdin=stdin)
        if result.ok:
            return result
        if result.rc == TIMEOUT_RC and result.stderr.rstrip().endswith(_timeout_note(timeout)):
            raise TransportError(result, f"timed out after {timeout:g} s")
        raise TransportError(result)

    def run_many(
        self, hosts: Sequence[Host], command: str, timeout: float = 60, stdin: str | None = None
    ) -> dict[str, CommandResult]:
        """``command`` on every host, at most ``max_workers`` at a time; results by host name in ``hosts`` order."""
        names = [host.name for host in hosts]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"hosts given more than once: {', '.join(duplicates)}")
        if not hosts:
            return {}
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(hosts)), thread_name_prefix="chaosgpu") as pool:
            futures = [pool.submit(self.run, host, command, timeout, stdin) for host in hosts]
            return {host.name: future.result() for host, future in zip(hosts, futures, strict=True)}


class SSHTransport(_SubprocessTransport):
    """OpenSSH to inventory hosts, one multiplexed master connection per host, parallel fan-out."""

    def __init__(
        self,
        max_workers: int = DEFAULT_MAX_WORKERS,
        connect_timeout: int = 10,
        control_persist: str = "120s",
        server_alive_interval: int = 5,
        server_alive_count_max: int = 3,
        ssh: str = "ssh",
        control_dir: str | None = None,
    ) -> None:
        """``control_dir``: where master sockets go (must be private); by default a new 0700 directory in /tmp."""
        super().__init__(max_workers)
        self.ssh = ssh
        self.connect_timeout = connect_timeout
        self.control_persist = control_persist
        self.server_alive_interval = server_alive_interval
        self.server_alive_count_max = server_alive_count_max
        self._own_control_dir = control_dir is None
        self.control_dir = Path(control_dir) if control_dir else _private_dir()
        self._masters: dict[str, Host] = {}
        self._lock = threading.Lock()

    def control_path(self, host: Host) -> str:
        """The master socket of ``host``: short, and distinct for each way of reaching a host."""
        identity = "\0".join([host.name, host.address, str(host.port), host.user or "", host.key_file or ""])
        return str(self.control_dir / hashlib.sha256(identity.encode()).hexdigest()[:16])

    def argv(self, host: Host, command: str) -> list[str]:
        """The ssh argument list that runs ``command`` on ``host``."""
        path = self.control_path(host)
        with self._lock:
            self._masters.setdefault(path, host)
        return [*self._destination_options(host, path), "--", host.address, command]

    def _destination_options(self, host: Host, path: str) -> list[str]:
        argv = [self.ssh, "-o", "BatchMode=yes", "-o", "ControlMaster=auto", "-o", f"ControlPath={path}"]
        argv += list(host.ssh_args)
        argv += [
            "-o",
            f"ControlPersist={self.control_persist}",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            f"ServerAliveInterval={self.server_alive_interval}",
            "-o",
            f"ServerAliveCountMax={self.server_alive_count_max}",
            "-p",
            str(host.port),
        ]
        if host.user:
            argv += ["-l", host.user]
        if host.key_file:
            argv += ["-i", host.key_file]
        return argv

    def forget(self, host: Host, timeout: float = 10) -> None:
        """Stop the master connection of ``host`` (after a reboot, say), so the next call connects afresh."""
        path = self.control_path(host)
        with self._lock:
            self._masters.pop(path, None)
        self._exit_master(host, path, timeout)

    def _exit_master(self, host: Host, path: str, timeout: float) -> None:
        if not os.path.exists(path):
            return
        argv = [*self._destination_options(host, path), "-O", "exit", "--", host.address]
        result = _run_argv(argv, host.name, "ssh -O exit", timeout, None)
        if not result.ok:
            logger.debug("%s: stopping the ssh master failed (rc %d): %s", host.name, result.rc, result.stderr.strip())

    def close(self) -> None:
        """Stop every master connection this transport opened and remove its socket directory."""
        with self._lock:
            masters = list(self._masters.items())
            self._masters.clear()
        for path, host in masters:
            self._exit_master(host, path, 10)
        if self._own_control_dir:
            shutil.rmtree(self.control_dir, ignore_errors=True)


class LocalTransport(_SubprocessTransport):
    """Runs commands with bash on this machine, whatever the host (tests, and controller-side steps)."""

    def __init__(self, max_workers: int = DEFAULT_MAX_WORKERS, shell: str = "bash") -> None:
        super().__init__(max_workers)
        self.shell = shell

    def argv(self, host: Host, command: str) -> list[str]:  # noqa: ARG002 - every host is this machine
        return [self.shell, "-c", command]


def _private_dir() -> Path:
    """A new directory only this user can enter, short enough for socket paths under it."""
    base = tempfile.gettempdir()
    # <base>/cgssh-XXXXXXXX/<16 hex digits>: the base plus 32 characters.
    if len(base) + 32 > _MAX_SOCKET_PATH and os.path.isdir("/tmp"):  # noqa: S108 - mkdtemp: unique, mode 0700
        base = "/tmp"  # noqa: S108
    path = Path(tempfile.mkdtemp(prefix="cgssh-", dir=base))
    path.chmod(0o700)
    return path


def _timeout_note(timeout: float) -> str:
    return f"timed out after {timeout:g} s"


def _run_argv(argv: list[str], host: str, command: str, timeout: float, stdin: str | None) -> CommandResult:
    """Run ``argv`` in its own process group; on timeout kill the group and return rc 124.

    Output is read here rather than with Popen.communicate: a multiplexed ssh client hands its stdout/stderr to
    the master connection, which keeps them open until the remote command ends, so after a timeout the pipes are
    drained for a moment and then closed instead of waited on.
    """
    started = time.monotonic()
    try:
        process = subprocess.Popen(  # noqa: S603 - an argument list, no shell
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return CommandResult(host, command, 127, "", f"cannot run {argv[0]}: {exc.strerror or exc}", 0.0)
    if process.stdout is None or process.stderr is None:  # pragma: no cover - Popen was given PIPE
        raise RuntimeError("subprocess pipes missing")
    if stdin is not None and process.stdin is not None:
        threading.Thread(target=_feed, args=(process.stdin, stdin.encode()), daemon=True).start()
    output = _Output(process.stdout, process.stderr)
    timed_out = not output.read_until(started + timeout)
    if not timed_out:
        try:
            process.wait(timeout=max(0.0, started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:  # closed its output but kept running
            timed_out = True
    if timed_out:
        _kill_group(process)
        output.read_until(time.monotonic() + _GRACE_AFTER_KILL)
        process.wait()
    output.close()
    stdout, stderr = output.text()
    rc = process.returncode
    if timed_out:
        rc = TIMEOUT_RC
        stderr += ("" if not stderr or stderr.endswith("\n") else "\n") + _timeout_note(timeout)
    return CommandResult(host, command, rc, stdout, stderr, time.monotonic() - started)


def _feed(stdin: IO[bytes], data: bytes) -> None:
    """Write stdin and close it (a thread of its own, so a full pipe cannot stall reading the output)."""
    with contextlib.suppress(OSError):  # the command exited, or was killed, without reading it all
        stdin.write(data)
    with contextlib.suppress(OSError):
        stdin.close()


class _Output:
    """Reads a process's stdout and stderr together until both end or a deadline passes."""

    def __init__(self, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self._chunks: dict[int, list[bytes]] = {stdout.fileno(): [], stderr.fileno(): []}
        self._order = (stdout.fileno(), stderr.fileno())
        self._files = (stdout, stderr)
        self._selector = selectors.DefaultSelector()
        for fd in self._order:
            self._selector.register(fd, selectors.EVENT_READ)

    def read_until(self, deadline: float) -> bool:
        """Read until both streams end (True) or ``deadline`` passes (False)."""
        while self._selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in self._selector.select(remaining):
                data = os.read(key.fd, 65536)
                if data:
                    self._chunks[key.fd].append(data)
                else:
                    self._selector.unregister(key.fd)
        return True

    def close(self) -> None:
        self._selector.close()
        for file in self._files:
            file.close()

    def text(self) -> tuple[str, str]:
        out, err = (b"".join(self._chunks[fd]).decode("utf-8", "replace") for fd in self._order)
        return out, err


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
