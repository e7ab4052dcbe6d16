"""Test helpers for the objectives control and the SLI load: Chaos Toolkit providers whose signals turn on a
known number of seconds after a marker file was written, and an HTTP server on 127.0.0.1 that fails or slows on
demand (``/ok``, ``/status/<code>``, ``/delay/<ms>``).

The providers are plain functions of this module (``objectives_helpers``), used from experiments run in-process
and by ``chaos run`` in a subprocess (with this directory on PYTHONPATH); state goes through files only.
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["SliServer", "exists", "healthy", "mark_fault", "since_mark_at_least"]


def _mark(path: str) -> float | None:
    try:
        return float(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None


def mark_fault(path: str) -> float:
    """The fault action: write the wall-clock time it ran into ``path``."""
    now = time.time()
    Path(path).write_text(repr(now))
    return now


def since_mark_at_least(path: str, seconds: float) -> bool:
    """A signal that turns on ``seconds`` after the mark (off before it, and with no mark)."""
    marked = _mark(path)
    return marked is not None and time.time() - marked >= float(seconds)


def exists(path: str) -> bool:
    """A sticky signal: true once ``path`` exists, whatever happened since (like a gauge that keeps its last value)."""
    return Path(path).exists()


def healthy(path: str, broken_for_s: float) -> bool:
    """A steady-state signal that resets: true without a mark, false for ``broken_for_s`` after it, then true."""
    marked = _mark(path)
    return marked is None or time.time() - marked >= float(broken_for_s)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        status = 200
        if parts[0] == "status" and len(parts) > 1:
            status = int(parts[1])
        elif parts[0] == "delay" and len(parts) > 1:
            time.sleep(int(parts[1]) / 1000)
        body = b"ok\n" if status < 400 else b"failed\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


class SliServer:
    """A threading HTTP server on 127.0.0.1 (ephemeral port) in a background thread; ``url(path)``."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path.lstrip('/')}"

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
