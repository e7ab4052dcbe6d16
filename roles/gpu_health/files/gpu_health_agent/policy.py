"""The XID table of DESIGN.md as data, the rules for the other findings, and how config overrides them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gpu_health_agent.events import Finding

__all__ = [
    "CONDITION_RULES",
    "DECISIONS",
    "LADDER",
    "RESET_FAILURE_CHOICES",
    "SEVERITIES",
    "UNKNOWN_XID_RULE",
    "XID_RULES",
    "Rule",
    "RuleBook",
    "rank",
]

# Decisions, mildest first; a finding never lowers the decision of an incident that is already open.
#   none             log it; the application restarts, the node stays in service
#   watch            log it and show it in the metrics
#   reset_when_idle  reset the GPU once no compute process holds it, without draining
#   drain            drain and hold until the node has been healthy for undrain_after_s
#   drain_reset      drain, reset the GPU once idle, undrain when healthy
#   drain_reboot     drain, reboot the node, undrain when healthy
#   drain_rma        drain and mark the node for RMA: no automatic undrain
DECISIONS = ("none", "watch", "reset_when_idle", "drain", "drain_reset", "drain_reboot", "drain_rma")
SEVERITIES = ("info", "warn", "fail")  # fail: the node is not healthy (blocks an undrain)
RESET_FAILURE_CHOICES = ("reboot", "rma", "hold")

# When a GPU fails again after its remediation (past the grace after a reset), the next decision is at least:
LADDER = {
    "reset_when_idle": "reset_when_idle",
    "drain": "drain",
    "drain_reset": "drain_reboot",
    "drain_reboot": "drain_rma",
    "drain_rma": "drain_rma",
}


def rank(decision: str) -> int:
    return DECISIONS.index(decision)


@dataclass(frozen=True)
class Rule:
    """How to react to one kind of finding.

    ``rma_after``: that many occurrences of the same cause on the same GPU within ``repeat_window_s`` mark the node
    for RMA instead (0: never). ``on_reset_failure``: what a failed GPU reset leads to (reboot, rma, or hold: stay
    drained and wait for an operator)."""

    decision: str
    severity: str
    rma_after: int = 0
    on_reset_failure: str = "reboot"
    note: str = ""


def _fail(decision: str, note: str, rma_after: int = 0) -> Rule:
    return Rule(decision, "fail", rma_after=rma_after, note=note)


_APP = "restart the application; the node stays in service"

# DESIGN.md "Facts to build on": the NVIDIA XID catalogue's immediate action and DCGM's health severity.
XID_RULES: dict[int, Rule] = {
    13: Rule("none", "warn", note=f"graphics engine exception: {_APP}"),
    31: Rule("none", "warn", note=f"GPU memory page (MMU) fault: {_APP}"),
    32: Rule("none", "warn", note=f"invalid or corrupted push buffer stream: {_APP}"),
    43: Rule("none", "warn", note=f"GPU stopped processing: {_APP}"),
    48: _fail("drain_reset", "double-bit ECC error: drain, reset the GPU, check retirement/remap"),
    63: Rule("reset_when_idle", "warn", on_reset_failure="hold", note="row remap / page retirement pending"),
    64: _fail("drain_reset", "row remap failure: drain, reset; RMA if repeated", rma_after=2),
    74: _fail("drain_reset", "NVLink error: drain; the reset retrains the links, DCGM's NVLink check verifies"),
    79: _fail("drain_reboot", "GPU has fallen off the bus: drain, reboot; RMA if repeated", rma_after=2),
    92: Rule("watch", "info", note="high single-bit ECC error rate: watch"),
    94: Rule("none", "warn", note=f"contained ECC error: {_APP}"),
    95: _fail("drain_reset", "uncontained ECC error: drain, reset the GPU"),
    119: _fail("drain_reset", "GSP RPC timeout: drain, reset the GPU (reboot if the reset fails)"),
    120: _fail("drain_reset", "GSP error: drain, reset the GPU (reboot if the reset fails)"),
    140: _fail("drain_reset", "unrecovered ECC error: drain, reset the GPU"),
}
UNKNOWN_XID_RULE = Rule("watch", "warn", note="an XID outside the table: logged and shown, no action")

# Findings other than XID lines. A "dcgm_fail:<System>" rule wins over "dcgm_fail" for that DCGM health system.
CONDITION_RULES: dict[str, Rule] = {
    "gpu_lost": _fail("drain_reboot", "nvidia-smi: GPU is lost (fallen off the bus)"),
    "gpu_missing": _fail("drain_reboot", "a GPU the node had is gone from nvidia-smi"),
    "nvml_error": _fail("drain", "nvidia-smi cannot talk to the driver (NVML)"),
    "remap_failure": _fail("drain_rma", "row remapping failure: the GPU needs replacing"),
    "remap_pending": Rule("reset_when_idle", "warn", on_reset_failure="hold", note="row remap pending"),
    "retired_pending": Rule("reset_when_idle", "warn", on_reset_failure="hold", note="page retirement pending"),
    "temperature_high": Rule("watch", "warn", note="GPU temperature above sources.nvidia_smi.temperature_max_c"),
    "dcgm_fail": _fail("drain", "DCGM health: failure"),
    "dcgm_fail:Memory": _fail("drain_reset", "DCGM health: memory failure"),
    "dcgm_fail:PCIe": _fail("drain_reboot", "DCGM health: PCIe failure"),
    "dcgm_fail:NVLink": _fail("drain_reset", "DCGM health: NVLink failure"),
    "dcgm_fail:Driver": _fail("drain_reset", "DCGM health: driver failure"),
    "dcgm_warn": Rule("watch", "warn", note="DCGM health: warning"),
    "source_error": Rule("watch", "warn", note="a source could not be read"),
}


@dataclass(frozen=True)
class RuleBook:
    """The rules in force: the defaults above with the config's overrides applied."""

    xid: Mapping[int, Rule]
    conditions: Mapping[str, Rule]
    unknown_xid: Rule = UNKNOWN_XID_RULE

    @classmethod
    def defaults(cls) -> RuleBook:
        return cls(dict(XID_RULES), dict(CONDITION_RULES))

    def rule_for(self, finding: Finding) -> Rule:
        if finding.kind == "xid":
            return self.xid.get(finding.xid or 0, self.unknown_xid)
        for key in (finding.cause, finding.kind):
            if key in self.conditions:
                return self.conditions[key]
        return Rule("watch", "warn", note=f"no rule for {finding.cause}")
