"""Node probes: whether services run, whether hosts answer SSH, and HTTP checks from the controller or a host.

Probes read only: they take any share of a group (the blast-radius guard is for faults) and report what they see
rather than fail on it; they fail on bad input.
"""

import math
import re
import shlex
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import get_transport, run_on, targets
from chaosgpu.node.commands import check_service
from chaosgpu.node.reach import ssh_answers
from chaosgpu.polling import until as poll_until

__all__ = ["host_reachable", "http_check", "service_active"]

_UNREACHABLE_RC = (124, 255)  # the transport's timeout, ssh's own failure
_BODY_LIMIT = 65536
_MARK = "@chaosgpu-http"


def service_active(
    service: str,
    pattern: str = "all",
    until: str = "",
    wait_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, str]:
    """The state of systemd unit ``service`` (``.service`` when no unit type is given) on each host matching
    ``pattern``, as ``systemctl is-active`` says it (active, inactive, failed, activating, ...), or
    ``unreachable`` for a host that did not answer. Host name -> state. With ``until`` (a state, e.g. ``active``),
    asks every second for up to ``wait_s`` until every host is in it, and returns the states of the last asking
    (a method step that waits for systemd to restart a unit, instead of a fixed pause)."""
    unit = check_service(service, protected_ok=True)
    seconds = _seconds("wait_s", wait_s) if wait_s else 0.0
    if until and not re.fullmatch(r"[a-z-]+", until):
        raise ActivityFailed(f"until must be a systemctl is-active state such as 'active', got {until!r}")
    plan = targets(configuration, pattern, guard=False)
    states: dict[str, str] = {}

    def ask() -> bool:
        results = run_on(
            plan.hosts, f"systemctl is-active -- {shlex.quote(unit)}", timeout=30, transport=get_transport()
        )
        for host in plan.hosts:
            result = results[host.name]
            said = result.stdout.strip().splitlines()
            states[host.name] = "unreachable" if result.rc in _UNREACHABLE_RC else (said[-1] if said else "unknown")
        return not until or all(state == until for state in states.values())

    poll_until(ask, seconds)
    return states


def host_reachable(
    pattern: str = "all",
    timeout_s: float = 5.0,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, bool]:
    """Whether each host matching ``pattern`` answers SSH (runs a command) within ``timeout_s`` seconds; a host
    that does not is asked once more on a fresh connection, so a connection from before a power cycle does not
    decide. Host name -> true/false."""
    timeout = _seconds("timeout_s", timeout_s)
    plan = targets(configuration, pattern, guard=False)
    return ssh_answers(get_transport(), plan.hosts, timeout)


def http_check(
    url: str,
    pattern: str = "",
    expected_status: int = 200,
    body_match: str = "",
    timeout_s: float = 5.0,
    verify_tls: bool = True,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> dict[str, dict[str, Any]]:
    """GET ``url`` from the controller (``pattern`` empty) or from each host matching ``pattern`` (with curl),
    without following redirects. Each answer: ``status`` (None when there was none), ``latency_s`` (until the
    whole body arrived), ``body_matched`` (regular expression ``body_match`` found in the first 64 KiB of the body;
    None when not asked), ``error``, and ``ok``: status is ``expected_status`` and the body matched. Keyed by
    "controller" or by host name. Fails only on bad input."""
    target = _url(url)
    if isinstance(expected_status, bool) or not isinstance(expected_status, int) or not 100 <= expected_status <= 599:  # noqa: PLR2004
        raise ActivityFailed(f"expected_status must be an HTTP status (100-599), got {expected_status!r}")
    try:
        matcher = re.compile(body_match) if body_match else None
    except (re.error, TypeError) as err:
        raise ActivityFailed(f"body_match={body_match!r} is not a regular expression: {err}") from None
    timeout = _seconds("timeout_s", timeout_s)
    if not isinstance(verify_tls, bool):
        raise ActivityFailed(f"verify_tls must be true or false, got {verify_tls!r}")

    def judged(status: int | None, body: str, latency: float | None, error: str) -> dict[str, Any]:
        matched = None if matcher is None or status is None else bool(matcher.search(body))
        return {
            "url": target,
            "status": status,
            "ok": status == expected_status and matched is not False,
            "latency_s": None if latency is None else round(latency, 4),
            "body_matched": matched,
            "error": error,
        }

    if not pattern:
        return {"controller": judged(*_get_here(target, timeout, verify_tls))}
    plan = targets(configuration, pattern, guard=False)
    command = _curl_command(target, timeout, verify_tls)
    results = run_on(plan.hosts, command, timeout=timeout + 15, transport=get_transport())
    return {name: judged(*_parse_curl(result.rc, result.stdout, result.stderr)) for name, result in results.items()}


def _seconds(parameter: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ActivityFailed(f"{parameter} must be a positive number of seconds, got {value!r}")
    return float(value)


def _url(url: str) -> str:
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ActivityFailed(f"url must be an http:// or https:// URL, got {url!r}")
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002 - urllib's signature
        return None


def _get_here(url: str, timeout: float, verify_tls: bool) -> tuple[int | None, str, float | None, str]:
    """GET from the controller: (status, body text, seconds, error)."""
    context = ssl.create_default_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=context))
    started = time.monotonic()
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout) as response:  # noqa: S310 - http(s) checked
            body = response.read(_BODY_LIMIT)
            return int(response.status), body.decode("utf-8", "replace"), time.monotonic() - started, ""
    except urllib.error.HTTPError as err:  # a status that is not 2xx is an answer too
        body = err.read(_BODY_LIMIT) if err.fp is not None else b""
        return int(err.code), body.decode("utf-8", "replace"), time.monotonic() - started, ""
    except (urllib.error.URLError, OSError, ValueError) as err:
        return None, "", None, str(getattr(err, "reason", err))


def _curl_command(url: str, timeout: float, verify_tls: bool) -> str:
    """The command that GETs ``url`` on a host: a marker line (curl's exit status, HTTP code, total seconds), then
    the body's first 64 KiB; curl's errors on stderr."""
    insecure = " -k" if not verify_tls else ""
    return (
        f"command -v curl >/dev/null 2>&1 || {{ echo 'no curl on this host' >&2; exit 127; }}\n"
        "body=$(mktemp) && err=$(mktemp) || exit 1\n"
        f"code=$(curl -sS{insecure} -o \"$body\" --max-time {timeout:g} -w '%{{http_code}} %{{time_total}}' "
        f'{shlex.quote(url)} 2>"$err")\n'
        "rc=$?\n"
        f'printf \'{_MARK} %s %s\\n\' "$rc" "$code"\n'
        f'head -c {_BODY_LIMIT} -- "$body"\n'
        'cat -- "$err" >&2\n'
        'rm -f -- "$body" "$err"\n'
    )


def _parse_curl(rc: int, stdout: str, stderr: str) -> tuple[int | None, str, float | None, str]:
    head, _, body = stdout.partition("\n")
    fields = head.split()
    if rc != 0 or fields[:1] != [_MARK] or len(fields) < 2:  # noqa: PLR2004
        why = stderr.strip()[-500:] or f"exited {rc}"
        return None, "", None, ("unreachable: " if rc in _UNREACHABLE_RC else "") + why
    curl_rc = int(fields[1])
    code = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0  # noqa: PLR2004
    latency = float(fields[3]) if len(fields) > 3 else None  # noqa: PLR2004
    if curl_rc != 0 or code == 0:
        return None, "", None, stderr.strip()[-500:] or f"curl exited {curl_rc}"
    return code, body, latency, ""
