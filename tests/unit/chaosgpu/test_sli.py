"""chaosgpu.sli and the probe chaosgpu.workload.probes.sli: bounded load against a real HTTP server on 127.0.0.1
that fails or slows on demand; the nearest-rank percentiles; the bounds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from fractions import Fraction

import pytest
from chaoslib.exceptions import ActivityFailed
from objectives_helpers import SliServer

from chaosgpu.sli import (
    LoadGenerator,
    RequestResult,
    check_load_arguments,
    percentile,
    request_count,
    run_load,
    summarize,
)
from chaosgpu.workload.probes import sli


@pytest.fixture
def server() -> Iterator[SliServer]:
    srv = SliServer()
    yield srv
    srv.close()


def test_percentile_is_nearest_rank() -> None:
    hundred = [float(v) for v in range(100, 0, -1)]  # 100..1, unsorted on purpose
    assert percentile(hundred, 50) == 50.0
    assert percentile(hundred, 99) == 99.0
    assert percentile(hundred, 100) == 100.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # ceil(0.5*4) = 2nd smallest, not interpolated 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert percentile([7.0], 1) == 7.0
    assert percentile([], 50) is None


@pytest.mark.parametrize("p", [0, -1, 100.1])
def test_percentile_refuses_p_out_of_range(p: float) -> None:
    with pytest.raises(ValueError, match="p must be in"):
        percentile([1.0], p)


def test_summary_counts_failures_against_the_ratio_and_keeps_them_out_of_the_latencies() -> None:
    results = [
        RequestResult(1.0, True, 10.0, 200),
        RequestResult(2.0, True, 30.0, 200),
        RequestResult(3.0, False, 900.0, 500, "HTTP 500"),
        RequestResult(4.0, False, None, None, "TimeoutError: timed out"),
    ]
    assert summarize(results) == {
        "requests": 4,
        "successes": 2,
        "success_ratio": 0.5,
        "p50_ms": 10.0,
        "p99_ms": 30.0,
    }
    assert summarize([]) == {"requests": 0, "successes": 0, "success_ratio": None, "p50_ms": None, "p99_ms": None}


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (("http://127.0.0.1/", 201, 1, 1), "rate_per_s"),
        (("http://127.0.0.1/", 0, 1, 1), "rate_per_s"),
        (("http://127.0.0.1/", 5, 3601, 1), "duration_s"),
        (("http://127.0.0.1/", 5, -1, 1), "duration_s"),
        (("http://127.0.0.1/", 5, 1, 0), "timeout_s"),
        (("http://127.0.0.1/", 5, 1, 61), "timeout_s"),
        (("http://127.0.0.1/", True, 1, 1), "rate_per_s"),
        (("ftp://127.0.0.1/", 5, 1, 1), "url"),
    ],
)
def test_load_out_of_bounds_is_refused_naming_the_argument(arguments: tuple[object, ...], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        check_load_arguments(*arguments)
    with pytest.raises(ValueError, match=named):
        LoadGenerator(*arguments)  # type: ignore[arg-type]


def test_load_sends_rate_times_duration_requests_that_all_succeed(server: SliServer) -> None:
    began = time.time()
    results = run_load(server.url("/ok"), rate_per_s=20, duration_s=0.5, timeout_s=2)
    assert len(results) == 10  # due at 0, 0.05, ... 0.45 s
    assert all(r.ok and r.status == 200 and r.error is None for r in results)
    assert all(r.latency_ms is not None and r.latency_ms >= 0 for r in results)
    assert all(began <= r.timestamp <= time.time() for r in results)
    assert [r.timestamp for r in results] == sorted(r.timestamp for r in results)
    summary = summarize(results)
    assert summary["success_ratio"] == 1.0
    assert summary["p50_ms"] is not None
    assert summary["p99_ms"] is not None
    assert summary["p50_ms"] <= summary["p99_ms"]


def test_server_errors_fail_with_their_status(server: SliServer) -> None:
    results = run_load(server.url("/status/503"), rate_per_s=10, duration_s=0.3, timeout_s=2)
    assert results
    assert all(not r.ok and r.status == 503 and r.error == "HTTP 503" for r in results)
    assert all(r.latency_ms is not None for r in results)
    summary = summarize(results)
    assert summary["success_ratio"] == 0.0
    assert summary["p99_ms"] is None


def test_a_slower_workload_than_the_timeout_fails_without_a_latency(server: SliServer) -> None:
    results = run_load(server.url("/delay/1500"), rate_per_s=5, duration_s=0.2, timeout_s=0.3)
    assert results
    assert all(not r.ok and r.latency_ms is None and r.status is None for r in results)
    assert all("timed out" in (r.error or "") for r in results)


def test_latency_measures_the_workloads_delay(server: SliServer) -> None:
    results = run_load(server.url("/delay/200"), rate_per_s=10, duration_s=0.3, timeout_s=5)
    summary = summarize(results)
    assert summary["success_ratio"] == 1.0
    assert summary["p50_ms"] >= 200  # never faster than the server's sleep, on any machine


def test_a_closed_port_fails_every_request(server: SliServer) -> None:
    url = server.url("/ok")
    server.close()
    results = run_load(url, rate_per_s=10, duration_s=0.2, timeout_s=1)
    assert results
    assert all(not r.ok and r.latency_ms is None and r.error for r in results)


def test_stop_ends_a_long_load_early(server: SliServer) -> None:
    load = LoadGenerator(server.url("/ok"), rate_per_s=10, duration_s=3600, timeout_s=2).start()
    time.sleep(0.5)
    began = time.monotonic()
    results = load.stop()
    assert time.monotonic() - began < 5
    assert 1 <= len(results) < 100
    assert len(load.results()) == len(results)  # nothing is sent after stop


@pytest.mark.parametrize("rate", ["0.5", "1", "3", "7", "10", "33", "200"])
@pytest.mark.parametrize("duration", ["0.1", "0.2", "0.3", "0.7", "1", "1.1", "2.9", "60", "3600"])
def test_request_count_is_exact_for_decimal_rates_and_durations(rate: str, duration: str) -> None:
    # One request at i / rate for every i with i / rate < duration: ceil(rate * duration), computed exactly here.
    exact = Fraction(rate) * Fraction(duration)
    expected = exact.numerator // exact.denominator + (exact.denominator != 1)
    assert request_count(float(rate), float(duration)) == expected


def test_load_sends_the_counted_requests_whatever_the_clock_reads(
    server: SliServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (start + 0.3) - start is 0.29999999999927240 at this clock value: the old loop sent a fourth request here.
    base = 12345.678
    assert (base + 3 / 10) - base < 0.3
    real = time.monotonic
    began = real()
    # The load's first reading (its start) is exactly base; later readings add the real time since.
    monkeypatch.setattr("chaosgpu.sli.time.monotonic", lambda: base + (real() - began))
    assert len(run_load(server.url("/ok"), rate_per_s=10, duration_s=0.3, timeout_s=2)) == 3


def test_probe_returns_the_summary(server: SliServer) -> None:
    summary = sli(server.url("/ok"), rate_per_s=10, duration_s=0.3, timeout_s=2)
    assert summary["requests"] == 3
    assert summary["success_ratio"] == 1.0
    assert set(summary) == {"requests", "successes", "success_ratio", "p50_ms", "p99_ms"}


def test_probe_refuses_an_unbounded_rate_naming_it() -> None:
    with pytest.raises(ActivityFailed, match="rate_per_s must be <= 200"):
        sli("http://127.0.0.1:9/", rate_per_s=1000, duration_s=1)
