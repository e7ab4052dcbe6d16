# STAND-IN: gpuops.fleet GPU simulator (lab only). Not NVIDIA software.
# ruff: noqa: ARG005 - the field tables are getters with one shared signature; many ignore an argument.
"""`nvidia-smi` over the simulated state, byte-compatible with the real tool for what it supports:

-L; --query-gpu=FIELDS --format=csv[,noheader][,nounits]; --query-compute-apps=FIELDS; -q [-d SECTIONS];
-i ID (index, UUID or PCI bus id, comma-separated); -r (reset); -c MODE (compute mode); -pm 0|1.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from gpusim import state as st

__all__ = ["GPU_FIELDS", "main", "run"]

RC_OK = 0
RC_INVALID_ARG = 2
RC_NO_PERMISSION = 4
RC_NOT_FOUND = 6
RC_GPU_LOST = 15
RC_OTHER = 255
NA = "[N/A]"
LOST_TEXT = "GPU is lost. Reboot the system to recover this GPU"

Getter = Callable[[st.GpuView, st.Config], Any]


def _mode(flag: bool) -> str:
    return "Enabled" if flag else "Disabled"


def _yes(flag: Any) -> str:
    return "Yes" if flag else "No"


def _mig(view: st.GpuView, _: st.Config) -> str:
    return "Disabled" if view.profile["mig_capable"] else NA


def _bus(view: st.GpuView) -> str:
    return str(view.gpu["pci_bus_id"]).split(":")[1]


def _clock_reasons(view: st.GpuView, _: st.Config) -> str:
    return f"0x{view.clock_event_reasons:016X}"


# canonical name -> (unit or "", getter). Units appear in the header ("memory.total [MiB]") and after values.
GPU_FIELDS: dict[str, tuple[str, Getter]] = {
    "timestamp": ("", lambda v, c: time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(st.now())) + ".000"),
    "driver_version": ("", lambda v, c: c.driver_version),
    "count": ("", lambda v, c: "COUNT"),  # replaced by the caller: number of GPUs
    "name": ("", lambda v, c: v.profile["name"]),
    "serial": ("", lambda v, c: v.gpu["serial"]),
    "uuid": ("", lambda v, c: v.gpu["uuid"]),
    "pci.bus_id": ("", lambda v, c: v.gpu["pci_bus_id"]),
    "pci.domain": ("", lambda v, c: "0x0000"),
    "pci.bus": ("", lambda v, c: "0x" + _bus(v)),
    "pci.device": ("", lambda v, c: "0x00"),
    "pci.device_id": ("", lambda v, c: v.profile["pci_device_id"]),
    "pci.sub_device_id": ("", lambda v, c: v.profile["pci_sub_device_id"]),
    "pcie.link.gen.current": ("", lambda v, c: v.profile["pcie_gen"]),
    "pcie.link.gen.max": ("", lambda v, c: v.profile["pcie_gen"]),
    "pcie.link.width.current": ("", lambda v, c: 16),
    "pcie.link.width.max": ("", lambda v, c: 16),
    "index": ("", lambda v, c: v.index),
    "minor_number": ("", lambda v, c: v.gpu["minor_number"]),
    "vbios_version": ("", lambda v, c: v.profile["vbios"]),
    "inforom.img": ("", lambda v, c: "G520.0200.00.05" if v.gpu["inforom_valid"] else NA),
    "persistence_mode": ("", lambda v, c: _mode(v.persistence)),
    "display_mode": ("", lambda v, c: "Disabled"),
    "display_active": ("", lambda v, c: "Disabled"),
    "accounting.mode": ("", lambda v, c: "Disabled"),
    "driver_model.current": ("", lambda v, c: NA),
    "pstate": ("", lambda v, c: "P0"),
    "fan.speed": ("%", lambda v, c: NA),
    "memory.total": ("MiB", lambda v, c: v.memory_total),
    "memory.reserved": ("MiB", lambda v, c: v.memory_reserved),
    "memory.used": ("MiB", lambda v, c: v.memory_used),
    "memory.free": ("MiB", lambda v, c: v.memory_free),
    "compute_mode": ("", lambda v, c: v.gpu["compute_mode"]),
    "utilization.gpu": ("%", lambda v, c: v.util),
    "utilization.memory": ("%", lambda v, c: v.memory_util),
    "encoder.stats.sessionCount": ("", lambda v, c: 0),
    "ecc.mode.current": ("", lambda v, c: _mode(v.gpu["ecc_mode"])),
    "ecc.mode.pending": ("", lambda v, c: _mode(v.gpu["ecc_mode"])),
    "ecc.errors.corrected.volatile.device_memory": ("", lambda v, c: v.gpu["ecc"]["sbe_volatile"]),
    "ecc.errors.corrected.volatile.dram": ("", lambda v, c: v.gpu["ecc"]["sbe_volatile"]),
    "ecc.errors.corrected.volatile.sram": ("", lambda v, c: 0),
    "ecc.errors.corrected.volatile.total": ("", lambda v, c: v.gpu["ecc"]["sbe_volatile"]),
    "ecc.errors.corrected.aggregate.device_memory": ("", lambda v, c: v.gpu["ecc"]["sbe_aggregate"]),
    "ecc.errors.corrected.aggregate.dram": ("", lambda v, c: v.gpu["ecc"]["sbe_aggregate"]),
    "ecc.errors.corrected.aggregate.sram": ("", lambda v, c: 0),
    "ecc.errors.corrected.aggregate.total": ("", lambda v, c: v.gpu["ecc"]["sbe_aggregate"]),
    "ecc.errors.uncorrected.volatile.device_memory": ("", lambda v, c: v.gpu["ecc"]["dbe_volatile"]),
    "ecc.errors.uncorrected.volatile.dram": ("", lambda v, c: v.gpu["ecc"]["dbe_volatile"]),
    "ecc.errors.uncorrected.volatile.sram": ("", lambda v, c: 0),
    "ecc.errors.uncorrected.volatile.total": ("", lambda v, c: v.gpu["ecc"]["dbe_volatile"]),
    "ecc.errors.uncorrected.aggregate.device_memory": ("", lambda v, c: v.gpu["ecc"]["dbe_aggregate"]),
    "ecc.errors.uncorrected.aggregate.dram": ("", lambda v, c: v.gpu["ecc"]["dbe_aggregate"]),
    "ecc.errors.uncorrected.aggregate.sram": ("", lambda v, c: 0),
    "ecc.errors.uncorrected.aggregate.total": ("", lambda v, c: v.gpu["ecc"]["dbe_aggregate"]),
    "retired_pages.single_bit_ecc.count": ("", lambda v, c: v.gpu["retired"]["sbe"]),
    "retired_pages.double_bit.count": ("", lambda v, c: v.gpu["retired"]["dbe"]),
    "retired_pages.pending": ("", lambda v, c: _yes(v.gpu["retired"]["pending"])),
    "remapped_rows.correctable": ("", lambda v, c: v.gpu["remap"]["correctable"]),
    "remapped_rows.uncorrectable": ("", lambda v, c: v.gpu["remap"]["uncorrectable"]),
    "remapped_rows.pending": ("", lambda v, c: _yes(v.gpu["remap"]["pending"])),
    "remapped_rows.failure": ("", lambda v, c: _yes(v.gpu["remap"]["failure"])),
    "temperature.gpu": ("", lambda v, c: v.temperature),
    "temperature.memory": ("", lambda v, c: v.memory_temperature),
    "temperature.gpu.tlimit": ("", lambda v, c: v.profile["temp_slowdown"] - v.temperature),
    "power.management": ("", lambda v, c: "Enabled"),
    "power.draw": ("W", lambda v, c: f"{v.power:.2f}"),
    "power.draw.average": ("W", lambda v, c: f"{v.power:.2f}"),
    "power.draw.instant": ("W", lambda v, c: f"{v.power:.2f}"),
    "power.limit": ("W", lambda v, c: f"{v.profile['power_limit_w']:.2f}"),
    "enforced.power.limit": ("W", lambda v, c: f"{v.profile['power_limit_w']:.2f}"),
    "power.default_limit": ("W", lambda v, c: f"{v.profile['power_limit_w']:.2f}"),
    "power.min_limit": ("W", lambda v, c: f"{v.profile['power_min_w']:.2f}"),
    "power.max_limit": ("W", lambda v, c: f"{v.profile['power_limit_w']:.2f}"),
    "clocks.current.graphics": ("MHz", lambda v, c: v.clock_sm),
    "clocks.current.sm": ("MHz", lambda v, c: v.clock_sm),
    "clocks.current.memory": ("MHz", lambda v, c: v.clock_mem),
    "clocks.current.video": ("MHz", lambda v, c: v.clock_video),
    "clocks.max.graphics": ("MHz", lambda v, c: v.profile["clock_sm_max"]),
    "clocks.max.sm": ("MHz", lambda v, c: v.profile["clock_sm_max"]),
    "clocks.max.memory": ("MHz", lambda v, c: v.profile["clock_mem"]),
    "clocks_throttle_reasons.active": ("", _clock_reasons),
    "clocks_event_reasons.active": ("", _clock_reasons),
    "mig.mode.current": ("", _mig),
    "mig.mode.pending": ("", _mig),
}

GPU_ALIASES = {
    "gpu_name": "name",
    "gpu_serial": "serial",
    "gpu_uuid": "uuid",
    "gpu_bus_id": "pci.bus_id",
    "pci.bus_id": "pci.bus_id",
    "clocks.gr": "clocks.current.graphics",
    "clocks.sm": "clocks.current.sm",
    "clocks.mem": "clocks.current.memory",
    "clocks.video": "clocks.current.video",
    "clocks.max.gr": "clocks.max.graphics",
    "clocks.max.mem": "clocks.max.memory",
    "ecc.errors.corrected.volatile.total": "ecc.errors.corrected.volatile.total",
    "retired_pages.sbe": "retired_pages.single_bit_ecc.count",
    "retired_pages.dbe": "retired_pages.double_bit.count",
    "clocks_throttle_reasons.active": "clocks_throttle_reasons.active",
    "power.limit": "power.limit",
    "pcie.link.gen.gpucurrent": "pcie.link.gen.current",
    "pcie.link.gen.gpumax": "pcie.link.gen.max",
}

APP_FIELDS: dict[str, tuple[str, Callable[[dict[str, Any], st.GpuView], Any]]] = {
    "timestamp": ("", lambda p, v: time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(st.now())) + ".000"),
    "gpu_name": ("", lambda p, v: v.profile["name"]),
    "gpu_bus_id": ("", lambda p, v: v.gpu["pci_bus_id"]),
    "gpu_serial": ("", lambda p, v: v.gpu["serial"]),
    "gpu_uuid": ("", lambda p, v: v.gpu["uuid"]),
    "pid": ("", lambda p, v: p["pid"]),
    "process_name": ("", lambda p, v: p["name"]),
    "used_gpu_memory": ("MiB", lambda p, v: p["used_memory_mib"]),
}
APP_ALIASES = {"name": "process_name", "used_memory": "used_gpu_memory"}


class Output:
    """stdout text and exit status of one invocation."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.rc = RC_OK

    def say(self, line: str = "") -> None:
        self.lines.append(line)

    def fail(self, rc: int, line: str | None = None) -> Output:
        if line is not None:
            self.say(line)
        self.rc = rc
        return self

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def _handle_error(view: st.GpuView) -> str:
    return f"Unable to determine the device handle for GPU {view.gpu['pci_bus_id'][4:]}: {LOST_TEXT}"


def _select(views: list[st.GpuView], selector: str | None) -> list[st.GpuView] | None:
    if selector is None:
        return views
    chosen = []
    for item in selector.split(","):
        key = item.strip()
        match = [
            v
            for v in views
            if key == str(v.index)
            or key == v.gpu["uuid"]
            or key.upper() in (v.gpu["pci_bus_id"], v.gpu["pci_bus_id"][4:], v.gpu["pci_bus_id"][:-2])
        ]
        if not match:
            return None
        chosen.extend(m for m in match if m not in chosen)
    return chosen


def _parse_format(spec: str | None) -> tuple[bool, bool] | None:
    if spec is None:
        return None
    parts = [p.strip() for p in spec.split(",")]
    if parts[0] != "csv" or any(p not in ("noheader", "nounits") for p in parts[1:]):
        return None
    return "noheader" not in parts, "nounits" not in parts


def _cell(value: Any, unit: str, units: bool) -> str:
    text = str(value)
    if units and unit and text != NA:
        return f"{text} {unit}" if unit != "%" else f"{text} %"
    return text


def _resolve(names: list[str], table: dict[str, Any], aliases: dict[str, str]) -> tuple[list[str], str | None]:
    resolved = []
    for name in names:
        canonical = aliases.get(name, name)
        if canonical not in table:
            return [], name
        resolved.append(canonical)
    return resolved, None


def _query_gpu(out: Output, views: list[st.GpuView], config: st.Config, spec: str, fmt: tuple[bool, bool]) -> Output:
    header, units = fmt
    fields, bad = _resolve([f.strip() for f in spec.split(",") if f.strip()], GPU_FIELDS, GPU_ALIASES)
    if bad is not None:
        return out.fail(RC_INVALID_ARG, f'Field "{bad}" is not a valid field to query.').fail(RC_INVALID_ARG, "")
    if header:
        out.say(", ".join(f"{f} [{GPU_FIELDS[f][0]}]" if GPU_FIELDS[f][0] else f for f in fields))
    for view in views:
        if view.lost:
            out.fail(RC_GPU_LOST, _handle_error(view))
            continue
        cells = []
        for name in fields:
            unit, getter = GPU_FIELDS[name]
            value = len(views) if name == "count" else getter(view, config)
            cells.append(_cell(value, unit, units))
        out.say(", ".join(cells))
    return out


def _query_apps(out: Output, views: list[st.GpuView], spec: str, fmt: tuple[bool, bool]) -> Output:
    header, units = fmt
    fields, bad = _resolve([f.strip() for f in spec.split(",") if f.strip()], APP_FIELDS, APP_ALIASES)
    if bad is not None:
        return out.fail(RC_INVALID_ARG, f'Field "{bad}" is not a valid field to query.').fail(RC_INVALID_ARG, "")
    if header:
        out.say(", ".join(f"{f} [{APP_FIELDS[f][0]}]" if APP_FIELDS[f][0] else f for f in fields))
    for view in views:
        if view.lost:
            out.fail(RC_GPU_LOST, _handle_error(view))
            continue
        for proc in sorted(view.processes, key=lambda p: int(p["pid"])):
            out.say(", ".join(_cell(APP_FIELDS[f][1](proc, view), APP_FIELDS[f][0], units) for f in fields))
    return out


def _list(out: Output, views: list[st.GpuView]) -> Output:
    for view in views:
        if view.lost:
            out.fail(RC_GPU_LOST, _handle_error(view))
        else:
            out.say(f"GPU {view.index}: {view.profile['name']} (UUID: {view.gpu['uuid']})")
    return out


# ---------------------------------------------------------------------------------------------------------------
# -q


def _kv(indent: int, key: str, value: Any = None) -> str:
    if value is None:
        return " " * indent + key
    return f"{' ' * indent}{key:<{42 - indent}}: {value}"


def _q_compute(v: st.GpuView) -> list[str]:
    return [_kv(4, "Compute Mode", v.gpu["compute_mode"])]


def _q_memory(v: st.GpuView) -> list[str]:
    return [
        _kv(4, "FB Memory Usage"),
        _kv(8, "Total", f"{v.memory_total} MiB"),
        _kv(8, "Reserved", f"{v.memory_reserved} MiB"),
        _kv(8, "Used", f"{v.memory_used} MiB"),
        _kv(8, "Free", f"{v.memory_free} MiB"),
    ]


def _q_utilization(v: st.GpuView) -> list[str]:
    return [
        _kv(4, "Utilization"),
        _kv(8, "Gpu", f"{v.util} %"),
        _kv(8, "Memory", f"{v.memory_util} %"),
        _kv(8, "Encoder", "0 %"),
        _kv(8, "Decoder", "0 %"),
    ]


def _q_ecc(v: st.GpuView) -> list[str]:
    ecc = v.gpu["ecc"]
    mode = _mode(v.gpu["ecc_mode"])
    return [
        _kv(4, "ECC Mode"),
        _kv(8, "Current", mode),
        _kv(8, "Pending", mode),
        _kv(4, "ECC Errors"),
        _kv(8, "Volatile"),
        _kv(12, "SRAM Correctable", 0),
        _kv(12, "SRAM Uncorrectable", 0),
        _kv(12, "DRAM Correctable", ecc["sbe_volatile"]),
        _kv(12, "DRAM Uncorrectable", ecc["dbe_volatile"]),
        _kv(8, "Aggregate"),
        _kv(12, "SRAM Correctable", 0),
        _kv(12, "SRAM Uncorrectable", 0),
        _kv(12, "DRAM Correctable", ecc["sbe_aggregate"]),
        _kv(12, "DRAM Uncorrectable", ecc["dbe_aggregate"]),
    ]


def _q_retired(v: st.GpuView) -> list[str]:
    retired = v.gpu["retired"]
    return [
        _kv(4, "Retired Pages"),
        _kv(8, "Single Bit ECC", retired["sbe"]),
        _kv(8, "Double Bit ECC", retired["dbe"]),
        _kv(8, "Pending Page Blacklist", _yes(retired["pending"])),
    ]


def _q_remap(v: st.GpuView) -> list[str]:
    remap = v.gpu["remap"]
    return [
        _kv(4, "Remapped Rows"),
        _kv(8, "Correctable Error", remap["correctable"]),
        _kv(8, "Uncorrectable Error", remap["uncorrectable"]),
        _kv(8, "Pending", _yes(remap["pending"])),
        _kv(8, "Remapping Failure Occurred", _yes(remap["failure"])),
    ]


def _q_temperature(v: st.GpuView) -> list[str]:
    return [
        _kv(4, "Temperature"),
        _kv(8, "GPU Current Temp", f"{v.temperature} C"),
        _kv(8, "GPU T.Limit Temp", f"{v.profile['temp_slowdown'] - v.temperature} C"),
        _kv(8, "GPU Shutdown Temp", f"{v.profile['temp_slowdown'] + 5} C"),
        _kv(8, "GPU Slowdown Temp", f"{v.profile['temp_slowdown']} C"),
        _kv(8, "Memory Current Temp", f"{v.memory_temperature} C"),
    ]


def _q_power(v: st.GpuView) -> list[str]:
    limit = f"{v.profile['power_limit_w']:.2f} W"
    return [
        _kv(4, "GPU Power Readings"),
        _kv(8, "Power Draw", f"{v.power:.2f} W"),
        _kv(8, "Current Power Limit", limit),
        _kv(8, "Requested Power Limit", limit),
        _kv(8, "Default Power Limit", limit),
        _kv(8, "Min Power Limit", f"{v.profile['power_min_w']:.2f} W"),
        _kv(8, "Max Power Limit", limit),
    ]


def _q_clock(v: st.GpuView) -> list[str]:
    return [
        _kv(4, "Clocks"),
        _kv(8, "Graphics", f"{v.clock_sm} MHz"),
        _kv(8, "SM", f"{v.clock_sm} MHz"),
        _kv(8, "Memory", f"{v.clock_mem} MHz"),
        _kv(8, "Video", f"{v.clock_video} MHz"),
        _kv(4, "Max Clocks"),
        _kv(8, "Graphics", f"{v.profile['clock_sm_max']} MHz"),
        _kv(8, "SM", f"{v.profile['clock_sm_max']} MHz"),
        _kv(8, "Memory", f"{v.profile['clock_mem']} MHz"),
        _kv(8, "Video", f"{v.profile['clock_video_max']} MHz"),
    ]


def _q_performance(_v: st.GpuView) -> list[str]:
    return [_kv(4, "Performance State", "P0")]


def _q_pids(v: st.GpuView) -> list[str]:
    if not v.processes:
        return [_kv(4, "Processes", "None")]
    lines = [_kv(4, "Processes")]
    for proc in sorted(v.processes, key=lambda p: int(p["pid"])):
        lines += [
            _kv(8, "GPU instance ID", "N/A"),
            _kv(8, "Compute instance ID", "N/A"),
            _kv(8, "Process ID", proc["pid"]),
            _kv(12, "Type", "C"),
            _kv(12, "Name", proc["name"]),
            _kv(12, "Used GPU Memory", f"{proc['used_memory_mib']} MiB"),
        ]
    return lines


def _q_identity(v: st.GpuView, config: st.Config) -> list[str]:
    mig = _mig(v, config)
    bus = _bus(v)
    return [
        _kv(4, "Product Name", v.profile["name"]),
        _kv(4, "Product Brand", v.profile["brand"]),
        _kv(4, "Product Architecture", v.profile["architecture"]),
        _kv(4, "Display Mode", "Disabled"),
        _kv(4, "Display Active", "Disabled"),
        _kv(4, "Persistence Mode", _mode(v.persistence)),
        _kv(4, "MIG Mode"),
        _kv(8, "Current", mig),
        _kv(8, "Pending", mig),
        _kv(4, "Accounting Mode", "Disabled"),
        _kv(4, "Driver Model"),
        _kv(8, "Current", "N/A"),
        _kv(8, "Pending", "N/A"),
        _kv(4, "Serial Number", v.gpu["serial"]),
        _kv(4, "GPU UUID", v.gpu["uuid"]),
        _kv(4, "Minor Number", v.gpu["minor_number"]),
        _kv(4, "VBIOS Version", v.profile["vbios"]),
        _kv(4, "PCI"),
        _kv(8, "Bus", "0x" + bus),
        _kv(8, "Device", "0x00"),
        _kv(8, "Domain", "0x0000"),
        _kv(8, "Device Id", v.profile["pci_device_id"]),
        _kv(8, "Bus Id", v.gpu["pci_bus_id"]),
        _kv(8, "Sub System Id", v.profile["pci_sub_device_id"]),
        _kv(4, "Fan Speed", "N/A"),
    ]


SECTIONS: dict[str, Callable[[st.GpuView], list[str]]] = {
    "PERFORMANCE": _q_performance,
    "MEMORY": _q_memory,
    "COMPUTE": _q_compute,
    "UTILIZATION": _q_utilization,
    "ECC": _q_ecc,
    "PAGE_RETIREMENT": _q_retired,
    "ROW_REMAPPER": _q_remap,
    "TEMPERATURE": _q_temperature,
    "POWER": _q_power,
    "CLOCK": _q_clock,
    "PIDS": _q_pids,
}


def _query_full(out: Output, views: list[st.GpuView], config: st.Config, display: str | None) -> Output:
    names = list(SECTIONS) if display is None else [d.strip().upper() for d in display.split(",")]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        return out.fail(RC_INVALID_ARG, 'Invalid combination of input arguments. Please run "nvidia-smi -h" for help.')
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(st.now()))
    out.say()
    out.say("==============NVSMI LOG==============")
    out.say()
    out.say(_kv(0, "Timestamp", stamp))
    out.say(_kv(0, "Driver Version", config.driver_version))
    out.say(_kv(0, "CUDA Version", config.cuda_version))
    out.say()
    out.say(_kv(0, "Attached GPUs", len(views)))
    for view in views:
        if view.lost:
            out.fail(RC_GPU_LOST, _handle_error(view))
            continue
        out.say(f"GPU {view.gpu['pci_bus_id']}")
        if display is None:
            for line in _q_identity(view, config):
                out.say(line)
        for name in names:
            for line in SECTIONS[name](view):
                out.say(line)
        out.say()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Changes: -r, -c, -pm

COMPUTE_MODES = {
    "0": "Default",
    "DEFAULT": "Default",
    "1": "Exclusive_Thread",
    "EXCLUSIVE_THREAD": "Exclusive_Thread",
    "2": "Prohibited",
    "PROHIBITED": "Prohibited",
    "3": "Exclusive_Process",
    "EXCLUSIVE_PROCESS": "Exclusive_Process",
}
IN_USE_TEXT = (
    "{n} device is currently being used by one or more other processes (e.g., Fabric Manager, CUDA application, "
    "graphics application such as an X server, or a monitoring application such as another instance of "
    "nvidia-smi). Please first kill all processes using this device and all compute applications running in the "
    "system."
)


def _is_root() -> bool:
    return os.geteuid() == 0 or os.environ.get("GPUSIM_ASSUME_ROOT") == "1"


def _reset(out: Output, views: list[st.GpuView], config: st.Config) -> Output:
    if not _is_root():
        return out.fail(RC_NO_PERMISSION, "Unable to reset GPU: Insufficient Permissions")
    lost = [v for v in views if v.lost]
    busy = [v for v in views if v.processes and not v.lost]
    if lost or busy:
        out.say("The following GPUs could not be reset:")
        for v in lost:
            out.say(f"  GPU {v.gpu['pci_bus_id']}: {LOST_TEXT}")
        for v in busy:
            out.say(f"  GPU {v.gpu['pci_bus_id']}: In use by another client")
        out.say()
        if busy:
            out.say(IN_USE_TEXT.format(n=len(busy)))
        return out.fail(RC_GPU_LOST if lost and not busy else RC_OTHER)
    wanted = {v.index for v in views}
    with st.mutate(config) as data:
        for gpu in data["gpus"]:
            if gpu["index"] in wanted:
                st.reset_gpu(gpu)
    for v in views:
        out.say(f"GPU {v.gpu['pci_bus_id']} was successfully reset.")
    return out


def _compute_mode(out: Output, views: list[st.GpuView], config: st.Config, value: str) -> Output:
    mode = COMPUTE_MODES.get(value.upper())
    if mode is None:
        return out.fail(RC_INVALID_ARG, f'Invalid compute mode "{value}". Please run "nvidia-smi -h" for help.')
    if not _is_root():
        for v in views:
            out.say(f"Unable to set the compute mode for GPU {v.gpu['pci_bus_id']}: Insufficient Permissions")
        out.say("Terminating early due to previous errors.")
        return out.fail(RC_NO_PERMISSION)
    wanted = {v.index for v in views}
    with st.mutate(config) as data:
        for gpu in data["gpus"]:
            if gpu["index"] in wanted and not gpu.get("lost"):
                upper = mode.upper()
                if gpu["compute_mode"] == mode:
                    out.say(f"Compute mode is already set to {upper} for GPU {gpu['pci_bus_id']}.")
                else:
                    gpu["compute_mode"] = mode
                    out.say(f"Set compute mode to {upper} for GPU {gpu['pci_bus_id']}.")
    for v in views:
        if v.lost:
            out.fail(RC_GPU_LOST, _handle_error(v))
    out.say("All done.")
    return out


def _persistence(out: Output, views: list[st.GpuView], config: st.Config, value: str) -> Output:
    if value not in ("0", "1", "ENABLED", "DISABLED"):
        return out.fail(RC_INVALID_ARG, f'Invalid persistence mode "{value}". Please run "nvidia-smi -h" for help.')
    enable = value in ("1", "ENABLED")
    if not _is_root():
        return out.fail(RC_NO_PERMISSION, "Unable to set persistence mode: Insufficient Permissions")
    wanted = {v.index for v in views}
    with st.mutate(config) as data:
        for gpu in data["gpus"]:
            if gpu["index"] in wanted:
                gpu["persistence_forced"] = enable
                verb = "Enabled" if enable else "Disabled"
                out.say(f"{verb} persistence mode for GPU {gpu['pci_bus_id']}.")
    out.say("All done.")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Command line

USAGE = """NVIDIA System Management Interface -- v{driver} (STAND-IN: gpuops.fleet GPU simulator, lab only)

Supported in this stand-in:
    -L, --list-gpus
    -i, --id=                   GPU index, UUID or PCI bus id (comma-separated)
    -q, --query  [-d SECTIONS]  COMPUTE, MEMORY, UTILIZATION, ECC, PAGE_RETIREMENT, ROW_REMAPPER,
                                TEMPERATURE, POWER, CLOCK, PERFORMANCE, PIDS
    --query-gpu=FIELDS --format=csv[,noheader][,nounits]
    --query-compute-apps=FIELDS --format=csv[,noheader][,nounits]
    -r, --gpu-reset
    -c, --compute-mode=MODE     0/DEFAULT, 2/PROHIBITED, 3/EXCLUSIVE_PROCESS
    -pm, --persistence-mode=0|1
"""

_VALUE_OPTIONS = {
    "-i": "id",
    "--id": "id",
    "-d": "display",
    "--display": "display",
    "--query-gpu": "query_gpu",
    "--query-compute-apps": "query_apps",
    "--format": "format",
    "-c": "compute_mode",
    "--compute-mode": "compute_mode",
    "-pm": "persistence",
    "--persistence-mode": "persistence",
}
_FLAG_OPTIONS = {
    "-L": "list",
    "--list-gpus": "list",
    "-q": "query",
    "--query": "query",
    "-r": "reset",
    "--gpu-reset": "reset",
    "-h": "help",
    "--help": "help",
}


def _parse(argv: list[str]) -> dict[str, Any] | None:
    opts: dict[str, Any] = {}
    args = iter(argv)
    for arg in args:
        name, eq, inline = arg.partition("=")
        if name in _VALUE_OPTIONS:
            value = inline if eq else next(args, None)
            if value is None:
                return None
            opts[_VALUE_OPTIONS[name]] = value
        elif arg in _FLAG_OPTIONS:
            opts[_FLAG_OPTIONS[arg]] = True
        elif arg.startswith("-i") and arg[2:].isdigit():
            opts["id"] = arg[2:]
        else:
            return None
    return opts


def _dispatch(out: Output, opts: dict[str, Any], views: list[st.GpuView], config: st.Config) -> Output:
    fmt = _parse_format(opts.get("format"))
    for key, label in (("query_gpu", '"--query-gpu=" option.'), ("query_apps", '"--query-compute-apps".')):
        if key in opts and fmt is None:
            return out.fail(RC_INVALID_ARG, f'"--format=" option is required when using {label}')
    actions: list[tuple[str, Callable[[], Output]]] = [
        ("query_gpu", lambda: _query_gpu(out, views, config, opts["query_gpu"], fmt or (True, True))),
        ("query_apps", lambda: _query_apps(out, views, opts["query_apps"], fmt or (True, True))),
        ("list", lambda: _list(out, views)),
        ("query", lambda: _query_full(out, views, config, opts.get("display"))),
        ("reset", lambda: _reset(out, views, config)),
        ("compute_mode", lambda: _compute_mode(out, views, config, opts["compute_mode"])),
        ("persistence", lambda: _persistence(out, views, config, opts["persistence"].upper())),
    ]
    for key, action in actions:
        if opts.get(key):
            return action()
    return _list(out, views)


def run(argv: list[str]) -> Output:
    """One nvidia-smi invocation: its stdout and exit status."""
    out = Output()
    opts = _parse(argv)
    if opts is None:
        bad = next((a for a in argv if a.startswith("-")), argv[0] if argv else "")
        out.say(f"Invalid combination of input arguments. Please run 'nvidia-smi -h' for help. ({bad})")
        return out.fail(RC_INVALID_ARG)
    config = st.load_config()
    if opts.get("help"):
        out.lines.append(USAGE.format(driver=config.driver_version).rstrip("\n"))
        return out
    data = st.load_state(config)
    # The loaded driver (the one installed at the last boot), not the installed one: after an upgrade it differs
    # until the node reboots, as on a real node.
    config = config._replace(driver_version=st.loaded_driver_version(config, data))
    if not data["gpus"]:
        return out.fail(RC_NOT_FOUND, "No devices were found")
    views = _select(st.compute_view(config, data), opts.get("id"))
    if not views:
        return out.fail(RC_NOT_FOUND, "No devices were found")
    return _dispatch(out, opts, views, config)


def main(argv: list[str] | None = None) -> int:
    try:
        out = run(sys.argv[1:] if argv is None else argv)
    except st.StateError as err:
        sys.stdout.write(f"Failed to initialize NVML: Unknown Error\n(gpusim: {err})\n")
        return RC_OTHER
    sys.stdout.write(out.text)
    return out.rc


if __name__ == "__main__":
    sys.exit(main())
