# STAND-IN: gpuops.fleet GPU simulator (lab only). Not NVIDIA software.
"""The simulated GPUs of one node: configuration, the shared state file and the values derived from it.

The state file (`/var/lib/gpusim/state.json`) holds what persists: identities, modes, counters, the last XID,
the lost flag. Processes register themselves as one file each under `procs/` (a sticky, world-writable
directory, so unprivileged jobs can use a GPU); files of processes that no longer run are ignored and pruned.
Temperatures, power, clocks and utilisation are computed when read, from the time and the registered load, so
no daemon is needed. Writers hold an exclusive flock and replace the file atomically; readers never block.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "PROFILES",
    "Config",
    "GpuView",
    "StateError",
    "boot",
    "compute_view",
    "default_state",
    "init_state",
    "installed_driver_version",
    "kernel_log_line",
    "live_processes",
    "load_config",
    "load_state",
    "loaded_driver_version",
    "mutate",
    "now",
    "persistenced_running",
    "record_xid",
    "register_process",
    "reset_gpu",
    "unregister_process",
]

DEFAULT_CONFIG_PATH = "/etc/gpusim/gpusim.json"
DEFAULT_STATE_PATH = "/var/lib/gpusim/state.json"
DEFAULT_KERNEL_LOG = "/var/log/gpusim/kmsg"
DEFAULT_PERSISTENCED_PIDFILE = "/var/run/nvidia-persistenced/nvidia-persistenced.pid"
STATE_VERSION = 1
XID_GPU_LOST = 79
XID_HISTORY_KEEP = 256  # XID samples kept per GPU for windowed counts (DCGM's time series of field 230)
# Clock-event (throttle) reason bits, as in DCGM's dcgm_fields.h / NVML's nvmlClocksEventReason*.
CLOCK_EVENT_GPU_IDLE = 0x1
CLOCK_EVENT_SW_POWER_CAP = 0x4
CLOCK_EVENT_SW_THERMAL = 0x20
PROCS_MODE = 0o1777  # sticky and world-writable like /tmp: unprivileged jobs register their own file

# Board profiles: what nvidia-smi reports for each product. Values from NVIDIA's product specifications.
PROFILES: dict[str, dict[str, Any]] = {
    "h100-80gb-hbm3": {
        "name": "NVIDIA H100 80GB HBM3",
        "brand": "NVIDIA",
        "architecture": "Hopper",
        "memory_total_mib": 81559,
        "memory_reserved_mib": 579,
        "power_limit_w": 700.0,
        "power_min_w": 200.0,
        "power_idle_w": 69.0,
        "clock_sm_max": 1980,
        "clock_sm_idle": 345,
        "clock_mem": 2619,
        "clock_video_max": 1545,
        "temp_idle": 31,
        "temp_slowdown": 92,
        "pci_device_id": "0x233010DE",
        "pci_sub_device_id": "0x16C110DE",
        "vbios": "96.00.74.00.01",
        "mig_capable": True,
        "pcie_gen": 5,
        # HGX H100 8-GPU baseboard bus numbers, in nvidia-smi's index order.
        "pci_buses": [0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB],
    },
    "a100-sxm4-80gb": {
        "name": "NVIDIA A100-SXM4-80GB",
        "brand": "NVIDIA",
        "architecture": "Ampere",
        "memory_total_mib": 81920,
        "memory_reserved_mib": 593,
        "power_limit_w": 400.0,
        "power_min_w": 100.0,
        "power_idle_w": 62.0,
        "clock_sm_max": 1410,
        "clock_sm_idle": 210,
        "clock_mem": 1593,
        "clock_video_max": 1290,
        "temp_idle": 30,
        "temp_slowdown": 89,
        "pci_device_id": "0x20B210DE",
        "pci_sub_device_id": "0x147F10DE",
        "vbios": "92.00.45.00.03",
        "mig_capable": True,
        "pcie_gen": 4,
        "pci_buses": [0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD],
    },
    "t4": {
        "name": "Tesla T4",
        "brand": "NVIDIA",
        "architecture": "Turing",
        "memory_total_mib": 15360,
        "memory_reserved_mib": 255,
        "power_limit_w": 70.0,
        "power_min_w": 60.0,
        "power_idle_w": 9.0,
        "clock_sm_max": 1590,
        "clock_sm_idle": 300,
        "clock_mem": 5000,
        "clock_video_max": 1470,
        "temp_idle": 29,
        "temp_slowdown": 85,
        "pci_device_id": "0x1EB810DE",
        "pci_sub_device_id": "0x12A210DE",
        "vbios": "90.04.96.00.02",
        "mig_capable": False,
        "pcie_gen": 3,
        "pci_buses": [0x00],
    },
}


class StateError(Exception):
    """The state cannot be read or written (bad configuration, permissions)."""


class Config(NamedTuple):
    """Where things are and how many GPUs of which profile a node has."""

    state_path: Path
    kernel_log: Path
    gpu_count: int
    profile: str
    hostname: str
    driver_version: str
    cuda_version: str
    driver_package: str
    hostengine_host: str
    hostengine_port: int
    persistenced_pidfile: Path

    @property
    def procs_dir(self) -> Path:
        return self.state_path.parent / "procs"

    @property
    def lock_path(self) -> Path:
        return self.state_path.with_name(self.state_path.name + ".lock")


def now() -> float:
    """Current time; GPUSIM_NOW pins it (tests compare outputs byte for byte)."""
    pinned = os.environ.get("GPUSIM_NOW")
    return float(pinned) if pinned else time.time()


def load_config() -> Config:
    """Read /etc/gpusim/gpusim.json (or GPUSIM_CONFIG); GPUSIM_* variables override single settings."""
    path = Path(os.environ.get("GPUSIM_CONFIG", DEFAULT_CONFIG_PATH))
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise StateError(f"cannot read {path}: {err}") from err
    env = os.environ
    profile = env.get("GPUSIM_PROFILE", data.get("profile", "h100-80gb-hbm3"))
    if profile not in PROFILES:
        raise StateError(f"unknown GPU profile {profile!r}; known: {', '.join(sorted(PROFILES))}")
    return Config(
        state_path=Path(env.get("GPUSIM_STATE", data.get("state_path", DEFAULT_STATE_PATH))),
        kernel_log=Path(env.get("GPUSIM_KERNEL_LOG", data.get("kernel_log", DEFAULT_KERNEL_LOG))),
        gpu_count=int(env.get("GPUSIM_GPU_COUNT", data.get("gpu_count", 8))),
        profile=profile,
        hostname=env.get("GPUSIM_HOSTNAME", data.get("hostname", "")) or os.uname().nodename,
        driver_version=data.get("driver_version", "535.183.01"),
        cuda_version=data.get("cuda_version", "12.2"),
        driver_package=env.get("GPUSIM_DRIVER_PACKAGE", data.get("driver_package", "")),
        hostengine_host=data.get("hostengine_host", "localhost"),
        hostengine_port=int(env.get("GPUSIM_HOSTENGINE_PORT", data.get("hostengine_port", 5555))),
        persistenced_pidfile=Path(
            env.get("GPUSIM_PERSISTENCED_PIDFILE", data.get("persistenced_pidfile", DEFAULT_PERSISTENCED_PIDFILE))
        ),
    )


def _digest(*parts: object) -> str:
    return hashlib.sha256("/".join(str(part) for part in parts).encode()).hexdigest()


def _uuid(hostname: str, index: int) -> str:
    h = _digest("uuid", hostname, index)
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _pci_bus(profile: dict[str, Any], hostname: str, index: int, taken: set[int]) -> int:
    buses: list[int] = profile["pci_buses"]
    if index < len(buses) and buses[index] not in taken:
        return buses[index]
    bus = int(_digest("bus", hostname, index)[:2], 16) or 1
    while bus in taken:
        bus = bus % 0xFE + 1
    return bus


def _new_gpu(config: Config, index: int, bus: int) -> dict[str, Any]:
    serial = str(int(_digest("serial", config.hostname, index)[:12], 16) % 10**13).zfill(13)
    return {
        "index": index,
        "minor_number": index,
        "uuid": _uuid(config.hostname, index),
        "pci_bus_id": f"00000000:{bus:02X}:00.0",
        "serial": "165" + serial[3:],
        "persistence_forced": False,
        "compute_mode": "Default",
        "ecc_mode": True,
        "ecc": {"sbe_volatile": 0, "dbe_volatile": 0, "sbe_aggregate": 0, "dbe_aggregate": 0},
        "retired": {"sbe": 0, "dbe": 0, "pending": 0},
        "remap": {"correctable": 0, "uncorrectable": 0, "pending": 0, "failure": 0},
        "inforom_valid": 1,
        "recovery_action": 0,
        "last_xid": 0,
        "last_xid_ts": 0.0,
        "xid_events": [],
        "xid_history": [],
        "lost": False,
        "overrides": {},
        "energy_base_j": 0.0,
    }


def default_state(config: Config) -> dict[str, Any]:
    """A fresh node: `gpu_count` healthy GPUs of the configured profile, identities derived from the hostname."""
    profile = PROFILES[config.profile]
    taken: set[int] = set()
    gpus = []
    for index in range(config.gpu_count):
        bus = _pci_bus(profile, config.hostname, index, taken)
        taken.add(bus)
        gpus.append(_new_gpu(config, index, bus))
    return {
        "version": STATE_VERSION,
        "hostname": config.hostname,
        "profile": config.profile,
        "gpu_count": config.gpu_count,
        "created": now(),
        "gpus": gpus,
    }


def load_state(config: Config) -> dict[str, Any]:
    """The saved state, or a fresh one when there is none yet (nothing is written)."""
    try:
        return json.loads(config.state_path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except FileNotFoundError:
        return default_state(config)
    except (OSError, ValueError) as err:
        raise StateError(f"cannot read {config.state_path}: {err}") from err


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    # Imported here, as subprocess below: most calls of the stand-in tools only read the state, and these imports
    # are a good part of a call's start-up (the lab workload runs nvidia-smi every second on every node).
    import tempfile  # noqa: PLC0415

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def mutate(config: Config) -> Iterator[dict[str, Any]]:
    """Read-modify-write the state under an exclusive lock; the change is saved when the block ends."""
    try:
        config.state_path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(config.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise StateError(f"cannot lock {config.lock_path}: {err.strerror}") from err
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = load_state(config)
        yield data
        try:
            _write_atomic(config.state_path, data)
        except OSError as err:
            raise StateError(f"cannot write {config.state_path}: {err.strerror}") from err
    finally:
        os.close(lock)


def installed_driver_version(config: Config) -> str:
    """The driver version installed now: the upstream version of ``driver_package`` as dpkg knows it (epoch and
    Debian revision dropped), else the configured ``driver_version`` (no package named, dpkg has none)."""
    if not config.driver_package:
        return config.driver_version
    import subprocess  # noqa: PLC0415 - see _write_atomic

    argv = ["dpkg-query", "-W", "-f=${Version} ${db:Status-Abbrev}", config.driver_package]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return config.driver_version
    version, _, status = done.stdout.strip().partition(" ")
    if done.returncode != 0 or not version or status[:2] not in ("ii", "hi"):
        return config.driver_version
    upstream = version.split(":", 1)[-1]  # no epoch
    return upstream.rsplit("-", 1)[0] if "-" in upstream else upstream  # no Debian revision


def loaded_driver_version(config: Config, data: dict[str, Any]) -> str:
    """The driver "loaded" on the simulated node: the one installed when it last booted (as a kernel module stays
    loaded until a reboot, even after its packages were upgraded), else the configured ``driver_version``."""
    return str(data.get("loaded_driver_version") or config.driver_version)


def init_state(config: Config) -> bool:
    """Create the state and the process directory when missing or when GPU count/profile changed. True if changed."""
    changed = False
    current = None
    if config.state_path.is_file():
        with contextlib.suppress(StateError):
            current = load_state(config)
    wanted = (config.gpu_count, config.profile, config.hostname)
    if current is None or (current.get("gpu_count"), current.get("profile"), current.get("hostname")) != wanted:
        with mutate(config) as data:
            data.clear()
            data.update(default_state(config))
            data["loaded_driver_version"] = installed_driver_version(config)
        changed = True
    procs = config.procs_dir
    if not procs.is_dir():
        procs.mkdir(parents=True)
        changed = True
    if stat.S_IMODE(procs.stat().st_mode) != PROCS_MODE:
        os.chmod(procs, PROCS_MODE)
        changed = True
    return changed


# ---------------------------------------------------------------------------------------------------------------
# Processes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_processes(config: Config) -> list[dict[str, Any]]:
    """Registered processes that still run; files of dead ones are removed when permitted."""
    found = []
    try:
        entries = sorted(config.procs_dir.glob("*.json"))
    except OSError:
        return []
    for entry in entries:
        try:
            record = json.loads(entry.read_text(encoding="utf-8"))
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _pid_alive(pid):
            found.append(record)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return found


def register_process(config: Config, record: dict[str, Any]) -> Path:
    """Register a process that uses GPUs (`record` has pid, name, gpus, used_memory_mib, util)."""
    path = config.procs_dir / f"{record['pid']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)
    return path


def unregister_process(config: Config, pid: int) -> None:
    with contextlib.suppress(OSError):
        (config.procs_dir / f"{pid}.json").unlink()


def persistenced_running(config: Config) -> bool:
    try:
        pid = int(config.persistenced_pidfile.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return False
    return _pid_alive(pid)


# ---------------------------------------------------------------------------------------------------------------
# Derived values


class GpuView(NamedTuple):
    """One GPU as the tools see it at one instant: the saved record plus values derived from time and load."""

    gpu: dict[str, Any]
    profile: dict[str, Any]
    processes: list[dict[str, Any]]
    util: int
    memory_util: int
    memory_used: int
    temperature: int
    memory_temperature: int
    power: float
    energy_mj: int
    clock_sm: int
    clock_mem: int
    clock_video: int
    persistence: bool

    # A NamedTuple rather than a dataclass: importing dataclasses is a fifth of each tool call's start-up. The GPU's
    # index is the name every tool reads, so it shadows tuple.index (which nothing here calls).
    @property
    def index(self) -> int:  # type: ignore[override]
        return int(self.gpu["index"])

    @property
    def lost(self) -> bool:
        return bool(self.gpu.get("lost"))

    @property
    def memory_total(self) -> int:
        return int(self.profile["memory_total_mib"])

    @property
    def memory_reserved(self) -> int:
        return int(self.profile["memory_reserved_mib"])

    @property
    def memory_free(self) -> int:
        return max(0, self.memory_total - self.memory_reserved - self.memory_used)

    @property
    def clock_event_reasons(self) -> int:
        """The active clock-event (throttle) reasons bitmask: idle, power cap, thermal slowdown."""
        reasons = 0 if self.util else CLOCK_EVENT_GPU_IDLE
        if self.power >= self.profile["power_limit_w"]:
            reasons |= CLOCK_EVENT_SW_POWER_CAP
        if self.temperature >= self.profile["temp_slowdown"]:
            reasons |= CLOCK_EVENT_SW_THERMAL
        return reasons


def _wave(t: float, index: int, period: float) -> float:
    return math.sin(t / period + index * 0.7)


def compute_view(
    config: Config, data: dict[str, Any], processes: list[dict[str, Any]] | None = None, at: float | None = None
) -> list[GpuView]:
    """Every GPU with its derived values at time `at` (default: now)."""
    t = now() if at is None else at
    profile = PROFILES[data.get("profile", config.profile)]
    procs = live_processes(config) if processes is None else processes
    persistence = persistenced_running(config)
    views = []
    for gpu in data["gpus"]:
        mine = [p for p in procs if gpu["index"] in p.get("gpus", [])]
        util = min(100, sum(int(p.get("util", 0)) for p in mine))
        used = sum(int(p.get("used_memory_mib", 0)) for p in mine)
        load = util / 100.0
        temperature = round(profile["temp_idle"] + 40 * load + 1.5 * _wave(t, gpu["index"], 97.0))
        span = profile["power_limit_w"] - profile["power_idle_w"]
        power = profile["power_idle_w"] + 0.92 * span * load + 2.5 * (1 + _wave(t, gpu["index"], 13.0))
        overrides = gpu.get("overrides", {})
        if "temperature" in overrides:
            temperature = int(overrides["temperature"])
        if "power" in overrides:
            power = float(overrides["power"])
        created = float(data.get("created", t))
        energy_mj = int((gpu.get("energy_base_j", 0.0) + profile["power_idle_w"] * max(0.0, t - created)) * 1000)
        views.append(
            GpuView(
                gpu=gpu,
                profile=profile,
                processes=mine,
                util=util,
                memory_util=min(100, round(util * 0.6)),
                memory_used=used,
                temperature=temperature,
                memory_temperature=temperature + 3,
                power=round(power, 2),
                energy_mj=energy_mj,
                clock_sm=profile["clock_sm_max"] if util else profile["clock_sm_idle"],
                clock_mem=profile["clock_mem"],
                clock_video=profile["clock_video_max"] if util else profile["clock_sm_idle"] * 3 // 2,
                persistence=persistence or bool(gpu.get("persistence_forced")),
            )
        )
    return views


# ---------------------------------------------------------------------------------------------------------------
# Events


def kernel_log_line(gpu: dict[str, Any], xid: int, pid: int | None, name: str | None, message: str) -> str:
    """The NVRM line the driver logs for an XID, e.g. `NVRM: Xid (PCI:0000:18:00): 79, pid=..., name=..., ...`."""
    domain_bus = gpu["pci_bus_id"][4:].rsplit(".", 1)[0]  # 00000000:18:00.0 -> 0000:18:00
    who = f"pid={pid}, name={name}" if pid else "pid='<unknown>', name=<unknown>"
    return f"NVRM: Xid (PCI:{domain_bus}): {xid}, {who}, {message}"


def _uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def _write_kernel_log(config: Config, line: str) -> None:
    path = config.kernel_log
    try:
        if path.exists() and stat.S_ISCHR(path.stat().st_mode):
            # /dev/kmsg (production path): the kernel stamps the record itself; <4> is KERN_WARNING.
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(f"<4>{line}\n")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"[{_uptime():12.6f}] {line}\n")
    except OSError as err:
        raise StateError(f"cannot write the kernel log {path}: {err.strerror}") from err


def record_xid(
    config: Config, gpu: dict[str, Any], xid: int, message: str, pid: int | None = None, name: str | None = None
) -> str:
    """An XID happens on `gpu` (a record inside a `mutate` block): counters, lost flag, kernel-log line.

    `xid_events` are the health incidents (a GPU reset clears them); `xid_history` is DCGM's time series of the
    XID field, which outlives a GPU reset and is what dcgm-exporter counts over its window."""
    t = now()
    gpu["last_xid"] = xid
    gpu["last_xid_ts"] = t
    gpu.setdefault("xid_events", []).append({"xid": xid, "ts": t})
    del gpu["xid_events"][:-32]
    gpu.setdefault("xid_history", []).append({"xid": xid, "ts": t})
    del gpu["xid_history"][:-XID_HISTORY_KEEP]
    if xid == XID_GPU_LOST:
        gpu["lost"] = True
    line = kernel_log_line(gpu, xid, pid, name, message)
    _write_kernel_log(config, line)
    return line


def reset_gpu(gpu: dict[str, Any]) -> None:
    """What a successful `nvidia-smi -r` does: volatile counters cleared, pending retirements/remaps applied.

    The XID gauge is DCGM's cached value and survives a GPU reset; the health incidents do not."""
    gpu["ecc"]["sbe_volatile"] = 0
    gpu["ecc"]["dbe_volatile"] = 0
    if gpu["retired"].get("pending"):
        gpu["retired"]["pending"] = 0
    if gpu["remap"].get("pending"):
        gpu["remap"]["pending"] = 0
    gpu["xid_events"] = []
    gpu["overrides"] = {}
    gpu["recovery_action"] = 0


def boot(data: dict[str, Any]) -> None:
    """What a reboot does to every GPU: a reset, lost GPUs back on the bus, DCGM's caches (last XID) empty."""
    for gpu in data["gpus"]:
        reset_gpu(gpu)
        gpu["lost"] = False
        gpu["last_xid"] = 0
        gpu["last_xid_ts"] = 0.0
        gpu["xid_history"] = []
