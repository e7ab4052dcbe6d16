"""Sources: each a small class whose poll() returns a SourceReport (findings, and the GPUs where it reads them).

- NvidiaSmiSource: ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` (GPUs present, lost GPUs: rc 15 and
  "Unable to determine the device handle ...", NVML errors, temperature, pending / failed row remaps, pending page
  retirement) and ``--query-compute-apps`` (compute processes per GPU, for "reset only when idle").
- DcgmHealthSource: ``dcgmi health -c -j`` verdicts per GPU and health system.
- KernelLogSource: the driver's ``NVRM: Xid (PCI:0000:18:00): 79, pid=..., name=..., ...`` lines, from /dev/kmsg
  (records ``pri,seq,ts_usec,flags;message``) or from a plain file of ``[uptime] message`` lines, with the position
  kept in the state dir across restarts.

The parsers here are the agent's own: the controller-side package chaosgpu.gpu.commands parses the same
nvidia-smi and dcgmi output, but the agent runs on the GPU host with the standard library only and imports nothing
outside this package.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gpu_health_agent.config import DcgmConfig, KernelLogConfig, NvidiaSmiConfig
from gpu_health_agent.events import Finding, GpuInfo, SourceReport, pci_key
from gpu_health_agent.runner import RC_NOT_FOUND, RC_TIMEOUT, Runner
from gpu_health_agent.store import atomic_write_json, read_json

__all__ = [
    "SMI_FIELDS",
    "DcgmHealth",
    "DcgmHealthSource",
    "KernelLogSource",
    "KmsgDevice",
    "KmsgRecord",
    "NvidiaSmiSource",
    "SmiQuery",
    "Source",
    "XidLine",
    "parse_compute_apps",
    "parse_dcgm_health",
    "parse_kmsg_record",
    "parse_smi_query",
    "parse_xid",
    "read_uptime",
]


class Source(Protocol):
    name: str

    def start(self) -> list[str]:
        """Once at agent start; returns warnings to journal."""
        ...

    def poll(self) -> SourceReport: ...

    def commit(self) -> None:
        """The agent saved what the last poll led to: a source that keeps a position saves it now."""
        ...


# --- nvidia-smi ---------------------------------------------------------------------------------------------------

SMI_FIELDS = (
    "index",
    "uuid",
    "pci.bus_id",
    "temperature.gpu",
    "remapped_rows.pending",
    "remapped_rows.failure",
    "retired_pages.pending",
)
_LOST = re.compile(
    r"Unable to determine the device handle for GPU\s*([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])"
    r":\s*(.*)"
)
_NOT_AVAILABLE = ("[N/A]", "N/A", "[Not Supported]", "[Unknown Error]", "[GPU is lost]")
_NO_DEVICES = "No devices were found"


@dataclass(frozen=True)
class SmiQuery:
    """nvidia-smi's --query-gpu rows (field -> text), lost GPUs (PCI key -> what nvidia-smi said), other lines."""

    rows: tuple[dict[str, str], ...]
    lost: dict[str, str]
    other: tuple[str, ...]


def parse_smi_query(text: str, fields: tuple[str, ...] = SMI_FIELDS) -> SmiQuery:
    rows: list[dict[str, str]] = []
    lost: dict[str, str] = {}
    other: list[str] = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        match = _LOST.search(line)
        if len(cells) == len(fields) and cells[0].isdigit():
            rows.append(dict(zip(fields, cells, strict=True)))
        elif match:
            lost[pci_key(match.group(1))] = match.group(2).strip()
        elif line.strip():
            other.append(line.strip())
    return SmiQuery(tuple(rows), lost, tuple(other))


def _flag(text: str | None) -> bool:
    return text == "Yes"


def _number(text: str | None) -> int | None:
    if text is None or text in _NOT_AVAILABLE:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def parse_compute_apps(text: str) -> dict[str, int]:
    """``--query-compute-apps=gpu_uuid,pid --format=csv,noheader``: compute processes per GPU UUID."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) == 2 and cells[0].startswith(("GPU-", "MIG-")) and cells[1].isdigit():  # noqa: PLR2004
            counts[cells[0]] = counts.get(cells[0], 0) + 1
    return counts


class NvidiaSmiSource:
    name = "nvidia_smi"

    def __init__(self, config: NvidiaSmiConfig, runner: Runner) -> None:
        self.config = config
        self.runner = runner

    def start(self) -> list[str]:
        return []

    def commit(self) -> None:
        return None

    def poll(self) -> SourceReport:
        argv = [*self.config.command, f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"]
        result = self.runner(argv, self.config.timeout_s)
        if result.rc == RC_TIMEOUT:
            detail = f"nvidia-smi did not answer within {self.config.timeout_s:g} s"
            return SourceReport((Finding("nvml_error", self.name, detail=detail),))
        if result.rc == RC_NOT_FOUND:  # an installation problem, not the GPUs': shown, not acted on
            return SourceReport((Finding("source_error", self.name, detail=result.tail()),))
        if result.rc < 0:
            # Killed by a signal (the host shutting down sends SIGTERM to everything): the poll says nothing about
            # the GPUs, so it is shown, not acted on. Seen in the lab: a reboot during a poll drained the node.
            detail = f"nvidia-smi was killed by signal {-result.rc}: {result.tail()}"
            return SourceReport((Finding("source_error", self.name, detail=detail),))
        query = parse_smi_query(result.output)
        if not query.rows and not query.lost:
            if _NO_DEVICES in result.output:
                return SourceReport((), gpus=(), busy={})
            return SourceReport((Finding("nvml_error", self.name, detail=result.tail()),))
        gpus = tuple(GpuInfo(int(row["index"]), row["uuid"], pci_key(row["pci.bus_id"])) for row in query.rows)
        findings = [Finding("gpu_lost", self.name, pci=pci, detail=why) for pci, why in query.lost.items()]
        for row, gpu in zip(query.rows, gpus, strict=True):
            findings += self._row_findings(row, gpu)
        return SourceReport(tuple(findings), gpus=gpus, busy=self._busy(gpus))

    def _row_findings(self, row: Mapping[str, str], gpu: GpuInfo) -> list[Finding]:
        def finding(kind: str, detail: str) -> Finding:
            return Finding(kind, self.name, pci=gpu.pci, gpu=gpu.index, detail=detail)

        found = []
        temperature = _number(row.get("temperature.gpu"))
        if temperature is not None and temperature > self.config.temperature_max_c:
            found.append(finding("temperature_high", f"{temperature} C > {self.config.temperature_max_c} C"))
        for name, kind in (
            ("remapped_rows.failure", "remap_failure"),
            ("remapped_rows.pending", "remap_pending"),
            ("retired_pages.pending", "retired_pending"),
        ):
            if _flag(row.get(name)):
                found.append(finding(kind, f"{name}: Yes"))
        return found

    def _busy(self, gpus: tuple[GpuInfo, ...]) -> dict[int, int] | None:
        """Compute processes per GPU index; None when nvidia-smi could not say (then no GPU counts as idle)."""
        argv = [*self.config.command, "--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader"]
        result = self.runner(argv, self.config.timeout_s)
        if result.rc not in (0, 15):  # 15: some GPU is lost; the others are still listed
            return None
        counts = parse_compute_apps(result.stdout)
        return {gpu.index: counts.get(gpu.uuid, 0) for gpu in gpus}


# --- dcgmi health -------------------------------------------------------------------------------------------------

_SEVERITY_KIND = {"failure": "dcgm_fail", "fail": "dcgm_fail", "warning": "dcgm_warn", "warn": "dcgm_warn"}


@dataclass(frozen=True)
class DcgmHealth:
    """The overall verdict, and per DCGM GPU id: {system: (verdict, messages)}."""

    overall: str
    gpus: dict[int, dict[str, tuple[str, tuple[str, ...]]]] = field(default_factory=dict)


def _messages(node: object) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "values" and isinstance(value, list):
                found.extend(str(v) for v in value)
            elif isinstance(value, dict):
                found.extend(_messages(value))
    return found


def _system_name(key: str) -> str:
    return key[: -len(" system")] if key.endswith(" system") else key


def parse_dcgm_health(text: str) -> DcgmHealth:
    """``dcgmi health -c -j``: ``{"body": {"Overall Health": {"value": ...}, "GPU": {"children": {"0": {"value":
    ..., "children": {"PCIe system": {"value": "Failure", "children": {"Errors": {"values": [...]}}}}}}}}}``.
    Raises ValueError when the text is not that."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON in dcgmi's output")
    data: Any = json.loads(text[start:])
    body = data.get("body") if isinstance(data, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("Overall Health"), dict):
        raise ValueError("dcgmi health JSON without body / Overall Health")
    gpus: dict[int, dict[str, tuple[str, tuple[str, ...]]]] = {}
    section = body.get("GPU")
    children = section.get("children") if isinstance(section, dict) else None
    for gpu_id, node in children.items() if isinstance(children, dict) else ():
        if not str(gpu_id).isdigit() or not isinstance(node, dict):
            continue
        systems = node.get("children")
        gpus[int(gpu_id)] = {
            _system_name(str(name)): (str(sub.get("value", "")), tuple(_messages(sub)))
            for name, sub in (systems.items() if isinstance(systems, dict) else ())
            if isinstance(sub, dict)
        }
    return DcgmHealth(str(body["Overall Health"].get("value", "")), gpus)


class DcgmHealthSource:
    name = "dcgm"

    def __init__(self, config: DcgmConfig, runner: Runner) -> None:
        self.config = config
        self.runner = runner

    def _argv(self, *args: str) -> list[str]:
        return [*self.config.command, *args, *(["--host", self.config.host] if self.config.host else [])]

    def start(self) -> list[str]:
        """``dcgmi health -s a``: DCGM checks only the systems it has been told to watch."""
        if not self.config.set_watches:
            return []
        result = self.runner(self._argv("health", "-s", "a"), self.config.timeout_s)
        if result.rc != 0:
            return [f"dcgmi health -s a (watch every health system) failed: {result.tail()}"]
        return []

    def commit(self) -> None:
        return None

    def poll(self) -> SourceReport:
        result = self.runner(self._argv("health", "-c", "-j"), self.config.timeout_s)
        try:
            health = parse_dcgm_health(result.stdout)
        except ValueError as err:
            detail = f"dcgmi health -c -j: {err}; {result.tail()}"
            return SourceReport((Finding("source_error", self.name, detail=detail),))
        findings = []
        for gpu_id, systems in sorted(health.gpus.items()):
            for system, (verdict, messages) in sorted(systems.items()):
                kind = _SEVERITY_KIND.get(verdict.strip().lower())
                if kind:
                    detail = " ".join(messages)[:300]
                    findings.append(Finding(kind, self.name, gpu=gpu_id, system=system, detail=detail))
        overall = _SEVERITY_KIND.get(health.overall.strip().lower())
        if overall and not findings:
            findings.append(Finding(overall, self.name, detail=f"overall health: {health.overall}"))
        return SourceReport(tuple(findings))


# --- kernel log ---------------------------------------------------------------------------------------------------

_XID = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2})[^)]*\): (\d+)(?:,\s*(.*))?")
_WHO = re.compile(r"pid=('[^']*'|[^,]*), name=([^,]*),\s*(.*)")
_FILE_STAMP = re.compile(r"\[\s*(\d+\.\d+)\]\s?(.*)")


@dataclass(frozen=True)
class XidLine:
    pci: str
    xid: int
    pid: str
    name: str
    message: str


def parse_xid(text: str) -> XidLine | None:
    """The XID of a kernel-log message, or None when it is not an NVRM Xid line."""
    match = _XID.search(text)
    if not match:
        return None
    rest = (match.group(3) or "").strip()
    who = _WHO.match(rest)
    pid, name, message = (who.group(1), who.group(2).strip(), who.group(3)) if who else ("", "", rest)
    return XidLine(pci_key(match.group(1)), int(match.group(2)), pid.strip("'"), name, message.strip())


@dataclass(frozen=True)
class KmsgRecord:
    """One /dev/kmsg record: ``<priority>,<sequence>,<microseconds since boot>,<flags>[,...];<message>`` followed
    by continuation lines `` KEY=value``."""

    facility: int
    level: int
    seq: int
    ts_usec: int
    message: str
    fields: Mapping[str, str]


_KMSG_HEAD_FIELDS = 3


def parse_kmsg_record(data: bytes) -> KmsgRecord | None:
    text = data.decode("utf-8", "replace")
    head, sep, rest = text.partition(";")
    parts = head.split(",")
    if not sep or len(parts) < _KMSG_HEAD_FIELDS or not all(p.isdigit() for p in parts[:_KMSG_HEAD_FIELDS]):
        return None
    lines = rest.rstrip("\n").split("\n")
    extra = dict(line.strip().partition("=")[::2] for line in lines[1:] if line.startswith(" ") and "=" in line)
    priority = int(parts[0])
    return KmsgRecord(priority >> 3, priority & 7, int(parts[1]), int(parts[2]), lines[0], extra)


class KmsgDevice(Protocol):
    def read_record(self) -> bytes | None:
        """The next record; None when there is none yet; BrokenPipeError when records were overwritten unread."""
        ...

    def close(self) -> None: ...


class _DevKmsg:
    """/dev/kmsg, non-blocking: each read returns one record; EAGAIN at the end; EPIPE after an overrun."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def read_record(self) -> bytes | None:
        try:
            return os.read(self.fd, 16384)
        except BlockingIOError:
            return None

    def close(self) -> None:
        os.close(self.fd)


def read_uptime(path: str = "/proc/uptime") -> float:
    try:
        return float(Path(path).read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


_MAX_RECORDS_PER_POLL = 100_000


class KernelLogSource:
    """XID lines from /dev/kmsg or a plain log file, each read once across agent restarts.

    The position (kmsg: kernel boot id + last sequence number; file: inode + byte offset) is saved in
    ``position_path`` by commit(), after the agent has saved what the lines led to: a crash in between reads the
    lines again rather than losing them. A fresh agent reads the whole kmsg buffer (it holds this boot only) but
    starts at the end of an existing plain file unless ``read_existing`` (the file outlives reboots); a file that
    appears later, or replaces the one read before, is read from its start."""

    name = "kernel_log"

    def __init__(
        self,
        config: KernelLogConfig,
        position_path: Path,
        kernel_boot_id: str,
        clock: Callable[[], float] = time.time,
        uptime: Callable[[], float] = read_uptime,
        kmsg_opener: Callable[[str], KmsgDevice] | None = None,
    ) -> None:
        self.config = config
        self.position_path = position_path
        self.kernel_boot_id = kernel_boot_id
        self.clock = clock
        self.uptime = uptime
        self.kmsg_opener = kmsg_opener
        self.device: KmsgDevice | None = None
        self.saved = self._load_position()
        self.pending: dict[str, Any] | None = None
        self.overruns = 0

    def _load_position(self) -> dict[str, Any] | None:
        data = read_json(self.position_path)
        if not isinstance(data, dict) or data.get("path") != self.config.path:
            return None
        return data

    def _is_kmsg(self) -> bool:
        if self.kmsg_opener is not None:
            return True
        try:
            return stat.S_ISCHR(os.stat(self.config.path).st_mode)
        except OSError:
            return False

    def start(self) -> list[str]:
        return []

    def commit(self) -> None:
        if self.pending is not None and self.pending != self.saved:
            atomic_write_json(self.position_path, self.pending)
            self.saved = self.pending

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None

    def poll(self) -> SourceReport:
        boot_epoch = self.clock() - self.uptime()
        lines = self._poll_kmsg(boot_epoch) if self._is_kmsg() else self._poll_file(boot_epoch)
        findings = []
        for at, text in lines:
            xid = parse_xid(text)
            if xid is not None:
                detail = xid.message + (f" (pid {xid.pid}, {xid.name})" if xid.pid and xid.pid != "<unknown>" else "")
                findings.append(Finding("xid", self.name, pci=xid.pci, xid=xid.xid, detail=detail, at=at))
        return SourceReport(tuple(findings))

    # /dev/kmsg

    def _poll_kmsg(self, boot_epoch: float) -> list[tuple[float | None, str]]:
        if self.device is None:
            opener = self.kmsg_opener or _DevKmsg
            self.device = opener(self.config.path)
        saved = self.pending or self.saved or {}
        last = saved.get("seq") if saved.get("kind") == "kmsg" and saved.get("boot_id") == self.kernel_boot_id else None
        found: list[tuple[float | None, str]] = []
        for _ in range(_MAX_RECORDS_PER_POLL):
            try:
                data = self.device.read_record()
            except BrokenPipeError:
                self.overruns += 1  # the kernel overwrote records before they were read: carry on with the next
                continue
            if data is None:
                break
            record = parse_kmsg_record(data)
            if record is None or (isinstance(last, int) and record.seq <= last):
                continue
            last = record.seq
            found.append((round(boot_epoch + record.ts_usec / 1e6, 6), record.message))
        kind = {"path": self.config.path, "kind": "kmsg", "boot_id": self.kernel_boot_id}
        self.pending = {**kind, "seq": last} if last is not None else {**kind, "seq": None}
        return found

    # a plain file of "[uptime] message" lines (the lab's stand-in kernel log)

    def _poll_file(self, boot_epoch: float) -> list[tuple[float | None, str]]:
        path, saved = self.config.path, self.pending or self.saved
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below; fstat needs the open file
        except FileNotFoundError:
            self.pending = {"path": path, "kind": "file", "inode": 0, "offset": 0}  # read it whole once it appears
            return []
        with handle:
            info = os.fstat(handle.fileno())
            if saved is None:
                offset = 0 if self.config.read_existing else info.st_size
            elif saved.get("kind") != "file" or saved.get("inode") != info.st_ino or info.st_size < saved["offset"]:
                offset = 0  # a new file (created, rotated) or one cut short: all of it is new
            else:
                offset = int(saved["offset"])
            handle.seek(offset)
            chunk = handle.read(self.config.max_bytes_per_poll)
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self.pending = {"path": path, "kind": "file", "inode": info.st_ino, "offset": offset + len(complete)}
        found: list[tuple[float | None, str]] = []
        for raw in complete.decode("utf-8", "replace").splitlines():
            match = _FILE_STAMP.match(raw)
            if match:
                found.append((round(boot_epoch + float(match.group(1)), 6), match.group(2)))
            else:
                found.append((None, raw))
        return found
