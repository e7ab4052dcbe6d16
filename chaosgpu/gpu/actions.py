"""GPU faults. Each one goes through the fault ledger (recorded on the node with a deadline the node enforces, then
injected, one SSH call per host) and reverts by the rollback ``chaosgpu.fleet.actions.revert_faults``, by
``chaosgpu cleanup``, or at its deadline (``duration_s``; default: the configuration's ``chaosgpu_fault_duration_s``).

Every revert is idempotent and exact: a fault that changes a setting or a value reads the previous one in its own
inject call, on the node, and its revert restores that (chaosgpu.gpu.commands). Two kinds of fault cannot be undone
and say so in the ledger: an XID (it happened; recovery is gpu_health's job, or the host's
``chaosgpu_xid_recovery_command``) and killed processes (their scheduler restarts the work, or not).

Hosts come from the inventory by Ansible pattern, ``count`` or ``percentage`` of them, through the blast-radius and
production guards; bad arguments are refused, naming the parameter, before any host is reached.
"""

import math
from collections.abc import Callable
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import fault_duration, inject_fault, targets
from chaosgpu.gpu import commands
from chaosgpu.targeting import TargetPlan
from chaosgpu.types import Host

__all__ = [
    "burn_gpu_compute",
    "inject_memory_error",
    "inject_xid",
    "kill_gpu_processes",
    "log_xid",
    "pressure_gpu_memory",
    "set_compute_mode",
    "stop_gpu_services",
]

KMSG_PATH_VAR = "chaosgpu_kmsg_path"
XID_RECOVERY_VAR = "chaosgpu_xid_recovery_command"
LOAD_TOOL_VAR = "chaosgpu_gpu_load_tool"
LOAD_PYTHON_VAR = "chaosgpu_gpu_load_python"
# The load unit stops itself this long after the fault's deadline, should the deadline's revert not run.
LOAD_BACKSTOP_S = 60

Commands = tuple[str, str]


def _duration(configuration: Configuration | None, duration_s: float | None) -> float:
    if duration_s is not None and (
        isinstance(duration_s, bool) or not isinstance(duration_s, int | float) or not math.isfinite(duration_s)
    ):
        raise ActivityFailed(f"duration_s must be a number of seconds, got {duration_s!r}")
    seconds = fault_duration(configuration, duration_s)
    if seconds <= 0:
        raise ActivityFailed(f"duration_s must be positive (the fault's deadline), got {seconds!r}")
    return seconds


def _checked(action: str, build: Callable[[], Any]) -> Any:
    """Build or check something, turning a refusal (ValueError naming the parameter) into ActivityFailed."""
    try:
        return build()
    except ValueError as err:
        raise ActivityFailed(f"{action}: {err}") from None


def _inject(
    action: str,
    plan: TargetPlan,
    kind: str,
    build: Callable[[Host], Commands],
    duration_s: float,
    description: str,
) -> list[dict[str, Any]]:
    """Build every host's commands first (a host variable may be refused), then inject through the ledger."""
    built: dict[str, Commands] = {}
    for host in plan.hosts:
        try:
            built[host.name] = build(host)
        except ValueError as err:
            raise ActivityFailed(f"{action}: {host.name}: {err}; no host was touched") from None
    return inject_fault(
        plan,
        kind,
        lambda host: built[host.name][0],
        lambda host: built[host.name][1],
        duration_s,
        description,
    )


def _var(host: Host, name: str, default: str) -> str:
    value = host.vars.get(name, default)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ValueError(f"host variable {name} must be a string, got {value!r}")
    return value


def _gpus_text(gpus: tuple[int, ...]) -> str:
    return f"GPU{'s' if len(gpus) > 1 else ''} {','.join(map(str, gpus))}"


def inject_xid(
    pattern: str,
    xid: int = 79,
    gpus: list[int] | None = None,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """An XID on each of ``gpus`` (default [0]) of the chosen hosts, through DCGM:
    ``dcgmi test --inject --gpuid N -f 230 -v XID``. DCGM health, dcgm-exporter's XID metrics and the alert rules see
    it as a real XID (in the lab, XID 79 also takes the simulated GPU off the bus).

    An XID cannot be un-happened. The revert is the recovery of the GPU state the XID caused where the host says how
    (``chaosgpu_xid_recovery_command``: the lab's ``gpusim boot``, what a reboot does to its simulated GPUs, all of
    them); elsewhere it is a no-op recorded as such, because recovering a GPU (drain, reset, reboot) is gpu_health's
    job, not a chaos rollback's. Returns the faults as recorded in the ledgers."""
    chosen: tuple[int, ...] = _checked("inject_xid", lambda: commands.check_gpus(gpus))
    _checked("inject_xid", lambda: commands.xid_dcgm_commands(chosen, xid))
    seconds = _duration(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    return _inject(
        "inject_xid",
        plan,
        "gpu-xid",
        lambda host: commands.xid_dcgm_commands(chosen, xid, _var(host, XID_RECOVERY_VAR, "")),
        seconds,
        f"XID {xid} on {_gpus_text(chosen)} through DCGM (dcgmi test --inject -f 230)",
    )


def log_xid(
    pattern: str,
    xid: int = 79,
    gpus: list[int] | None = None,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """The driver's XID line for each of ``gpus`` (default [0]) written to the hosts' kernel-log source,
    ``NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.``, for whatever
    watches the kernel log. The source is the host variable ``chaosgpu_kmsg_path``: ``/dev/kmsg`` by default (the
    kernel stamps the record), the simulator's file in the lab; it must exist. Only the line: the GPU is untouched.

    A logged line cannot be taken back: the revert is a no-op recorded as such (recovery from whatever the line set
    off is gpu_health's job). Returns the faults as recorded in the ledgers."""
    chosen: tuple[int, ...] = _checked("log_xid", lambda: commands.check_gpus(gpus))
    _checked("log_xid", lambda: commands.xid_kmsg_commands(chosen, xid))
    seconds = _duration(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    return _inject(
        "log_xid",
        plan,
        "gpu-xid-kmsg",
        lambda host: commands.xid_kmsg_commands(chosen, xid, _var(host, KMSG_PATH_VAR, commands.DEFAULT_KMSG_PATH)),
        seconds,
        f"XID {xid} kernel-log line for {_gpus_text(chosen)}",
    )


def inject_memory_error(  # noqa: PLR0913, PLR0917 - Chaos Toolkit passes arguments by keyword
    pattern: str,
    event: str = "dbe",
    gpus: list[int] | None = None,
    errors: int = 1,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """A GPU memory event on each of ``gpus`` (default [0]), through DCGM field injection
    (``dcgmi test --inject --gpuid N -f FIELD -v VALUE``). ``event``:

    - ``sbe`` / ``dbe``: single-/double-bit ECC errors, volatile and aggregate counters (fields 310/312, 311/313)
      rise by ``errors``;
    - ``retired-sbe`` / ``retired-dbe``: retired pages (390 / 391) rise by ``errors``; ``retired-pending``: a page
      retirement pending (392 = 1);
    - ``remap-correctable`` / ``remap-uncorrectable``: remapped rows (394 / 393 and pending 396 = 1) rise by
      ``errors``; ``remap-pending``: a row remap pending (396 = 1); ``remap-failure``: row remapping failed (395 = 1).

    The inject reads each field's current value (nvidia-smi) in the same call and refuses a GPU that reports it as
    [N/A] (e.g. retired pages on GPUs that remap rows); the revert injects those values back. Real DCGM overwrites an
    injected value with the field's next sample; the lab's simulator keeps it until the revert."""
    chosen: tuple[int, ...] = _checked("inject_memory_error", lambda: commands.check_gpus(gpus))
    key = commands.new_key()
    _checked("inject_memory_error", lambda: commands.memory_error_commands(chosen, event, errors, key))
    seconds = _duration(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    return _inject(
        "inject_memory_error",
        plan,
        "gpu-memory-error",
        lambda _host: commands.memory_error_commands(chosen, event, errors, key),
        seconds,
        f"{event} x{errors} on {_gpus_text(chosen)} through DCGM field injection (previous values restored)",
    )


def _load(  # noqa: PLR0913 - the load's whole description
    action: str,
    kind: str,
    pattern: str,
    *,
    gpus: list[int] | None,
    load: dict[str, Any],
    count: int | None,
    percentage: float | None,
    duration_s: float | None,
    configuration: Configuration | None,
) -> list[dict[str, Any]]:
    chosen: tuple[int, ...] = _checked(action, lambda: commands.check_gpus(gpus))
    key = commands.new_key()
    seconds = _duration(configuration, duration_s)
    runtime = math.ceil(seconds) + LOAD_BACKSTOP_S

    def build(host: Host | None) -> Commands:
        tool = _var(host, LOAD_TOOL_VAR, "auto") if host else "auto"
        python = _var(host, LOAD_PYTHON_VAR, "python3") if host else "python3"
        return commands.load_commands(chosen, key=key, tool=tool, python=python, max_runtime_s=runtime, **load)

    _checked(action, lambda: build(None))
    plan = targets(configuration, pattern, count, percentage)
    what = (
        f"{load['memory_mib']} MiB"
        if load.get("memory_mib")
        else f"{load.get('memory_fraction', 0):.0%} of the memory"
        if load.get("memory_fraction")
        else "no extra memory"
    )
    burning = "compute burn" if load.get("burn") else "memory pressure"
    return _inject(
        action,
        plan,
        kind,
        build,
        seconds,
        f"{burning} on {_gpus_text(chosen)} ({what}) as unit {commands.load_unit(key)}",
    )


def pressure_gpu_memory(  # noqa: PLR0913, PLR0917 - Chaos Toolkit passes arguments by keyword
    pattern: str,
    gpus: list[int] | None = None,
    memory_fraction: float = 0.9,
    memory_mib: int = 0,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Hold GPU memory on each of ``gpus`` (default [0]): ``memory_mib`` MiB, or (when that is 0)
    ``memory_fraction`` of each GPU's total, with a process that does nothing else, so jobs that need the memory
    fail to allocate it. It runs as the transient systemd unit ``chaosgpu-gpuload-<key>`` with the CUDA stack the
    host has (PyTorch, else CuPy, in ``chaosgpu_gpu_load_python``; the lab's ``gpusim-hog`` where neither is), and
    the inject returns once the memory is held. The revert stops the unit, which frees the memory."""
    return _load(
        "pressure_gpu_memory",
        "gpu-memory-pressure",
        pattern,
        gpus=gpus,
        load={"memory_mib": memory_mib, "memory_fraction": 0.0 if memory_mib else memory_fraction, "burn": False},
        count=count,
        percentage=percentage,
        duration_s=duration_s,
        configuration=configuration,
    )


def burn_gpu_compute(
    pattern: str,
    gpus: list[int] | None = None,
    memory_mib: int = 1024,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Keep each of ``gpus`` (default [0]) busy with back-to-back matrix products (utilisation near 100%, power and
    temperature up), holding ``memory_mib`` MiB more besides the matrices, as the transient systemd unit
    ``chaosgpu-gpuload-<key>`` (PyTorch or CuPy in ``chaosgpu_gpu_load_python``; the lab's ``gpusim-hog`` at 100%
    utilisation where neither is). The inject returns once the load runs; the revert stops the unit."""
    return _load(
        "burn_gpu_compute",
        "gpu-compute-burn",
        pattern,
        gpus=gpus,
        load={"memory_mib": memory_mib, "memory_fraction": 0.0, "burn": True},
        count=count,
        percentage=percentage,
        duration_s=duration_s,
        configuration=configuration,
    )


def kill_gpu_processes(
    pattern: str,
    gpus: list[int] | None = None,
    signal: str = "KILL",
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Send ``signal`` (KILL, TERM or INT) to every compute process on ``gpus`` (default [0]) of the chosen hosts,
    as ``nvidia-smi --query-compute-apps=pid,gpu_uuid`` lists them; after SIGKILL the inject waits (10 s at most)
    until they are gone. Refused on a host (nothing killed there) when the list holds PID 1 or sshd, and fails when
    a host has nothing to kill.

    Not revertible: killed processes are not brought back (their scheduler restarts the work, or not). The ledger
    records the fault with a no-op revert that says so."""
    chosen: tuple[int, ...] = _checked("kill_gpu_processes", lambda: commands.check_gpus(gpus))
    _checked("kill_gpu_processes", lambda: commands.kill_commands(chosen, signal))
    seconds = _duration(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    return _inject(
        "kill_gpu_processes",
        plan,
        "gpu-process-kill",
        lambda _host: commands.kill_commands(chosen, signal),
        seconds,
        f"SIG{signal.upper().removeprefix('SIG')} to the compute processes on {_gpus_text(chosen)} (not revertible)",
    )


def stop_gpu_services(
    pattern: str,
    services: list[str] | None = None,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Stop GPU services on the chosen hosts: any of ``dcgm-exporter``, ``nvidia-dcgm`` (DCGM's host engine; ``dcgm``
    in older packages), ``nvidia-fabricmanager``, ``nvidia-persistenced`` (default: all of them), consumers first.
    Services a host does not have are skipped; a host where none of them runs fails. The revert starts, in the
    reverse order, exactly the GPU services that were active before the inject (read in the same call), so a service
    that stopped along with another comes back too, and one that was already stopped stays stopped."""
    names: tuple[str, ...] = _checked("stop_gpu_services", lambda: commands.check_services(services))
    key = commands.new_key()
    _checked("stop_gpu_services", lambda: commands.services_stop_commands(services, key))
    seconds = _duration(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    return _inject(
        "stop_gpu_services",
        plan,
        "gpu-services-stop",
        lambda _host: commands.services_stop_commands(services, key),
        seconds,
        f"stop {', '.join(names)} (those running; the revert starts what was active before)",
    )


def set_compute_mode(
    pattern: str,
    mode: str = "PROHIBITED",
    gpus: list[int] | None = None,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Set the compute mode of ``gpus`` (default [0]): ``nvidia-smi -c MODE -i N,...`` with MODE ``PROHIBITED`` (no
    CUDA context at all), ``EXCLUSIVE_PROCESS`` (one process per GPU) or ``DEFAULT``. This changes a card setting:
    for the lab and dedicated hosts. The inject reads each GPU's mode in the same call; the revert sets each GPU back
    to exactly that."""
    chosen: tuple[int, ...] = _checked("set_compute_mode", lambda: commands.check_gpus(gpus))
    key = commands.new_key()
    _checked("set_compute_mode", lambda: commands.compute_mode_commands(chosen, mode, key))
    seconds = _duration(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    return _inject(
        "set_compute_mode",
        plan,
        "gpu-compute-mode",
        lambda _host: commands.compute_mode_commands(chosen, mode, key),
        seconds,
        f"compute mode {mode.upper()} on {_gpus_text(chosen)} (previous modes restored)",
    )
