#!/usr/bin/env python3
# STAND-IN inference service: gpuops.fleet lab workload, lab only (standard library only).
"""A small inference-style HTTP service that answers only while its node is fit to serve.

Endpoints (HTTP/1.1, JSON bodies):

- ``GET /infer`` or ``POST /infer`` (body: JSON ``{"input": "..."}`` or plain text, at most 64 KiB): waits a
  simulated compute time drawn from ``[compute_ms_min, compute_ms_max]``, then answers 200 with
  ``{"node", "gpu", "gpu_uuid", "model", "input_chars", "output", "compute_ms"}``; the GPU is picked round robin
  among the GPUs nvidia-smi listed.
- ``GET /healthz``: 200 ``{"status": "ok", ...}`` or 503 ``{"status": "unavailable", "reason": ...}`` — the
  verdict /infer uses, without the compute time (HAProxy's health check).
- ``GET /metrics``: Prometheus text (requests by path and code, the verdict, the GPUs listed).

The node is *unfit* (503 with the reason) when

- a drain file exists (gpu_health's ``/var/lib/gpu_health/drain.json``, its maintenance marker): checked on every
  request with one ``stat``, so a drain takes effect at once;
- ``nvidia-smi --query-gpu=index,uuid --format=csv,noheader,nounits`` fails (exit status, timeout, not found),
  reports a lost GPU, or lists fewer GPUs than expected. A background thread runs it every ``health_interval_s``
  (one fork per interval whatever the load); requests read its last verdict, and a verdict older than
  ``3 * health_interval_s + nvidia_smi_timeout_s`` counts as unfit too (the checker is stuck).

Exit status 2 with one line per bad option, naming it, when the command line is invalid.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MODEL = "lab-echo-1"
MAX_BODY_BYTES = 64 * 1024
_REASON_MAX_CHARS = 300
_STALE_FACTOR = 3


@dataclass(frozen=True)
class Config:
    """Everything the service is told on its command line."""

    listen: str = "127.0.0.1"
    port: int = 8000
    node: str = field(default_factory=socket.gethostname)
    nvidia_smi: str = "/usr/bin/nvidia-smi"
    nvidia_smi_timeout_s: float = 5.0
    expected_gpus: int = 8
    drain_files: tuple[str, ...] = ("/var/lib/gpu_health/drain.json", "/var/lib/gpu_health/maintenance.json")
    health_interval_s: float = 1.0
    compute_ms_min: float = 5.0
    compute_ms_max: float = 20.0


@dataclass(frozen=True)
class Gpu:
    """One GPU that nvidia-smi listed."""

    index: int
    uuid: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of one health check: healthy, or why not; ``checked_at`` is time.monotonic()."""

    healthy: bool
    reason: str
    gpus: tuple[Gpu, ...]
    checked_at: float


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _REASON_MAX_CHARS else flat[: _REASON_MAX_CHARS - 3] + "..."


def parse_gpu_list(stdout: str) -> tuple[list[Gpu], list[str]]:
    """GPUs of ``--query-gpu=index,uuid --format=csv,noheader,nounits`` output, and the lines that are not GPUs
    (nvidia-smi prints an error line such as ``Unable to determine the device handle ...: GPU is lost`` in place
    of a lost GPU)."""
    gpus: list[Gpu] = []
    other: list[str] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) >= 2 and cells[0].isdigit():  # noqa: PLR2004 - index and uuid
            gpus.append(Gpu(int(cells[0]), cells[1]))
        else:
            other.append(line.strip())
    return gpus, other


def _run_nvidia_smi(config: Config) -> subprocess.CompletedProcess[str] | str:
    """nvidia-smi's answer to the GPU query, or why it gave none."""
    argv = [config.nvidia_smi, "--query-gpu=index,uuid", "--format=csv,noheader,nounits"]
    try:
        return subprocess.run(  # noqa: S603 - an argument list from the service's own configuration
            argv, capture_output=True, text=True, timeout=config.nvidia_smi_timeout_s, check=False
        )
    except FileNotFoundError:
        return f"nvidia-smi not found: {config.nvidia_smi}"
    except PermissionError:
        return f"nvidia-smi not executable: {config.nvidia_smi}"
    except subprocess.TimeoutExpired:
        return f"nvidia-smi did not answer within {config.nvidia_smi_timeout_s:g} s"
    except OSError as err:
        return f"nvidia-smi could not run: {err}"


def check_gpus(config: Config, now: float | None = None) -> Verdict:
    """Run nvidia-smi once and judge its answer (never raises)."""
    stamp = time.monotonic() if now is None else now
    done = _run_nvidia_smi(config)
    if isinstance(done, str):
        return Verdict(False, done, (), stamp)
    gpus, other = parse_gpu_list(done.stdout)
    lost = [line for line in other if "lost" in line.lower()]
    reason = ""
    if lost:
        reason = f"GPU lost: {lost[0]}"
    elif done.returncode != 0:
        detail = (other[:1] or done.stderr.strip().splitlines()[:1] or ["no output"])[0]
        reason = f"nvidia-smi exited {done.returncode}: {detail}"
    elif len(gpus) < config.expected_gpus:
        reason = f"nvidia-smi lists {len(gpus)} GPUs, {config.expected_gpus} expected"
    return Verdict(not reason, _short(reason), tuple(gpus), stamp)


def drain_reason(paths: Sequence[str]) -> str | None:
    """Why the node is drained (the first drain file that exists, with its ``reason``), or None."""
    for path in paths:
        try:
            os.stat(path)
        except FileNotFoundError:
            continue
        except OSError as err:
            return f"drain file {path} cannot be checked: {err.strerror}"
        reason = ""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.loads(handle.read(MAX_BODY_BYTES))
            if isinstance(data, dict):
                reason = str(data.get("reason") or "")
        except (OSError, ValueError):
            pass
        return _short(f"node drained ({path})" + (f": {reason}" if reason else ""))
    return None


class Workload:
    """The service's state: the health monitor's last verdict, the round robin, the counters."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._verdict = Verdict(False, "health not checked yet", (), time.monotonic())
        self._next_gpu = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests: dict[tuple[str, int], int] = {}

    # Health -------------------------------------------------------------------------------------------------

    def refresh(self) -> Verdict:
        """Check the GPUs now and keep the verdict; log a change of verdict (one line to stderr)."""
        verdict = check_gpus(self.config)
        with self._lock:
            before = self._verdict
            self._verdict = verdict
        if (before.healthy, before.reason) != (verdict.healthy, verdict.reason):
            state = "healthy" if verdict.healthy else f"unhealthy: {verdict.reason}"
            print(f"lab_workload: GPUs {state} ({len(verdict.gpus)} listed)", file=sys.stderr, flush=True)
        return verdict

    def start_monitor(self) -> None:
        """Check once now, then every ``health_interval_s`` in a daemon thread until ``stop_monitor``."""
        self.refresh()

        def loop() -> None:
            while not self._stop.wait(self.config.health_interval_s):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="lab-workload-health", daemon=True)
        self._thread.start()

    def stop_monitor(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.nvidia_smi_timeout_s + 1)

    def verdict(self) -> Verdict:
        """The verdict a request is answered by: a drain file first, then the monitor's (not stale) verdict."""
        drained = drain_reason(self.config.drain_files)
        with self._lock:
            current = self._verdict
        if drained is not None:
            return Verdict(False, drained, current.gpus, current.checked_at)
        max_age = _STALE_FACTOR * self.config.health_interval_s + self.config.nvidia_smi_timeout_s
        age = time.monotonic() - current.checked_at
        if current.healthy and age > max_age:
            return Verdict(False, f"GPU health check is stale ({age:.1f} s old)", current.gpus, current.checked_at)
        return current

    # Work ---------------------------------------------------------------------------------------------------

    def pick_gpu(self, gpus: Sequence[Gpu]) -> Gpu:
        with self._lock:
            gpu = gpus[self._next_gpu % len(gpus)]
            self._next_gpu += 1
        return gpu

    def infer(self, text: str, gpus: Sequence[Gpu]) -> dict[str, Any]:
        """The simulated inference: a compute-time wait on the next GPU, and a digest of the input."""
        gpu = self.pick_gpu(gpus)
        compute_ms = random.uniform(self.config.compute_ms_min, self.config.compute_ms_max)  # noqa: S311 - not crypto
        time.sleep(compute_ms / 1000)
        return {
            "node": self.config.node,
            "gpu": gpu.index,
            "gpu_uuid": gpu.uuid,
            "model": MODEL,
            "input_chars": len(text),
            "output": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
            "compute_ms": round(compute_ms, 3),
        }

    def count(self, path: str, code: int) -> None:
        with self._lock:
            self.requests[(path, code)] = self.requests.get((path, code), 0) + 1

    def metrics(self) -> str:
        verdict = self.verdict()
        with self._lock:
            counts = sorted(self.requests.items())
        lines = [
            "# HELP lab_workload_requests_total Requests answered, by path and HTTP status.",
            "# TYPE lab_workload_requests_total counter",
            *(f'lab_workload_requests_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in counts),
            "# HELP lab_workload_healthy 1 while the service answers /infer (not drained, GPUs healthy).",
            "# TYPE lab_workload_healthy gauge",
            f"lab_workload_healthy {int(verdict.healthy)}",
            "# HELP lab_workload_gpus Number of GPUs nvidia-smi listed at the last check.",
            "# TYPE lab_workload_gpus gauge",
            f"lab_workload_gpus {len(verdict.gpus)}",
        ]
        return "\n".join(lines) + "\n"


class Handler(http.server.BaseHTTPRequestHandler):
    """The HTTP side; ``server.workload`` is the Workload."""

    protocol_version = "HTTP/1.1"
    server_version = "lab-workload/1"
    timeout = 30  # seconds an idle keep-alive connection is kept

    @property
    def workload(self) -> Workload:
        return self.server.workload  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request log lines (hundreds a second under load); verdict changes are logged instead."""

    def _send(self, code: int, body: dict[str, Any] | str, content_type: str = "application/json") -> None:
        path = self.path.split("?", 1)[0]
        self.workload.count(path if path in ("/infer", "/healthz", "/metrics") else "other", code)
        data = (json.dumps(body, sort_keys=True) + "\n" if isinstance(body, dict) else body).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if code == http.HTTPStatus.SERVICE_UNAVAILABLE:
            self.send_header("Retry-After", "1")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _unavailable(self, verdict: Verdict) -> None:
        self._send(503, {"status": "unavailable", "node": self.workload.config.node, "reason": verdict.reason})

    def _read_input(self) -> str | None:
        """The request body as text (JSON ``input`` when it is a JSON object with one); None after a 4xx."""
        length_header = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(length_header)
        except ValueError:
            self._send(400, {"status": "bad request", "reason": f"Content-Length {length_header!r} is not a number"})
            return None
        if length < 0 or length > MAX_BODY_BYTES:
            self._send(413, {"status": "too large", "reason": f"body over {MAX_BODY_BYTES} bytes"})
            return None
        raw = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            return raw
        if isinstance(data, dict) and "input" in data:
            return str(data["input"])
        return raw

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            verdict = self.workload.verdict()
            if not verdict.healthy:
                self._unavailable(verdict)
                return
            self._send(200, {"status": "ok", "node": self.workload.config.node, "gpus": len(verdict.gpus)})
        elif path == "/infer":
            text = self._read_input() if self.command == "POST" else ""
            if text is None:
                return
            verdict = self.workload.verdict()
            if not verdict.healthy or not verdict.gpus:
                self._unavailable(verdict)
                return
            self._send(200, self.workload.infer(text, verdict.gpus))
        elif path == "/metrics" and self.command != "POST":
            self._send(200, self.workload.metrics(), "text/plain; version=0.0.4")
        else:
            self._send(404, {"status": "not found", "reason": f"no {self.command} {path}; try /infer or /healthz"})

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()


class Server(http.server.ThreadingHTTPServer):
    """A threading HTTP server that carries the Workload; IPv6 listen addresses work too."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        if ":" in workload.config.listen:
            self.address_family = socket.AF_INET6
        super().__init__((workload.config.listen, workload.config.port), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (HAProxy closes a health check once it has the status line) is not an error;
        anything else is printed with its traceback, as the base class does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def serve(config: Config) -> Server:
    """Check the GPUs once, start the health monitor and bind the server (the caller runs serve_forever)."""
    workload = Workload(config)
    workload.start_monitor()
    try:
        return Server(workload)
    except OSError:
        workload.stop_monitor()
        raise


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """The Config from the command line; exits 2 with one line per bad option, naming it."""
    parser = argparse.ArgumentParser(prog="workload_service", description=__doc__.split("\n\n", 1)[0])
    defaults = Config()
    parser.add_argument("--listen", default=defaults.listen, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port, help="TCP port (default %(default)s; 0: any)")
    parser.add_argument("--node", default=defaults.node, help="node name in answers (default: the host name)")
    parser.add_argument("--nvidia-smi", default=defaults.nvidia_smi, help="nvidia-smi command (absolute path)")
    parser.add_argument("--nvidia-smi-timeout-s", type=float, default=defaults.nvidia_smi_timeout_s)
    parser.add_argument("--expected-gpus", type=int, default=defaults.expected_gpus)
    parser.add_argument(
        "--drain-file", action="append", dest="drain_files", help="a file whose existence drains the node (repeat)"
    )
    parser.add_argument("--health-interval-s", type=float, default=defaults.health_interval_s)
    parser.add_argument("--compute-ms-min", type=float, default=defaults.compute_ms_min)
    parser.add_argument("--compute-ms-max", type=float, default=defaults.compute_ms_max)
    args = parser.parse_args(argv)
    config = Config(
        listen=args.listen,
        port=args.port,
        node=args.node,
        nvidia_smi=args.nvidia_smi,
        nvidia_smi_timeout_s=args.nvidia_smi_timeout_s,
        expected_gpus=args.expected_gpus,
        drain_files=tuple(args.drain_files) if args.drain_files is not None else defaults.drain_files,
        health_interval_s=args.health_interval_s,
        compute_ms_min=args.compute_ms_min,
        compute_ms_max=args.compute_ms_max,
    )
    problems = validate(config)
    if problems:
        parser.error("; ".join(problems))
    return config


def validate(config: Config) -> list[str]:
    """One message per invalid setting, each naming its option."""
    problems = []
    if not 0 <= config.port <= 65535:  # noqa: PLR2004 - the TCP port range
        problems.append(f"--port {config.port}: must be between 0 and 65535")
    if not os.path.isabs(config.nvidia_smi):
        problems.append(f"--nvidia-smi {config.nvidia_smi!r}: must be an absolute path")
    if not config.nvidia_smi_timeout_s > 0:
        problems.append(f"--nvidia-smi-timeout-s {config.nvidia_smi_timeout_s}: must be above 0")
    if config.expected_gpus < 1:
        problems.append(f"--expected-gpus {config.expected_gpus}: must be at least 1")
    problems.extend(
        f"--drain-file {path!r}: must be an absolute path" for path in config.drain_files if not os.path.isabs(path)
    )
    if not config.health_interval_s > 0:
        problems.append(f"--health-interval-s {config.health_interval_s}: must be above 0")
    if not 0 <= config.compute_ms_min <= config.compute_ms_max:
        problems.append(
            f"--compute-ms-min {config.compute_ms_min} / --compute-ms-max {config.compute_ms_max}: "
            "must satisfy 0 <= min <= max"
        )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT."""
    config = parse_args(argv)
    try:
        server = serve(config)
    except OSError as err:
        print(f"lab_workload: cannot listen on {config.listen}:{config.port}: {err.strerror}", file=sys.stderr)
        return 1

    def stop(signum: int, _frame: object) -> None:
        print(f"lab_workload: {signal.Signals(signum).name}, stopping", file=sys.stderr, flush=True)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"lab_workload: {config.node} serving on {config.listen}:{server.server_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        server.workload.stop_monitor()
    return 0


if __name__ == "__main__":
    sys.exit(main())
