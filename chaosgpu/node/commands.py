"""The shell commands of the node faults: what runs on a host to inject each fault, and what reverts it.

Every pair here goes to ``chaosgpu.activity.inject_fault``: the ledger records both, arms the deadline, then runs
the inject (as root, ``bash -c``, in the same call); the revert runs once, at the latest at the deadline. Each
inject checks what it needs on the host right before acting and refuses (exit 3, the reason on stderr) when the
host does not allow it; the ledger then runs the revert at once, which finds nothing to undo.

What a fault adds on a host is named after the fault's id, which the ledger gives both commands in
``$CHAOSGPU_FAULT_ID``: ``chaosgpu status`` shows the id, and the revert finds exactly what its inject added.

Exact reverts. The state a revert restores is measured by the inject, in the same call, and kept on the host in
a state file (``STATE_DIR/<fault id>``): the services that were running and that the fault stopped, which are
exactly the ones the revert starts again. A revert removes its state file once it has succeeded; run again, it
finds none and does nothing. Faults whose state is a thing that exists only while the fault lasts (the stress
unit, the fill file) need no state file: the revert removes that thing.

Load (CPU and memory stress) comes from a small Python program (``BURNER``) run as a transient systemd service
``chaosgpu-<fault id>`` (``chaosgpu-stress-cpu-...``, ``chaosgpu-stress-memory-...``), not from stress-ng:
stress-ng is not on the hosts chaosgpu targets (the lab image does not carry it), while python3 is on every host
Ansible manages. The unit is ``Type=notify``: the program says READY once its workers run or its memory is
resident, so the inject returns with the load in place. ``RuntimeMaxSec`` bounds the unit by itself as well, a
minute after the fault's deadline.
"""

import re
import shlex

from chaoslib.exceptions import ActivityFailed

__all__ = [
    "BURNER",
    "PROTECTED_PROCESS_NAMES",
    "SIGNALS",
    "STATE_DIR",
    "check_path",
    "check_percent",
    "check_process_pattern",
    "check_service",
    "check_signal",
    "check_whole",
    "fill_disk_commands",
    "fill_file",
    "kill_process_commands",
    "kill_service_commands",
    "state_file",
    "stop_service_commands",
    "stress_commands",
    "stress_unit",
]

STATE_DIR = "/var/lib/chaosgpu/state"
# Signals a kill fault may send. STOP/CONT and friends are not faults a revert could undo by starting a unit.
SIGNALS = ("HUP", "INT", "QUIT", "ABRT", "KILL", "USR1", "USR2", "TERM")
# kill_process refuses a pattern that matches any of these (on the controller), and any process it would hit
# whose name is sshd or starts with systemd, or PID 1 (on the host, before anything is sent).
PROTECTED_PROCESS_NAMES = (
    "sshd",
    "/usr/sbin/sshd",
    "sshd: operator@notty",
    "systemd",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
    "systemd-journald",
    "systemd-logind",
    "init",
    "/sbin/init",
)
# Services a stop or kill fault refuses: the way in (ssh), systemd's own, the bus systemctl needs, and chaosgpu's
# units (the deadline timers' services, the stress units).
_PROTECTED_SERVICES = re.compile(r"(ssh|sshd|dbus|dbus-broker|systemd-.*|chaosgpu-.*)\.service")
_UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]{1,200}")
_UNIT_TYPES = (".service", ".socket", ".timer", ".target", ".mount", ".path", ".slice", ".scope", ".device", ".swap")
_PATH = re.compile(r"/[A-Za-z0-9_./@+-]*")
_REFUSE = 3  # what an inject exits with when the host does not allow the fault

_q = shlex.quote


def state_file(fault_id: str, state_dir: str = STATE_DIR) -> str:
    """Where a fault's inject keeps what its revert restores."""
    return f"{state_dir}/{fault_id}"


def stress_unit(fault_id: str) -> str:
    """The transient service of a stress fault."""
    return f"chaosgpu-{fault_id}.service"


def fill_file(path: str, fault_id: str) -> str:
    """The file a fill-disk fault allocates in directory ``path``."""
    return f"{path.rstrip('/')}/chaosgpu-{fault_id}"


# --- input checks (on the controller, before any host is reached) ----------------------------------------------


def check_service(service: str, parameter: str = "service", *, protected_ok: bool = False) -> str:
    """The systemd unit name of ``service`` (``.service`` added when it has no unit type), refused when it is not
    a unit name or, for faults, not a service or a protected one."""
    if not isinstance(service, str) or not _UNIT.fullmatch(service) or service.startswith("-"):
        raise ActivityFailed(f"{parameter} must be a systemd unit name (letters, digits, ':_.@-\\'), got {service!r}")
    unit = service if service.endswith(_UNIT_TYPES) else f"{service}.service"
    if protected_ok:
        return unit
    if not unit.endswith(".service"):
        raise ActivityFailed(f"{parameter} must be a service, got {service!r}")
    if _PROTECTED_SERVICES.fullmatch(unit):
        raise ActivityFailed(
            f"{parameter}={service!r} is refused: chaosgpu never stops or kills ssh, dbus, systemd's own services "
            "or its own units"
        )
    return unit


def check_signal(signal: str, parameter: str = "signal") -> str:
    """``SIGTERM``, ``TERM`` or ``term`` as ``SIGTERM``; refused unless one of SIGNALS."""
    name = signal.upper().removeprefix("SIG") if isinstance(signal, str) else ""
    if name not in SIGNALS:
        raise ActivityFailed(f"{parameter} must be one of {', '.join('SIG' + s for s in SIGNALS)}, got {signal!r}")
    return f"SIG{name}"


def check_process_pattern(pattern: str, parameter: str = "process") -> str:
    """A pgrep pattern (an extended regular expression), refused when empty, not a regular expression, or when it
    matches sshd, systemd or init."""
    if not isinstance(pattern, str) or not pattern.strip() or "\n" in pattern:
        raise ActivityFailed(f"{parameter} must be a non-empty pgrep pattern on one line, got {pattern!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ActivityFailed(f"{parameter}={pattern!r} is not a regular expression: {err}") from None
    hits = [name for name in PROTECTED_PROCESS_NAMES if compiled.search(name)]
    if hits:
        raise ActivityFailed(
            f"{parameter}={pattern!r} is refused: it matches {', '.join(hits)}; chaosgpu never kills sshd, systemd "
            "or PID 1"
        )
    return pattern


def check_path(path: str, parameter: str = "path") -> str:
    """An absolute directory path without '..', outside /proc, /sys and /dev; trailing '/' removed."""
    if not isinstance(path, str) or not _PATH.fullmatch(path) or ".." in path.split("/"):
        raise ActivityFailed(
            f"{parameter} must be an absolute path of letters, digits, '_./@+-' without '..', got {path!r}"
        )
    clean = re.sub(r"/+", "/", path).rstrip("/") or "/"
    if clean.split("/")[1] in ("proc", "sys", "dev"):
        raise ActivityFailed(f"{parameter}={path!r} is refused: not a place to fill (/proc, /sys, /dev)")
    return clean


def check_whole(parameter: str, value: int, minimum: int, maximum: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f"at least {minimum}" + (f" and at most {maximum}" if maximum is not None else "")
        raise ActivityFailed(f"{parameter} must be a whole number {bound}, got {value!r}")
    return value


def check_percent(parameter: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 100:  # noqa: PLR2004
        raise ActivityFailed(f"{parameter} must be a percentage from 0 to below 100, got {value!r}")
    return float(value)


# --- scripts ----------------------------------------------------------------------------------------------------


def _assign(**values: str | int) -> str:
    """The script's head: strict variables, C locale, the fault id required, then the values, quoted."""
    return (
        "set -u\nexport LC_ALL=C\n"
        + ': "${CHAOSGPU_FAULT_ID:?is not set: node faults run through the chaosgpu fault ledger}"\n'
        + "".join(f"{name}={_q(str(value))}\n" for name, value in values.items())
    )


# Start again the units a fault recorded as running before it (the state file), then forget them. Idempotent:
# without the state file there is nothing to do. A unit that does not start keeps the file, so a retry tries again.
_START_RECORDED = r"""
[ -e "$state" ] || exit 0
mapfile -t units < <(grep -v '^$' "$state")
# A unit stopped and started often (repeated game days, a benchmark) hits systemd's start limit; the revert restores
# what the fault changed, so the limit's failed state is cleared first.
[ "${#units[@]}" -eq 0 ] || systemctl reset-failed -- "${units[@]}" 2>/dev/null || true
if [ "${#units[@]}" -gt 0 ] && ! systemctl start -- "${units[@]}"; then
  echo "could not start ${units[*]} again on $HOSTNAME" >&2
  exit 1
fi
rm -f -- "$state"
"""

_STATE = 'state="$state_dir/$CHAOSGPU_FAULT_ID"\n'

_STRESS_UNIT = 'unit="chaosgpu-$CHAOSGPU_FAULT_ID.service"\n'
_FILL_FILE = 'file="$dir/chaosgpu-$CHAOSGPU_FAULT_ID"\n'

_REQUIRE_LOADED = rf"""
load=$(systemctl show -p LoadState --value -- "$unit" 2>/dev/null)
if [ "$load" != loaded ]; then
  echo "$unit is not a loaded unit on $HOSTNAME (LoadState=${{load:-unknown}})" >&2
  exit {_REFUSE}
fi
mkdir -p -m 0700 -- "$state_dir" || exit 1
"""

_RUNNING_SERVICES = (
    "systemctl list-units --type=service --state=active,activating,reloading --no-legend --plain "
    "| awk '{print $1}' | sort"
)


def stop_service_commands(unit: str, state_dir: str = STATE_DIR) -> tuple[str, str]:
    """``systemctl stop`` of ``unit``; the revert starts again what was running before and the stop stopped: the
    unit itself when it was running, and the services that went down with it (those that require it)."""
    inject = (
        _assign(unit=unit, state_dir=state_dir)
        + _STATE
        + _REQUIRE_LOADED
        + rf"""
was=$(systemctl show -p ActiveState --value -- "$unit")
before=$({_RUNNING_SERVICES})
case "$was" in
  active|activating|reloading) printf '%s\n' "$unit" >"$state" ;;
  *) : >"$state" ;;
esac
rc=0
systemctl stop -- "$unit" || rc=$?
after=$({_RUNNING_SERVICES})
comm -23 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep -vxF -e "$unit" -e '' >>"$state"
echo "stopped $unit on $HOSTNAME (it was $was); to start again: $(tr '\n' ' ' <"$state")"
exit "$rc"
"""
    )
    revert = _assign(state_dir=state_dir) + _STATE + _START_RECORDED
    return inject, revert


def kill_service_commands(unit: str, signal: str, state_dir: str = STATE_DIR) -> tuple[str, str]:
    """``systemctl kill --kill-who=main`` of a running ``unit``; refused on the host when it is not running. The
    revert makes sure the unit is running again (systemd may have restarted it already: then nothing to do)."""
    inject = (
        _assign(unit=unit, signal=signal, state_dir=state_dir)
        + _STATE
        + _REQUIRE_LOADED
        + rf"""
was=$(systemctl show -p ActiveState --value -- "$unit")
pid=$(systemctl show -p MainPID --value -- "$unit")
if [ "$was" != active ] || [ "${{pid:-0}}" -le 0 ]; then
  echo "$unit on $HOSTNAME is $was with no main process: nothing to kill" >&2
  exit {_REFUSE}
fi
printf '%s\n' "$unit" >"$state"
systemctl kill --kill-who=main --signal="$signal" -- "$unit" || exit 1
echo "sent $signal to $unit's main process $pid on $HOSTNAME"
"""
    )
    revert = _assign(state_dir=state_dir) + _STATE + _START_RECORDED
    return inject, revert


def kill_process_commands(
    pattern: str, signal: str, *, full: bool = False, state_dir: str = STATE_DIR
) -> tuple[str, str]:
    """``kill -s SIGNAL`` every process ``pgrep [-f] PATTERN`` finds, except this command's own ancestry; refused on
    the host when none matches or one is PID 1, sshd or systemd*. The revert starts again the (non-transient)
    services those processes belonged to that were running: a process outside a service is not brought back."""
    inject = (
        _assign(
            pattern=pattern,
            signal=signal.removeprefix("SIG"),
            full="-f" if full else "",
            state_dir=state_dir,
        )
        + _STATE
        + rf"""
parent() {{ ps -o ppid= -p "$1" 2>/dev/null | tr -d ' '; }}
# This command's own ancestry (the ledger's shells, sudo, the SSH session) carries the pattern: never a target.
mine=" "
p=$$
while [ -n "$p" ] && [ "$p" -gt 1 ]; do mine="$mine$p "; p=$(parent "$p"); done
pids=()
for p in $(pgrep $full -- "$pattern"); do
  case "$mine" in *" $p "*) continue ;; esac
  [ "$(parent "$p")" = "$$" ] && continue
  pids+=("$p")
done
if [ "${{#pids[@]}}" -eq 0 ]; then
  echo "no process on $HOSTNAME matches pgrep $full '$pattern'" >&2
  exit {_REFUSE}
fi
for p in "${{pids[@]}}"; do
  name=$(ps -o comm= -p "$p" 2>/dev/null) || continue
  if [ "$p" -eq 1 ] || [ "$name" = sshd ] || [[ "$name" == systemd* ]]; then
    echo "refused on $HOSTNAME: '$pattern' matches $name (pid $p); chaosgpu never kills sshd, systemd or PID 1" >&2
    exit {_REFUSE}
  fi
done
mkdir -p -m 0700 -- "$state_dir" || exit 1
: >"$state"
for p in "${{pids[@]}}"; do
  unit=$(ps -o unit= -p "$p" 2>/dev/null | tr -d ' ')
  case "$unit" in *.service) ;; *) continue ;; esac
  [ "$(systemctl show -p Transient --value -- "$unit" 2>/dev/null)" = no ] || continue
  systemctl is-active -q -- "$unit" && printf '%s\n' "$unit" >>"$state"
done
sort -u -o "$state" "$state"
killed=()
for p in "${{pids[@]}}"; do
  name=$(ps -o comm= -p "$p" 2>/dev/null)
  kill -s "$signal" "$p" 2>/dev/null && killed+=("$p ($name)")
done
if [ "${{#killed[@]}}" -eq 0 ]; then
  echo "the processes matching '$pattern' on $HOSTNAME were gone before the signal" >&2
  exit {_REFUSE}
fi
echo "sent SIG$signal on $HOSTNAME to ${{killed[*]}}; to start again: $(tr '\n' ' ' <"$state")"
"""
    )
    revert = _assign(state_dir=state_dir) + _STATE + _START_RECORDED
    return inject, revert


# The load generator, run by python3 on the host as ``python3 -c BURNER chaosgpu-stress MODE WORKERS AMOUNT`` (the
# label makes it easy to find: ``pgrep -f chaosgpu-stress``):
#   cpu    WORKERS processes (0: one per CPU this process may run on), each busy AMOUNT % of every 100 ms;
#   memory one process holding AMOUNT MiB, every page written (resident, not just reserved).
# It notifies systemd (READY=1) once the load is in place and runs until stopped. Written without '$' and '%' so
# that systemd leaves the command line as it is.
BURNER = """
import os, socket, sys, time

def ready():
    address = os.environ.get('NOTIFY_SOCKET', '')
    if address:
        if address.startswith('@'):
            address = chr(0) + address[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(b'READY=1')

def burn(busy_ms):
    while True:
        until = time.monotonic() + busy_ms / 1000
        while time.monotonic() < until:
            pass
        if busy_ms < 100:
            time.sleep((100 - busy_ms) / 1000)

mode, workers, amount = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == 'cpu':
    for _ in range(workers or len(os.sched_getaffinity(0))):
        if os.fork() == 0:
            burn(amount)
    ready()
    while True:
        os.wait()
else:
    held = [bytearray(b'x') * (1 << 20) for _ in range(amount)]
    ready()
    while True:
        time.sleep(3600)
"""


def stress_commands(
    mode: str,
    *,
    workers: int = 0,
    amount: int,
    runtime_max_s: int,
    min_available_mb: int = 0,
    min_available_ppm: int = 0,
    margin: str = "",
    meminfo: str = "/proc/meminfo",
) -> tuple[str, str]:
    """A transient service ``chaosgpu-<fault id>`` running BURNER; the revert stops it.

    ``mode`` cpu: ``workers`` processes at ``amount`` % load each. ``mode`` memory: ``amount`` MiB held, refused on
    the host when MemAvailable (read from ``meminfo`` right before) would fall below ``min_available_mb`` MiB or
    ``min_available_ppm`` millionths of MemTotal; the unit has OOMScoreAdjust=1000, so under pressure the kernel
    takes the burner first."""
    if mode not in ("cpu", "memory"):
        raise ActivityFailed(f"stress mode must be cpu or memory, got {mode!r}")
    what = f"{workers or 'one per CPU'} worker(s) at {amount} percent" if mode == "cpu" else f"{amount} MiB held"
    properties = [f"RuntimeMaxSec={runtime_max_s}", "TimeoutStartSec=45"]
    if mode == "memory":
        properties.append("OOMScoreAdjust=1000")
    run = (
        'systemd-run --unit "$unit" --quiet --collect --service-type=notify '
        + " ".join(f"-p {p}" for p in properties)
        + f" --description {_q(f'chaosgpu: {mode} stress, {what}')}"
        + f' -- python3 -c "$burner" chaosgpu-stress {mode} {workers} {amount}'
    )
    check_memory = rf"""
total_kb=$(awk '/^MemTotal:/ {{print $2}}' "$meminfo")
avail_kb=$(awk '/^MemAvailable:/ {{print $2}}' "$meminfo")
left_kb=$((avail_kb - amount * 1024))
if [ "$left_kb" -lt $((min_available_mb * 1024)) ] ||
   [ $((left_kb * 1000000)) -lt $((total_kb * min_available_ppm)) ]; then
  echo "refused on $HOSTNAME: holding $amount MiB would leave $((left_kb / 1024)) MiB of $((total_kb / 1024)) MiB" \
       "available, below the margin ($margin)" >&2
  exit {_REFUSE}
fi
"""
    inject = (
        _assign(
            burner=BURNER,
            amount=amount,
            min_available_mb=min_available_mb,
            min_available_ppm=min_available_ppm,
            margin=margin,
            meminfo=meminfo,
        )
        + _STRESS_UNIT
        + rf"""
if ! command -v python3 >/dev/null 2>&1; then
  echo "no python3 on $HOSTNAME: chaosgpu's load generator runs on python3" >&2
  exit {_REFUSE}
fi
if ! command -v systemd-run >/dev/null 2>&1; then
  echo "no systemd-run on $HOSTNAME: the load runs as a transient systemd service" >&2
  exit {_REFUSE}
fi
"""
        + (check_memory if mode == "memory" else "")
        + run
        + r""" || { echo "the load unit $unit did not start on $HOSTNAME" >&2; exit 1; }
echo "started $unit on $HOSTNAME: main process $(systemctl show -p MainPID --value -- "$unit")"
"""
    )
    revert = (
        _assign()
        + _STRESS_UNIT
        + r"""
systemctl stop -- "$unit" 2>/dev/null
systemctl reset-failed -- "$unit" 2>/dev/null
if systemctl is-active -q -- "$unit"; then
  echo "$unit is still active on $HOSTNAME" >&2
  exit 1
fi
exit 0
"""
    )
    return inject, revert


def fill_disk_commands(
    path: str, size_mb: int, *, min_free_mb: int, min_free_ppm: int, margin: str = ""
) -> tuple[str, str]:
    """``fallocate`` of ``size_mb`` MiB into ``<path>/chaosgpu-<fault id>``; refused on the host when ``path`` is
    not a directory or the filesystem would keep less than ``min_free_mb`` MiB or ``min_free_ppm`` millionths of its
    size free (``df`` right before, in the same call). The revert removes the file."""
    inject = (
        _assign(dir=path, size_mb=size_mb, min_free_mb=min_free_mb, min_free_ppm=min_free_ppm, margin=margin)
        + _FILL_FILE
        + rf"""
if [ ! -d "$dir" ]; then
  echo "$dir is not a directory on $HOSTNAME" >&2
  exit {_REFUSE}
fi
if ! command -v fallocate >/dev/null 2>&1; then
  echo "no fallocate (util-linux) on $HOSTNAME" >&2
  exit {_REFUSE}
fi
if ! {{ read -r _ && read -r size_kb avail_kb; }} < <(df -k --output=size,avail -- "$dir") ||
   [ -z "${{avail_kb:-}}" ]; then
  echo "df cannot tell the free space of $dir on $HOSTNAME" >&2
  exit {_REFUSE}
fi
left_kb=$((avail_kb - size_mb * 1024))
if [ "$left_kb" -lt $((min_free_mb * 1024)) ] || [ $((left_kb * 1000000)) -lt $((size_kb * min_free_ppm)) ]; then
  echo "refused on $HOSTNAME: $size_mb MiB in $dir would leave $((left_kb / 1024)) MiB of $((size_kb / 1024))" \
       "MiB free, below the margin ($margin)" >&2
  exit {_REFUSE}
fi
if ! (umask 077 && fallocate -l "$((size_mb * 1048576))" -- "$file"); then
  rm -f -- "$file"
  echo "fallocate of $size_mb MiB in $dir failed on $HOSTNAME" >&2
  exit 1
fi
echo "filled $file on $HOSTNAME with $size_mb MiB; $(( (avail_kb - size_mb * 1024) / 1024 )) MiB left free"
"""
    )
    revert = _assign(dir=path) + _FILL_FILE + 'rm -f -- "$file"\n'
    return inject, revert
