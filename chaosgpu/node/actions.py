"""Node faults: stop or kill services, kill processes, CPU and memory load, disk fill, power.

Every fault but power goes through the fault ledger (``chaosgpu.activity.inject_fault``): recorded on each host
with a deadline (``duration_s``; None: the configuration's ``chaosgpu_fault_duration_s``, else 300 s) that the
host enforces, one SSH call per host, reverted by ``chaosgpu.fleet.actions.revert_faults``, ``chaosgpu cleanup``
or the deadline. The shell commands, and how each revert restores exactly what was there, are in
``chaosgpu.node.commands``.

Power goes through ``chaosgpu.power`` and each host's ``chaosgpu_power_driver``. A host that is off records
nothing, so ``power_off`` is guarded on the controller (``chaosgpu.node.power_guard``): it refuses hosts whose
driver cannot power them on again, and a detached process powers them on at the deadline unless ``power_on`` (its
rollback) came first. ``reboot`` needs no guard: the host comes back by itself.

Hosts are chosen with an Ansible-style ``pattern`` and optional ``count`` or ``percentage`` (chaosgpu.targeting),
through the blast-radius and production guards; bad input is refused before any host is reached.
"""

import math
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.activity import fault_duration, get_inventory, get_transport, inject_fault, targets
from chaosgpu.ledger import LedgerConfig
from chaosgpu.node import commands, power_guard
from chaosgpu.node.commands import (
    check_path,
    check_percent,
    check_process_pattern,
    check_service,
    check_signal,
    check_whole,
)
from chaosgpu.node.reach import boot_identities, wait_until_back
from chaosgpu.power import PowerRefused, default_drivers, power

__all__ = [
    "fill_disk",
    "kill_process",
    "kill_service",
    "power_off",
    "power_on",
    "reboot",
    "stop_service",
    "stress_cpu",
    "stress_memory",
]

# The unit's own limit: a minute past the fault's deadline, in case the deadline timer is gone.
_STRESS_GRACE_S = 60
_MIB = 1024


def _duration(configuration: Configuration, duration_s: float | None) -> float:
    if duration_s is not None and (isinstance(duration_s, bool) or not isinstance(duration_s, int | float)):
        raise ActivityFailed(f"duration_s must be a number of seconds or null, got {duration_s!r}")
    seconds = fault_duration(configuration, duration_s)
    limit = LedgerConfig().max_duration_s
    if not math.isfinite(seconds) or not 0 < seconds <= limit:
        raise ActivityFailed(f"duration_s must be above 0 and at most {limit:g} s, got {seconds!r}")
    return seconds


def _wait(wait_s: float) -> float:
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not math.isfinite(wait_s) or wait_s < 0:
        raise ActivityFailed(f"wait_s must be a number of seconds, 0 or more, got {wait_s!r}")
    return float(wait_s)


def _ppm(percent: float) -> int:
    return round(percent * 10_000)


def _ledger_fault(
    configuration: Configuration,
    pattern: str,
    count: int | None,
    percentage: float | None,
    duration_s: float | None,
    kind: str,
    pair: tuple[str, str],
    description: str,
) -> list[dict[str, Any]]:
    """Choose the hosts and inject ``pair`` (inject, revert) on each through the ledger."""
    seconds = _duration(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    inject, revert = pair
    return inject_fault(plan, kind, inject, revert, seconds, description, transport=get_transport())


def stop_service(
    pattern: str,
    service: str,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Stop systemd ``service`` on the hosts matching ``pattern`` (``count`` or ``percentage`` of them) until the
    revert, which starts it again only where it was running, together with the services that went down with it.
    Refuses ssh, dbus, systemd's own services and units that are not loaded. Returns the faults (ledger entries)."""
    unit = check_service(service)
    return _ledger_fault(
        configuration,
        pattern,
        count,
        percentage,
        duration_s,
        "stop-service",
        commands.stop_service_commands(unit),
        f"systemctl stop {unit}",
    )


def kill_service(
    pattern: str,
    service: str,
    signal: str = "SIGKILL",
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Send ``signal`` (default SIGKILL) to the main process of running systemd ``service`` on the hosts matching
    ``pattern``; systemd may restart it by its own Restart= policy. The revert makes sure the service is running
    again. Refused on a host where the service is not running, and for ssh, dbus and systemd's own services."""
    unit = check_service(service)
    name = check_signal(signal)
    return _ledger_fault(
        configuration,
        pattern,
        count,
        percentage,
        duration_s,
        "kill-service",
        commands.kill_service_commands(unit, name),
        f"systemctl kill --kill-who=main --signal={name} {unit}",
    )


def kill_process(  # noqa: PLR0913, PLR0917 - where, what, how long, then configuration and secrets
    pattern: str,
    process: str,
    signal: str = "SIGKILL",
    full_command_line: bool = False,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Send ``signal`` (default SIGKILL) to every process ``pgrep`` finds for ``process`` (a regular expression
    on the process name, 15 characters at most; on the whole command line with ``full_command_line``) on the hosts
    matching ``pattern``. Refused when the pattern matches sshd, systemd or init, and on a host where no process
    matches or one that matches is PID 1, sshd or systemd. The revert starts again the systemd services those
    processes belonged to that were running; a process outside a service is not brought back."""
    regex = check_process_pattern(process)
    name = check_signal(signal)
    if not isinstance(full_command_line, bool):
        raise ActivityFailed(f"full_command_line must be true or false, got {full_command_line!r}")
    return _ledger_fault(
        configuration,
        pattern,
        count,
        percentage,
        duration_s,
        "kill-process",
        commands.kill_process_commands(regex, name, full=full_command_line),
        f"pkill {'-f ' if full_command_line else ''}--signal {name} '{regex}'",
    )


def stress_cpu(
    pattern: str,
    workers: int = 0,
    load_percent: int = 100,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Load the CPUs of the hosts matching ``pattern``: ``workers`` busy processes (0: one per CPU), each busy
    ``load_percent`` % of the time, in a transient systemd service ``chaosgpu-<fault id>`` that the revert
    stops. Needs python3 and systemd-run on the host (the load generator is chaosgpu's own, not stress-ng)."""
    check_whole("workers", workers, 0, 1024)
    check_whole("load_percent", load_percent, 1, 100)
    seconds = _duration(configuration, duration_s)
    runtime_max_s = math.ceil(seconds) + _STRESS_GRACE_S
    return _ledger_fault(
        configuration,
        pattern,
        count,
        percentage,
        seconds,
        "stress-cpu",
        commands.stress_commands("cpu", workers=workers, amount=load_percent, runtime_max_s=runtime_max_s),
        f"CPU load: {workers or 'one per CPU'} worker(s) at {load_percent} %",
    )


def stress_memory(  # noqa: PLR0913, PLR0917 - where, what, margins, how long, then configuration and secrets
    pattern: str,
    size_mb: int,
    min_available_mb: int = 1024,
    min_available_percent: float = 10.0,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Hold ``size_mb`` MiB of memory (every page written) on the hosts matching ``pattern``, in a transient
    systemd service ``chaosgpu-<fault id>`` that the revert stops. Refused on a host where MemAvailable, read
    right before, would fall below ``min_available_mb`` MiB or ``min_available_percent`` % of its memory; the
    kernel's OOM killer takes the load first (OOMScoreAdjust=1000). Needs python3 and systemd-run on the host."""
    check_whole("size_mb", size_mb, 1)
    check_whole("min_available_mb", min_available_mb, 0)
    check_percent("min_available_percent", min_available_percent)
    seconds = _duration(configuration, duration_s)
    runtime_max_s = math.ceil(seconds) + _STRESS_GRACE_S
    margin = f"min_available_mb={min_available_mb}, min_available_percent={min_available_percent:g}"
    return _ledger_fault(
        configuration,
        pattern,
        count,
        percentage,
        seconds,
        "stress-memory",
        commands.stress_commands(
            "memory",
            amount=size_mb,
            runtime_max_s=runtime_max_s,
            min_available_mb=min_available_mb,
            min_available_ppm=_ppm(min_available_percent),
            margin=margin,
        ),
        f"memory load: {size_mb} MiB held",
    )


def fill_disk(  # noqa: PLR0913, PLR0917 - where, what, margins, how long, then configuration and secrets
    pattern: str,
    path: str,
    size_mb: int,
    min_free_mb: int = 1024,
    min_free_percent: float = 10.0,
    count: int | None = None,
    percentage: float | None = None,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,  # noqa: ARG001 - Chaos Toolkit passes it to every activity
) -> list[dict[str, Any]]:
    """Take ``size_mb`` MiB of the filesystem holding directory ``path`` on the hosts matching ``pattern``: a file
    ``<path>/chaosgpu-<fault id>`` made with fallocate, which the revert removes. Refused on a host where the
    filesystem, measured right before, would keep less than ``min_free_mb`` MiB or ``min_free_percent`` % of its
    size free, or where ``path`` is not a directory."""
    directory = check_path(path)
    check_whole("size_mb", size_mb, 1)
    check_whole("min_free_mb", min_free_mb, 0)
    check_percent("min_free_percent", min_free_percent)
    margin = f"min_free_mb={min_free_mb}, min_free_percent={min_free_percent:g}"
    return _ledger_fault(
        configuration,
        pattern,
        count,
        percentage,
        duration_s,
        "fill-disk",
        commands.fill_disk_commands(
            directory, size_mb, min_free_mb=min_free_mb, min_free_ppm=_ppm(min_free_percent), margin=margin
        ),
        f"fallocate {size_mb} MiB in {directory}",
    )


def power_off(
    pattern: str,
    count: int | None = None,
    percentage: float | None = None,
    force: bool = False,
    duration_s: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Switch the hosts matching ``pattern`` off through their power driver: a clean shutdown, or with ``force`` a
    power loss. Not a ledger fault (the host is off): the controller guards it instead, and ``power_on`` is its
    rollback. Refused for hosts whose driver cannot power them on again (systemd); a detached process on the
    controller powers them on at the deadline (``duration_s``) unless ``power_on`` came first. Returns what was done
    per host, the guard's id and its deadline."""
    if not isinstance(force, bool):
        raise ActivityFailed(f"force must be true or false, got {force!r}")
    seconds = _duration(configuration, duration_s)
    plan = targets(configuration, pattern, count, percentage)
    inventory = get_inventory(configuration)
    transport = get_transport()
    drivers = default_drivers(transport, secrets)
    for host in plan.hosts:
        driver = drivers.get(inventory.power_driver(host))
        if driver is None:
            raise PowerRefused(f"{host.name}: no power driver {inventory.power_driver(host)!r} available")
        try:
            driver.prepare(host, "on")
        except PowerRefused as err:
            raise PowerRefused(
                f"power_off refused: {host.name} could not be powered on again at the deadline: {err}"
            ) from None
    directory = power_guard.guard_dir(configuration)
    guard = power_guard.arm(directory, inventory.source, plan.names, seconds, secrets)
    try:
        done = power(inventory, list(plan.hosts), "force-off" if force else "off", transport, secrets, drivers)
    except PowerRefused:
        power_guard.cancel(directory, guard.id)
        raise
    return {
        "hosts": done,
        "guard": guard.id,
        "deadline": guard.deadline_iso,
        "rollback": "chaosgpu.node.actions.power_on",
    }


def power_on(
    pattern: str,
    wait_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Switch the hosts matching ``pattern`` on through their power driver (the rollback of ``power_off``, whose
    controller-side guard for these hosts it disarms). With ``wait_s`` > 0, waits at most that long until every
    host answers SSH, and fails naming those that did not. Acts on any share of a group: it restores."""
    seconds = _wait(wait_s)
    plan = targets(configuration, pattern, guard=False)
    inventory = get_inventory(configuration)
    transport = get_transport()
    done = power(inventory, list(plan.hosts), "on", transport, secrets)
    disarmed = power_guard.disarm(power_guard.guard_dir(configuration), plan.names)
    back = wait_until_back(transport, plan.hosts, seconds) if seconds else {}
    return {"hosts": done, "disarmed": disarmed, "back_after_s": back}


def reboot(
    pattern: str,
    count: int | None = None,
    percentage: float | None = None,
    force: bool = False,
    wait_s: float = 0.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Reboot the hosts matching ``pattern`` through their power driver: cleanly, or with ``force`` a reset. With
    ``wait_s`` > 0, waits at most that long until every host answers SSH from a new boot, and fails naming those
    that did not. Not a ledger fault: the host comes back by itself."""
    if not isinstance(force, bool):
        raise ActivityFailed(f"force must be true or false, got {force!r}")
    seconds = _wait(wait_s)
    plan = targets(configuration, pattern, count, percentage)
    inventory = get_inventory(configuration)
    transport = get_transport()
    before = boot_identities(transport, plan.hosts) if seconds else {}
    done = power(inventory, list(plan.hosts), "force-reboot" if force else "reboot", transport, secrets)
    back = wait_until_back(transport, plan.hosts, seconds, before) if seconds else {}
    return {"hosts": done, "back_after_s": back}
