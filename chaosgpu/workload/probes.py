"""A probe that puts bounded HTTP load on a workload and reports its SLIs (success ratio, p50/p99 latency)."""

from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.sli import run_load, summarize

__all__ = ["sli"]


def sli(
    url: str,
    rate_per_s: float = 5.0,
    duration_s: float = 10.0,
    timeout_s: float = 2.0,
    configuration: Configuration = None,  # noqa: ARG001 - Chaos Toolkit convention
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit convention
) -> dict[str, Any]:
    """GET ``url`` at ``rate_per_s`` for ``duration_s`` seconds, each request with ``timeout_s``, and return
    ``{"requests", "successes", "success_ratio", "p50_ms", "p99_ms"}``.

    A request succeeds when the workload answers with a status below 400 within the timeout; the latency
    percentiles (nearest rank) are over the successful requests and null when none succeeded. Bounded: rate at
    most 200/s, duration at most 3600 s, timeout at most 60 s. In a steady-state hypothesis, judge it with a range
    tolerance, e.g. ``{type: range, target: success_ratio, range: [0.99, 1.0]}``. Raises ActivityFailed on
    arguments out of bounds.
    """
    try:
        results = run_load(url, rate_per_s, duration_s, timeout_s)
    except ValueError as exc:
        raise ActivityFailed(f"sli: {exc}") from None
    return summarize(results)
