# STAND-IN: gpuops.fleet GPU simulator (lab only). Not NVIDIA software.
"""`nvidia-persistenced` stand-in: a real daemon that forks like NVIDIA's, writes its pid file, drops to
--user, and keeps the simulated GPUs in persistence mode while it runs (nvidia-smi reads the pid file)."""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import signal
import socket
import sys
import syslog
from pathlib import Path

__all__ = ["main"]

RUN_DIR = Path(os.environ.get("GPUSIM_PERSISTENCED_DIR", "/var/run/nvidia-persistenced"))
VERSION = "535.183.01"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nvidia-persistenced", description="STAND-IN NVIDIA Persistence Daemon")
    parser.add_argument("-u", "--user", default="")
    parser.add_argument("-g", "--group", default="")
    parser.add_argument("-V", "--verbose", action="store_true")
    parser.add_argument("--persistence-mode", dest="persistence", action="store_true", default=True)
    parser.add_argument("--no-persistence-mode", dest="persistence", action="store_false")
    parser.add_argument("--uvm-persistence-mode", action="store_true")
    parser.add_argument("--nvidia-cfg-path", default="")
    parser.add_argument("-v", "--version", action="store_true")
    return parser


def _ids(user: str, group: str) -> tuple[int, int] | None:
    if not user:
        return None
    entry = pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    return entry.pw_uid, gid


def _serve(pidfile: Path, sock_path: Path, verbose: bool) -> None:
    stop = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with contextlib.suppress(OSError):
        sock_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(4)
    listener.settimeout(1.0)
    syslog.syslog(syslog.LOG_NOTICE, "PID file unlocked.")
    while not stop:
        with contextlib.suppress(TimeoutError, OSError):
            conn, _ = listener.accept()
            conn.close()
    listener.close()
    if verbose:
        syslog.syslog(syslog.LOG_INFO, f"Shutdown ({os.getpid()})")
    with contextlib.suppress(OSError):
        sock_path.unlink()
    with contextlib.suppress(OSError):
        pidfile.unlink()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        print(f"nvidia-persistenced:  version {VERSION}  (STAND-IN: gpuops.fleet GPU simulator)")
        return 0
    syslog.openlog("nvidia-persistenced", syslog.LOG_PID, syslog.LOG_DAEMON)
    try:
        ids = _ids(args.user, args.group)
    except KeyError:
        sys.stderr.write(f"nvidia-persistenced failed to initialize: unknown user/group {args.user!r}\n")
        return 1
    pidfile = RUN_DIR / "nvidia-persistenced.pid"
    try:
        RUN_DIR.mkdir(mode=0o755, exist_ok=True)
        if ids is not None and os.geteuid() == 0:
            os.chown(RUN_DIR, *ids)
    except OSError as err:
        sys.stderr.write(f"nvidia-persistenced failed to initialize. Check syslog for more details. ({err})\n")
        return 1
    syslog.syslog(syslog.LOG_NOTICE, f"Started ({os.getpid()})")
    # Fork like the real daemon: the parent returns once the child has written the pid file (Type=forking).
    ready_r, ready_w = os.pipe()
    if os.fork():
        os.close(ready_w)
        ok = os.read(ready_r, 1) == b"1"
        return 0 if ok else 1
    os.close(ready_r)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    try:
        if ids is not None and os.geteuid() == 0:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])
        pidfile.write_text(f"{os.getpid()}\n", encoding="ascii")
    except OSError as err:
        syslog.syslog(syslog.LOG_ERR, f"Failed to write the PID file: {err}")
        os.write(ready_w, b"0")
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.write(ready_w, b"1")
    os.close(ready_w)
    if args.verbose:
        syslog.syslog(syslog.LOG_INFO, f"Persistence mode {'enabled' if args.persistence else 'disabled'}")
    _serve(pidfile, RUN_DIR / "socket", args.verbose)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
