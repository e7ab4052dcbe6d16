"""What flows between the sources, the policy engine and the action plugins: findings, engine events, actions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "KINDS",
    "OUTCOMES",
    "Action",
    "ActionResult",
    "Boot",
    "ClearRma",
    "Event",
    "Finding",
    "GpuInfo",
    "Poll",
    "SourceReport",
    "full_bus_id",
    "pci_key",
]

# What a finding can be. "xid" carries an XID; "dcgm_fail" / "dcgm_warn" carry the DCGM health system.
KINDS = (
    "xid",
    "gpu_lost",
    "gpu_missing",
    "nvml_error",
    "remap_failure",
    "remap_pending",
    "retired_pending",
    "temperature_high",
    "dcgm_fail",
    "dcgm_warn",
    "source_error",
)

# How an action ended. ok / failed / dry_run / disabled come from the executor; vetoed (fleet guard) and
# rate_limited (reboots per hour) from the engine's guards.
OUTCOMES = ("ok", "failed", "dry_run", "disabled", "vetoed", "rate_limited")

_PCI = re.compile(r"^(?:([0-9a-f]{4,8}):)?([0-9a-f]{2}):([0-9a-f]{2})(?:\.[0-9a-f])?$")


def pci_key(text: str) -> str:
    """One spelling for a GPU's PCI address: ``0000:18:00`` from the kernel's ``0000:18:00``, nvidia-smi's
    ``00000000:18:00.0`` or ``18:00.0``. Text that is not an address comes back lower-cased and stripped."""
    cleaned = text.strip().lower()
    match = _PCI.match(cleaned)
    if not match:
        return cleaned
    domain = (match.group(1) or "0000")[-4:]
    return f"{domain}:{match.group(2)}:{match.group(3)}"


def full_bus_id(key: str) -> str:
    """nvidia-smi's spelling (``00000000:18:00.0``) of a :func:`pci_key`."""
    return f"0000{key.upper()}.0" if _PCI.match(key) and key.count(":") == 2 else key  # noqa: PLR2004


@dataclass(frozen=True)
class Finding:
    """Something a source saw on the node. ``pci`` (a :func:`pci_key`) and ``gpu`` (nvidia-smi's index) name the
    GPU when the source knows it; ``at`` is when the source says it happened (epoch seconds), if it says."""

    kind: str
    source: str
    pci: str | None = None
    gpu: int | None = None
    xid: int | None = None
    system: str | None = None
    detail: str = ""
    at: float | None = None

    @property
    def cause(self) -> str:
        """The policy key: ``xid79``, ``dcgm_fail:PCIe``, ``gpu_lost``, ``source_error:dcgm``..."""
        if self.kind == "xid":
            return f"xid{self.xid}"
        if self.system and self.kind in ("dcgm_fail", "dcgm_warn"):
            return f"{self.kind}:{self.system}"
        if self.kind == "source_error":
            return f"source_error:{self.source}"
        return self.kind


@dataclass(frozen=True)
class GpuInfo:
    """A GPU nvidia-smi could read: its index, UUID and PCI address (a :func:`pci_key`)."""

    index: int
    uuid: str
    pci: str


@dataclass(frozen=True)
class SourceReport:
    """What one source's poll() returns: findings, and where the source reads them the GPUs present and the
    number of compute processes per GPU index (None: not read this time)."""

    findings: tuple[Finding, ...] = ()
    gpus: tuple[GpuInfo, ...] | None = None
    busy: Mapping[int, int] | None = None


# --- engine events ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Poll:
    """One poll cycle of every source, merged."""

    findings: tuple[Finding, ...] = ()
    gpus: tuple[GpuInfo, ...] | None = None
    busy: Mapping[int, int] | None = None


@dataclass(frozen=True)
class ActionResult:
    """How an action the engine asked for ended (``target``: the action's target, for resets)."""

    action: str
    outcome: str
    detail: str = ""
    target: str = ""


@dataclass(frozen=True)
class Boot:
    """The agent started; ``boot_id`` tells whether the node booted since the state was saved."""

    boot_id: str


@dataclass(frozen=True)
class ClearRma:
    """An operator replaced or cleared the GPU of an RMA: the node may be undrained once healthy again."""

    by: str = "operator"


Event = Poll | ActionResult | Boot | ClearRma


@dataclass(frozen=True)
class Action:
    """Something the engine wants done: drain, reset, reboot, rma, undrain. ``target`` is the incident's key of
    the GPU (a :func:`pci_key`, for a reset); ``gpu``/``pci`` name it for the plugins."""

    name: str
    reason: str
    target: str = ""
    gpu: int | None = None
    pci: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)
