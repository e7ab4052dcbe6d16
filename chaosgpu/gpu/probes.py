"""GPU probes: what the GPUs, DCGM, the kernel log and Prometheus say.

Host probes read every host matching ``pattern`` (no blast-radius limit: reading touches nothing), one SSH call per
host, all in parallel, and return one entry per host name. Prometheus probes call its HTTP API from the controller:
the URL is the ``url`` argument, else the configuration's ``chaosgpu_prometheus_url``, else
$CHAOSGPU_PROMETHEUS_URL; basic auth comes from the secrets ``prometheus_username``/``prometheus_password`` (or
$CHAOSGPU_PROMETHEUS_USERNAME/_PASSWORD) and is sent only to that URL (redirects are refused); TLS is verified unless
``verify_tls`` is false, against ``ca_file`` when given.
"""

import base64
import contextlib
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import CommandFor, run_on, targets
from chaosgpu.gpu import commands
from chaosgpu.secrets import get_secret
from chaosgpu.types import CommandResult, Host

__all__ = ["alert_state", "dcgm_health", "gpu_count", "gpu_health", "prometheus_query", "xid_seen"]

KMSG_PATH_VAR = "chaosgpu_kmsg_path"
PROMETHEUS_URL_KEY = "chaosgpu_prometheus_url"
PROMETHEUS_URL_ENV = "CHAOSGPU_PROMETHEUS_URL"

_SSH_FAILED = 255
_RC_NO_DEVICES = 6  # nvidia-smi: "No devices were found"
_RC_NO_DRIVER = 9  # nvidia-smi: "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"
_RC_GPU_LOST = 15  # nvidia-smi: a GPU is lost (fallen off the bus); the others are still listed
_READ_TIMEOUT_S = 60

# nvidia-smi's field names -> the keys gpu_health returns.
_HEALTH_KEYS = {
    "index": "index",
    "uuid": "uuid",
    "pci.bus_id": "pci_bus_id",
    "name": "name",
    "temperature.gpu": "temperature_c",
    "power.draw": "power_w",
    "memory.used": "memory_used_mib",
    "memory.total": "memory_total_mib",
    "utilization.gpu": "utilization_pct",
    "compute_mode": "compute_mode",
    "ecc.errors.uncorrected.volatile.total": "ecc_uncorrected_volatile",
    "remapped_rows.pending": "remap_pending",
    "remapped_rows.failure": "remap_failure",
}


T = TypeVar("T")


def _read(
    configuration: Configuration | None, pattern: str, command: CommandFor
) -> tuple[list[Host], dict[str, CommandResult]]:
    """Every host matching ``pattern`` (no share limit: reading touches nothing) and what ``command`` printed."""
    plan = targets(configuration, pattern, guard=False)
    hosts = list(plan.hosts)
    return hosts, run_on(hosts, command, timeout=_READ_TIMEOUT_S)


def _output(result: CommandResult, limit: int = 1000) -> str:
    text = (result.stdout + result.stderr).strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def _unreachable(host: str, result: CommandResult | None) -> str:
    if result is None:
        return f"{host}: no result"
    if result.rc == _SSH_FAILED:
        return f"{host}: unreachable: {_output(result)}"
    return ""


def _per_host(
    probe: str, hosts: list[Host], results: dict[str, CommandResult], read: Callable[[CommandResult], T]
) -> dict[str, T]:
    """``read`` applied to each host's result, by host name; ``read`` raises ValueError with what went wrong.
    Fails naming every host that was unreachable or could not be read."""
    values: dict[str, T] = {}
    errors: list[str] = []
    for host in hosts:
        result = results.get(host.name)
        problem = _unreachable(host.name, result)
        if problem or result is None:
            errors.append(problem)
            continue
        try:
            values[host.name] = read(result)
        except ValueError as err:
            errors.append(f"{host.name}: {err}")
    if errors:
        raise ActivityFailed(f"{probe}: " + "; ".join(errors))
    return values


def gpu_count(
    pattern: str,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, int]:
    """The number of GPUs ``nvidia-smi -L`` lists on each host matching ``pattern``: lost GPUs (fallen off the bus,
    nvidia-smi exit status 15) are not counted, and a host without devices or driver counts 0. Fails naming the
    hosts that could not be read (unreachable, no nvidia-smi, another error)."""
    hosts, results = _read(configuration, pattern, commands.gpu_list_command())

    def count(result: CommandResult) -> int:
        if result.rc not in (0, _RC_GPU_LOST, _RC_NO_DEVICES, _RC_NO_DRIVER):
            raise ValueError(f"nvidia-smi -L exited {result.rc}: {_output(result)}")
        return commands.parse_gpu_list(result.stdout).count

    return _per_host("gpu_count", hosts, results, count)


def _health_entry(result: CommandResult) -> dict[str, Any]:
    parsed = commands.parse_gpu_health(result.stdout)
    gpus = [{_HEALTH_KEYS[k]: v for k, v in row.items()} for row in parsed.gpus]
    problems = [f"GPU {bus} is lost: {why}" for bus, why in parsed.lost.items()]
    for gpu in gpus:
        name = f"GPU {gpu['index']} ({gpu['pci_bus_id']})"
        if gpu["ecc_uncorrected_volatile"]:
            problems.append(f"{name} has {gpu['ecc_uncorrected_volatile']} uncorrected (DBE) ECC errors")
        if gpu["remap_failure"]:
            problems.append(f"{name} had a row remapping failure")
        if gpu["remap_pending"]:
            problems.append(f"{name} has a row remap pending (reset the GPU)")
    if result.rc not in (0, _RC_GPU_LOST):
        problems.append(f"nvidia-smi exited {result.rc}: {_output(result)}")
    return {
        "ok": not problems,
        "count": len(gpus),
        "gpus": gpus,
        "lost": sorted(parsed.lost),
        "problems": problems,
    }


def gpu_health(
    pattern: str,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, dict[str, Any]]:
    """Each host's GPUs as ``nvidia-smi --query-gpu=index,uuid,pci.bus_id,name,temperature.gpu,power.draw,
    memory.used,memory.total,utilization.gpu,compute_mode,ecc.errors.uncorrected.volatile.total,
    remapped_rows.pending,remapped_rows.failure`` reports them, by host name:
    ``{"ok": bool, "count": int, "gpus": [{"index", "uuid", "pci_bus_id", "name", "temperature_c", "power_w",
    "memory_used_mib", "memory_total_mib", "utilization_pct", "compute_mode", "ecc_uncorrected_volatile",
    "remap_pending", "remap_failure"}], "lost": [PCI bus ids], "problems": [str]}``. A host is ``ok`` when every GPU
    answered (none lost) with no uncorrected ECC error and no remap failure or pending remap; an unreachable host or
    a failing nvidia-smi is not ok and says why in ``problems`` ([N/A] values are None)."""
    hosts, results = _read(configuration, pattern, commands.gpu_health_command())
    health: dict[str, dict[str, Any]] = {}
    for host in hosts:
        result = results.get(host.name)
        problem = _unreachable(host.name, result)
        if problem or result is None:
            health[host.name] = {"ok": False, "count": 0, "gpus": [], "lost": [], "problems": [problem]}
        else:
            health[host.name] = _health_entry(result)
    return health


def dcgm_health(
    pattern: str,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, dict[str, Any]]:
    """DCGM's health check on each host, ``dcgmi health -c -j``, by host name: ``{"overall": "Healthy"|"Warning"|
    "Failure", "gpus": {"<gpu id>": {"health": ..., "incidents": {"<system>": {"health", "messages"}}}}}`` (GPUs
    without incidents are not listed, as dcgmi lists them). Fails naming the hosts where DCGM did not answer (e.g.
    no host engine) or could not be reached."""
    hosts, results = _read(configuration, pattern, commands.dcgm_health_command())

    def verdict(result: CommandResult) -> dict[str, Any]:
        try:
            parsed = commands.parse_dcgm_health(result.stdout)
        except ValueError as err:
            raise ValueError(f"dcgmi health -c -j exited {result.rc}: {err}") from None
        return {"overall": parsed.overall, "gpus": parsed.gpus}

    return _per_host("dcgm_health", hosts, results, verdict)


def _since_epoch(since: str | float | int) -> float:
    if isinstance(since, bool):
        raise ActivityFailed(f"since must be epoch seconds or an ISO 8601 time, got {since!r}")
    if isinstance(since, int | float):
        return float(since)
    if not isinstance(since, str):
        raise ActivityFailed(f"since must be epoch seconds or an ISO 8601 time, got {since!r}")
    text = since.strip()
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ActivityFailed(f"since must be epoch seconds or an ISO 8601 time, got {since!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _kernel_log_command(host: Host, since: float) -> str:
    path = host.vars.get(KMSG_PATH_VAR) or commands.DEFAULT_KMSG_PATH
    command = commands.kernel_log_command(str(path), since)
    return command if host.user == "root" else f"sudo -n {command}"


def xid_seen(
    pattern: str,
    xid: int = 0,
    since: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, list[dict[str, Any]]]:
    """The XID lines (``NVRM: Xid (PCI:...): N, ...``) in each host's kernel log at or after ``since`` (epoch
    seconds or ISO 8601, on the host's clock; empty: all the log holds), only XID ``xid`` unless it is 0, by host
    name: ``[{"time": epoch seconds, "pci": "0000:18:00", "xid": 79, "line": ...}]``, oldest first; an empty list
    means none. The log is the host variable ``chaosgpu_kmsg_path`` (default ``/dev/kmsg``, read as root: its
    stamps are seconds since boot, converted with the host's uptime). Fails naming the hosts that could not be
    read."""
    if isinstance(xid, bool) or not isinstance(xid, int) or xid < 0:
        raise ActivityFailed(f"xid must be an XID number, or 0 for any, got {xid!r}")
    start = _since_epoch(since)
    hosts = list(targets(configuration, pattern, guard=False).hosts)
    try:
        built = {host.name: _kernel_log_command(host, start) for host in hosts}
    except ValueError as err:
        raise ActivityFailed(f"xid_seen: {err}") from None
    results = run_on(hosts, lambda host: built[host.name], timeout=_READ_TIMEOUT_S)

    def xid_lines(result: CommandResult) -> list[dict[str, Any]]:
        if result.rc != 0:
            raise ValueError(f"reading the kernel log exited {result.rc}: {_output(result)}")
        try:
            lines, _ = commands.parse_kernel_log(result.stdout)
        except (ValueError, KeyError) as err:
            raise ValueError(f"unreadable kernel-log listing: {err}") from None
        return [
            {"time": line.time, "pci": line.pci, "xid": line.xid, "line": line.line}
            for line in lines
            if not xid or line.xid == xid
        ]

    return _per_host("xid_seen", hosts, results, xid_lines)


# --- Prometheus ---------------------------------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]  # noqa: ARG002
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused", headers, fp)


def _prometheus_url(url: str, configuration: Configuration | None) -> str:
    base = url or (configuration or {}).get(PROMETHEUS_URL_KEY) or os.environ.get(PROMETHEUS_URL_ENV, "")
    if not isinstance(base, str) or not base:
        raise ActivityFailed(
            f"no Prometheus URL: pass url, or set configuration {PROMETHEUS_URL_KEY} (or ${PROMETHEUS_URL_ENV})"
        )
    if not base.startswith(("http://", "https://")):
        raise ActivityFailed(f"the Prometheus URL must be http:// or https://, got {base!r}")
    return base.rstrip("/")


def _prometheus_get(
    base: str,
    path: str,
    params: dict[str, str],
    timeout: float,
    verify_tls: bool,
    ca_file: str,
    secrets: Secrets | None,
) -> Any:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - http(s), checked
    user = get_secret(secrets, "prometheus_username", "CHAOSGPU_PROMETHEUS_USERNAME")
    if user:
        password = get_secret(secrets, "prometheus_password", "CHAOSGPU_PROMETHEUS_PASSWORD")
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(_NoRedirects(), urllib.request.HTTPSHandler(context=context))
    where = f"{base}{path}"
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        detail = ""
        with contextlib.suppress(ValueError, AttributeError, OSError):
            detail = str(json.loads(err.read().decode("utf-8", "replace")).get("error", ""))
        said = f": {detail}" if detail else ""
        raise ActivityFailed(f"Prometheus {where}: HTTP {err.code} {err.reason}{said}") from None
    except (urllib.error.URLError, OSError) as err:
        raise ActivityFailed(f"Prometheus {where}: {getattr(err, 'reason', err)}") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise ActivityFailed(f"Prometheus {where}: not JSON: {body[:200]!r}") from None
    if not isinstance(data, dict) or data.get("status") != "success":
        raise ActivityFailed(f"Prometheus {where}: {data.get('errorType', '')} {data.get('error', data)!s}".strip())
    return data.get("data")


def _sample_value(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def prometheus_query(
    query: str,
    url: str = "",
    timeout: float = 10.0,
    verify_tls: bool = True,
    ca_file: str = "",
    time: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> list[dict[str, Any]]:
    """Prometheus' answer to the instant query ``query`` (``/api/v1/query``; at ``time``, epoch or RFC 3339, when
    given): one ``{"metric": {labels}, "value": float}`` per series (a scalar: one with no labels; a range vector:
    ``"values": [[time, float], ...]``). An empty list means no series matched. Fails when Prometheus does not answer
    or rejects the query, naming the URL and Prometheus' error."""
    if not isinstance(query, str) or not query.strip():
        raise ActivityFailed(f"query must be a PromQL expression, got {query!r}")
    base = _prometheus_url(url, configuration)
    params = {"query": query} | ({"time": time} if time else {})
    data = _prometheus_get(base, "/api/v1/query", params, timeout, verify_tls, ca_file, secrets)
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        return [{"metric": {}, "value": _sample_value(result[1])}]
    series = []
    for item in result or []:
        if "values" in item:
            series.append(
                {"metric": item.get("metric", {}), "values": [[t, _sample_value(v)] for t, v in item["values"]]}
            )
        else:
            series.append({"metric": item.get("metric", {}), "value": _sample_value(item["value"][1])})
    return series


def alert_state(
    alertname: str,
    labels: dict[str, str] | None = None,
    url: str = "",
    timeout: float = 10.0,
    verify_tls: bool = True,
    ca_file: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> str:
    """The state of alert ``alertname`` in Prometheus (``/api/v1/alerts``) for the alerts whose labels include
    ``labels`` (e.g. ``{"hostname": "gpu-node-1"}``): ``firing`` when any of them fires, else ``pending`` when any
    is pending, else ``inactive``."""
    if not isinstance(alertname, str) or not alertname:
        raise ActivityFailed(f"alertname must be an alert's name, got {alertname!r}")
    wanted = dict(labels or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in wanted.items()):
        raise ActivityFailed(f"labels must map label names to values (strings), got {labels!r}")
    base = _prometheus_url(url, configuration)
    data = _prometheus_get(base, "/api/v1/alerts", {}, timeout, verify_tls, ca_file, secrets)
    states = {
        alert.get("state")
        for alert in (data or {}).get("alerts", [])
        if alert.get("labels", {}).get("alertname") == alertname
        and all(alert.get("labels", {}).get(k) == v for k, v in wanted.items())
    }
    for state in ("firing", "pending"):
        if state in states:
            return state
    return "inactive"
