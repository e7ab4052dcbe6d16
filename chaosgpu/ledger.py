"""The fault ledger: every fault chaosgpu injects is recorded on its target host and reverts there at its deadline.

On the host, under ``/var/lib/chaosgpu/faults`` (0700, root), a fault ``<id>`` is::

    <id>.json     the entry: id, kind, description, host, run id, inject and revert commands, created and deadline
                  (epoch seconds on the host's clock, and ISO 8601 UTC), duration_s, the timer unit
    <id>.revert   an executable script that runs the revert command once, whoever calls it
    <id>.lock     the flock(1) lock that the apply and every revert take
    <id>.failed   only after a revert failed: its exit status, when, and its output (the entry stays)

and a transient systemd timer ``chaosgpu-revert-<id>.timer`` (``systemd-run --on-active``) that runs
``<id>.revert`` at the deadline even when the controller died or the fault cut it off.

Round trips: an apply is one transport call (one shell script on stdin writes the revert script and the entry,
arms the timer, then injects; an inject that fails is reverted at once in the same call), a revert is one call,
and reading or cleaning the ledgers of N hosts, or reverting a run's faults on them (a rollback), is one parallel
fan-out (``Transport.run_many``). The scripts keep forks down (bash builtins for the clock and the tests; an empty
output file is not piped through base64): on a host, a fork and exec is a millisecond of CPU, and a game day's
fan-outs run them on every host at once.

The revert script takes the fault's lock, and does nothing when the entry is gone: the timer, a rollback and
``chaosgpu cleanup`` may all call it, and the revert runs once. The apply holds the same lock from before the
entry is written until the inject has finished (or been reverted), so a deadline that comes during a slow inject
waits for it rather than reverting first. After a revert succeeds the entry, script, lock and timer are removed;
a revert that fails leaves the entry with ``<id>.failed`` beside it, so ``chaosgpu status`` shows it as failed
and ``chaosgpu cleanup`` tries it again.

The inject and revert commands run with ``bash -c`` as root, umask 022, stdin from /dev/null, under timeout(1)
(``LedgerConfig.inject_timeout_s`` / ``revert_timeout_s``); a timed-out inject counts as failed and is reverted.
Both see the fault's id in ``$CHAOSGPU_FAULT_ID``, so an inject can name what it adds after the fault (an nftables
chain, a state file) and the revert removes exactly that.

Every script runs as root: through ``sudo -n`` when the transport's user is not root (the lab's ``operator`` has
passwordless sudo, as Ansible's ``become`` uses it).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import secrets
import shlex
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaosgpu.types import CommandResult, Host, Transport

__all__ = [
    "DEFAULT_LEDGER_DIR",
    "ROOT_SHELL",
    "CleanupReport",
    "FaultPlan",
    "FaultRecord",
    "HostCleanup",
    "HostRevert",
    "LedgerConfig",
    "LedgerError",
    "LedgerScan",
    "apply_fault",
    "build_apply_script",
    "build_cleanup_script",
    "build_revert_call",
    "build_revert_script",
    "build_run_revert_script",
    "build_status_script",
    "cleanup",
    "current_run_id",
    "list_faults",
    "new_fault_id",
    "revert_fault",
    "revert_run_faults",
    "scan_ledgers",
]

DEFAULT_LEDGER_DIR = "/var/lib/chaosgpu/faults"

# The remote command of every ledger call: the script comes on stdin and runs as root, through sudo when the
# transport logs in as someone else. -n: fail at once instead of prompting for a password nobody will type.
# bash's $EUID spares a fork of id(1); another login shell (dash) asks id.
ROOT_SHELL = 'if [ "${EUID:-$(id -u)}" -eq 0 ]; then exec bash -s; else exec sudo -n bash -s; fi'

_LEDGER_DIR = re.compile(r"/[A-Za-z0-9_./-]*")
_KIND = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_FAULT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_MARK = "@chaosgpu"
_OUTPUT_TAIL = 65536

# Exit statuses of the apply script (the revert script exits with the revert command's own status).
_APPLY_REFUSED = 10  # nothing was written: no systemd-run/flock, the id exists, the ledger cannot be created
_APPLY_NOT_ARMED = 11  # the entry could not be written or the timer armed: entry removed, nothing injected
_APPLY_INJECT_FAILED = 12  # the inject failed and was reverted at once: nothing left
_APPLY_REVERT_FAILED = 13  # the inject failed and so did the revert: the entry stays, marked failed
_REVERT_BUSY = 75  # another apply or revert held the fault's lock for longer than the lock wait

_SSH_FAILED = 255
_TIMED_OUT = 124


class LedgerError(ActivityFailed):  # type: ignore[misc]  # chaoslib is untyped
    """A ledger operation failed on a host; the message names the host and the fault and says what is left."""

    def __init__(self, message: str, result: CommandResult | None = None, record: FaultRecord | None = None) -> None:
        self.result = result
        # Set only when the fault was recorded and armed but the call then failed (e.g. the fault cut the
        # controller off): the fault may be in place, and its deadline reverts it.
        self.record = record
        super().__init__(message)


@dataclass(frozen=True)
class LedgerConfig:
    """Where the ledger lives on the hosts, which tools arm and stop the timer, and the limits of a fault.

    The defaults are production's; tests point ``ledger_dir``, ``systemd_run`` and ``systemctl`` at a temporary
    directory and recording fakes to run the same scripts locally.
    """

    ledger_dir: str = DEFAULT_LEDGER_DIR
    systemd_run: str = "systemd-run"
    systemctl: str = "systemctl"
    max_duration_s: float = 3600
    inject_timeout_s: int = 60
    revert_timeout_s: int = 120

    def __post_init__(self) -> None:
        if not _LEDGER_DIR.fullmatch(self.ledger_dir):
            raise ValueError(f"ledger_dir must be an absolute path of letters, digits, '/._-', got {self.ledger_dir!r}")
        for name in ("inject_timeout_s", "revert_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number of seconds, got {value!r}")
        if isinstance(self.max_duration_s, bool) or not self.max_duration_s > 0:
            raise ValueError(f"max_duration_s must be positive, got {self.max_duration_s!r}")

    @property
    def lock_wait_s(self) -> int:
        """How long a revert waits for the fault's lock: the longest an apply can hold it, plus slack."""
        return self.inject_timeout_s + self.revert_timeout_s + 30


@dataclass(frozen=True)
class FaultPlan:
    """A fault about to be applied: what build_apply_script needs (``duration_s`` in whole seconds)."""

    host: str
    id: str
    kind: str
    inject: str
    revert: str
    duration_s: int
    description: str = ""
    run_id: str = ""


@dataclass(frozen=True)
class FaultRecord:
    """One fault in a host's ledger, as the host recorded it.

    ``state``: ``active`` (timer armed, deadline ahead), ``overdue`` (deadline passed, entry still there),
    ``unarmed`` (deadline ahead but no timer: the host rebooted, or someone stopped it), ``busy`` (an apply or a
    revert holds its lock right now), ``failed`` (a revert ran and failed; ``failure`` holds its status and output),
    ``reverted`` (what revert_run_faults returns: the entry as it was, now gone from the ledger).
    """

    host: str
    id: str
    kind: str
    description: str
    created: float
    deadline: float
    run_id: str
    inject: str
    revert: str
    state: str = "active"
    timer: str = ""  # the timer unit's state as `systemctl is-active` gave it
    failure: str = ""
    observed: float | None = None  # the host's clock when the ledger was read

    @property
    def unit(self) -> str:
        """The transient systemd unit (``.timer`` and ``.service``) that reverts the fault at its deadline."""
        return f"chaosgpu-revert-{self.id}"

    @property
    def duration_s(self) -> float:
        return self.deadline - self.created

    @property
    def deadline_iso(self) -> str:
        return datetime.fromtimestamp(self.deadline, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def failure_summary(self) -> str:
        """``exited N at <ISO time>: <output>`` for a failed revert (``failure`` as the host wrote it), else ""."""
        if not self.failure:
            return ""
        head, _, output = self.failure.partition("\n")
        when, _, output = output.partition("\n")
        rc, at = head.removeprefix("rc ").strip(), when.removeprefix("at ").strip()
        if at.isdigit():
            at = datetime.fromtimestamp(int(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        said = " | ".join(line.strip() for line in output.splitlines() if line.strip())
        return f"exited {rc} at {at}" + (f": {said}" if said else "")

    def age_s(self) -> float | None:
        """Seconds since the fault was applied, on the host's clock (None when the ledger was not read)."""
        return None if self.observed is None else self.observed - self.created

    def remaining_s(self) -> float | None:
        """Seconds until the deadline on the host's clock; negative once it has passed."""
        return None if self.observed is None else self.deadline - self.observed


@dataclass(frozen=True)
class LedgerScan:
    """The ledgers of several hosts: their faults, and the hosts that could not be read (host -> why)."""

    faults: dict[str, list[FaultRecord]]
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostCleanup:
    """What cleanup did on one host: the faults it reverted (or found already gone), the reverts that failed
    (id -> output), and the faults still in the ledger afterwards; ``error`` when the host could not be cleaned."""

    host: str
    reverted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    left: list[FaultRecord] = field(default_factory=list)
    error: str | None = None

    @property
    def clean(self) -> bool:
        return self.error is None and not self.left and not self.failed


@dataclass(frozen=True)
class CleanupReport:
    """Cleanup across hosts, by host name."""

    hosts: dict[str, HostCleanup]

    @property
    def clean(self) -> bool:
        """True only when every host answered and no fault is left in any ledger."""
        return all(host.clean for host in self.hosts.values())

    @property
    def reverted(self) -> int:
        return sum(len(host.reverted) for host in self.hosts.values())

    @property
    def left(self) -> int:
        return sum(len(host.left) for host in self.hosts.values())


# --- identities -------------------------------------------------------------------------------------------------

_RUN_ID = f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"


def current_run_id() -> str:
    """The controller's run id written into every entry: ``CHAOSGPU_RUN_ID`` when set (a game day sets it for all
    its experiments), else one id for this process."""
    return os.environ.get("CHAOSGPU_RUN_ID") or _RUN_ID


def new_fault_id(kind: str, now: float | None = None) -> str:
    """A fresh fault id: ``<kind>-<UTC time>-<random>``, usable as a file name and in a systemd unit name."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{_check_kind(kind)}-{stamp}-{secrets.token_hex(4)}"


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise LedgerError(f"kind must be lower-case letters, digits, '-' or '_' (at most 40), got {kind!r}")
    return kind


def _check_fault_id(fault_id: str) -> str:
    if not isinstance(fault_id, str) or not _FAULT_ID.fullmatch(fault_id):
        raise LedgerError(f"fault_id must be letters, digits, '.', '-' or '_', got {fault_id!r}")
    return fault_id


def _check_command(name: str, command: str) -> str:
    if not isinstance(command, str) or not command.strip():
        raise LedgerError(f"{name} must be a non-empty shell command, got {command!r}")
    return command


def _check_duration(duration_s: float, config: LedgerConfig) -> int:
    """The timer's whole seconds for ``duration_s``; refuses anything not in (0, max_duration_s]."""
    if isinstance(duration_s, bool) or not isinstance(duration_s, int | float) or not math.isfinite(duration_s):
        raise LedgerError(f"duration_s must be a number of seconds, got {duration_s!r}")
    if duration_s <= 0:
        raise LedgerError(f"duration_s must be positive (the fault's deadline), got {duration_s!r}")
    if duration_s > config.max_duration_s:
        raise LedgerError(
            f"duration_s={duration_s!r} is above the maximum of {config.max_duration_s:g} s (max_duration_s)"
        )
    return math.ceil(duration_s)


# --- scripts ----------------------------------------------------------------------------------------------------

_q = shlex.quote

# Shared by the scripts run over the transport: marker lines the controller parses (values base64, "-" when
# empty), whatever else the commands print.
_FUNCTIONS = rf"""
emit() {{ printf '{_MARK} %s\n' "$*"; }}
b64_file() {{
  local s=
  [ -s "$1" ] && s=$(tail -c {_OUTPUT_TAIL} -- "$1" 2>/dev/null | base64 -w0)
  printf '%s' "${{s:--}}"
}}
b64_text() {{ local s; s=$(printf '%s' "$1" | tail -c {_OUTPUT_TAIL} | base64 -w0); printf '%s' "${{s:--}}"; }}
"""

# Lists the ledger: the host's clock, then one line per entry with its state, timer state, entry and failure.
_LIST_LEDGER = r"""
list_ledger() {
  local entry id base state timer failure
  emit now "$(date +%s)"
  [ -d "$LEDGER_DIR" ] || return 0
  for entry in "$LEDGER_DIR"/*.json; do
    [ -e "$entry" ] || continue
    id=$(basename -- "$entry" .json)
    base="$LEDGER_DIR/$id"
    state=active
    if [ -e "$base.failed" ]; then
      state=failed
    elif [ -e "$base.lock" ] && ! flock -n "$base.lock" true; then
      state=busy
    fi
    timer=$("$SYSTEMCTL" is-active "chaosgpu-revert-$id.timer" </dev/null 2>/dev/null)
    failure=-
    [ -e "$base.failed" ] && failure=$(b64_file "$base.failed")
    emit fault "$id" "$state" "${timer:-unknown}" "$(b64_file "$entry")" "$failure"
  done
}
"""


def _prelude(config: LedgerConfig) -> str:
    return (
        "set -u\numask 077\n"
        f"LEDGER_DIR={_q(config.ledger_dir)}\n"
        f"SYSTEMD_RUN={_q(config.systemd_run)}\n"
        f"SYSTEMCTL={_q(config.systemctl)}\n"
    )


def build_revert_script(
    fault_id: str, kind: str, revert: str, config: LedgerConfig | None = None, description: str = ""
) -> str:
    """The executable ``<id>.revert`` the apply writes on the host; the timer, a rollback and cleanup all run it.

    Takes the fault's lock (``--lock-held``: the caller, the apply, holds it already on fd 9), runs the revert
    only while the entry exists, then removes entry, timer, script and lock; on failure writes ``<id>.failed``
    and keeps the entry. Exit status: 0 reverted or already gone, 75 lock not obtained, else the revert's own.
    """
    config = config or LedgerConfig()
    fault_id, kind = _check_fault_id(fault_id), _check_kind(kind)
    summary = " ".join(description.split())[:200]
    return f"""#!/bin/bash
# chaosgpu: revert fault {fault_id} ({kind}){": " + summary if summary else ""}
# Written by chaosgpu when the fault was applied. Run by chaosgpu-revert-{fault_id}.timer at the deadline, or by
# a rollback or `chaosgpu cleanup`; the revert runs once whoever calls it (flock; no entry: nothing to do).
set -u
umask 077
LEDGER_DIR={_q(config.ledger_dir)}
SYSTEMCTL={_q(config.systemctl)}
ID={_q(fault_id)}
REVERT={_q(revert)}
REVERT_TIMEOUT={config.revert_timeout_s}
LOCK_WAIT={config.lock_wait_s}
base="$LEDGER_DIR/$ID"
unit="chaosgpu-revert-$ID"
if [ "${{1:-}}" != --lock-held ]; then
  exec 9>>"$base.lock" || exit 71
  if ! flock -w "$LOCK_WAIT" 9; then
    echo "fault $ID: $base.lock still held after $LOCK_WAIT s (an apply or revert is running)" >&2
    echo "{_MARK} busy $ID"
    exit {_REVERT_BUSY}
  fi
fi
if [ ! -e "$base.json" ]; then
  rm -f -- "$base.revert" "$base.lock"
  echo "{_MARK} absent $ID"
  exit 0
fi
out="$base.revert-output"
CHAOSGPU_FAULT_ID="$ID" timeout "$REVERT_TIMEOUT" bash -c "umask 022
$REVERT" </dev/null >"$out" 2>&1 9>&-
rc=$?
if [ "$rc" -ne 0 ]; then
  {{ printf 'rc %s\\nat %s\\n' "$rc" "$(date +%s)"; tail -c 16384 -- "$out"; }} >"$base.failed.tmp" 9>&-
  mv -f -- "$base.failed.tmp" "$base.failed"
  cat -- "$out" >&2
  rm -f -- "$out"
  echo "fault $ID: revert exited $rc; the entry stays, marked failed" >&2
  echo "{_MARK} failed $ID $rc"
  exit "$rc"
fi
[ -s "$out" ] && cat -- "$out"
"$SYSTEMCTL" stop "$unit.timer" </dev/null >/dev/null 2>&1 9>&-
rm -f -- "$base.json"
rm -f -- "$base.failed" "$out" "$base.revert" "$base.lock"
echo "{_MARK} reverted $ID"
exit 0
"""


def build_apply_script(plan: FaultPlan, config: LedgerConfig | None = None) -> str:
    """The script one apply sends on stdin: revert script, entry, timer, and only then the inject.

    Exit status: 0 injected; 10 refused before writing anything; 11 entry or timer failed (nothing injected,
    nothing left); 12 inject failed and was reverted; 13 inject failed and the revert failed (entry kept, marked).
    Marker lines: ``entry <b64 json>`` once the fault is recorded and armed, ``inject <rc> <b64 out> <b64 err>``,
    ``revert <rc> <b64 output>`` after an immediate revert.
    """
    config = config or LedgerConfig()
    fault_id, kind, duration_s = _check_fault_id(plan.id), _check_kind(plan.kind), plan.duration_s
    inject, revert = _check_command("inject", plan.inject), _check_command("revert", plan.revert)
    if isinstance(duration_s, bool) or not isinstance(duration_s, int) or duration_s <= 0:
        raise LedgerError(f"duration_s must be a positive whole number of seconds here, got {duration_s!r}")
    entry = {
        "version": 1,
        "id": fault_id,
        "kind": kind,
        "description": plan.description,
        "host": plan.host,
        "run_id": plan.run_id,
        "inject": inject,
        "revert": revert,
        "duration_s": duration_s,
        "unit": f"chaosgpu-revert-{fault_id}",
    }
    entry_head = json.dumps(entry)[:-1] + ", "  # the host adds created/deadline on its own clock
    revert_script = build_revert_script(fault_id, kind, revert, config, plan.description)
    return (
        f"# chaosgpu: apply fault {fault_id} ({kind}) with a deadline of {duration_s} s\n"
        + _prelude(config)
        + f"ID={_q(fault_id)}\nKIND={_q(kind)}\nDURATION={duration_s}\n"
        + f"INJECT={_q(inject)}\nINJECT_TIMEOUT={config.inject_timeout_s}\n"
        + f"ENTRY_HEAD={_q(entry_head)}\nREVERT_SCRIPT={_q(revert_script)}\n"
        + _FUNCTIONS
        + r"""
# The connection may drop (the fault may be the cause): finish the job, revert included, without it.
trap '' HUP PIPE

# utc_iso VAR EPOCH: sets VAR to EPOCH as ISO 8601 UTC (TZ is UTC in here only, the inject keeps the host's).
utc_iso() { local TZ=UTC; printf -v "$1" '%(%Y-%m-%dT%H:%M:%SZ)T' "$2"; }

apply() {
  local tool base created deadline created_iso deadline_iso entry armed rc rrc
  for tool in "$SYSTEMD_RUN" flock timeout base64; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "no $tool on this host: the deadline cannot be enforced, so the fault is not injected" >&2
      return 10
    fi
  done
  if ! { mkdir -p -- "$LEDGER_DIR" && chmod 0700 -- "$LEDGER_DIR"; }; then
    echo "cannot create the ledger $LEDGER_DIR" >&2
    return 10
  fi
  base="$LEDGER_DIR/$ID"
  if [ -e "$base.json" ]; then
    echo "fault $ID is already in the ledger" >&2
    return 10
  fi
  # The fault's lock, held until the inject is done or reverted: a deadline reached meanwhile waits for it.
  if ! exec 9>>"$base.lock"; then
    echo "cannot open $base.lock" >&2
    return 10
  fi
  flock -n 9 || { echo "fault $ID: $base.lock is held by someone else" >&2; return 10; }

  # 1. The revert script, then the entry: on disk before anything changes.
  if ! { printf '%s' "$REVERT_SCRIPT" >"$base.revert.tmp" && chmod 0700 -- "$base.revert.tmp" &&
         mv -f -- "$base.revert.tmp" "$base.revert"; }; then
    echo "cannot write $base.revert" >&2
    rm -f -- "$base.revert.tmp" "$base.revert" "$base.lock"
    return 11
  fi
  # bash's printf reads the clock and formats it: no date(1) to fork.
  printf -v created '%(%s)T' -1
  deadline=$((created + DURATION))
  utc_iso created_iso "$created"
  utc_iso deadline_iso "$deadline"
  printf -v entry '%s"created": %s, "created_iso": "%s", "deadline": %s, "deadline_iso": "%s"}' "$ENTRY_HEAD" \
    "$created" "$created_iso" "$deadline" "$deadline_iso"
  if ! { printf '%s\n' "$entry" >"$base.json.tmp" && mv -f -- "$base.json.tmp" "$base.json"; }; then
    echo "cannot write $base.json" >&2
    rm -f -- "$base.json.tmp" "$base.json" "$base.revert" "$base.lock"
    return 11
  fi

  # 2. The deadline, enforced by the host: a transient timer that runs the revert script.
  if ! armed=$("$SYSTEMD_RUN" --unit "chaosgpu-revert-$ID" --on-active="$DURATION" --timer-property=AccuracySec=1s \
       --collect --quiet --description "chaosgpu: revert fault $ID ($KIND) at its deadline" \
       "$base.revert" </dev/null 2>&1 9>&-); then
    echo "cannot arm the deadline timer chaosgpu-revert-$ID, so the fault is not injected:" >&2
    printf '%s\n' "$armed" >&2
    rm -f -- "$base.json" "$base.revert" "$base.lock"
    return 11
  fi
  # The entry as written: one line of JSON (ensure_ascii), the rest of the marker line.
  emit entry "$entry"

  # 3. Only now the fault.
  CHAOSGPU_FAULT_ID="$ID" timeout "$INJECT_TIMEOUT" bash -c "umask 022
$INJECT" </dev/null >"$base.inject-stdout" 2>"$base.inject-stderr" 9>&-
  rc=$?
  emit inject "$rc" "$(b64_file "$base.inject-stdout")" "$(b64_file "$base.inject-stderr")"
  rm -f -- "$base.inject-stdout" "$base.inject-stderr"
  [ "$rc" -eq 0 ] && return 0

  # The inject failed: revert at once (the lock is ours already), which clears the entry and the timer.
  "$base.revert" --lock-held </dev/null >"$base.apply-revert-output" 2>&1
  rrc=$?
  emit revert "$rrc" "$(b64_file "$base.apply-revert-output")"
  rm -f -- "$base.apply-revert-output"
  [ "$rrc" -eq 0 ] && return 12
  return 13
}
apply; exit $?
"""
    )


def build_revert_call(fault_id: str, config: LedgerConfig | None = None) -> str:
    """The script one revert sends: run the fault's revert script, or say the fault is no longer there."""
    config = config or LedgerConfig()
    base = f"{config.ledger_dir}/{_check_fault_id(fault_id)}"
    return (
        f"set -u\nbase={_q(base)}\n"
        + 'if [ -x "$base.revert" ]; then exec "$base.revert" </dev/null; fi\n'
        + 'if [ -e "$base.json" ]; then\n'
        + '  echo "$base.json is in the ledger but $base.revert is missing" >&2\n  exit 3\nfi\n'
        + f'echo "{_MARK} absent {fault_id}"\n'
    )


def build_status_script(config: LedgerConfig | None = None) -> str:
    """The script that lists a host's ledger (read-only)."""
    config = config or LedgerConfig()
    return _prelude(config) + _FUNCTIONS + _LIST_LEDGER + "list_ledger\n"


# Reverts, newest first (like undoing), the faults whose entry holds both $MATCH_RUN and $MATCH_KIND (an empty
# one matches any entry). Per fault one marker: ``reverted <id> <entry JSON>``, ``absent <id>`` (reverted meanwhile
# by its timer or another caller), or ``revert-failed <id> <rc> <b64 output>``. Ids never hold white space.
_REVERT_MATCHING = r"""
revert_matching() {
  local entry id line script out rc
  [ -d "$LEDGER_DIR" ] || return 0
  for entry in $(ls -1t -- "$LEDGER_DIR"/*.json 2>/dev/null); do
    line=
    read -r line <"$entry"
    [[ $line == *"$MATCH_RUN"* && $line == *"$MATCH_KIND"* ]] || continue
    id=${entry##*/}
    id=${id%.json}
    script="$LEDGER_DIR/$id.revert"
    if [ -x "$script" ]; then
      out=$("$script" </dev/null 2>&1)
      rc=$?
    else
      out="$entry is in the ledger but $script is missing"
      rc=127
    fi
    if [ "$rc" -ne 0 ]; then
      emit revert-failed "$id" "$rc" "$(b64_text "$out")"
    elif [[ $out == *"@MARK@ absent $id"* ]]; then
      emit absent "$id"
    else
      emit reverted "$id" "$line"
    fi
  done
}
""".replace("@MARK@", _MARK)


def _entry_match(key: str, value: str) -> str:
    """What an entry written by build_apply_script holds for ``key`` = ``value`` (a key other than the last).

    Exact: the entry is json.dumps output, in which a quote inside a string value is always escaped, so
    ``"key": "value", `` can only be that key with that value."""
    return f"{json.dumps(key)}: {json.dumps(value)}, "


def build_run_revert_script(run_id: str, kind: str = "", config: LedgerConfig | None = None) -> str:
    """The script that reverts, newest first, the faults of run ``run_id`` (only those of ``kind`` when given)."""
    config = config or LedgerConfig()
    if not isinstance(run_id, str) or not run_id:
        raise LedgerError(f"run_id must be a non-empty string, got {run_id!r}")
    match_kind = _entry_match("kind", _check_kind(kind)) if kind else ""
    return (
        _prelude(config)
        + f"MATCH_RUN={_q(_entry_match('run_id', run_id))}\nMATCH_KIND={_q(match_kind)}\n"
        + _FUNCTIONS
        + _REVERT_MATCHING
        + "revert_matching\n"
    )


def build_cleanup_script(config: LedgerConfig | None = None) -> str:
    """The script that reverts every fault in a host's ledger, newest first, then lists what is left."""
    config = config or LedgerConfig()
    return (
        _prelude(config)
        + "MATCH_RUN=\nMATCH_KIND=\n"
        + _FUNCTIONS
        + _LIST_LEDGER
        + _REVERT_MATCHING
        + r"""
revert_all() {
  local script
  revert_matching
  [ -d "$LEDGER_DIR" ] || return 0
  # Revert scripts whose entry is gone (an apply interrupted between the two writes): they remove themselves.
  for script in "$LEDGER_DIR"/*.revert; do
    [ -x "$script" ] && [ ! -e "${script%.revert}.json" ] && "$script" </dev/null >/dev/null 2>&1
  done
  return 0
}
revert_all
list_ledger
"""
    )


# --- output parsing ---------------------------------------------------------------------------------------------


def _b64(value: str) -> str:
    if value == "-":
        return ""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return value


def _markers(stdout: str) -> list[list[str]]:
    return [line.split()[1:] for line in stdout.splitlines() if line.startswith(_MARK + " ")]


def _marker_rest(stdout: str, name: str) -> str:
    """What follows ``<mark> <name> `` on the last such line (a value with spaces: one line of JSON), or ""."""
    prefix = f"{_MARK} {name} "
    found = [line.removeprefix(prefix) for line in stdout.splitlines() if line.startswith(prefix)]
    return found[-1] if found else ""


def _record(host: str, entry: Mapping[str, Any], **extra: Any) -> FaultRecord:
    return FaultRecord(
        host=host,
        id=str(entry["id"]),
        kind=str(entry.get("kind", "")),
        description=str(entry.get("description", "")),
        created=float(entry["created"]),
        deadline=float(entry["deadline"]),
        run_id=str(entry.get("run_id", "")),
        inject=str(entry.get("inject", "")),
        revert=str(entry.get("revert", "")),
        **extra,
    )


def _state(shell_state: str, timer: str, deadline: float, now: float | None) -> str:
    if shell_state != "active" or now is None:
        return shell_state
    if now > deadline:
        return "overdue"
    if timer not in ("active", "activating"):
        return "unarmed"
    return "active"


def _parse_ledger(host: str, stdout: str) -> list[FaultRecord]:
    """The faults in a status listing (marker lines ``now`` and ``fault``)."""
    now: float | None = None
    records = []
    for fields in _markers(stdout):
        if fields[:1] == ["now"] and len(fields) == 2:  # noqa: PLR2004 - marker, value
            now = float(fields[1])
        elif fields[:1] == ["fault"] and len(fields) == 6:  # noqa: PLR2004 - marker and five fields
            _, _fault_id, shell_state, timer, entry_b64, failure_b64 = fields
            entry = json.loads(_b64(entry_b64))
            records.append(
                _record(
                    host,
                    entry,
                    state=_state(shell_state, timer, float(entry["deadline"]), now),
                    timer=timer,
                    failure=_b64(failure_b64),
                    observed=now,
                )
            )
    return sorted(records, key=lambda record: record.created)


@dataclass(frozen=True)
class _Reverts:
    """The markers of revert_matching: (id, entry JSON) reverted, ids already gone, id -> (rc, output) failed."""

    reverted: list[tuple[str, str]]
    absent: list[str]
    failed: dict[str, tuple[int, str]]


def _parse_reverts(stdout: str) -> _Reverts:
    reverted: list[tuple[str, str]] = []
    absent: list[str] = []
    failed: dict[str, tuple[int, str]] = {}
    for line in stdout.splitlines():
        if not line.startswith(_MARK + " "):
            continue
        fields = line.split(" ", 3)  # mark, what, id, rest (an entry's JSON has spaces)
        if fields[1] == "reverted" and len(fields) == 4:  # noqa: PLR2004
            reverted.append((fields[2], fields[3]))
        elif fields[1] == "absent" and len(fields) == 3:  # noqa: PLR2004
            absent.append(fields[2])
        elif fields[1] == "revert-failed" and len(fields) == 4:  # noqa: PLR2004
            rc, _, output = fields[3].partition(" ")
            said = "\n".join(text for text in _b64(output).splitlines() if not text.startswith(_MARK))
            failed[fields[2]] = (int(rc), _tail(said))
    return _Reverts(reverted, absent, failed)


def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def _unreachable(result: CommandResult) -> str:
    why = "timed out" if result.rc == _TIMED_OUT else f"exited {result.rc}"
    return f"{why}: {_tail(result.stderr)}" if result.stderr.strip() else why


# --- the API ----------------------------------------------------------------------------------------------------


def apply_fault(  # noqa: PLR0913 - the issue's seven parameters, then keyword-only run_id and config
    transport: Transport,
    host: Host,
    kind: str,
    inject: str,
    revert: str,
    duration_s: float,
    description: str = "",
    *,
    run_id: str | None = None,
    config: LedgerConfig | None = None,
) -> FaultRecord:
    """Record a fault on ``host``, arm its deadline there, then inject it (one transport call).

    ``inject`` and ``revert`` are shell commands run as root on the host; ``revert`` must be idempotent and undo
    ``inject``; it runs at the latest ``duration_s`` seconds (rounded up, at most ``config.max_duration_s``) after
    the entry was written, whatever happens to the controller. An inject that fails is reverted at once and
    raises LedgerError, as does a fault that could not be recorded or armed (then nothing was injected).
    """
    config = config or LedgerConfig()
    seconds = _check_duration(duration_s, config)
    _check_command("inject", inject)
    _check_command("revert", revert)
    if not isinstance(description, str):
        raise LedgerError(f"description must be a string, got {description!r}")
    fault_id = new_fault_id(kind)
    plan = FaultPlan(host.name, fault_id, kind, inject, revert, seconds, description, run_id or current_run_id())
    script = build_apply_script(plan, config)
    result = transport.run(
        host, ROOT_SHELL, timeout=config.inject_timeout_s + config.revert_timeout_s + 60, stdin=script
    )
    marks = {fields[0]: fields[1:] for fields in _markers(result.stdout) if fields}
    entry_line = _marker_rest(result.stdout, "entry")
    entry = json.loads(entry_line) if entry_line else None
    inject_says = _tail(_b64(marks["inject"][2])) if len(marks.get("inject", [])) == 3 else ""  # noqa: PLR2004
    where = f"{host.name}: fault {fault_id} ({kind})"
    if result.rc == 0 and entry is not None:
        return _record(host.name, entry, state="active", timer="active", observed=float(entry["created"]))
    if result.rc == _APPLY_INJECT_FAILED:
        raise LedgerError(
            f"{where}: inject exited {marks['inject'][0]} and was reverted at once, nothing is left"
            + (f": {inject_says}" if inject_says else ""),
            result,
        )
    if result.rc == _APPLY_REVERT_FAILED:
        revert_says = _tail(_b64(marks["revert"][1])) if len(marks.get("revert", [])) == 2 else ""  # noqa: PLR2004
        raise LedgerError(
            f"{where}: inject exited {marks['inject'][0]}"
            + (f" ({inject_says})" if inject_says else "")
            + f", and its revert failed too, so the entry stays in the ledger marked failed: {revert_says}",
            result,
        )
    if result.rc in (_APPLY_REFUSED, _APPLY_NOT_ARMED):
        raise LedgerError(f"{where}: not injected: {_tail(result.stderr)}", result)
    if entry is not None:
        raise LedgerError(
            f"{where}: the call {_unreachable(result)} after the fault was recorded and armed; whatever it did "
            f"reverts on the host by {entry['deadline_iso']} (`chaosgpu status` shows it until then)",
            result,
            record=_record(host.name, entry, state="active", timer="active", observed=float(entry["created"])),
        )
    raise LedgerError(f"{where}: not applied, the call {_unreachable(result)}", result)


def _revert_once(transport: Transport, host: Host, fault_id: str, config: LedgerConfig) -> tuple[str, CommandResult]:
    result = transport.run(
        host,
        ROOT_SHELL,
        timeout=config.lock_wait_s + config.revert_timeout_s + 30,
        stdin=build_revert_call(fault_id, config),
    )
    outcomes = [fields[0] for fields in _markers(result.stdout) if len(fields) >= 2 and fields[1] == fault_id]  # noqa: PLR2004
    return (outcomes[-1] if outcomes else "error"), result


def revert_fault(transport: Transport, host: Host, fault_id: str, *, config: LedgerConfig | None = None) -> bool:
    """Revert one fault now (one transport call). True when this call reverted it, False when it was no longer in
    the ledger (reverted already: by its timer, a rollback or cleanup). Raises LedgerError when the revert failed
    (the entry stays, marked failed) or could not run."""
    config = config or LedgerConfig()
    outcome, result = _revert_once(transport, host, _check_fault_id(fault_id), config)
    if result.rc == 0 and outcome in ("reverted", "absent"):
        return outcome == "reverted"
    where = f"{host.name}: fault {fault_id}"
    if outcome in ("failed", "busy"):
        raise LedgerError(_revert_failed(where, result.rc, _tail(result.stderr)), result)
    raise LedgerError(f"{where}: revert could not run, the call {_unreachable(result)}", result)


def _revert_failed(where: str, rc: int, said: str) -> str:
    if rc == _REVERT_BUSY:
        return f"{where}: not reverted, its lock stayed held: {said}"
    return f"{where}: revert exited {rc}; the entry stays, marked failed: {said}"


@dataclass(frozen=True)
class HostRevert:
    """What revert_run_faults did on one host: the faults it reverted, and why others were not (messages naming
    the host and the fault); ``error`` when the host could not be reached (its faults revert at their deadlines)."""

    host: str
    reverted: list[FaultRecord] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error: str | None = None


def revert_run_faults(
    transport: Transport,
    hosts: Sequence[Host],
    run_id: str,
    kind: str = "",
    *,
    config: LedgerConfig | None = None,
) -> dict[str, HostRevert]:
    """Revert now the faults of run ``run_id`` (only those of ``kind`` when given) on ``hosts``, newest first on each
    host: one transport call per host, all hosts in parallel. Faults of other runs are left alone. Never raises
    for a host: each host's HostRevert says what was reverted, what failed and whether the host answered."""
    config = config or LedgerConfig()
    if not hosts:
        return {}
    timeout = config.lock_wait_s + config.revert_timeout_s + 30
    script = build_run_revert_script(run_id, kind, config)
    results = transport.run_many(hosts, ROOT_SHELL, timeout=timeout, stdin=script)
    report: dict[str, HostRevert] = {}
    for host in hosts:
        result = results.get(host.name)
        reverts = _parse_reverts(result.stdout if result is not None else "")
        reverted = [_record(host.name, json.loads(line), state="reverted") for _, line in reverts.reverted]
        failed = [_revert_failed(f"{host.name}: fault {i}", rc, said) for i, (rc, said) in reverts.failed.items()]
        error = None
        if result is None or result.rc != 0:
            why = "no result" if result is None else _unreachable(result)
            error = f"{host.name}: cannot revert the faults of run {run_id}: {why} (they revert at their deadlines)"
        report[host.name] = HostRevert(host.name, reverted, failed, error)
    return report


def scan_ledgers(transport: Transport, hosts: Sequence[Host], *, config: LedgerConfig | None = None) -> LedgerScan:
    """Read the ledgers of ``hosts`` (one parallel fan-out); hosts that could not be read are in ``errors``."""
    config = config or LedgerConfig()
    if not hosts:
        return LedgerScan(faults={})
    results = transport.run_many(hosts, ROOT_SHELL, timeout=60, stdin=build_status_script(config))
    faults: dict[str, list[FaultRecord]] = {}
    errors: dict[str, str] = {}
    for host in hosts:
        result = results.get(host.name)
        if result is None:
            errors[host.name] = "no result"
        elif result.rc != 0:
            errors[host.name] = _unreachable(result)
        else:
            try:
                faults[host.name] = _parse_ledger(host.name, result.stdout)
            except (ValueError, KeyError, TypeError) as err:
                errors[host.name] = f"unreadable ledger listing: {err}"
    return LedgerScan(faults=faults, errors=errors)


def list_faults(
    transport: Transport, hosts: Sequence[Host], *, config: LedgerConfig | None = None
) -> dict[str, list[FaultRecord]]:
    """The faults in the ledgers of ``hosts``, by host name, oldest first (one parallel fan-out).

    Raises LedgerError naming every host whose ledger could not be read (use scan_ledgers to get the rest anyway).
    """
    scan = scan_ledgers(transport, hosts, config=config)
    if scan.errors:
        raise LedgerError(
            "cannot read the fault ledger of " + "; ".join(f"{host}: {why}" for host, why in scan.errors.items())
        )
    return scan.faults


def cleanup(
    transport: Transport, hosts: Sequence[Host], *, timeout_s: float = 900, config: LedgerConfig | None = None
) -> CleanupReport:
    """Revert every fault the ledgers of ``hosts`` hold, newest first on each host, all hosts in parallel (one
    fan-out), and report what each host reverted, what failed and what is left. Never raises for a host: a host
    that could not be cleaned has ``error`` set and makes the report not ``clean``."""
    config = config or LedgerConfig()
    if not hosts:
        return CleanupReport(hosts={})
    results = transport.run_many(hosts, ROOT_SHELL, timeout=timeout_s, stdin=build_cleanup_script(config))
    report: dict[str, HostCleanup] = {}
    for host in hosts:
        result = results.get(host.name)
        if result is None or result.rc != 0:
            report[host.name] = HostCleanup(host.name, error="no result" if result is None else _unreachable(result))
            continue
        reverts = _parse_reverts(result.stdout)
        # Found already gone counts as reverted: nothing of it is left.
        reverted = [fault_id for fault_id, _ in reverts.reverted] + reverts.absent
        failed = {fault_id: f"exited {rc}: {said}" for fault_id, (rc, said) in reverts.failed.items()}
        try:
            left = _parse_ledger(host.name, result.stdout)
        except (ValueError, KeyError, TypeError) as err:
            report[host.name] = HostCleanup(host.name, reverted, failed, error=f"unreadable ledger listing: {err}")
            continue
        report[host.name] = HostCleanup(host.name, reverted, failed, left)
    return CleanupReport(hosts=report)
