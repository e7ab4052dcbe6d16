# STAND-IN: gpuops.fleet GPU simulator (lab only). Not NVIDIA software.
"""`dcgmi` stand-in: discovery -l, health -c [-j], test --inject; every command goes through the host engine
(default localhost:5555, or --host), and fails like the real tool when none is running."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any

from gpusim import health
from gpusim import hostengine as he
from gpusim import state as st

__all__ = ["main", "run"]

# dcgmReturn_t values, as the process exit status (a negative int truncated to 8 bits).
ST_BADPARAM = -1
ST_UNKNOWN_FIELD = -12
ST_CONNECTION_NOT_VALID = -20
DEFAULT_GPU_ID = 1  # dcgmi test --inject uses GPU 1 when --gpuid is not given
LEFT, RIGHT = 27, 58


def _rc(status: int) -> int:
    return status & 0xFF


class Result:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.rc = 0

    def say(self, line: str) -> None:
        self.out.append(line)


def _connect_error(result: Result, host: str) -> Result:
    result.say(f"Error: unable to establish a connection to the specified host: {host}")
    result.say("Error: Unable to connect to host engine. Host engine connection invalid/disconnected.")
    result.rc = _rc(ST_CONNECTION_NOT_VALID)
    return result


def _discovery(result: Result, views: list[st.GpuView]) -> Result:
    bar = "+--------+" + "-" * 70 + "+"
    result.say(f"{len(views)} GPU{'s' if len(views) != 1 else ''} found.")
    result.say(bar)
    result.say("| GPU ID | " + f"{'Device Information':<69}" + "|")
    result.say(bar)
    for view in views:
        rows = [
            f"Name: {view.profile['name']}",
            f"PCI Bus ID: {view.gpu['pci_bus_id']}",
            f"Device UUID: {view.gpu['uuid']}",
        ]
        for n, row in enumerate(rows):
            result.say(f"| {str(view.index) if n == 0 else '':<7}| {row:<69}|")
        result.say(bar)
    result.say("0 NvSwitches found.")
    result.say("+-----------+")
    result.say("| Switch ID |")
    result.say("+-----------+")
    result.say("+-----------+")
    return result


def _row(left: str, right: str = "") -> str:
    return f"| {left:<{LEFT - 1}}| {right:<{RIGHT - 1}}|"


def _health_text(result: Result, views: list[st.GpuView]) -> Result:
    per_gpu = [(view, health.evaluate(view)) for view in views]
    worst = max((health.overall(found) for _, found in per_gpu), default=health.HEALTHY)
    sep = "+" + "-" * LEFT + "+" + "-" * RIGHT + "+"
    result.say(sep)
    result.say(f"| {'Health Monitor Report':<{LEFT + RIGHT}}|")
    result.say("+" + "=" * LEFT + "+" + "=" * RIGHT + "+")
    result.say(_row("Overall Health", health.STATUS_TEXT[worst]))
    sick = [(view, found) for view, found in per_gpu if found]
    if sick:
        result.say(_row("GPU"))
    for view, found in sick:
        result.say(_row(f"-> {view.index}", health.STATUS_TEXT[health.overall(found)]))
        for kind, severity in (("Errors", health.FAIL), ("Warnings", health.WARN)):
            items = [i for i in found if i.severity == severity]
            if not items:
                continue
            result.say(_row(f"   -> {kind}"))
            for item in items:
                result.say(_row(f"      -> {item.system} system", health.STATUS_TEXT[severity]))
                for line in textwrap.wrap(item.message, RIGHT - 2):
                    result.say(_row("", line))
    result.say(sep)
    return result


def _health_json(result: Result, views: list[st.GpuView]) -> Result:
    gpus: dict[str, Any] = {}
    worst = health.HEALTHY
    for view in views:
        found = health.evaluate(view)
        level = health.overall(found)
        worst = max(worst, level)
        if not found:
            continue
        systems: dict[str, Any] = {}
        for item in found:
            entry = systems.setdefault(f"{item.system} system", {"value": health.STATUS_TEXT[item.severity]})
            entry.setdefault("children", {}).setdefault("Errors", {"values": []})["values"].append(item.message)
        gpus[str(view.index)] = {"value": health.STATUS_TEXT[level], "children": systems}
    body: dict[str, Any] = {"Overall Health": {"value": health.STATUS_TEXT[worst]}}
    if gpus:
        body["GPU"] = {"children": gpus}
    result.say(json.dumps({"header": ["Health Monitor Report"], "body": body}, indent=4))
    return result


def _inject(result: Result, host: tuple[str, int], opts: dict[str, Any]) -> Result:
    field = opts.get("field", "")
    if not str(field).isdigit():
        result.say(f"Error: Invalid field ID: '{field}'. Field IDs are numeric (for example 230 for XIDs).")
        result.rc = _rc(ST_BADPARAM)
        return result
    try:
        value = float(opts.get("value", ""))
    except ValueError:
        result.say(f"Error: Invalid value '{opts.get('value', '')}'.")
        result.rc = _rc(ST_BADPARAM)
        return result
    gpu = int(opts.get("gpuid", DEFAULT_GPU_ID))
    reply = he.inject(host[0], host[1], gpu, int(field), value)
    if not reply.get("ok"):
        result.say(f"Error: Unable to inject info. Return: {reply.get('error', 'Generic unspecified error')}")
        result.rc = _rc(ST_UNKNOWN_FIELD if reply.get("error") == "Unknown field id" else ST_BADPARAM)
        return result
    result.say("Successfully injected field info.")
    return result


_VALUE_OPTS = {"--host": "host", "-f": "field", "--field": "field", "-v": "value", "--value": "value"}
_VALUE_OPTS |= {"--gpuid": "gpuid", "-i": "gpuid", "-g": "group", "--group": "group", "-c": "offset"}
_FLAG_OPTS = {"-l": "list", "--list": "list", "-c": "check", "--check": "check", "-j": "json", "--json": "json"}
_FLAG_OPTS |= {"--inject": "inject"}


def _parse(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    if not argv or argv[0].startswith("-"):
        return None
    command, opts = argv[0], {}
    args = iter(argv[1:])
    for arg in args:
        name, eq, inline = arg.partition("=")
        if arg in _FLAG_OPTS and not (arg == "-c" and command == "test"):
            opts[_FLAG_OPTS[arg]] = True
        elif name in _VALUE_OPTS:
            value = inline if eq else next(args, None)
            if value is None:
                return None
            opts[_VALUE_OPTS[name]] = value
        else:
            return None
    return command, opts


USAGE = """Usage: dcgmi <subsystem>   (STAND-IN: gpuops.fleet GPU simulator, lab only)
  discovery -l [--host HOST]
  health -c [-j] [-g GROUP] [--host HOST]
  test --inject [--gpuid N] -f FIELD_ID -v VALUE [--host HOST]"""


def run(argv: list[str]) -> Result:
    result = Result()
    parsed = _parse(argv)
    if (
        parsed is None
        or parsed[0] not in ("discovery", "health", "test")
        or (parsed[0] == "test" and not parsed[1].get("inject"))
    ):
        result.say(USAGE)
        result.rc = _rc(ST_BADPARAM)
        return result
    command, opts = parsed
    config = st.load_config()
    shown_host = opts.get("host", "localhost")
    host = he.parse_host(opts.get("host"), config.hostengine_port)
    try:
        if command == "test":
            return _inject(result, host, opts)
        views = he.snapshot(*host)
    except he.HostEngineError:
        return _connect_error(result, shown_host)
    if command == "discovery":
        return _discovery(result, views)
    if opts.get("json"):
        return _health_json(result, views)
    return _health_text(result, views)


def main(argv: list[str] | None = None) -> int:
    result = run(sys.argv[1:] if argv is None else argv)
    sys.stdout.write("".join(line + "\n" for line in result.out))
    return result.rc


if __name__ == "__main__":
    sys.exit(main())
