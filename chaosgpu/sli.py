"""SLI load: bounded HTTP GET load on a workload endpoint, and the summary an objective is judged on.

The load is open-loop: request ``i`` is due at ``start + i / rate_per_s`` and is handed to a bounded pool of
worker threads; each request has its own ``timeout_s``. A request is *ok* when the workload answered with an
HTTP status below 400 (2xx, or a 3xx that was followed to one) within the timeout. ``latency_ms`` is the time from
sending the request to having read the whole response, for every request that got an HTTP response; it is
``None`` for requests that got none (refused, reset, timed out).

Summary: ``requests``, ``successes``, ``success_ratio`` (successes / requests) and ``p50_ms`` / ``p99_ms``, the
latency percentiles of the *successful* requests (failures count against the success ratio instead), by the
nearest-rank method (see ``percentile``); ``None`` when no request succeeded.

Bounds (refused with ValueError naming the argument): ``0 < rate_per_s <= 200``, ``0 < duration_s <= 3600``,
``0 < timeout_s <= 60``, and the URL must be http:// or https://.
"""

from __future__ import annotations

import http.client
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_DURATION_S",
    "MAX_RATE_PER_S",
    "MAX_TIMEOUT_S",
    "LoadGenerator",
    "RequestResult",
    "check_load_arguments",
    "percentile",
    "run_load",
    "summarize",
]

MAX_RATE_PER_S = 200.0
MAX_DURATION_S = 3600.0
MAX_TIMEOUT_S = 60.0
_MAX_WORKERS = 64
_FIRST_ERROR_STATUS = 400
_HUNDRED = 100


@dataclass(frozen=True)
class RequestResult:
    """One request of the load: when it was sent (epoch seconds), whether it succeeded, how long it took."""

    timestamp: float
    ok: bool
    latency_ms: float | None
    status: int | None
    error: str | None = None


def _positive_number(name: str, value: Any, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if value > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {value!r}")
    return float(value)


def check_load_arguments(url: Any, rate_per_s: Any, duration_s: Any, timeout_s: Any) -> None:
    """Refuse a load outside the bounds, naming the argument (ValueError)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must be http:// or https://, got {url!r}")
    _positive_number("rate_per_s", rate_per_s, MAX_RATE_PER_S)
    _positive_number("duration_s", duration_s, MAX_DURATION_S)
    _positive_number("timeout_s", timeout_s, MAX_TIMEOUT_S)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100): the smallest value such that at least p % of the
    values are <= it, i.e. the ``ceil(p/100 * n)``-th smallest. Always one of the values, never interpolated;
    ``None`` for no values."""
    if not 0 < p <= _HUNDRED:
        raise ValueError(f"p must be in (0, 100], got {p!r}")
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(p / _HUNDRED * len(ordered))
    return ordered[max(rank, 1) - 1]


def summarize(results: Sequence[RequestResult]) -> dict[str, Any]:
    """``requests``, ``successes``, ``success_ratio`` (None for no requests), ``p50_ms``/``p99_ms`` of the
    successful requests (None when none succeeded)."""
    good = [r.latency_ms for r in results if r.ok and r.latency_ms is not None]
    successes = sum(1 for r in results if r.ok)
    return {
        "requests": len(results),
        "successes": successes,
        "success_ratio": (successes / len(results)) if results else None,
        "p50_ms": percentile(good, 50),
        "p99_ms": percentile(good, 99),
    }


def _get(url: str, timeout_s: float) -> RequestResult:
    sent = time.time()
    began = time.monotonic()
    request = urllib.request.Request(url, method="GET")  # noqa: S310 - http(s) only, checked
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            response.read()
            status = int(response.status)
        return RequestResult(sent, status < _FIRST_ERROR_STATUS, (time.monotonic() - began) * 1000, status)
    except urllib.error.HTTPError as exc:
        latency = (time.monotonic() - began) * 1000
        return RequestResult(sent, False, latency, exc.code, f"HTTP {exc.code}")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return RequestResult(sent, False, None, None, f"{type(exc).__name__}: {reason}")


def request_count(rate_per_s: float, duration_s: float) -> int:
    """How many requests a load sends: one at i / rate for every i with i / rate < duration.

    Counted from the two numbers alone (less a tolerance for their binary rounding), never from clock sums such as
    ``(start + i / rate) - start``, whose rounding depends on the clock's value: that sent one request more on some
    runs (0.3 s at 10/s gave 4 requests instead of 3).
    """
    return max(0, math.ceil(rate_per_s * duration_s - 1e-9))


class LoadGenerator:
    """GET ``url`` at ``rate_per_s`` for at most ``duration_s``, or until ``stop()``; thread-safe results.

    ``start()`` runs the load in a background thread; ``run()`` runs it in the calling thread. Either way it
    waits, at the end, for the requests in flight (each bounded by ``timeout_s``).
    """

    def __init__(self, url: str, rate_per_s: float, duration_s: float, timeout_s: float) -> None:
        check_load_arguments(url, rate_per_s, duration_s, timeout_s)
        self.url = url
        self.rate_per_s = float(rate_per_s)
        self.duration_s = float(duration_s)
        self.timeout_s = float(timeout_s)
        self._results: list[RequestResult] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self, result: RequestResult) -> None:
        with self._lock:
            self._results.append(result)

    def run(self) -> list[RequestResult]:
        """Send the load now, in this thread; the results, in the order they were sent."""
        workers = max(1, min(_MAX_WORKERS, math.ceil(self.rate_per_s * self.timeout_s) + 1))
        count = request_count(self.rate_per_s, self.duration_s)
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chaosgpu-sli") as pool:
            for i in range(count):
                if self._stop.is_set():
                    break
                due = start + i / self.rate_per_s
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                pool.submit(lambda: self._record(_get(self.url, self.timeout_s)))
        return self.results()

    def start(self) -> LoadGenerator:
        """Run the load in a background thread."""
        self._thread = threading.Thread(target=self.run, name="chaosgpu-sli-load", daemon=True)
        self._thread.start()
        return self

    def stop(self, wait: bool = True) -> list[RequestResult]:
        """Send no further requests; with ``wait``, wait for those in flight. The results so far."""
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5)
        return self.results()

    def results(self) -> list[RequestResult]:
        """The results recorded so far, ordered by the time each request was sent."""
        with self._lock:
            return sorted(self._results, key=lambda r: r.timestamp)


def run_load(url: str, rate_per_s: float, duration_s: float, timeout_s: float) -> list[RequestResult]:
    """Send the bounded load in the calling thread and return every request's result."""
    return LoadGenerator(url, rate_per_s, duration_s, timeout_s).run()
