"""Probes of the gpu_health agent's reactions and of Slurm's view of a node.

The agent's state is read from what it publishes on the node, its node_exporter textfile ``gpu_health.prom``
(host variable ``chaosgpu_gpu_health_textfile``, default ``/var/lib/node_exporter/textfile/gpu_health.prom``): one
SSH call per host, all hosts matching ``pattern`` in parallel, no blast-radius limit (reading touches nothing).
These are signals that reset (drained -> undrained, phase back to healthy), the ones recovery objectives are
judged on; the DCGM XID gauge is not one of them.

Probes with ``wait_s`` poll (every second) until their condition holds or ``wait_s`` has passed, so a method can
wait for a reaction without a fixed pause; with ``wait_s`` 0 they answer from one read.
"""

import math
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import run_on, targets
from chaosgpu.gpu.probes import prometheus_query
from chaosgpu.health import state
from chaosgpu.polling import until as _until
from chaosgpu.types import CommandResult, Host

__all__ = [
    "gpu_health_live",
    "gpu_health_ready",
    "gpu_health_saw_xid",
    "gpu_health_state",
    "node_drained",
    "node_stays_drained",
    "node_stays_undrained",
    "node_undrained",
    "prometheus_holds",
    "prometheus_increases",
    "slurm_node_available",
    "slurm_node_state",
]

_SSH_FAILED = 255
_READ_TIMEOUT_S = 30
MAX_WAIT_S = 3600.0


def check_wait_s(wait_s: float) -> float:
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not math.isfinite(wait_s):
        raise ActivityFailed(f"wait_s must be a number of seconds, got {wait_s!r}")
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise ActivityFailed(f"wait_s must be between 0 and {MAX_WAIT_S:g} seconds, got {wait_s!r}")
    return float(wait_s)


def _output(result: CommandResult, limit: int = 500) -> str:
    text = (result.stdout + result.stderr).strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def _read_states(configuration: Configuration | None, pattern: str) -> dict[str, dict[str, Any]]:
    """Every matching host's agent state (``state.parse_gpu_health_metrics``) plus ``host_time`` (epoch seconds on
    the host's clock); fails naming each host that was unreachable or had no agent metrics."""
    hosts: list[Host] = list(targets(configuration, pattern, guard=False).hosts)
    try:
        built = {h.name: "date +%s; " + state.read_textfile_command(h) for h in hosts}
    except ValueError as err:
        raise ActivityFailed(f"gpu_health_state: {err}") from None
    results = run_on(hosts, lambda h: built[h.name], timeout=_READ_TIMEOUT_S)
    states: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for host in hosts:
        result = results.get(host.name)
        if result is None or result.rc != 0:
            why = "no result" if result is None else f"exit {result.rc}: {_output(result)}"
            errors.append(f"{host.name}: {'unreachable' if result and result.rc == _SSH_FAILED else 'failed'}: {why}")
            continue
        clock, _, text = result.stdout.partition("\n")
        try:
            states[host.name] = state.parse_gpu_health_metrics(text) | {"host_time": float(clock)}
        except ValueError as err:
            errors.append(f"{host.name}: {err}")
    if errors:
        raise ActivityFailed("gpu_health_state: " + "; ".join(errors))
    return states


def gpu_health_state(
    pattern: str,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, dict[str, Any]]:
    """The gpu_health agent's state on each host matching ``pattern``, by host name, from its ``gpu_health.prom``:
    ``{"drained": bool, "rma": bool, "dry_run": bool, "phase": "healthy"|"remediating"|"awaiting_boot"|"recovering"|
    "rma", "last_xid": {"<gpu>": xid}, "healthy_gpus": int, "gpus": int, "actions": {"<action>": {"<outcome>":
    count}}, "detection_time": epoch|null, "last_poll": epoch|null, "host_time": epoch}``. Fails naming the hosts
    that could not be read (unreachable, no agent metrics)."""
    return _read_states(configuration, pattern)


def node_drained(
    pattern: str,
    wait_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True when the gpu_health agent holds every host matching ``pattern`` drained (``gpu_health_node_drained``
    1), waiting up to ``wait_s`` for it. Fails for a host whose agent runs in dry-run mode (it never drains, so the
    experiment targets the wrong host) or that could not be read."""
    seconds = check_wait_s(wait_s)

    def drained() -> bool:
        states = _read_states(configuration, pattern)
        dry = sorted(name for name, s in states.items() if s["dry_run"])
        if dry:
            raise ActivityFailed(f"node_drained: the agent on {', '.join(dry)} runs in dry-run mode and never drains")
        return all(s["drained"] for s in states.values())

    return _until(drained, seconds)


def node_undrained(
    pattern: str,
    wait_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True when no host matching ``pattern`` is drained or marked for RMA by its gpu_health agent, waiting up to
    ``wait_s`` for it. Fails naming the hosts that could not be read."""
    seconds = check_wait_s(wait_s)
    return _until(
        lambda: all(not s["drained"] and not s["rma"] for s in _read_states(configuration, pattern).values()),
        seconds,
    )


def node_stays_undrained(
    pattern: str,
    watch_s: float = 40.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True when no host matching ``pattern`` is drained or marked for RMA by its gpu_health agent at any read
    during ``watch_s`` seconds (one read a second, at least one): the node stayed in service. False at the first
    read that finds one drained. For faults that must not drain (application XIDs: a drain is over-remediation)."""
    seconds = check_wait_s(watch_s)
    return not _until(
        lambda: any(s["drained"] or s["rma"] for s in _read_states(configuration, pattern).values()),
        seconds,
    )


def node_stays_drained(
    pattern: str,
    watch_s: float = 50.0,
    rma: bool = True,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True when every host matching ``pattern`` is drained (and marked for RMA, unless ``rma`` is false) by its
    gpu_health agent at every read during ``watch_s`` seconds (one read a second): the drain held. False at the
    first read that finds one not so. For faults whose node must stay out of service (an RMA: no automatic
    undrain), with ``watch_s`` past the agent's ``undrain_after_s``."""
    seconds = check_wait_s(watch_s)
    return not _until(
        lambda: any(not s["drained"] or (rma and not s["rma"]) for s in _read_states(configuration, pattern).values()),
        seconds,
    )


def prometheus_holds(
    query: str,
    url: str = "",
    wait_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """True when the PromQL instant query ``query`` returns at least one series (a filter such as
    ``DCGM_FI_DEV_GPU_TEMP{Hostname="gpu-node-3",gpu="2"} >= 75`` holds), asking every second for up to ``wait_s``
    until it does (a method step that waits for the monitoring to see the fault, instead of a fixed pause).
    Prometheus is found as ``chaosgpu.gpu.probes.prometheus_query`` finds it (``url``, configuration
    ``chaosgpu_prometheus_url``, $CHAOSGPU_PROMETHEUS_URL). Fails when Prometheus does not answer or rejects the
    query (while waiting, a failed query counts as not holding; the last failure is raised when the wait ends)."""
    seconds = check_wait_s(wait_s)
    return _until(lambda: bool(prometheus_query(query, url=url, configuration=configuration, secrets=secrets)), seconds)


def prometheus_increases(
    query: str,
    at_least: float,
    url: str = "",
    wait_s: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """True once the counter that the PromQL instant query ``query`` returns (summed over its series) has grown by
    ``at_least`` since this probe began, asked every second for up to ``wait_s``; False when it has not by then. A
    method holds a fault with it for as long as the evidence takes, not for a fixed pause: "Prometheus scraped the
    node 3 more times through the loss" is ``promhttp_metric_handler_requests_total{instance="...",code="200"}``
    growing by 3. A counter that drops (its process restarted) counts from zero again, as ``increase()`` does.
    The first answer must have a series: a query that matches nothing fails at once, naming it."""
    if isinstance(at_least, bool) or not isinstance(at_least, int | float) or not 0 < at_least < math.inf:
        raise ActivityFailed(f"at_least must be a positive number, got {at_least!r}")
    seconds = check_wait_s(wait_s)

    def value() -> float | None:
        series = prometheus_query(query, url=url, configuration=configuration, secrets=secrets)
        return sum(float(s["value"]) for s in series) if series else None

    first = value()
    if first is None:
        raise ActivityFailed(f"prometheus_increases: {query!r} matches no series, so it can never grow")
    seen = {"last": first, "grown": 0.0}

    def grown() -> bool:
        now = value()
        if now is None:  # the series went away for a moment (a scrape failed): not grown, ask again
            return False
        seen["grown"] += now - seen["last"] if now >= seen["last"] else now
        seen["last"] = now
        return seen["grown"] >= at_least

    return _until(grown, seconds)


def gpu_health_live(
    pattern: str,
    max_poll_age_s: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True when the agent on every host matching ``pattern`` remediates for real (not dry-run) and polled within
    ``max_poll_age_s`` by the host's clock, whatever it holds the node in (drained, RMA): the agent is at work."""
    if isinstance(max_poll_age_s, bool) or not isinstance(max_poll_age_s, int | float) or max_poll_age_s <= 0:
        raise ActivityFailed(f"max_poll_age_s must be a positive number of seconds, got {max_poll_age_s!r}")
    return all(
        not s["dry_run"] and s["last_poll"] is not None and s["host_time"] - s["last_poll"] <= max_poll_age_s
        for s in _read_states(configuration, pattern).values()
    )


def gpu_health_ready(
    pattern: str,
    max_poll_age_s: float = 60.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True when the agent on every host matching ``pattern`` remediates for real (not dry-run), is in phase
    ``healthy``, holds no drain and no RMA mark, finds every GPU it knows healthy, and polled within
    ``max_poll_age_s`` by the host's clock: the steady state a gpu_health experiment starts from."""
    if isinstance(max_poll_age_s, bool) or not isinstance(max_poll_age_s, int | float) or max_poll_age_s <= 0:
        raise ActivityFailed(f"max_poll_age_s must be a positive number of seconds, got {max_poll_age_s!r}")
    for s in _read_states(configuration, pattern).values():
        fresh = s["last_poll"] is not None and s["host_time"] - s["last_poll"] <= max_poll_age_s
        if s["dry_run"] or s["drained"] or s["rma"] or s["phase"] != "healthy" or not fresh:
            return False
        if s["gpus"] == 0 or s["healthy_gpus"] != s["gpus"]:
            return False
    return True


def gpu_health_saw_xid(
    pattern: str,
    xid: int,
    gpu: int = -1,
    wait_s: float = 0.0,
    within_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> bool:
    """True when the agent on every host matching ``pattern`` shows ``xid`` as the last XID of GPU ``gpu`` (-1: of
    any GPU) in ``gpu_health_last_xid``, waiting up to ``wait_s``: the agent has read the XID line. With
    ``within_s`` > 0 that XID must also be recent: read at most ``within_s`` seconds ago by the host's clock
    (``gpu_health_last_xid_timestamp_seconds``). The gauge keeps the last XID forever, so only a recent one makes a
    signal that resets (a detection signal: an XID injected by an earlier run no longer counts)."""
    if isinstance(xid, bool) or not isinstance(xid, int) or xid <= 0:
        raise ActivityFailed(f"xid must be a positive XID number, got {xid!r}")
    if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < -1:
        raise ActivityFailed(f"gpu must be a GPU index, or -1 for any, got {gpu!r}")
    seconds = check_wait_s(wait_s)
    if isinstance(within_s, bool) or not isinstance(within_s, int | float) or not 0 <= within_s <= MAX_WAIT_S:
        raise ActivityFailed(f"within_s must be a number of seconds between 0 and {MAX_WAIT_S:g}, got {within_s!r}")

    def seen_on(s: dict[str, Any]) -> bool:
        gpus = [g for g, x in s["last_xid"].items() if x == xid and (gpu == -1 or g == str(gpu))]
        if within_s:
            gpus = [g for g in gpus if s["host_time"] - s["last_xid_time"].get(g, 0.0) <= within_s]
        return bool(gpus)

    return _until(lambda: all(seen_on(s) for s in _read_states(configuration, pattern).values()), seconds)


def _controller(configuration: Configuration | None, controller: str) -> Host:
    hosts = list(targets(configuration, controller, guard=False).hosts)
    if not hosts:
        raise ActivityFailed(f"controller: no host matches {controller!r}")
    return hosts[0]


def slurm_node_state(
    node: str,
    controller: str = "slurm_controllers",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, Any]:
    """Slurm's view of ``node`` as ``scontrol -o show node`` prints it on the first host matching ``controller``
    (the Slurm controller): ``{"node", "state": "IDLE+DRAIN", "flags": ["IDLE", "DRAIN"], "reason", "available"}``;
    ``available`` when the node is neither down, drained, failing nor not responding. Fails when scontrol does not
    answer, naming the controller."""
    try:
        command = state.slurm_node_command(node)
    except ValueError as err:
        raise ActivityFailed(f"slurm_node_state: {err}") from None
    host = _controller(configuration, controller)
    result = run_on([host], command, timeout=_READ_TIMEOUT_S)[host.name]
    if result.rc != 0:
        raise ActivityFailed(f"slurm_node_state: {host.name}: {command} exited {result.rc}: {_output(result)}")
    try:
        return state.parse_slurm_node(result.stdout)
    except ValueError as err:
        raise ActivityFailed(f"slurm_node_state: {host.name}: {err}") from None


def slurm_node_available(
    node: str,
    controller: str = "slurm_controllers",
    wait_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """True when Slurm has ``node`` available for jobs (not down, drained, failing or not responding), waiting up
    to ``wait_s`` for it (see ``slurm_node_state``)."""
    seconds = check_wait_s(wait_s)
    return _until(lambda: bool(slurm_node_state(node, controller, configuration, secrets)["available"]), seconds)
