# STAND-IN: gpuops.fleet GPU simulator (lab only). Not NVIDIA software.
"""`nv-hostengine` stand-in and its client.

The real host engine speaks DCGM's binary protocol; this one serves JSON lines over TCP (one request, one
response per line) and reads/writes the node's shared state under its lock. Requests:
{"op": "ping"}, {"op": "snapshot"}, {"op": "inject", "gpu": N, "field": F, "value": V}.
Command line as the real one: -n, -b/--bind-interface, -p/--port, --service-account, -f/--log-filename,
--log-level, --pid, -t/--term.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pwd
import signal
import socket
import socketserver
import sys
import time
from pathlib import Path
from typing import Any

from gpusim import health
from gpusim import state as st

__all__ = ["HostEngineError", "inject", "main", "request", "snapshot"]

VERSION = "3.3.9"
DEFAULT_PIDFILE = "/var/run/nvhostengine.pid"
DEFAULT_LOGFILE = "/var/log/nv-hostengine.log"
MAX_LINE = 1 << 20

# DCGM field id -> (where in a GPU record, DCGM tag). Only these can be injected.
INJECTABLE = {
    84: "DCGM_FI_DEV_INFOROM_CONFIG_VALID",
    150: "DCGM_FI_DEV_GPU_TEMP",
    155: "DCGM_FI_DEV_POWER_USAGE",
    230: "DCGM_FI_DEV_XID_ERRORS",
    310: "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    311: "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    312: "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
    313: "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
    390: "DCGM_FI_DEV_RETIRED_SBE",
    391: "DCGM_FI_DEV_RETIRED_DBE",
    392: "DCGM_FI_DEV_RETIRED_PENDING",
    393: "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    394: "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    395: "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    396: "DCGM_FI_DEV_ROW_REMAP_PENDING",
    1523: "DCGM_FI_DEV_GPU_RECOVERY_ACTION",
}
_COUNTERS = {
    310: ("ecc", "sbe_volatile"),
    311: ("ecc", "dbe_volatile"),
    312: ("ecc", "sbe_aggregate"),
    313: ("ecc", "dbe_aggregate"),
    390: ("retired", "sbe"),
    391: ("retired", "dbe"),
    392: ("retired", "pending"),
    393: ("remap", "uncorrectable"),
    394: ("remap", "correctable"),
    395: ("remap", "failure"),
    396: ("remap", "pending"),
}
FIELD_XID = 230
log = logging.getLogger("nv-hostengine")


class HostEngineError(Exception):
    """The host engine cannot be reached or refused a request."""


def apply_injection(config: st.Config, gpu_id: int, field: int, value: float) -> str:
    """Write one injected field value into the state (as the hardware event it stands for)."""
    if field not in INJECTABLE:
        raise HostEngineError("Unknown field id")
    with st.mutate(config) as data:
        gpus = {gpu["index"]: gpu for gpu in data["gpus"]}
        if gpu_id not in gpus:
            raise HostEngineError("Bad parameter passed to function")
        gpu = gpus[gpu_id]
        if field == FIELD_XID:
            return st.record_xid(config, gpu, int(value), health.xid_message(int(value)))
        if field in _COUNTERS:
            group, key = _COUNTERS[field]
            gpu[group][key] = int(value)
        elif field == 150:  # noqa: PLR2004 - DCGM field id
            gpu.setdefault("overrides", {})["temperature"] = int(value)
        elif field == 155:  # noqa: PLR2004 - DCGM field id
            gpu.setdefault("overrides", {})["power"] = float(value)
        elif field == 84:  # noqa: PLR2004 - DCGM field id
            gpu["inforom_valid"] = int(value)
        else:
            gpu["recovery_action"] = int(value)
    return ""


def local_snapshot(config: st.Config) -> list[dict[str, Any]]:
    return [view._asdict() for view in st.compute_view(config, st.load_state(config))]


def views_from_snapshot(records: list[dict[str, Any]]) -> list[st.GpuView]:
    return [st.GpuView(**record) for record in records]


def handle(config: st.Config, message: dict[str, Any]) -> dict[str, Any]:
    op = message.get("op")
    try:
        if op == "ping":
            return {"ok": True, "version": VERSION}
        if op == "snapshot":
            return {"ok": True, "gpus": local_snapshot(config), "hostname": config.hostname}
        if op == "inject":
            line = apply_injection(config, int(message["gpu"]), int(message["field"]), float(message["value"]))
            return {"ok": True, "kernel_log": line}
    except (HostEngineError, st.StateError, KeyError, ValueError, TypeError) as err:
        return {"ok": False, "error": str(err)}
    return {"ok": False, "error": f"unknown op {op!r}"}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        config: st.Config = self.server.gpusim_config  # type: ignore[attr-defined]
        for raw in self.rfile:
            try:
                message = json.loads(raw[:MAX_LINE])
            except ValueError:
                reply: dict[str, Any] = {"ok": False, "error": "bad request"}
            else:
                reply = handle(config, message) if isinstance(message, dict) else {"ok": False, "error": "bad"}
                log.debug("request %s -> ok=%s", message.get("op") if isinstance(message, dict) else "?", reply["ok"])
            self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


# ---------------------------------------------------------------------------------------------------------------
# Client


def parse_host(text: str | None, default_port: int) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port` as dcgmi's --host and dcgm-exporter's -r take them."""
    if not text:
        return "localhost", default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host or "localhost", int(port)
    return text, default_port


def request(host: str, port: int, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(json.dumps(message).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as err:
        raise HostEngineError(str(err)) from err
    try:
        reply: dict[str, Any] = json.loads(data)
    except ValueError as err:
        raise HostEngineError("bad reply from the host engine") from err
    return reply


def snapshot(host: str, port: int) -> list[st.GpuView]:
    reply = request(host, port, {"op": "snapshot"})
    if not reply.get("ok"):
        raise HostEngineError(reply.get("error", "snapshot failed"))
    return views_from_snapshot(reply["gpus"])


def inject(host: str, port: int, gpu: int, field: int, value: float) -> dict[str, Any]:
    return request(host, port, {"op": "inject", "gpu": gpu, "field": field, "value": value})


# ---------------------------------------------------------------------------------------------------------------
# Daemon


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nv-hostengine", description="STAND-IN for NVIDIA DCGM's host engine")
    parser.add_argument("-n", "--no-daemon", action="store_true", help="run in the foreground")
    parser.add_argument("-b", "--bind-interface", default="127.0.0.1", help="IP to listen on; ALL for every one")
    parser.add_argument("-p", "--port", type=int, default=None, help="TCP port (default 5555)")
    parser.add_argument("--service-account", default="", help="account the host engine runs as")
    parser.add_argument("-f", "--log-filename", default=DEFAULT_LOGFILE)
    parser.add_argument("--log-level", default="ERROR", type=str.upper)
    parser.add_argument("--pid", default=DEFAULT_PIDFILE, help="PID file")
    parser.add_argument("-t", "--term", action="store_true", help="stop the running host engine")
    parser.add_argument("-v", "--version", action="store_true")
    return parser


_LEVELS = {"NONE": logging.CRITICAL + 10, "FATAL": logging.CRITICAL, "ERROR": logging.ERROR, "WARN": logging.WARNING}
_LEVELS |= {"INFO": logging.INFO, "DEBUG": logging.DEBUG, "VERB": logging.DEBUG}


def _terminate(pidfile: Path) -> int:
    try:
        pid = int(pidfile.read_text(encoding="ascii").strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        print("Host engine is not running.")
        return 1
    print("Host engine successfully terminated.")
    return 0


def _exit_on_signal(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _daemonize() -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        print(f"Version : {VERSION} (STAND-IN: gpuops.fleet GPU simulator)")
        return 0
    pidfile = Path(args.pid)
    if args.term:
        return _terminate(pidfile)
    if args.service_account:
        try:
            pwd.getpwnam(args.service_account)
        except KeyError:
            print(f"Error: unable to find user {args.service_account}")
            return 1
    config = st.load_config()
    port = args.port or config.hostengine_port
    bind = "" if args.bind_interface.upper() == "ALL" else args.bind_interface
    try:
        server = _Server((bind, port), _Handler)
    except OSError as err:
        print(f"Err: Failed to start DCGM Server: {err.strerror} (port {port})")
        return 1
    server.gpusim_config = config  # type: ignore[attr-defined]
    if not args.no_daemon:
        print(f"Started host engine version {VERSION} using port number: {port} ")
        sys.stdout.flush()
        _daemonize()
    handlers: list[logging.Handler] = [logging.StreamHandler()] if args.no_daemon else []
    with contextlib.suppress(OSError):
        handlers.append(logging.FileHandler(args.log_filename))
    logging.basicConfig(level=_LEVELS.get(args.log_level, logging.ERROR), handlers=handlers, force=True)
    with contextlib.suppress(OSError):
        pidfile.write_text(f"{os.getpid()}\n", encoding="ascii")
    # The stand-in keeps root to write the node's shared state file; the account is only checked.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    log.warning("STAND-IN nv-hostengine listening on %s:%s (%s)", bind or "*", port, time.ctime())
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        server.server_close()
        with contextlib.suppress(OSError):
            pidfile.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
