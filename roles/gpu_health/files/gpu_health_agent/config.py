"""The agent's JSON config: read, checked at start (every error names its key), with defaults for what is left out.

The full shape, with the defaults (roles/gpu_health/README.md explains each key)::

    {"_comment": "<any text, ignored>", "node_name": "<short hostname>", "state_dir": "/var/lib/gpu_health",
     "runtime_dir": "/run/gpu_health", "textfile_dir": "/var/lib/node_exporter/textfile", "poll_interval_s": 10,
     "dry_run": false,
     "sources": {
       "nvidia_smi": {"enabled": true, "command": ["nvidia-smi"], "timeout_s": 30, "expected_gpus": 0,
                      "temperature_max_c": 90},
       "dcgm": {"enabled": true, "command": ["dcgmi"], "host": "", "timeout_s": 30, "set_watches": true},
       "kernel_log": {"enabled": true, "path": "/dev/kmsg", "read_existing": false,
                      "max_bytes_per_poll": 8388608}},
     "policy": {"undrain_after_s": 600, "repeat_window_s": 86400, "max_reboots_per_hour": 1,
                "reboot_timeout_s": 900, "reset_grace_s": 60,
                "cooldown_s": {"drain": 30, "undrain": 60, "reset": 120, "reboot": 600, "rma": 0},
                "xid": {"<XID>": {"decision": ..., "severity": ..., "rma_after": ..., "on_reset_failure": ...}},
                "conditions": {"<kind>[:<DCGM system>]": {...}}},
     "actions": {
       "drain_file": {"enabled": true, "path": "/var/lib/gpu_health/drain.json"},
       "slurm": {"enabled": false, "command": ["scontrol"], "node": "<node_name>", "timeout_s": 30},
       "kubernetes": {"enabled": false, "command": ["kubectl"], "kubeconfig": "", "node": "<node_name>",
                      "drain_timeout_s": 300, "grace_period_s": -1},
       "gpu_reset": {"enabled": true, "command": ["nvidia-smi"], "timeout_s": 120},
       "reboot": {"enabled": true, "command": ["systemctl", "reboot"], "timeout_s": 60}},
     "fleet_guard": {"type": "none"}}

A fleet guard is ``{"type": "prometheus", "url": "http://prometheus:9090", "query": "sum(gpu_health_node_drained)",
"max": 2, "timeout_s": 5, "on_error": "deny"}`` (drains and reboots are held back while the query's value is at
least ``max``) or ``{"type": "command", "command": [...], "timeout_s": 5, "on_error": "deny"}`` (exit status 0
allows; the action's name is the last argument).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_health_agent.events import KINDS
from gpu_health_agent.policy import (
    CONDITION_RULES,
    DECISIONS,
    RESET_FAILURE_CHOICES,
    SEVERITIES,
    UNKNOWN_XID_RULE,
    XID_RULES,
    Rule,
    RuleBook,
    rank,
)

__all__ = [
    "ACTION_NAMES",
    "Config",
    "ConfigError",
    "DcgmConfig",
    "DrainFileConfig",
    "FleetGuardConfig",
    "GpuResetConfig",
    "KernelLogConfig",
    "KubernetesConfig",
    "NvidiaSmiConfig",
    "PolicyConfig",
    "RebootConfig",
    "SlurmConfig",
    "load_config",
    "parse_config",
]

ACTION_NAMES = ("drain", "undrain", "reset", "reboot", "rma")
MAX_XID = 1023
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SYSTEM = re.compile(r"[A-Za-z][A-Za-z0-9 _-]*")


class ConfigError(ValueError):
    """The config is not usable; ``errors`` has one line per problem, each starting with the key."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid gpu_health config:\n" + "\n".join(f"  {e}" for e in errors))


@dataclass(frozen=True)
class NvidiaSmiConfig:
    enabled: bool = True
    command: tuple[str, ...] = ("nvidia-smi",)
    timeout_s: float = 30.0
    expected_gpus: int = 0
    temperature_max_c: int = 90


@dataclass(frozen=True)
class DcgmConfig:
    enabled: bool = True
    command: tuple[str, ...] = ("dcgmi",)
    host: str = ""
    timeout_s: float = 30.0
    set_watches: bool = True


@dataclass(frozen=True)
class KernelLogConfig:
    enabled: bool = True
    path: str = "/dev/kmsg"
    read_existing: bool = False
    max_bytes_per_poll: int = 8 << 20


@dataclass(frozen=True)
class PolicyConfig:
    undrain_after_s: float = 600.0
    repeat_window_s: float = 86400.0
    max_reboots_per_hour: int = 1
    reboot_timeout_s: float = 900.0
    reset_grace_s: float = 60.0
    cooldown_s: Mapping[str, float] | None = None
    rules: RuleBook | None = None

    def cooldown(self, action: str) -> float:
        return float((self.cooldown_s or DEFAULT_COOLDOWN_S).get(action, 0.0))

    @property
    def rulebook(self) -> RuleBook:
        return self.rules or RuleBook.defaults()


DEFAULT_COOLDOWN_S: Mapping[str, float] = {"drain": 30.0, "undrain": 60.0, "reset": 120.0, "reboot": 600.0, "rma": 0}


@dataclass(frozen=True)
class DrainFileConfig:
    enabled: bool = True
    path: str = "/var/lib/gpu_health/drain.json"


@dataclass(frozen=True)
class SlurmConfig:
    enabled: bool = False
    command: tuple[str, ...] = ("scontrol",)
    node: str = ""
    timeout_s: float = 30.0


@dataclass(frozen=True)
class KubernetesConfig:
    enabled: bool = False
    command: tuple[str, ...] = ("kubectl",)
    kubeconfig: str = ""
    node: str = ""
    drain_timeout_s: int = 300
    grace_period_s: int = -1


@dataclass(frozen=True)
class GpuResetConfig:
    enabled: bool = True
    command: tuple[str, ...] = ("nvidia-smi",)
    timeout_s: float = 120.0


@dataclass(frozen=True)
class RebootConfig:
    enabled: bool = True
    command: tuple[str, ...] = ("systemctl", "reboot")
    timeout_s: float = 60.0


@dataclass(frozen=True)
class FleetGuardConfig:
    type: str = "none"
    url: str = ""
    query: str = ""
    max: float = 0.0
    command: tuple[str, ...] = ()
    timeout_s: float = 5.0
    on_error: str = "deny"


@dataclass(frozen=True)
class Config:
    node_name: str
    state_dir: str = "/var/lib/gpu_health"
    runtime_dir: str = "/run/gpu_health"
    textfile_dir: str = "/var/lib/node_exporter/textfile"
    poll_interval_s: float = 10.0
    dry_run: bool = False
    nvidia_smi: NvidiaSmiConfig = NvidiaSmiConfig()
    dcgm: DcgmConfig = DcgmConfig()
    kernel_log: KernelLogConfig = KernelLogConfig()
    policy: PolicyConfig = PolicyConfig()
    drain_file: DrainFileConfig = DrainFileConfig()
    slurm: SlurmConfig = SlurmConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    gpu_reset: GpuResetConfig = GpuResetConfig()
    reboot: RebootConfig = RebootConfig()
    fleet_guard: FleetGuardConfig = FleetGuardConfig()


# --- reading with errors that name the key ----------------------------------------------------------------------

_MISSING = object()


class _Section:
    """One JSON object of the config: typed getters that record an error naming ``prefix.key``."""

    def __init__(self, data: object, prefix: str, errors: list[str]) -> None:
        self.prefix = prefix
        self.errors = errors
        self.seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.error("", f"must be an object, got {_show(data)}")
            data = {}
        self.data: dict[str, Any] = data

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, text: str) -> None:
        self.errors.append(f"{self.key(name) if name else self.prefix or '(top level)'}: {text}")

    def raw(self, name: str) -> object:
        self.seen.add(name)
        return self.data.get(name, _MISSING)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.error(name, f"must be true or false, got {_show(value)}")
            return default
        return value

    def number(self, name: str, default: float, minimum: float = 0.0, maximum: float | None = None) -> float:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(name, f"must be a number, got {_show(value)}")
            return default
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
            self.error(name, f"must be {bound}, got {value!r}")
            return default
        return float(value)

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"must be a whole number, got {_show(value)}")
            return default
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            self.error(name, f"must be {bound}, got {value!r}")
            return default
        return value

    def text(self, name: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            self.error(name, f"must be a string, got {_show(value)}")
            return default
        if choices and value not in choices:
            self.error(name, f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def path(self, name: str, default: str, allow_empty: bool = False) -> str:
        value = self.text(name, default)
        if value == "" and allow_empty:
            return value
        if not value.startswith("/") or "\n" in value:
            self.error(name, f"must be an absolute path, got {value!r}")
            return default
        return value

    def argv(self, name: str, default: tuple[str, ...], allow_empty: bool = False) -> tuple[str, ...]:
        """A command as an argument list; a string is one program name or path (no shell, no splitting)."""
        value = self.raw(name)
        if value is _MISSING:
            return default
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(name, f"must be a program or a list of arguments (non-empty strings), got {_show(value)}")
            return default
        if not value and not allow_empty:
            self.error(name, "must name a program")
            return default
        return tuple(value)

    def section(self, name: str) -> _Section:
        value = self.raw(name)
        return _Section(None if value is _MISSING else value, self.key(name), self.errors)

    def finish(self) -> None:
        for name in sorted(set(self.data) - self.seen):
            self.error(name, "unknown key")


def _show(value: object) -> str:
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return f"{kind.get(type(value), type(value).__name__)} ({json.dumps(value)[:80]})"


def _short_hostname() -> str:
    return socket.gethostname().split(".", 1)[0]


# --- sections -----------------------------------------------------------------------------------------------------


def _nvidia_smi(sec: _Section) -> NvidiaSmiConfig:
    d = NvidiaSmiConfig()
    conf = NvidiaSmiConfig(
        enabled=sec.boolean("enabled", d.enabled),
        command=sec.argv("command", d.command),
        timeout_s=sec.number("timeout_s", d.timeout_s, 1),
        expected_gpus=sec.integer("expected_gpus", d.expected_gpus, 0, 64),
        temperature_max_c=sec.integer("temperature_max_c", d.temperature_max_c, 1, 200),
    )
    sec.finish()
    return conf


def _dcgm(sec: _Section) -> DcgmConfig:
    d = DcgmConfig()
    conf = DcgmConfig(
        enabled=sec.boolean("enabled", d.enabled),
        command=sec.argv("command", d.command),
        host=sec.text("host", d.host),
        timeout_s=sec.number("timeout_s", d.timeout_s, 1),
        set_watches=sec.boolean("set_watches", d.set_watches),
    )
    sec.finish()
    return conf


def _kernel_log(sec: _Section) -> KernelLogConfig:
    d = KernelLogConfig()
    conf = KernelLogConfig(
        enabled=sec.boolean("enabled", d.enabled),
        path=sec.path("path", d.path),
        read_existing=sec.boolean("read_existing", d.read_existing),
        max_bytes_per_poll=sec.integer("max_bytes_per_poll", d.max_bytes_per_poll, 4096),
    )
    sec.finish()
    return conf


def _rule(sec: _Section, base: Rule | None) -> Rule | None:
    decision = sec.text("decision", base.decision if base else "", DECISIONS)
    if not decision:
        sec.error("decision", f"is required for a rule that has no default (one of {', '.join(DECISIONS)})")
        sec.finish()
        return None
    severity = "fail" if rank(decision) >= rank("drain") else "warn"
    if base is not None and decision == base.decision:
        severity = base.severity
    rule = Rule(
        decision=decision,
        severity=sec.text("severity", severity, SEVERITIES),
        rma_after=sec.integer("rma_after", base.rma_after if base else 0, 0, 100),
        on_reset_failure=sec.text(
            "on_reset_failure", base.on_reset_failure if base else "reboot", RESET_FAILURE_CHOICES
        ),
        note=sec.text("note", base.note if base else "set in the agent's config"),
    )
    sec.finish()
    return rule


def _xid_rules(sec: _Section) -> dict[int, Rule]:
    rules = dict(XID_RULES)
    for name in sorted(sec.data):
        sec.seen.add(name)
        if not name.isdigit() or not 1 <= int(name) <= MAX_XID:
            sec.error(name, f"must be an XID number 1-{MAX_XID} (as a string key)")
            continue
        xid = int(name)
        rule = _rule(_Section(sec.data[name], sec.key(name), sec.errors), rules.get(xid))
        if rule is not None:
            rules[xid] = rule
    return rules


def _condition_rules(sec: _Section) -> dict[str, Rule]:
    rules = dict(CONDITION_RULES)
    for name in sorted(sec.data):
        sec.seen.add(name)
        kind, _, system = name.partition(":")
        if kind not in KINDS or kind == "xid" or (system and not _SYSTEM.fullmatch(system)):
            kinds = ", ".join(k for k in KINDS if k != "xid")
            sec.error(name, f"must be a finding kind ({kinds}), optionally dcgm_fail:<System>; XIDs go in policy.xid")
            continue
        rule = _rule(_Section(sec.data[name], sec.key(name), sec.errors), rules.get(name) or rules.get(kind))
        if rule is not None:
            rules[name] = rule
    return rules


def _cooldowns(sec: _Section) -> dict[str, float]:
    values = dict(DEFAULT_COOLDOWN_S)
    for name in ACTION_NAMES:
        values[name] = sec.number(name, values[name], 0)
    sec.finish()
    return values


def _policy(sec: _Section) -> PolicyConfig:
    d = PolicyConfig()
    conf = PolicyConfig(
        undrain_after_s=sec.number("undrain_after_s", d.undrain_after_s, 0),
        repeat_window_s=sec.number("repeat_window_s", d.repeat_window_s, 0),
        max_reboots_per_hour=sec.integer("max_reboots_per_hour", d.max_reboots_per_hour, 0, 60),
        reboot_timeout_s=sec.number("reboot_timeout_s", d.reboot_timeout_s, 30),
        reset_grace_s=sec.number("reset_grace_s", d.reset_grace_s, 0),
        cooldown_s=_cooldowns(sec.section("cooldown_s")),
        rules=RuleBook(_xid_rules(sec.section("xid")), _condition_rules(sec.section("conditions")), UNKNOWN_XID_RULE),
    )
    sec.finish()
    return conf


def _node(sec: _Section, default: str) -> str:
    node = sec.text("node", "") or default
    if not _NODE_NAME.fullmatch(node):
        sec.error("node", f"must be a node name (letters, digits, '._-'), got {node!r}")
    return node


def _actions(sec: _Section, node_name: str) -> dict[str, Any]:
    drain_file, slurm, kube = sec.section("drain_file"), sec.section("slurm"), sec.section("kubernetes")
    reset, reboot = sec.section("gpu_reset"), sec.section("reboot")
    found: dict[str, Any] = {
        "drain_file": DrainFileConfig(
            drain_file.boolean("enabled", True), drain_file.path("path", DrainFileConfig.path)
        ),
        "slurm": SlurmConfig(
            slurm.boolean("enabled", False),
            slurm.argv("command", SlurmConfig.command),
            _node(slurm, node_name),
            slurm.number("timeout_s", SlurmConfig.timeout_s, 1),
        ),
        "kubernetes": KubernetesConfig(
            kube.boolean("enabled", False),
            kube.argv("command", KubernetesConfig.command),
            kube.path("kubeconfig", "", allow_empty=True),
            _node(kube, node_name),
            kube.integer("drain_timeout_s", KubernetesConfig.drain_timeout_s, 1),
            kube.integer("grace_period_s", KubernetesConfig.grace_period_s, -1),
        ),
        "gpu_reset": GpuResetConfig(
            reset.boolean("enabled", True),
            reset.argv("command", GpuResetConfig.command),
            reset.number("timeout_s", GpuResetConfig.timeout_s, 1),
        ),
        "reboot": RebootConfig(
            reboot.boolean("enabled", True),
            reboot.argv("command", RebootConfig.command),
            reboot.number("timeout_s", RebootConfig.timeout_s, 1),
        ),
    }
    for part in (drain_file, slurm, kube, reset, reboot, sec):
        part.finish()
    return found


def _fleet_guard(sec: _Section) -> FleetGuardConfig:
    kind = sec.text("type", "none", ("none", "prometheus", "command"))
    conf = FleetGuardConfig(
        type=kind,
        url=sec.text("url", ""),
        query=sec.text("query", ""),
        max=sec.number("max", 0.0, 0),
        command=sec.argv("command", (), allow_empty=True),
        timeout_s=sec.number("timeout_s", 5.0, 0.1, 300),
        on_error=sec.text("on_error", "deny", ("deny", "allow")),
    )
    if kind == "prometheus":
        if not conf.url.startswith(("http://", "https://")):
            sec.error("url", f"must be an http(s) URL of the Prometheus server, got {conf.url!r}")
        if not conf.query.strip():
            sec.error("query", "must be a PromQL query whose value is the number (or share) of drained nodes")
        if "max" not in sec.data:
            sec.error("max", "is required: drains and reboots wait while the query's value is at least max")
    if kind == "command" and not conf.command:
        sec.error("command", "must name the program that allows (exit 0) or refuses an action")
    sec.finish()
    return conf


def parse_config(data: object) -> Config:
    """A Config from the decoded JSON, or ConfigError listing every problem."""
    errors: list[str] = []
    top = _Section(data, "", errors)
    top.text("_comment", "")  # who wrote the file (JSON has no comments); the role puts ansible_managed here
    node_name = top.text("node_name", "") or _short_hostname()
    if not _NODE_NAME.fullmatch(node_name):
        top.error("node_name", f"must be a host name (letters, digits, '._-'), got {node_name!r}")
    sources = top.section("sources")
    config = Config(
        node_name=node_name,
        state_dir=top.path("state_dir", Config.state_dir),
        runtime_dir=top.path("runtime_dir", Config.runtime_dir),
        textfile_dir=top.path("textfile_dir", Config.textfile_dir, allow_empty=True),
        poll_interval_s=top.number("poll_interval_s", Config.poll_interval_s, 1, 3600),
        dry_run=top.boolean("dry_run", False),
        nvidia_smi=_nvidia_smi(sources.section("nvidia_smi")),
        dcgm=_dcgm(sources.section("dcgm")),
        kernel_log=_kernel_log(sources.section("kernel_log")),
        policy=_policy(top.section("policy")),
        fleet_guard=_fleet_guard(top.section("fleet_guard")),
        **_actions(top.section("actions"), node_name),
    )
    sources.finish()
    top.finish()
    if errors:
        raise ConfigError(errors)
    return config


def load_config(path: str | Path) -> Config:
    """Read and check the config file; ConfigError names the file when it is not JSON."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror}"]) from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError([f"{path}: not JSON: {err.msg} at line {err.lineno} column {err.colno}"]) from err
    return parse_config(data)
