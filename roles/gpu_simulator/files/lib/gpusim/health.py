# STAND-IN: gpuops.fleet GPU simulator (lab only). Not NVIDIA software.
"""XID messages and DCGM-style health derived from a GPU's state (DESIGN.md "Facts to build on")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpusim.state import GpuView

__all__ = ["FAIL", "HEALTHY", "WARN", "Incident", "evaluate", "overall", "xid_message"]

HEALTHY, WARN, FAIL = 0, 10, 20
STATUS_TEXT = {HEALTHY: "Healthy", WARN: "Warning", FAIL: "Failure"}

# Kernel-log text after "NVRM: Xid (PCI:...): N, pid=..., name=..., " for the XIDs the lab injects.
XID_MESSAGES = {
    13: "Graphics SM Warp Exception on (GPC 0, TPC 0, SM 0): Out Of Range Address",
    31: "Ch 00000008, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ 0x7f2a_3c000000. "
    "Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ",
    32: "Channel ID 00000010 intr0 00040000",
    43: "Ch 00000010, engmask 00000101",
    48: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 0, "
    "subpartition 0.",
    63: "Row Remapper: New row marked for remapping, reset gpu to activate.",
    64: "Row Remapper: Failed to remap row, rows are exhausted.",
    74: "NVLink: fatal error detected on link 0(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)",
    79: "GPU has fallen off the bus.",
    92: "High single-bit ECC error rate",
    94: "Contained: SM (0x1). RST: No, D-RST: No",
    95: "Uncontained: FBHUB. RST: Yes, D-RST: No",
    119: "Timeout after 6s of waiting for RPC response from GPU0 GSP! Expected function 76 (GSP_RM_CONTROL).",
    120: "GSP task exception: TCM Ecc error",
    140: "An uncorrectable ECC error has been detected and the GPU needs to be reset to recover.",
}

# XID -> (DCGM health system, severity), per the DESIGN table.
XID_HEALTH = {
    13: ("SM", WARN),
    31: ("SM", WARN),
    32: ("SM", WARN),
    43: ("SM", WARN),
    48: ("Memory", FAIL),
    63: ("Memory", WARN),
    64: ("Memory", FAIL),
    74: ("NVLink", FAIL),
    79: ("PCIe", FAIL),
    94: ("Memory", WARN),
    95: ("Memory", FAIL),
    119: ("Driver", FAIL),
    120: ("Driver", FAIL),
    140: ("Memory", FAIL),
}
RECOVERY_REBOOT = 2


def xid_message(xid: int) -> str:
    return XID_MESSAGES.get(xid, "Unknown XID error")


@dataclass(frozen=True)
class Incident:
    system: str
    severity: int
    message: str


def _counter_incidents(gpu: dict[str, Any], index: int) -> list[Incident]:
    found = []
    if gpu["ecc"]["dbe_volatile"] > 0:
        found.append(Incident("Memory", FAIL, f"A volatile double-bit ECC error has occurred on GPU {index}."))
    if gpu["remap"]["failure"]:
        found.append(Incident("Memory", FAIL, f"GPU {index} had a row remapping failure."))
    if gpu["remap"]["pending"]:
        found.append(Incident("Memory", WARN, f"GPU {index} has a row remapping pending; reset the GPU."))
    if gpu["retired"]["pending"]:
        found.append(Incident("Memory", WARN, f"GPU {index} has retired pages pending; reset the GPU."))
    if not gpu["inforom_valid"]:
        found.append(Incident("Inforom", WARN, f"A corrupt InfoROM has been detected in GPU {index}."))
    action = int(gpu.get("recovery_action", 0))
    if action:
        severity = FAIL if action >= RECOVERY_REBOOT else WARN
        found.append(Incident("Driver", severity, f"GPU {index} requests recovery action {action}."))
    return found


def evaluate(view: GpuView) -> list[Incident]:
    """Health incidents of one GPU, as `dcgmi health -c` reports them."""
    gpu, index = view.gpu, view.index
    found = []
    if view.lost:
        found.append(Incident("PCIe", FAIL, f"GPU {index} is lost: it fell off the bus."))
    for event in gpu.get("xid_events", []):
        system, severity = XID_HEALTH.get(int(event["xid"]), ("", HEALTHY))
        if severity:
            found.append(Incident(system, severity, f"Detected XID {event['xid']} on GPU {index}."))
    found.extend(_counter_incidents(gpu, index))
    if view.temperature >= view.profile["temp_slowdown"]:
        found.append(Incident("Thermal", WARN, f"GPU {index} temperature {view.temperature} C is at slowdown."))
    if view.power > view.profile["power_limit_w"]:
        found.append(Incident("Power", WARN, f"GPU {index} power {view.power} W exceeds its limit."))
    return found


def overall(incidents: list[Incident]) -> int:
    return max((incident.severity for incident in incidents), default=HEALTHY)
