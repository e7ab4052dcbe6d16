"""What chaosgpu.gpu runs on a GPU node, and how it reads what comes back (standard library only).

Every GPU fault is a pair of bash commands (inject, revert) that the fault ledger runs as root on the node; every GPU
probe is one command whose output a parser here reads. They call the real tools with their real syntax
(``nvidia-smi``, ``dcgmi test --inject``, ``/dev/kmsg``, ``systemctl``/``systemd-run``); the lab's stand-ins speak
the same command lines.

Faults that restore a previous state read it in the inject command itself, in the same call, and write it to
``<state dir>/<key>.*`` (``/var/lib/chaosgpu/gpu``, root only) before changing anything; the revert command names
that file, restores exactly what it holds and then removes it, so a second revert finds nothing to do. A revert
that fails keeps the file, and the ledger keeps the fault (marked failed) for ``chaosgpu cleanup`` to retry.

This module imports nothing outside the standard library, so ``scripts/gpu-check.py`` can load it by path on a GPU
host that has only python3. Bad input raises ValueError naming the parameter; chaosgpu.gpu.actions turns that into
ActivityFailed before any host is reached.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMPUTE_MODES",
    "DEFAULT_KMSG_PATH",
    "FIELD_XID",
    "GPU_HEALTH_FIELDS",
    "GPU_SERVICES",
    "KILL_SIGNALS",
    "LOADER_PROGRAM",
    "LOAD_TOOLS",
    "MEMORY_EVENTS",
    "SAVED_STATE_DIR",
    "XID_MESSAGES",
    "DcgmHealth",
    "GpuHealth",
    "GpuList",
    "KernelLogXid",
    "check_gpus",
    "check_services",
    "check_xid",
    "compute_apps_command",
    "compute_mode_commands",
    "dcgm_health_command",
    "gpu_health_command",
    "gpu_list_command",
    "kernel_log_command",
    "kill_commands",
    "load_commands",
    "load_unit",
    "memory_error_commands",
    "new_key",
    "parse_compute_apps",
    "parse_dcgm_health",
    "parse_gpu_health",
    "parse_gpu_list",
    "parse_kernel_log",
    "services_stop_commands",
    "xid_dcgm_commands",
    "xid_kmsg_commands",
    "xid_line",
]

SAVED_STATE_DIR = "/var/lib/chaosgpu/gpu"
DEFAULT_KMSG_PATH = "/dev/kmsg"
FIELD_XID = 230  # DCGM_FI_DEV_XID_ERRORS
MAX_GPU_INDEX = 63
MAX_XID = 1023
MAX_ERRORS = 1_000_000  # the most one memory event adds to a counter
LOAD_READY_WAIT_S = 40  # how long a load's inject waits for the load to hold its GPUs (the ledger allows 60)
LOAD_STOP_TIMEOUT_S = 20  # TimeoutStopSec of the load unit: SIGTERM, then SIGKILL after this long

# The driver's kernel-log text after "NVRM: Xid (PCI:...): N, pid=..., name=..., " (NVIDIA's XID catalogue and
# public reports of real lines; the same table as the lab's simulator).
XID_MESSAGES: dict[int, str] = {
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
_UNKNOWN_XID_MESSAGE = "Unknown XID error"

# Memory events: event -> the DCGM fields it injects, each with the nvidia-smi field that reads its current value
# and how the new value follows from the old ("add": the counter rises by ``errors``; "set": a flag becomes 1).
# Field ids: DESIGN.md "Facts to build on" (dcgm_fields.h).
MEMORY_EVENTS: dict[str, tuple[tuple[int, str, str], ...]] = {
    "sbe": (
        (310, "ecc.errors.corrected.volatile.total", "add"),
        (312, "ecc.errors.corrected.aggregate.total", "add"),
    ),
    "dbe": (
        (311, "ecc.errors.uncorrected.volatile.total", "add"),
        (313, "ecc.errors.uncorrected.aggregate.total", "add"),
    ),
    "retired-sbe": ((390, "retired_pages.single_bit_ecc.count", "add"),),
    "retired-dbe": ((391, "retired_pages.double_bit.count", "add"),),
    "retired-pending": ((392, "retired_pages.pending", "set"),),
    "remap-correctable": ((394, "remapped_rows.correctable", "add"),),
    "remap-uncorrectable": ((393, "remapped_rows.uncorrectable", "add"), (396, "remapped_rows.pending", "set")),
    "remap-pending": ((396, "remapped_rows.pending", "set"),),
    "remap-failure": ((395, "remapped_rows.failure", "set"),),
}

# nvidia-smi -c names (EXCLUSIVE_THREAD is deprecated since CUDA 8 and refused) -> what --query-gpu prints.
COMPUTE_MODES = {"DEFAULT": "Default", "EXCLUSIVE_PROCESS": "Exclusive_Process", "PROHIBITED": "Prohibited"}
_QUERY_MODES = ("Default", "Exclusive_Process", "Prohibited", "Exclusive_Thread")

# The GPU services a fault may stop, in stopping order (consumers first); they start in the reverse order.
# nvidia-dcgm is DCGM's host engine unit (nv-hostengine); older DCGM packages name it dcgm.
GPU_SERVICES = ("dcgm-exporter", "nvidia-dcgm", "dcgm", "nvidia-fabricmanager", "nvidia-persistenced")

KILL_SIGNALS = ("KILL", "TERM", "INT")
LOAD_TOOLS = ("auto", "torch", "cupy", "gpusim-hog")

# What the health probe reads (scripts/gpu-check.py captures the same query from real GPUs).
GPU_HEALTH_FIELDS = (
    "index",
    "uuid",
    "pci.bus_id",
    "name",
    "temperature.gpu",
    "power.draw",
    "memory.used",
    "memory.total",
    "utilization.gpu",
    "compute_mode",
    "ecc.errors.uncorrected.volatile.total",
    "remapped_rows.pending",
    "remapped_rows.failure",
)

_STATE_DIR = re.compile(r"/[A-Za-z0-9_./-]*")
_PATH = re.compile(r"/[A-Za-z0-9_./-]+")
_KEY = re.compile(r"[a-z0-9]{6,32}")
_PROGRAM = re.compile(r"[A-Za-z0-9_./+-]+")
_q = shlex.quote


# --- validation -----------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_gpus(gpus: Sequence[int] | None, name: str = "gpus") -> tuple[int, ...]:
    """GPU indices as nvidia-smi numbers them: a non-empty list of distinct whole numbers 0-63 (None: GPU 0)."""
    if gpus is None:
        return (0,)
    if isinstance(gpus, str | bytes) or not isinstance(gpus, Sequence) or not gpus:
        raise ValueError(f"{name} must be a non-empty list of GPU indices (nvidia-smi's), got {gpus!r}")
    if not all(_is_int(g) and 0 <= g <= MAX_GPU_INDEX for g in gpus):
        raise ValueError(f"{name} must hold GPU indices 0-{MAX_GPU_INDEX}, got {list(gpus)!r}")
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"{name} names a GPU twice: {list(gpus)!r}")
    return tuple(int(g) for g in gpus)


def check_xid(xid: int) -> int:
    if not _is_int(xid) or not 1 <= xid <= MAX_XID:
        raise ValueError(f"xid must be an XID number 1-{MAX_XID} (e.g. 79: fallen off the bus), got {xid!r}")
    return int(xid)


def _check_state_dir(state_dir: str) -> str:
    if not _STATE_DIR.fullmatch(state_dir):
        raise ValueError(f"state_dir must be an absolute path of letters, digits, '/._-', got {state_dir!r}")
    return state_dir


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"key must be 6-32 lower-case letters or digits, got {key!r}")
    return key


def _check_program(value: str, name: str) -> str:
    if not isinstance(value, str) or not _PROGRAM.fullmatch(value) or value.startswith("-"):
        raise ValueError(f"{name} must be a program name or path (letters, digits, '/._+-'), got {value!r}")
    return value


def new_key() -> str:
    """A fresh name for one fault's saved state and units on a host."""
    return secrets.token_hex(6)


def _words(values: Iterable[object]) -> str:
    return " ".join(str(v) for v in values)


def _listing(gpus: Sequence[int]) -> str:
    return ",".join(str(g) for g in gpus)


_PRELUDE = """set -u
die() { echo "chaosgpu: $*" >&2; exit 3; }
"""


def _noop(why: str) -> str:
    """A revert that does nothing and says why: recorded in the ledger like any other."""
    return f"echo {_q('chaosgpu: nothing to revert: ' + why)}"


# --- XIDs -------------------------------------------------------------------------------------------------------


def xid_dcgm_commands(gpus: Sequence[int], xid: int, recovery: str = "") -> tuple[str, str]:
    """``dcgmi test --inject --gpuid N -f 230 -v XID`` on every GPU; the revert is ``recovery`` (the host's
    chaosgpu_xid_recovery_command, run with CHAOSGPU_GPUS and CHAOSGPU_XID set) or a recorded no-op."""
    gpus, xid = check_gpus(gpus), check_xid(xid)
    inject = (
        _PRELUDE
        + f"for gpu in {_words(gpus)}; do\n"
        + f'  out=$(dcgmi test --inject --gpuid "$gpu" -f {FIELD_XID} -v {xid} 2>&1) ||'
        + f' {{ printf "%s\\n" "$out" >&2; die "dcgmi could not inject XID {xid} on GPU $gpu"; }}\n'
        + f'  echo "chaosgpu: XID {xid} injected on GPU $gpu through DCGM (field {FIELD_XID})"\n'
        + "done\n"
    )
    return inject, _xid_revert(gpus, xid, recovery)


def _xid_revert(gpus: Sequence[int], xid: int, recovery: str) -> str:
    if not isinstance(recovery, str):
        raise ValueError(f"chaosgpu_xid_recovery_command must be a shell command, got {recovery!r}")
    if not recovery.strip():
        return _noop(
            f"XID {xid} on GPU(s) {_listing(gpus)} cannot be undone; recovering the GPU (drain, reset, reboot) is "
            "gpu_health's job"
        )
    return f"CHAOSGPU_GPUS={_q(_words(gpus))} CHAOSGPU_XID={xid} bash -c {_q(recovery)}"


def xid_line(pci_bus_id: str, xid: int) -> str:
    """The driver's kernel-log line for an XID on the GPU at ``pci_bus_id`` (any nvidia-smi form), no process:
    ``NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.``"""
    match = re.search(r"([0-9A-Fa-f]{4,8}):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})", pci_bus_id)
    if not match:
        raise ValueError(f"pci_bus_id must look like 00000000:18:00.0, got {pci_bus_id!r}")
    domain, bus, device = match.groups()
    where = f"{domain[-4:]}:{bus}:{device}".lower()
    message = XID_MESSAGES.get(check_xid(xid), _UNKNOWN_XID_MESSAGE)
    return f"NVRM: Xid (PCI:{where}): {xid}, pid='<unknown>', name=<unknown>, {message}"


def xid_kmsg_commands(gpus: Sequence[int], xid: int, kmsg_path: str = DEFAULT_KMSG_PATH) -> tuple[str, str]:
    """Write the driver's XID line for every GPU to the kernel-log source: a character device (``/dev/kmsg``: one
    ``<4>`` record per line, stamped by the kernel) or a file (the lab simulator's: ``[uptime] line`` appended).
    The source must exist; nothing is created. The revert is a recorded no-op: a logged line cannot be taken back."""
    gpus, xid = check_gpus(gpus), check_xid(xid)
    if not isinstance(kmsg_path, str) or not _PATH.fullmatch(kmsg_path):
        raise ValueError(f"chaosgpu_kmsg_path must be an absolute path, got {kmsg_path!r}")
    head = "NVRM: Xid (PCI:"
    tail = xid_line("0000:00:00", xid).removeprefix(head + "0000:00:00")
    inject = (
        _PRELUDE
        + f"path={_q(kmsg_path)}\n"
        + '[ -c "$path" ] || [ -f "$path" ] || die "kernel log source $path is neither a character device nor a file"\n'
        + f"for gpu in {_words(gpus)}; do\n"
        + '  out=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader -i "$gpu" 2>&1)\n'
        # A lost GPU has no row, but nvidia-smi names its bus id in the error ("... for GPU 0000:18:00.0: ...").
        + "  bus=$(printf '%s\\n' \"$out\" | grep -oE '[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\\.[0-9A-Fa-f]'"
        + " | head -n 1)\n"
        + '  [ -n "$bus" ] || { printf "%s\\n" "$out" >&2; die "cannot read the PCI bus id of GPU $gpu"; }\n'
        + "  bus=${bus%.*}; bus=${bus: -10}; bus=${bus,,}\n"
        + f'  line="{head}$bus"{_q(tail)}\n'
        + '  if [ -c "$path" ]; then\n'
        + '    printf \'<4>%s\\n\' "$line" >"$path" || die "cannot write to $path"\n'
        + "  else\n"
        + '    printf \'[%12.6f] %s\\n\' "$(cut -d\' \' -f1 /proc/uptime)" "$line" >>"$path" || die "cannot write to'
        + ' $path"\n'
        + "  fi\n"
        + '  echo "chaosgpu: $line -> $path"\n'
        + "done\n"
    )
    revert = _noop(
        f"the XID {xid} kernel-log line(s) stay in the log; recovery from what they set off is gpu_health's job"
    )
    return inject, revert


# --- saved state --------------------------------------------------------------------------------------------------


def _saved(state_dir: str, key: str, suffix: str) -> str:
    """``<state_dir>/<key>.<suffix>``; an empty ``state_dir`` is SAVED_STATE_DIR (tests point it elsewhere)."""
    return f"{_check_state_dir(state_dir or SAVED_STATE_DIR)}/{_check_key(key)}.{suffix}"


def _save_prelude(saved: str) -> str:
    return (
        _PRELUDE + f"saved={_q(saved)}\numask 077\n" + 'mkdir -p -- "${saved%/*}" || die "cannot create ${saved%/*}"\n'
    )


# --- memory errors (ECC, retired pages, row remapping) through DCGM field injection ------------------------------


def memory_error_commands(
    gpus: Sequence[int], event: str, errors: int, key: str, state_dir: str = ""
) -> tuple[str, str]:
    """Inject a memory event through DCGM fields on every GPU: counters rise by ``errors``, flags become 1.

    The inject reads each field's current value with nvidia-smi (a GPU that reports it as [N/A] is refused), saves
    them, then injects; the revert injects the saved values back. On real DCGM an injected value lasts until the
    field's next sample; the simulator keeps it until the revert."""
    gpus = check_gpus(gpus)
    if event not in MEMORY_EVENTS:
        raise ValueError(f"event must be one of {', '.join(MEMORY_EVENTS)}, got {event!r}")
    if not _is_int(errors) or not 1 <= errors <= MAX_ERRORS:
        raise ValueError(f"errors must be a whole number 1-{MAX_ERRORS}, got {errors!r}")
    fields = MEMORY_EVENTS[event]
    saved = _saved(state_dir, key, "prev")
    names = [f"v{i}" for i in range(len(fields))]
    lines = [
        _save_prelude(saved),
        'num() { case "$1" in Yes) echo 1;; No) echo 0;; ""|*[!0-9]*) return 1;; *) echo "$1";; esac; }\n',
        ': >"$saved.tmp" || die "cannot write $saved.tmp"\n',
        f"for gpu in {_words(gpus)}; do\n",
        f'  out=$(nvidia-smi --query-gpu={",".join(f[1] for f in fields)} --format=csv,noheader,nounits -i "$gpu" 2>&1)'
        + ' || { printf "%s\\n" "$out" >&2; rm -f -- "$saved.tmp"; die "cannot read the counters of GPU $gpu"; }\n',
        f'  IFS=, read -r {" ".join(names)} <<<"$out"\n',
    ]
    for name, (field_id, query, _) in zip(names, fields, strict=True):
        lines.append(
            f'  {name}=${{{name}// /}}; p=$(num "${name}") || {{ rm -f -- "$saved.tmp"; '
            f"die \"GPU $gpu reports {query} as '${name}': it has no such counter\"; }}\n"
            f'  echo "$gpu {field_id} $p" >>"$saved.tmp"\n'
        )
    lines.append("done\n")
    lines.append('mv -f -- "$saved.tmp" "$saved" || die "cannot write $saved"\n')
    cases = " ".join(
        f"{field_id}) new=$((value + {errors}));;" if how == "add" else f"{field_id}) new=1;;"
        for field_id, _, how in fields
    )
    lines.append(
        "while read -r gpu field value; do\n"
        f'  case "$field" in {cases} esac\n'
        '  out=$(dcgmi test --inject --gpuid "$gpu" -f "$field" -v "$new" 2>&1) ||'
        ' { printf "%s\\n" "$out" >&2; die "dcgmi could not inject field $field=$new on GPU $gpu"; }\n'
        '  echo "chaosgpu: GPU $gpu field $field: $value -> $new"\n'
        'done <"$saved"\n'
    )
    inject = "".join(lines)
    revert = (
        _PRELUDE
        + f"saved={_q(saved)}\n"
        + '[ -e "$saved" ] || exit 0\n'
        + "while read -r gpu field value; do\n"
        + '  out=$(dcgmi test --inject --gpuid "$gpu" -f "$field" -v "$value" 2>&1) ||'
        + ' { printf "%s\\n" "$out" >&2; die "dcgmi could not restore field $field=$value on GPU $gpu"; }\n'
        + 'done <"$saved"\n'
        + 'rm -f -- "$saved"\n'
    )
    return inject, revert


# --- compute mode ----------------------------------------------------------------------------------------------


def compute_mode_commands(gpus: Sequence[int], mode: str, key: str, state_dir: str = "") -> tuple[str, str]:
    """``nvidia-smi -c MODE -i N,...``; the inject saves each GPU's mode first, the revert sets each back."""
    gpus = check_gpus(gpus)
    wanted = mode.upper() if isinstance(mode, str) else mode
    if wanted not in COMPUTE_MODES:
        raise ValueError(f"mode must be one of {', '.join(COMPUTE_MODES)}, got {mode!r}")
    saved = _saved(state_dir, key, "compute-mode")
    inject = (
        _save_prelude(saved)
        + ': >"$saved.tmp" || die "cannot write $saved.tmp"\n'
        + f"for gpu in {_words(gpus)}; do\n"
        + '  out=$(nvidia-smi --query-gpu=compute_mode --format=csv,noheader -i "$gpu" 2>&1) ||'
        + ' { printf "%s\\n" "$out" >&2; rm -f -- "$saved.tmp"; die "cannot read the compute mode of GPU $gpu"; }\n'
        + f'  case "$out" in {"|".join(_QUERY_MODES)}) ;; *) rm -f -- "$saved.tmp";'
        + " die \"GPU $gpu reports compute mode '$out'\";; esac\n"
        + '  echo "$gpu $out" >>"$saved.tmp"\n'
        + "done\n"
        + 'mv -f -- "$saved.tmp" "$saved" || die "cannot write $saved"\n'
        + f"out=$(nvidia-smi -c {wanted} -i {_listing(gpus)} 2>&1) ||"
        + f' {{ printf "%s\\n" "$out" >&2; die "nvidia-smi -c {wanted} failed"; }}\n'
        + 'printf "%s\\n" "$out"\n'
    )
    revert = (
        _PRELUDE
        + f"saved={_q(saved)}\n"
        + '[ -e "$saved" ] || exit 0\n'
        + "rc=0\n"
        + "while read -r gpu mode; do\n"
        + '  out=$(nvidia-smi -c "${mode^^}" -i "$gpu" 2>&1) || { printf "%s\\n" "$out" >&2; rc=3; }\n'
        + 'done <"$saved"\n'
        + '[ "$rc" -eq 0 ] || die "compute mode not restored on every GPU; $saved kept"\n'
        + 'rm -f -- "$saved"\n'
    )
    return inject, revert


# --- GPU services ----------------------------------------------------------------------------------------------


def check_services(services: Sequence[str] | None) -> tuple[str, ...]:
    """GPU services by unit name without ``.service``, only those of GPU_SERVICES, in stopping order (None: all)."""
    if services is None:
        return GPU_SERVICES
    if isinstance(services, str | bytes) or not isinstance(services, Sequence) or not services:
        raise ValueError(f"services must be a non-empty list of GPU services, got {services!r}")
    names = [s.removesuffix(".service") if isinstance(s, str) else s for s in services]
    unknown = [s for s in names if s not in GPU_SERVICES]
    if unknown:
        raise ValueError(f"services may name only {', '.join(GPU_SERVICES)}; refused: {unknown!r}")
    return tuple(s for s in GPU_SERVICES if s in names)  # stopping order


def services_stop_commands(services: Sequence[str] | None, key: str, state_dir: str = "") -> tuple[str, str]:
    """Stop the GPU services named (default: all of GPU_SERVICES) that are running; services not installed are
    skipped, and none running at all is a failure. The inject first saves which of ALL the GPU services were
    active (so a dependent that stops along with one is brought back too); the revert starts, in the reverse
    order, every saved service that is not active."""
    names = check_services(services)
    saved = _saved(state_dir, key, "services")
    inject = (
        _save_prelude(saved)
        + ': >"$saved.tmp" || die "cannot write $saved.tmp"\n'
        + f"for s in {_words(GPU_SERVICES)}; do\n"
        + '  if systemctl is-active --quiet "$s.service"; then echo "$s" >>"$saved.tmp"; fi\n'
        + "done\n"
        + 'mv -f -- "$saved.tmp" "$saved" || die "cannot write $saved"\n'
        + "stopped=0\n"
        + f"for s in {_words(names)}; do\n"
        + '  systemctl is-active --quiet "$s.service" || continue\n'
        + '  out=$(systemctl stop "$s.service" 2>&1) || { printf "%s\\n" "$out" >&2; die "cannot stop $s.service"; }\n'
        + '  echo "chaosgpu: stopped $s.service"; stopped=$((stopped + 1))\n'
        + "done\n"
        + f'[ "$stopped" -gt 0 ] || die {_q("none of " + ", ".join(names) + " is running")}\n'
    )
    revert = (
        _PRELUDE
        + f"saved={_q(saved)}\n"
        + '[ -e "$saved" ] || exit 0\n'
        + "rc=0\n"
        + 'for s in $(tac -- "$saved"); do\n'
        + '  systemctl is-active --quiet "$s.service" && continue\n'
        + '  out=$(systemctl start "$s.service" 2>&1) || { printf "%s\\n" "$out" >&2; rc=3; }\n'
        + "done\n"
        + '[ "$rc" -eq 0 ] || die "not every service came back; $saved kept"\n'
        + 'rm -f -- "$saved"\n'
    )
    return inject, revert


# --- killing the processes on GPUs ----------------------------------------------------------------------------


def kill_commands(gpus: Sequence[int], signal: str = "KILL", only_pids: Sequence[int] = ()) -> tuple[str, str]:
    """Send ``signal`` to every compute process nvidia-smi lists on the GPUs (``--query-compute-apps=pid,gpu_uuid``
    filtered by each GPU's UUID), or only to those of ``only_pids``. Refuses (kills nothing) when the list holds PID
    1, sshd, systemd or init; fails when there is nothing to kill; after SIGKILL, waits up to 10 s for the processes
    to be gone. Not revertible: the revert is a recorded no-op."""
    gpus = check_gpus(gpus)
    sig = signal.upper().removeprefix("SIG") if isinstance(signal, str) else signal
    if sig not in KILL_SIGNALS:
        raise ValueError(f"signal must be one of {', '.join(KILL_SIGNALS)}, got {signal!r}")
    if not all(_is_int(p) and p > 1 for p in only_pids):
        raise ValueError(f"only_pids must be process ids above 1, got {list(only_pids)!r}")
    only = f'case " {_words(only_pids)} " in *" $pid "*) ;; *) continue;; esac\n  ' if only_pids else ""
    inject = (
        _PRELUDE
        + 'uuids=" "\n'
        + f"for gpu in {_words(gpus)}; do\n"
        + '  out=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$gpu" 2>&1) ||'
        + ' { printf "%s\\n" "$out" >&2; die "cannot read the UUID of GPU $gpu"; }\n'
        + '  uuids="$uuids$out "\n'
        + "done\n"
        + "apps=$(nvidia-smi --query-compute-apps=pid,gpu_uuid --format=csv,noheader 2>&1) ||"
        + ' { printf "%s\\n" "$apps" >&2; die "cannot list the compute processes"; }\n'
        + 'pids=" "\n'
        + "while IFS=', ' read -r pid uuid; do\n"
        + '  case "$pid" in ""|*[!0-9]*) continue;; esac\n'
        + f"  {only}"
        + 'case "$uuids" in *" $uuid "*) ;; *) continue;; esac\n'
        + '  case "$pids" in *" $pid "*) ;; *) pids="$pids$pid ";; esac\n'
        + 'done <<<"$apps"\n'
        + f'[ -n "${{pids// /}}" ] || die "no compute processes on GPU(s) {_listing(gpus)}"\n'
        + "declare -A comm_of\n"
        + "for pid in $pids; do\n"
        + "  comm=$(cat /proc/$pid/comm 2>/dev/null || echo '?')\n"
        + '  case "$comm" in sshd|systemd|init) die "refusing to kill pid $pid ($comm): never sshd or PID 1";; esac\n'
        + '  [ "$pid" -gt 1 ] || die "refusing to kill pid $pid: never PID 1"\n'
        + "  comm_of[$pid]=$comm\n"
        + "done\n"
        + "for pid in $pids; do\n"
        + f'  kill -s {sig} "$pid" 2>/dev/null && echo "chaosgpu: sent SIG{sig} to pid $pid (${{comm_of[$pid]}})"\n'
        + "done\n"
        + "for _ in $(seq 50); do\n"
        # Gone, or a zombie waiting for its parent: it no longer runs (nor holds the GPU).
        + '  alive=""; for pid in $pids; do\n'
        + "    s=$(sed -n 's/.*) \\(.\\).*/\\1/p' /proc/$pid/stat 2>/dev/null)\n"
        + '    [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ] && alive="$alive $pid"\n'
        + "  done\n"
        + '  [ -z "$alive" ] && break; sleep 0.2\n'
        + "done\n"
        + 'if [ -n "$alive" ]; then\n'
        + f'  [ {sig} = KILL ] && die "still running 10 s after SIGKILL:$alive"\n'
        + f'  echo "chaosgpu: still running 10 s after SIG{sig}:$alive"\n'
        + "fi\n"
    )
    revert = _noop("killed processes are not brought back; restarting the work is its scheduler's job")
    return inject, revert


# --- GPU load: memory pressure and compute burn -----------------------------------------------------------------

# The load program chaosgpu writes on a host with a CUDA stack (PyTorch or CuPy in the host's python): it holds GPU
# memory and, for a burn, keeps the GPUs busy with matrix products, until SIGTERM (the revert stops its unit).
LOADER_PROGRAM = r'''"""chaosgpu GPU load: hold GPU memory and, with --burn, keep the GPUs busy, until SIGTERM.

Written by chaosgpu for one fault and run by its transient systemd unit chaosgpu-gpuload-<key>; the fault's revert
stops the unit. GPUs are nvidia-smi's indices: the unit sets CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA numbers them alike.
"""
import argparse
import os
import signal
import sys
import time

BURN_N = 8192  # three float32 matrices of BURN_N x BURN_N per GPU: 768 MiB


def main():
    parser = argparse.ArgumentParser(prog="chaosgpu-gpuload")
    parser.add_argument("--tool", choices=("torch", "cupy"), required=True)
    parser.add_argument("--gpus", required=True)
    parser.add_argument("--memory-mib", type=int, default=0)
    parser.add_argument("--memory-fraction", type=float, default=0.0)
    parser.add_argument("--burn", action="store_true")
    parser.add_argument("--ready-file", default="")
    parser.add_argument("--seconds", type=float, default=0.0)
    args = parser.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    gpus = [int(g) for g in args.gpus.split(",")]
    load = TorchLoad() if args.tool == "torch" else CupyLoad()
    for gpu in gpus:
        free, total = load.memory(gpu)
        if args.burn:
            load.matrices(gpu)
            free, total = load.memory(gpu)
        want = args.memory_mib << 20 if args.memory_mib else int(total * args.memory_fraction)
        if want > free:
            sys.exit(f"GPU {gpu}: {want >> 20} MiB wanted, {free >> 20} MiB free")
        if want:
            load.hold(gpu, want)
    if args.burn:
        load.burn()
    if args.ready_file:
        with open(args.ready_file, "w") as ready:
            ready.write(f"{os.getpid()}\n")
    print(f"chaosgpu-gpuload: holding GPU(s) {args.gpus}" + (" and burning" if args.burn else ""), flush=True)
    deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
    while not stop and (deadline is None or time.monotonic() < deadline):
        if args.burn:
            load.burn()
        else:
            time.sleep(0.2)


class TorchLoad:
    def __init__(self):
        import torch

        self.torch = torch
        self.held = []
        self.work = []

    def memory(self, gpu):
        return self.torch.cuda.mem_get_info(gpu)

    def hold(self, gpu, size):
        self.held.append(self.torch.empty(size, dtype=self.torch.uint8, device=f"cuda:{gpu}"))

    def matrices(self, gpu):
        device = f"cuda:{gpu}"
        a, b = (self.torch.rand(BURN_N, BURN_N, device=device) for _ in range(2))
        self.work.append((a, b, self.torch.empty_like(a)))

    def burn(self):
        for _ in range(8):
            for a, b, c in self.work:
                self.torch.mm(a, b, out=c)
        for a, _, _ in self.work:
            self.torch.cuda.synchronize(a.device)


class CupyLoad:
    def __init__(self):
        import cupy

        self.cupy = cupy
        self.held = []
        self.work = []

    def memory(self, gpu):
        with self.cupy.cuda.Device(gpu):
            return self.cupy.cuda.runtime.memGetInfo()

    def hold(self, gpu, size):
        with self.cupy.cuda.Device(gpu):
            self.held.append(self.cupy.empty(size, dtype=self.cupy.uint8))

    def matrices(self, gpu):
        with self.cupy.cuda.Device(gpu):
            a, b = (self.cupy.random.random((BURN_N, BURN_N), dtype=self.cupy.float32) for _ in range(2))
            self.work.append((gpu, a, b, self.cupy.empty_like(a)))

    def burn(self):
        for _ in range(8):
            for gpu, a, b, c in self.work:
                with self.cupy.cuda.Device(gpu):
                    self.cupy.matmul(a, b, out=c)
        for gpu, _, _, _ in self.work:
            with self.cupy.cuda.Device(gpu):
                self.cupy.cuda.Device(gpu).synchronize()


if __name__ == "__main__":
    main()
'''


def load_unit(key: str) -> str:
    """The transient systemd unit (``.service``) a GPU load runs as."""
    return f"chaosgpu-gpuload-{_check_key(key)}"


@dataclass(frozen=True)
class _Load:
    gpus: tuple[int, ...]
    memory_mib: int
    memory_ppm: int  # memory fraction in millionths
    burn: bool


def _check_load(gpus: Sequence[int], memory_mib: int, memory_fraction: float, burn: bool) -> _Load:
    gpus = check_gpus(gpus)
    if not _is_int(memory_mib) or memory_mib < 0:
        raise ValueError(f"memory_mib must be a whole number of MiB (0: use memory_fraction), got {memory_mib!r}")
    if isinstance(memory_fraction, bool) or not isinstance(memory_fraction, int | float):
        raise ValueError(f"memory_fraction must be a number between 0 and 1, got {memory_fraction!r}")
    if not 0 <= memory_fraction <= 1:
        raise ValueError(f"memory_fraction must be between 0 and 1, got {memory_fraction!r}")
    if memory_mib and memory_fraction:
        raise ValueError("give memory_mib or memory_fraction, not both")
    if not burn and not memory_mib and not memory_fraction:
        raise ValueError("memory pressure needs memory_mib or memory_fraction above 0")
    return _Load(gpus, int(memory_mib), round(memory_fraction * 1_000_000), bool(burn))


def load_commands(  # noqa: PLR0913 - one fault's whole description, keyword-only
    gpus: Sequence[int],
    *,
    key: str,
    memory_mib: int = 0,
    memory_fraction: float = 0.0,
    burn: bool = False,
    tool: str = "auto",
    python: str = "python3",
    max_runtime_s: int = 3600,
    state_dir: str = "",
) -> tuple[str, str]:
    """Hold GPU memory (``memory_mib`` on each GPU, or ``memory_fraction`` of each GPU's total) and, with ``burn``,
    keep the GPUs busy, as the transient unit ``chaosgpu-gpuload-<key>`` (systemd-run); the revert stops the unit.

    ``tool``: ``torch`` or ``cupy`` (the load program above, run by ``python``), ``gpusim-hog`` (the lab simulator's
    stand-in for a CUDA job), or ``auto``: the first of those the host has. The inject waits until the load holds
    its GPUs (the program's ready file, or nvidia-smi listing the hog on every GPU) and fails with the unit's
    journal when it does not. The unit also stops itself after ``max_runtime_s`` (RuntimeMaxSec), a backstop
    behind the fault's deadline."""
    load = _check_load(gpus, memory_mib, memory_fraction, burn)
    if tool not in LOAD_TOOLS:
        raise ValueError(f"chaosgpu_gpu_load_tool must be one of {', '.join(LOAD_TOOLS)}, got {tool!r}")
    python = _check_program(python, "chaosgpu_gpu_load_python")
    if not _is_int(max_runtime_s) or max_runtime_s <= 0:
        raise ValueError(f"max_runtime_s must be a positive whole number, got {max_runtime_s!r}")
    unit = load_unit(key)
    program = _saved(state_dir, key, "gpuload.py")
    ready = _saved(state_dir, key, "ready")
    listing = _listing(load.gpus)
    size = f"--memory-mib {load.memory_mib}" if load.memory_mib else f"--memory-fraction {load.memory_ppm / 1e6:.6f}"
    hog_size = (
        f"mib={load.memory_mib}\n"
        if load.memory_mib or not load.memory_ppm
        else (
            f'  total=""\n  for gpu in {_words(load.gpus)}; do\n'
            '    t=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i "$gpu" 2>&1) ||'
            ' { printf "%s\\n" "$t" >&2; die "cannot read the memory of GPU $gpu"; }\n'
            '    { [ -z "$total" ] || [ "$t" -lt "$total" ]; } && total=$t\n'
            "  done\n"
            f"  mib=$((total * {load.memory_ppm} / 1000000))\n"
        )
    )
    run = (
        f'systemd-run --unit {unit} --collect --quiet --description "chaosgpu: GPU load on GPU(s) {listing}"'
        f" --property=RuntimeMaxSec={max_runtime_s} --property=TimeoutStopSec={LOAD_STOP_TIMEOUT_S}"
        " --setenv=CUDA_DEVICE_ORDER=PCI_BUS_ID"
    )
    inject = (
        _save_prelude(program)
        + f"tool={_q(tool)}\npy=$(command -v {_q(python)} || true)\n"
        + 'if [ "$tool" = auto ]; then\n'
        + '  if [ -n "$py" ] && "$py" -c \'import torch, sys; sys.exit(not torch.cuda.is_available())\' 2>/dev/null;'
        + " then tool=torch\n"
        + '  elif [ -n "$py" ] && "$py" -c \'import cupy; cupy.cuda.runtime.getDeviceCount()\' 2>/dev/null;'
        + " then tool=cupy\n"
        + "  elif command -v gpusim-hog >/dev/null; then tool=gpusim-hog\n"
        + f'  else die "no CUDA stack for a GPU load: neither torch nor cupy imports in {python}, and no gpusim-hog"\n'
        + "  fi\n"
        + "fi\n"
        + 'case "$tool" in\n'
        + "torch|cupy)\n"
        + f'  [ -n "$py" ] || die "no {python} on this host"\n'
        + f"  cat >\"$saved\" <<'CHAOSGPU_LOADER'\n{LOADER_PROGRAM}CHAOSGPU_LOADER\n"
        + f'  out=$({run} "$py" "$saved" --tool "$tool" --gpus {listing} {size}'
        + f"{' --burn' if load.burn else ''} --ready-file {_q(ready)} 2>&1) ||"
        + ' { printf "%s\\n" "$out" >&2; die "systemd-run could not start the load"; } ;;\n'
        + "gpusim-hog)\n"
        + f"  {hog_size}"
        + '  hog=$(command -v gpusim-hog) || die "no gpusim-hog on this host"\n'
        + f'  out=$({run} "$hog" --gpu {listing} --memory-mib "$mib" --util {100 if load.burn else 0}'
        + " --name chaosgpu-gpuload 2>&1) ||"
        + ' { printf "%s\\n" "$out" >&2; die "systemd-run could not start the load"; } ;;\n'
        + '*) die "unknown load tool $tool" ;;\n'
        + "esac\n"
        + _wait_for_load(unit, load.gpus, ready)
    )
    revert = (
        _PRELUDE
        + f"unit={unit}.service\n"
        + 'if [ "$(systemctl show -p LoadState --value "$unit" 2>/dev/null)" = loaded ]; then\n'
        + '  out=$(systemctl stop "$unit" 2>&1) || { printf "%s\\n" "$out" >&2; die "cannot stop $unit"; }\n'
        + "fi\n"
        + f"rm -f -- {_q(program)} {_q(ready)}\n"
    )
    return inject, revert


def _wait_for_load(unit: str, gpus: Sequence[int], ready: str) -> str:
    """Wait until the load holds its GPUs; fail with the unit's journal when it stops first or takes too long."""
    return (
        f"unit={unit}.service\n"
        + 'uuids=""\n'
        + f"for gpu in {_words(gpus)}; do\n"
        + '  u=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$gpu" 2>&1) ||'
        + ' { printf "%s\\n" "$u" >&2; die "cannot read the UUID of GPU $gpu"; }\n'
        + '  uuids="$uuids $u"\n'
        + "done\n"
        + f"until_s=$((SECONDS + {LOAD_READY_WAIT_S}))\n"
        + 'while [ "$SECONDS" -lt "$until_s" ]; do\n'
        + '  state=$(systemctl show -p ActiveState --value "$unit" 2>/dev/null)\n'
        + '  case "$state" in active|activating|reloading) ;; *)\n'
        + '    journalctl -u "$unit" -n 20 --no-pager -o cat >&2 2>/dev/null\n'
        + '    die "the load $unit ended before it held its GPUs (state: ${state:-gone})";; esac\n'
        + '  if [ "$tool" = gpusim-hog ]; then\n'
        + '    pid=$(systemctl show -p MainPID --value "$unit" 2>/dev/null)\n'
        + "    apps=$(nvidia-smi --query-compute-apps=pid,gpu_uuid --format=csv,noheader 2>/dev/null)\n"
        + '    held=yes; for u in $uuids; do case "$apps" in *"$pid, $u"*) ;; *) held=no;; esac; done\n'
        + f"  else held=no; [ -s {_q(ready)} ] && held=yes\n"
        + "  fi\n"
        + '  if [ "$held" = yes ]; then echo "chaosgpu: $unit ($tool) holds GPU(s)$uuids"; exit 0; fi\n'
        + "  sleep 0.2\n"
        + "done\n"
        + 'journalctl -u "$unit" -n 20 --no-pager -o cat >&2 2>/dev/null\n'
        + f'die "the load $unit did not hold its GPUs within {LOAD_READY_WAIT_S} s"\n'
    )


# --- probes: commands -------------------------------------------------------------------------------------------


def gpu_list_command() -> str:
    return "nvidia-smi -L 2>&1"


def gpu_health_command() -> str:
    return f"nvidia-smi --query-gpu={','.join(GPU_HEALTH_FIELDS)} --format=csv,noheader,nounits 2>&1"


def compute_apps_command() -> str:
    fields = "pid,gpu_uuid,process_name,used_gpu_memory"
    return f"nvidia-smi --query-compute-apps={fields} --format=csv,noheader,nounits 2>&1"


def dcgm_health_command() -> str:
    return "dcgmi health -c -j 2>&1"


# Reads the kernel-log source on the host: /dev/kmsg records (non-blocking, from the oldest the kernel still holds)
# or a file of "[uptime] line" lines; prints one JSON object per XID line at or after SINCE (epoch seconds on the
# host's clock), then the host's clock. Kernel stamps are seconds since boot: boot = now - /proc/uptime.
_KERNEL_LOG_READER = r"""
import json, os, re, stat, sys, time
path, since = sys.argv[1], float(sys.argv[2])
XID = re.compile(r"NVRM: Xid \(PCI:([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2})[^)]*\): (\d+)")
with open("/proc/uptime") as f:
    up = float(f.read().split()[0])
now = time.time()
boot = now - up
def emit(stamp, text):
    m = XID.search(text)
    if m and (stamp is None or boot + stamp >= since):
        print(json.dumps({"time": None if stamp is None else round(boot + stamp, 6), "pci": m.group(1).lower(),
                          "xid": int(m.group(2)), "line": text[m.start():]}))
if stat.S_ISCHR(os.stat(path).st_mode):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    while True:
        try:
            record = os.read(fd, 16384).decode("utf-8", "replace")
        except BlockingIOError:
            break
        except BrokenPipeError:
            continue
        head, _, text = record.partition(";")
        fields = head.split(",")
        stamp = int(fields[2]) / 1e6 if len(fields) > 2 and fields[2].isdigit() else None
        emit(stamp, text.split("\n")[0])
else:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - (8 << 20)))
        for raw in f.read().decode("utf-8", "replace").splitlines():
            m = re.match(r"\[\s*(\d+\.\d+)\]\s*(.*)", raw)
            emit(float(m.group(1)), m.group(2)) if m else emit(None, raw)
print(json.dumps({"now": now}))
"""


def kernel_log_command(kmsg_path: str = DEFAULT_KMSG_PATH, since: float = 0.0, python: str = "python3") -> str:
    """Read the XID lines of the kernel-log source at or after ``since`` (epoch seconds, host clock); the command
    needs root for /dev/kmsg where dmesg is restricted (the caller adds sudo)."""
    if not isinstance(kmsg_path, str) or not _PATH.fullmatch(kmsg_path):
        raise ValueError(f"chaosgpu_kmsg_path must be an absolute path, got {kmsg_path!r}")
    python = _check_program(python, "python")
    return f"{python} -c {_q(_KERNEL_LOG_READER)} {_q(kmsg_path)} {float(since)!r}"


# --- probes: parsers ---------------------------------------------------------------------------------------------

_LOST = re.compile(
    r"Unable to determine the device handle for GPU\s*([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])"
    r":\s*(.*)"
)
_GPU_LINE = re.compile(r"^GPU (\d+): (.+?) \(UUID: (\S+)\)\s*$")
_NA = ("[N/A]", "N/A", "[Not Supported]", "[Unknown Error]", "[GPU is lost]")


@dataclass(frozen=True)
class GpuList:
    """What ``nvidia-smi -L`` says: the GPUs it lists (index, name, UUID) and those it could not reach (lost:
    PCI bus id -> reason), plus anything else it printed (errors)."""

    gpus: tuple[tuple[int, str, str], ...]
    lost: dict[str, str]
    other: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.gpus)


def _lost_line(line: str, lost: dict[str, str]) -> bool:
    match = _LOST.search(line)
    if match:
        lost[match.group(1).upper()] = match.group(2).strip()
    return bool(match)


def parse_gpu_list(text: str) -> GpuList:
    gpus: list[tuple[int, str, str]] = []
    other: list[str] = []
    lost: dict[str, str] = {}
    for line in text.splitlines():
        match = _GPU_LINE.match(line.strip())
        if match:
            gpus.append((int(match.group(1)), match.group(2), match.group(3)))
        elif line.strip() and not _lost_line(line, lost):
            other.append(line.strip())
    return GpuList(tuple(gpus), lost, tuple(other))


def _value(text: str) -> Any:
    text = text.strip()
    if text in _NA:
        return None
    if text in ("Yes", "No"):
        return text == "Yes"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class GpuHealth:
    """The health query's rows (one dict per GPU, GPU_HEALTH_FIELDS as keys), lost GPUs and other output."""

    gpus: tuple[dict[str, Any], ...]
    lost: dict[str, str]
    other: tuple[str, ...]


def parse_gpu_health(text: str, fields: Sequence[str] = GPU_HEALTH_FIELDS) -> GpuHealth:
    rows: list[dict[str, Any]] = []
    other: list[str] = []
    lost: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == len(fields) and cells[0].isdigit():
            rows.append({name: _value(cell) for name, cell in zip(fields, cells, strict=True)})
        elif line.strip() and not _lost_line(line, lost):
            other.append(line.strip())
    return GpuHealth(tuple(rows), lost, tuple(other))


def parse_compute_apps(text: str) -> list[dict[str, Any]]:
    """``--query-compute-apps=pid,gpu_uuid,process_name,used_gpu_memory --format=csv,noheader,nounits`` rows."""
    apps = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) >= 2 and cells[0].isdigit() and cells[1].startswith(("GPU-", "MIG-")):  # noqa: PLR2004
            app: dict[str, Any] = {"pid": int(cells[0]), "gpu_uuid": cells[1]}
            if len(cells) >= 3:  # noqa: PLR2004
                app["process_name"] = cells[2]
            if len(cells) >= 4:  # noqa: PLR2004
                app["used_memory_mib"] = _value(cells[3])
            apps.append(app)
    return apps


@dataclass(frozen=True)
class DcgmHealth:
    """``dcgmi health -c -j``: the overall health, and per GPU (id as dcgmi prints it) its health and incidents
    (system -> {"health", "messages"})."""

    overall: str
    gpus: dict[str, dict[str, Any]]


def _messages(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "values" and isinstance(value, list):
                found.extend(str(v) for v in value)
            elif key == "children" or isinstance(value, dict):
                found.extend(_messages(value))
    return found


def parse_dcgm_health(text: str) -> DcgmHealth:
    """Parse ``dcgmi health -c -j`` (raises ValueError when it is not that)."""
    start = text.find("{")
    if start < 0:
        raise ValueError(f"no JSON in dcgmi's output: {text.strip()[:500]!r}")
    data = json.loads(text[start:])
    body = data.get("body") if isinstance(data, dict) else None
    if not isinstance(body, dict) or "Overall Health" not in body:
        raise ValueError(f"dcgmi health JSON without body/Overall Health: {text.strip()[:500]!r}")
    overall = str(body["Overall Health"].get("value", ""))
    gpus: dict[str, dict[str, Any]] = {}
    for gpu_id, node in ((body.get("GPU") or {}).get("children") or {}).items():
        systems = {
            str(name): {"health": str(sub.get("value", "")), "messages": _messages(sub)}
            for name, sub in (node.get("children") or {}).items()
            if isinstance(sub, dict)
        }
        gpus[str(gpu_id)] = {"health": str(node.get("value", "")), "incidents": systems}
    return DcgmHealth(overall, gpus)


@dataclass(frozen=True)
class KernelLogXid:
    """One XID line of the kernel log: when (epoch seconds on the host's clock; None for an unstamped line), the
    GPU's PCI address as the driver writes it (``0000:18:00``), the XID, the line."""

    time: float | None
    pci: str
    xid: int
    line: str


def parse_kernel_log(text: str) -> tuple[list[KernelLogXid], float | None]:
    """The reader's output: XID lines in log order, and the host's clock when it read them."""
    found: list[KernelLogXid] = []
    now: float | None = None
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        data = json.loads(line)
        if "now" in data:
            now = float(data["now"])
        else:
            found.append(KernelLogXid(data["time"], data["pci"], int(data["xid"]), data["line"]))
    return found, now
