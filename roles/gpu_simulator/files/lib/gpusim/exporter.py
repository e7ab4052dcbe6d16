# STAND-IN: gpuops.fleet GPU simulator (lab only). Not NVIDIA software.
# ruff: noqa: ARG005 - the field tables are getters with one shared signature; many ignore an argument.
"""dcgm-exporter stand-in: DCGM_FI_* metrics of the simulated GPUs on /metrics, with dcgm-exporter's flags.

Embedded mode reads the node's state directly; with -r/--remote-hostengine-info it asks the host engine.
Values are refreshed every collect interval; only the fields listed in the collectors file are exported.
The exporter's own fields are supported like in dcgm-exporter 3.3.5+: DCGM_EXP_XID_ERRORS_COUNT (XIDs within
-x/--xid-count-window-size ms, one series per GPU and `xid`) and DCGM_EXP_CLOCK_EVENTS_COUNT (clock-event reasons
sampled every collect interval within --clock-events-count-window-size ms, one series per GPU and `clock_event`);
both carry `window_size_in_ms`, and a GPU without events in the window has no series.
--web-config-file takes Prometheus exporter-toolkit's format (tls_server_config, basic_auth_users with bcrypt
hashes). Unknown flags are refused, naming the flag, like the real (urfave/cli) tool.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpusim import health
from gpusim import hostengine as he
from gpusim import state as st

__all__ = [
    "EXP_FIELDS",
    "FIELDS",
    "Counter",
    "Options",
    "WebConfig",
    "main",
    "parse_args",
    "parse_collectors",
    "parse_web_config",
    "render",
]

VERSION = "3.3.9-3.6.1"
DEFAULT_COLLECTORS = "/etc/dcgm-exporter/default-counters.csv"
log = logging.getLogger("dcgm-exporter")

Getter = Callable[[st.GpuView], float]


def _xid(view: st.GpuView) -> float:
    return int(view.gpu.get("last_xid", 0))


# DCGM field name -> value getter. Fields the simulator has no model for read 0.
FIELDS: dict[str, Getter] = {
    "DCGM_FI_DEV_SM_CLOCK": lambda v: v.clock_sm,
    "DCGM_FI_DEV_MEM_CLOCK": lambda v: v.clock_mem,
    "DCGM_FI_DEV_VIDEO_CLOCK": lambda v: v.clock_video,
    "DCGM_FI_DEV_MEMORY_TEMP": lambda v: v.memory_temperature,
    "DCGM_FI_DEV_GPU_TEMP": lambda v: v.temperature,
    "DCGM_FI_DEV_POWER_USAGE": lambda v: v.power,
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": lambda v: v.profile["power_limit_w"],
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": lambda v: v.energy_mj,
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": lambda v: 0,
    "DCGM_FI_DEV_GPU_UTIL": lambda v: v.util,
    "DCGM_FI_DEV_MEM_COPY_UTIL": lambda v: v.memory_util,
    "DCGM_FI_DEV_ENC_UTIL": lambda v: 0,
    "DCGM_FI_DEV_DEC_UTIL": lambda v: 0,
    "DCGM_FI_DEV_XID_ERRORS": _xid,
    "DCGM_FI_DEV_FB_TOTAL": lambda v: v.memory_total,
    "DCGM_FI_DEV_FB_FREE": lambda v: v.memory_free,
    "DCGM_FI_DEV_FB_USED": lambda v: v.memory_used,
    "DCGM_FI_DEV_FB_RESERVED": lambda v: v.memory_reserved,
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": lambda v: v.gpu["ecc"]["sbe_volatile"],
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": lambda v: v.gpu["ecc"]["dbe_volatile"],
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": lambda v: v.gpu["ecc"]["sbe_aggregate"],
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": lambda v: v.gpu["ecc"]["dbe_aggregate"],
    "DCGM_FI_DEV_RETIRED_SBE": lambda v: v.gpu["retired"]["sbe"],
    "DCGM_FI_DEV_RETIRED_DBE": lambda v: v.gpu["retired"]["dbe"],
    "DCGM_FI_DEV_RETIRED_PENDING": lambda v: v.gpu["retired"]["pending"],
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": lambda v: v.gpu["remap"]["uncorrectable"],
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": lambda v: v.gpu["remap"]["correctable"],
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": lambda v: v.gpu["remap"]["failure"],
    "DCGM_FI_DEV_ROW_REMAP_PENDING": lambda v: v.gpu["remap"]["pending"],
    "DCGM_FI_DEV_INFOROM_CONFIG_VALID": lambda v: v.gpu["inforom_valid"],
    "DCGM_FI_DEV_GPU_RECOVERY_ACTION": lambda v: v.gpu.get("recovery_action", 0),
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": lambda v: v.clock_event_reasons,
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": lambda v: v.clock_event_reasons,
    "DCGM_FI_DEV_POWER_VIOLATION": lambda v: 0,
    "DCGM_FI_DEV_THERMAL_VIOLATION": lambda v: 0,
    "DCGM_FI_DEV_SYNC_BOOST_VIOLATION": lambda v: 0,
    "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION": lambda v: 0,
    "DCGM_FI_DEV_LOW_UTIL_VIOLATION": lambda v: 0,
    "DCGM_FI_DEV_RELIABILITY_VIOLATION": lambda v: 0,
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": lambda v: 0,
    "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": lambda v: 0,
    "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL": lambda v: 0,
    "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL": lambda v: 0,
    "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL": lambda v: 0,
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS": lambda v: 0,
    "DCGM_FI_DEV_PSTATE": lambda v: 0,
    "DCGM_FI_DEV_COUNT": lambda v: 1,
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": lambda v: v.util / 100.0,
    "DCGM_FI_PROF_SM_ACTIVE": lambda v: v.util / 100.0,
    "DCGM_FI_PROF_SM_OCCUPANCY": lambda v: v.util / 200.0,
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": lambda v: v.util / 150.0,
    "DCGM_FI_PROF_PIPE_FP64_ACTIVE": lambda v: 0,
    "DCGM_FI_PROF_PIPE_FP32_ACTIVE": lambda v: v.util / 300.0,
    "DCGM_FI_PROF_PIPE_FP16_ACTIVE": lambda v: v.util / 300.0,
    "DCGM_FI_PROF_DRAM_ACTIVE": lambda v: v.memory_util / 100.0,
    "DCGM_FI_PROF_PCIE_TX_BYTES": lambda v: 0,
    "DCGM_FI_PROF_PCIE_RX_BYTES": lambda v: 0,
    "DCGM_FI_PROF_NVLINK_TX_BYTES": lambda v: 0,
    "DCGM_FI_PROF_NVLINK_RX_BYTES": lambda v: 0,
}
XID_ERRORS_COUNT = "DCGM_EXP_XID_ERRORS_COUNT"
CLOCK_EVENTS_COUNT = "DCGM_EXP_CLOCK_EVENTS_COUNT"
# dcgm-exporter's own fields (computed by the exporter from DCGM's time series, not DCGM fields).
EXP_FIELDS = (XID_ERRORS_COUNT, CLOCK_EVENTS_COUNT)
# dcgm-exporter's names for the clock-event reason bits (the `clock_event` label).
CLOCK_EVENT_NAMES = {
    0x1: "gpu_idle",
    0x2: "clocks_setting",
    0x4: "power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clocks",
}
DEFAULT_WINDOW_MS = 300000  # 5 minutes, both windows

DEFAULT_COUNTERS = """\
# STAND-IN built-in default (used when -f names no file and the default file is missing)
DCGM_FI_DEV_SM_CLOCK, gauge, SM clock frequency (in MHz).
DCGM_FI_DEV_MEM_CLOCK, gauge, Memory clock frequency (in MHz).
DCGM_FI_DEV_MEMORY_TEMP, gauge, Memory temperature (in C).
DCGM_FI_DEV_GPU_TEMP, gauge, GPU temperature (in C).
DCGM_FI_DEV_POWER_USAGE, gauge, Power draw (in W).
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, counter, Total energy consumption since boot (in mJ).
DCGM_FI_DEV_PCIE_REPLAY_COUNTER, counter, Total number of PCIe retries.
DCGM_FI_DEV_GPU_UTIL, gauge, GPU utilization (in %).
DCGM_FI_DEV_MEM_COPY_UTIL, gauge, Memory utilization (in %).
DCGM_FI_DEV_ENC_UTIL, gauge, Encoder utilization (in %).
DCGM_FI_DEV_DEC_UTIL, gauge, Decoder utilization (in %).
DCGM_FI_DEV_XID_ERRORS, gauge, Value of the last XID error encountered.
DCGM_FI_DEV_FB_FREE, gauge, Framebuffer memory free (in MiB).
DCGM_FI_DEV_FB_USED, gauge, Framebuffer memory used (in MiB).
DCGM_FI_DEV_VGPU_LICENSE_STATUS, gauge, vGPU License status
DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS, counter, Number of remapped rows for uncorrectable errors
DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS, counter, Number of remapped rows for correctable errors
DCGM_FI_DEV_ROW_REMAP_FAILURE, gauge, Whether remapping of rows has failed
"""


@dataclass(frozen=True)
class Counter:
    name: str
    kind: str
    help: str


def parse_collectors(text: str, source: str = "collectors") -> list[Counter]:
    """dcgm-exporter's CSV: `DCGM_FI_NAME, gauge|counter|label, help`; '#' starts a comment."""
    counters = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",", 2)]
        if len(parts) < 2:  # noqa: PLR2004 - name and type are required
            raise ValueError(f"{source}:{number}: expected 'DCGM_FI_NAME, gauge|counter, help', got {line!r}")
        name, kind = parts[0], parts[1]
        if kind not in ("gauge", "counter", "label"):
            raise ValueError(f"{source}:{number}: unknown metric type {kind!r} for {name} (gauge, counter, label)")
        if kind == "label":
            continue
        if name not in FIELDS and name not in EXP_FIELDS:
            raise ValueError(f"{source}:{number}: could not find DCGM field {name}")
        counters.append(Counter(name, kind, parts[2] if len(parts) > 2 else name))  # noqa: PLR2004
    return counters


def _format(value: float) -> str:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:f}"


def _escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Options:
    counters: list[Counter]
    hostname: str | None
    devices: set[int] | None
    hostname_label: str = "hostname"
    started: float = field(default_factory=st.now)
    xid_window_ms: int = DEFAULT_WINDOW_MS
    clock_events_window_ms: int = DEFAULT_WINDOW_MS
    # UUID -> [(time, reasons bitmask)]: the clock-event samples taken at each collection (DCGM's watch).
    clock_samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


def _base_labels(view: st.GpuView, opts: Options) -> list[tuple[str, str]]:
    labels = [
        ("gpu", str(view.index)),
        ("UUID", view.gpu["uuid"]),
        ("pci_bus_id", view.gpu["pci_bus_id"]),
        ("device", f"nvidia{view.gpu['minor_number']}"),
        ("modelName", view.profile["name"]),
    ]
    if opts.hostname is not None:
        labels.append((opts.hostname_label, opts.hostname))
    return labels


def _line(name: str, labels: list[tuple[str, str]], value: float) -> str:
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{text}}} {_format(value)}"


def xid_counts(view: st.GpuView, opts: Options, t: float) -> dict[int, int]:
    """XIDs of one GPU within the XID window (and seen since this exporter started), counted per XID."""
    since = max(t - opts.xid_window_ms / 1000.0, opts.started)
    counts: dict[int, int] = {}
    for event in view.gpu.get("xid_history", []):
        if since <= float(event["ts"]) <= t:
            counts[int(event["xid"])] = counts.get(int(event["xid"]), 0) + 1
    return counts


def sample_clock_events(views: list[st.GpuView], opts: Options, t: float) -> None:
    """One sample of every GPU's clock-event reasons, as DCGM's watch takes each interval; old samples drop.

    A GPU that fell off the bus gives no sample (DCGM cannot read it)."""
    horizon = t - opts.clock_events_window_ms / 1000.0
    for view in views:
        samples = opts.clock_samples.setdefault(view.gpu["uuid"], [])
        if not view.lost:
            samples.append((t, view.clock_event_reasons))
        samples[:] = [(ts, mask) for ts, mask in samples if ts >= horizon]


def clock_event_counts(view: st.GpuView, opts: Options, t: float) -> dict[str, int]:
    """Samples of one GPU within the clock-events window, counted per reason bit."""
    horizon = t - opts.clock_events_window_ms / 1000.0
    counts: dict[str, int] = {}
    for ts, mask in opts.clock_samples.get(view.gpu["uuid"], []):
        if horizon <= ts <= t:
            for bit, name in CLOCK_EVENT_NAMES.items():
                if mask & bit:
                    counts[name] = counts.get(name, 0) + 1
    return counts


def _render_field(counter: Counter, chosen: list[st.GpuView], opts: Options) -> list[str]:
    lines = [f"# HELP {counter.name} {counter.help}", f"# TYPE {counter.name} {counter.kind}"]
    for view in chosen:
        labels = _base_labels(view, opts)
        value = FIELDS[counter.name](view)
        if counter.name == "DCGM_FI_DEV_XID_ERRORS":
            # Sticky like DCGM's cached value, but only for XIDs seen since this exporter started.
            if float(view.gpu.get("last_xid_ts", 0)) < opts.started:
                value = 0
            code = int(value)
            labels += [("err_code", str(code)), ("err_msg", health.xid_message(code) if code else "No Error")]
        lines.append(_line(counter.name, labels, value))
    return lines


def _render_exp(counter: Counter, chosen: list[st.GpuView], opts: Options, t: float) -> list[str]:
    """dcgm-exporter's own fields: base labels, then its extra labels in name order; no events, no series."""
    lines: list[str] = []
    for view in chosen:
        labels = _base_labels(view, opts)
        if counter.name == XID_ERRORS_COUNT:
            window = ("window_size_in_ms", str(opts.xid_window_ms))
            for xid, count in sorted(xid_counts(view, opts, t).items()):
                lines.append(_line(counter.name, [*labels, window, ("xid", str(xid))], count))
        else:
            window = ("window_size_in_ms", str(opts.clock_events_window_ms))
            for name, count in sorted(clock_event_counts(view, opts, t).items()):
                lines.append(_line(counter.name, [*labels, ("clock_event", name), window], count))
    if not lines:
        return []
    return [f"# HELP {counter.name} {counter.help}", f"# TYPE {counter.name} {counter.kind}", *lines]


def render(views: list[st.GpuView], opts: Options, at: float | None = None) -> str:
    """The Prometheus text exposition of every listed counter for every selected GPU, at time `at` (now).

    DCGM fields come first in the collectors file's order, then the exporter's own fields (as dcgm-exporter
    appends its collectors' output to the DCGM pipeline's)."""
    t = st.now() if at is None else at
    # A lost GPU keeps its series: DCGM still serves the cached values (the XID among them).
    chosen = [v for v in views if opts.devices is None or v.index in opts.devices]
    if any(c.name == CLOCK_EVENTS_COUNT for c in opts.counters):
        sample_clock_events(chosen, opts, t)
    lines: list[str] = []
    for counter in opts.counters:
        if counter.name not in EXP_FIELDS:
            lines += _render_field(counter, chosen, opts)
    for counter in opts.counters:
        if counter.name in EXP_FIELDS:
            lines += _render_exp(counter, chosen, opts, t)
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------------------------------------------
# exporter-toolkit web configuration


@dataclass
class WebConfig:
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    users: dict[str, str] = field(default_factory=dict)


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":  # noqa: PLR2004
        return text[1:-1]
    return text.split(" #", 1)[0].strip()


def parse_web_config(text: str) -> WebConfig:
    """The subset of exporter-toolkit's YAML that this stand-in honours; anything else is refused."""
    sections: dict[str, dict[str, str]] = {}
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#") or raw.strip() == "---":
            continue
        key, sep, rest = raw.strip().partition(":")
        if not sep:
            raise ValueError(f"web config line {number}: expected 'key: value'")
        if not raw[0].isspace():
            if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
                raise ValueError(f"web config line {number}: field {key} not found in type web.Config")
            current = key
            sections.setdefault(key, {})
            if _scalar(rest) not in ("", "{}"):
                raise ValueError(f"web config line {number}: {key} must be a mapping")
        elif current is None:
            raise ValueError(f"web config line {number}: indented line outside a section")
        else:
            sections[current][_scalar(key)] = _scalar(rest)
    tls = sections.get("tls_server_config", {})
    unknown = set(tls) - {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}
    if unknown:
        raise ValueError(f"web config: unsupported tls_server_config keys {sorted(unknown)}")
    if bool(tls.get("cert_file")) != bool(tls.get("key_file")):
        raise ValueError("web config: tls_server_config needs both cert_file and key_file")
    return WebConfig(
        cert_file=tls.get("cert_file", ""),
        key_file=tls.get("key_file", ""),
        client_ca_file=tls.get("client_ca_file", ""),
        users=sections.get("basic_auth_users", {}),
    )


def check_basic_auth(header: str | None, users: dict[str, str]) -> bool:
    if not users:
        return True
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    hashed = users.get(user)
    if hashed is None:
        return False
    import bcrypt  # noqa: PLC0415 - only needed when basic auth is configured (python3-bcrypt on the host)

    try:
        return bool(bcrypt.checkpw(password.encode(), hashed.encode()))
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# Server


class Collector:
    """Refreshes the rendered metrics every interval, in a background thread."""

    def __init__(self, source: Callable[[], list[st.GpuView]], opts: Options, interval_s: float) -> None:
        self.source, self.opts, self.interval_s = source, opts, interval_s
        self.text = ""
        self.lock = threading.Lock()

    def collect(self) -> None:
        text = render(self.source(), self.opts)
        with self.lock:
            self.text = text

    def loop(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.collect()
            except (he.HostEngineError, st.StateError) as err:
                log.error("collect failed: %s", err)


def _handler(collector: Collector, web: WebConfig) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "dcgm-exporter"
        sys_version = ""

        def do_GET(self) -> None:
            if not check_basic_auth(self.headers.get("Authorization"), web.users):
                self._send(401, "Unauthorized\n", {"WWW-Authenticate": 'Basic realm="dcgm-exporter"'})
                return
            if self.path.split("?")[0] == "/metrics":
                with collector.lock:
                    body = collector.text
                self._send(200, body, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
            elif self.path in ("/", "/health"):
                self._send(200, "<html><body><a href='/metrics'>Metrics</a></body></html>\n", {})
            else:
                self._send(404, "404 page not found\n", {})

        def _send(self, code: int, body: str, headers: dict[str, str]) -> None:
            data = body.encode()
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _bind(address: str) -> tuple[type[_Server], tuple[str, int]]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    server_cls = _Server
    if ":" in host:

        class _V6(_Server):
            address_family = socket.AF_INET6

        server_cls = _V6
    return server_cls, (host, int(port))


# ---------------------------------------------------------------------------------------------------------------
# Command line (urfave/cli style: -name value, --name value, --name=value)

_FLAGS: dict[str, tuple[str, str | None, bool]] = {
    # flag -> (key, environment variable, takes a value)
    "f": ("collectors", "DCGM_EXPORTER_COLLECTORS", True),
    "collectors": ("collectors", "DCGM_EXPORTER_COLLECTORS", True),
    "a": ("address", "DCGM_EXPORTER_LISTEN", True),
    "address": ("address", "DCGM_EXPORTER_LISTEN", True),
    "c": ("interval", "DCGM_EXPORTER_INTERVAL", True),
    "collect-interval": ("interval", "DCGM_EXPORTER_INTERVAL", True),
    "r": ("remote", "DCGM_REMOTE_HOSTENGINE_INFO", True),
    "remote-hostengine-info": ("remote", "DCGM_REMOTE_HOSTENGINE_INFO", True),
    "web-config-file": ("web_config", "DCGM_EXPORTER_WEB_CONFIG_FILE", True),
    "n": ("no_hostname", "DCGM_EXPORTER_NO_HOSTNAME", False),
    "no-hostname": ("no_hostname", "DCGM_EXPORTER_NO_HOSTNAME", False),
    "d": ("devices", "DCGM_EXPORTER_DEVICES_STR", True),
    "devices": ("devices", "DCGM_EXPORTER_DEVICES_STR", True),
    "k": ("kubernetes", "DCGM_EXPORTER_KUBERNETES", False),
    "kubernetes": ("kubernetes", "DCGM_EXPORTER_KUBERNETES", False),
    "x": ("xid_window", "DCGM_EXPORTER_XID_COUNT_WINDOW_SIZE", True),
    "xid-count-window-size": ("xid_window", "DCGM_EXPORTER_XID_COUNT_WINDOW_SIZE", True),
    "clock-events-count-window-size": ("clock_events_window", "DCGM_EXPORTER_CLOCK_EVENTS_COUNT_WINDOW_SIZE", True),
    "debug": ("debug", "DCGM_EXPORTER_DEBUG", False),
    "v": ("version", None, False),
    "version": ("version", None, False),
    "h": ("help", None, False),
    "help": ("help", None, False),
}
DEFAULTS = {
    "collectors": DEFAULT_COLLECTORS,
    "address": ":9400",
    "interval": "30000",
    "devices": "f",
    "xid_window": str(DEFAULT_WINDOW_MS),
    "clock_events_window": str(DEFAULT_WINDOW_MS),
}
# Options that are urfave/cli IntFlags: a value that is not an integer is a usage error.
INT_KEYS = ("interval", "xid_window", "clock_events_window")


class UsageError(Exception):
    pass


def parse_int(text: str) -> int:
    """An integer as urfave/cli's IntFlag reads it (Go's ParseInt with base 0: 0x.., 0o.., 0b.., 0.. octal)."""
    body = text.strip().lstrip("+-")
    if len(body) > 1 and body[0] == "0" and body[1].isdigit():
        return int(text.strip().replace("0", "0o", 1), 0)
    return int(text.strip(), 0)


def parse_args(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    opts: dict[str, Any] = dict(DEFAULTS)
    for name, (key, var, takes) in _FLAGS.items():
        if var and var in env and len(name) > 1:
            opts[key] = env[var] if takes else env[var].lower() in ("1", "true", "yes")
    args = iter(argv)
    for arg in args:
        if not arg.startswith("-") or arg in ("-", "--"):
            raise UsageError(f"unexpected argument {arg!r}")
        name, eq, inline = arg.lstrip("-").partition("=")
        if name not in _FLAGS:
            raise UsageError(f"flag provided but not defined: -{name}")
        key, _, takes = _FLAGS[name]
        if takes:
            value = inline if eq else next(args, None)
            if value is None:
                raise UsageError(f"flag needs an argument: -{name}")
            opts[key] = value
        else:
            opts[key] = inline.lower() in ("1", "true") if eq else True
    for name, (key, _, _) in _FLAGS.items():
        if key in INT_KEYS and len(name) > 1:
            try:
                parse_int(str(opts[key]))
            except ValueError:
                raise UsageError(f'invalid value "{opts[key]}" for flag -{name}: parse error') from None
    return opts


def parse_devices(spec: str) -> set[int] | None:
    """-d f | g | g:0,1 | g:0-3 (MIG instances are not simulated)."""
    kind, _, ids = spec.partition(":")
    if kind not in ("f", "g", "i"):
        raise UsageError(f"invalid --devices {spec!r}: expected f, g or g:<ids>")
    if not ids:
        return None
    chosen: set[int] = set()
    for part in ids.split(","):
        first, _, last = part.partition("-")
        chosen.update(range(int(first), int(last or first) + 1))
    return chosen


def _ssl_context(web: WebConfig) -> ssl.SSLContext | None:
    if not web.cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(web.cert_file, web.key_file)
    if web.client_ca_file:
        context.load_verify_locations(web.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _source(remote: str | None, config: st.Config) -> Callable[[], list[st.GpuView]]:
    if remote:
        host, port = he.parse_host(remote, config.hostengine_port)
        return lambda: he.snapshot(host, port)
    return lambda: st.compute_view(config, st.load_state(config))


def build(opts: dict[str, Any]) -> tuple[Collector, WebConfig, str, float]:
    config = st.load_config()
    collectors = str(opts["collectors"])
    path = Path(collectors)
    if path.is_file():
        counters = parse_collectors(path.read_text(encoding="utf-8"), collectors)
    elif collectors == DEFAULT_COLLECTORS:
        counters = parse_collectors(DEFAULT_COUNTERS, "built-in defaults")
    else:
        raise UsageError(f"collectors file {collectors} does not exist")
    web = WebConfig()
    if opts.get("web_config"):
        web = parse_web_config(Path(opts["web_config"]).read_text(encoding="utf-8"))
    label = os.environ.get("GPUSIM_HOSTNAME_LABEL", "hostname")
    # Like the real exporter, the label carries the OS hostname (GPUSIM_HOSTNAME pins it for tests).
    hostname = None if opts.get("no_hostname") else os.environ.get("GPUSIM_HOSTNAME") or socket.gethostname()
    interval_s = max(0.1, parse_int(str(opts["interval"])) / 1000.0)
    options = Options(
        counters=counters,
        hostname=hostname,
        devices=parse_devices(str(opts["devices"])),
        hostname_label=label,
        xid_window_ms=parse_int(str(opts["xid_window"])),
        clock_events_window_ms=parse_int(str(opts["clock_events_window"])),
    )
    collector = Collector(_source(opts.get("remote"), config), options, interval_s)
    return collector, web, str(opts["address"]), interval_s


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='time="%(asctime)s" level=%(levelname)s msg="%(message)s"')
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv, dict(os.environ))
    except UsageError as err:
        sys.stderr.write(f"Incorrect Usage: {err}\n\nRun 'dcgm-exporter --help' for the flags.\n")
        return 1
    if opts.get("version"):
        sys.stdout.write(f"dcgm-exporter version {VERSION} (STAND-IN: gpuops.fleet GPU simulator)\n")
        return 0
    if opts.get("help"):
        flags = ", ".join(sorted({f"--{n}" for n in _FLAGS if len(n) > 1}))
        sys.stdout.write(f"dcgm-exporter (STAND-IN, lab only). Flags: {flags}\n")
        return 0
    if opts.get("debug"):
        log.setLevel(logging.DEBUG)
    try:
        collector, web, address, interval_s = build(opts)
        collector.collect()
        server_cls, bind = _bind(address)
        server = server_cls(bind, _handler(collector, web))
        context = _ssl_context(web)
    except (UsageError, ValueError, OSError, ssl.SSLError, st.StateError, he.HostEngineError) as err:
        log.error("%s", err)
        return 1
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=collector.loop, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("Starting webserver on %s (collect interval %ss, STAND-IN)", address, interval_s)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
