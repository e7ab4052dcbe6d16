"""The controller-side guard of ``power_off``: a host that is off records nothing and runs no timer, so the
controller keeps the deadline instead.

Before ``chaosgpu.node.actions.power_off`` switches hosts off it writes a guard record (JSON, mode 0600) into the
guard directory and starts a detached process (``python -m chaosgpu.node.power_guard RECORD``, its own session,
so it outlives the experiment's process even when that is killed) that powers the hosts still listed on again at
the deadline, through their inventory's power driver, then removes the record. ``power_on`` is the rollback: it
takes its hosts off every record (a record left empty is removed, and its process ends within a second).

A guard that could not power its hosts on keeps its record with ``failed`` set and its log
(``<id>.log``) beside it; ``pending()`` lists what is left.

The guard directory: configuration ``chaosgpu_power_guard_dir``, else $CHAOSGPU_POWER_GUARD_DIR, else
``$XDG_STATE_HOME/chaosgpu/power-guard`` (``~/.local/state/chaosgpu/power-guard``). Secrets the power drivers
need (a BMC password) reach the process on its stdin, never on disk or on its command line.
"""

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex
from typing import Any

from chaoslib.types import Configuration, Secrets

import chaosgpu

__all__ = ["GuardRecord", "arm", "cancel", "disarm", "guard_dir", "main", "pending"]

_POLL_S = 1.0
# The guard processes this process started: kept so that Python reaps them when they end (no zombies).
_spawned: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class GuardRecord:
    """One armed guard: the hosts it will power on at ``deadline`` (epoch seconds), and its record file."""

    id: str
    path: Path
    inventory: str
    hosts: tuple[str, ...]
    deadline: float
    failed: str = ""
    attempts: int = 3  # tries to power the hosts on at the deadline
    retry_s: float = 10.0  # seconds between tries

    @property
    def deadline_iso(self) -> str:
        return datetime.fromtimestamp(self.deadline, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def guard_dir(configuration: Configuration | None = None) -> Path:
    """Where guard records live (see the module docstring)."""
    configured = (configuration or {}).get("chaosgpu_power_guard_dir") or os.environ.get("CHAOSGPU_POWER_GUARD_DIR")
    if configured:
        return Path(str(configured))
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "chaosgpu" / "power-guard"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """The guard directory's lock: record updates (disarm) and the guard's final read do not interleave."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    temporary.replace(path)


def _read(path: Path) -> GuardRecord | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return GuardRecord(
        id=str(data["id"]),
        path=path,
        inventory=str(data["inventory"]),
        hosts=tuple(str(h) for h in data["hosts"]),
        deadline=float(data["deadline"]),
        failed=str(data.get("failed", "")),
        attempts=int(data.get("attempts", 3)),
        retry_s=float(data.get("retry_s", 10.0)),
    )


def arm(
    directory: Path,
    inventory: str,
    hosts: Sequence[str],
    duration_s: float,
    secrets: Secrets | None = None,
    *,
    attempts: int = 3,
    retry_s: float = 10.0,
) -> GuardRecord:
    """Record ``hosts`` to be powered on ``duration_s`` seconds from now and start the process that will do it."""
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    guard_id = f"power-on-{stamp}-{token_hex(4)}"
    path = directory / f"{guard_id}.json"
    record = {
        "id": guard_id,
        "inventory": inventory,
        "hosts": list(hosts),
        "created": now,
        "deadline": now + duration_s,
        "attempts": attempts,
        "retry_s": retry_s,
        "controller_pid": os.getpid(),
    }
    with _locked(directory):
        _write(path, record)
    log = os.open(directory / f"{guard_id}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    package_root = str(Path(chaosgpu.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    try:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, an argument list
            [sys.executable, "-m", "chaosgpu.node.power_guard", str(path)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            cwd="/",
            env=env,
        )
    except OSError:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(log)
    assert process.stdin is not None  # noqa: S101 - stdin=PIPE
    with process.stdin:
        process.stdin.write(json.dumps(secrets or {}).encode())
    _spawned.append(process)
    return GuardRecord(guard_id, path, inventory, tuple(hosts), now + duration_s, "", attempts, retry_s)


def disarm(directory: Path, hosts: Sequence[str]) -> list[str]:
    """Take ``hosts`` off every guard record (a record left without hosts is removed); the ids of the records
    that changed."""
    changed: list[str] = []
    if not directory.is_dir():
        return changed
    with _locked(directory):
        for path in sorted(directory.glob("*.json")):
            record = _read(path)
            if record is None or not set(hosts) & set(record.hosts):
                continue
            left = [h for h in record.hosts if h not in hosts]
            if left:
                data = json.loads(path.read_text())
                data["hosts"] = left
                _write(path, data)
            else:
                path.unlink(missing_ok=True)
                (directory / f"{record.id}.log").unlink(missing_ok=True)
            changed.append(record.id)
    return changed


def cancel(directory: Path, guard_id: str) -> None:
    """Remove one guard record (its process ends within a second): the power action it guarded did not happen."""
    with _locked(directory):
        (directory / f"{guard_id}.json").unlink(missing_ok=True)
        (directory / f"{guard_id}.log").unlink(missing_ok=True)


def pending(directory: Path) -> list[GuardRecord]:
    """The guard records still there: armed, or failed."""
    if not directory.is_dir():
        return []
    return [record for path in sorted(directory.glob("*.json")) if (record := _read(path)) is not None]


def _log(message: str) -> None:
    sys.stderr.write(f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')} {message}\n")
    sys.stderr.flush()


def _power_on(record: GuardRecord, secrets: Secrets | None) -> dict[str, str]:
    from chaosgpu.inventory import load_inventory  # noqa: PLC0415 - only the guard process needs them
    from chaosgpu.power import power  # noqa: PLC0415

    return power(load_inventory(record.inventory), list(record.hosts), "on", secrets=secrets)


def main(argv: Sequence[str] | None = None) -> int:
    """The guard process: wait for the deadline while the record exists, then power its hosts on."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m chaosgpu.node.power_guard RECORD\n")
        return 2
    path = Path(args[0])
    given = sys.stdin.read() if not sys.stdin.isatty() else ""
    secrets = json.loads(given) if given.strip() else None
    first = _read(path)
    if first is not None:
        _log(f"{first.id}: armed, powers on {', '.join(first.hosts)} at {first.deadline_iso}")
    while True:
        record = _read(path)
        if record is None:
            _log(f"{path.name}: disarmed (power_on came first)")
            return 0
        remaining = record.deadline - time.time()
        if remaining <= 0:
            break
        time.sleep(min(_POLL_S, remaining))
    error = ""
    for attempt in range(1, max(1, record.attempts) + 1):
        with _locked(path.parent):
            record = _read(path)
        if record is None:
            _log(f"{path.name}: disarmed at the deadline")
            return 0
        try:
            done = _power_on(record, secrets)
        except Exception as err:
            error = f"attempt {attempt}: {err}"
            _log(f"{record.id}: powering on {', '.join(record.hosts)} failed: {error}")
            time.sleep(record.retry_s if attempt < record.attempts else 0)
            continue
        _log(f"{record.id}: deadline reached, powered on: {done}")
        with _locked(path.parent):
            path.unlink(missing_ok=True)
            (path.parent / f"{record.id}.log").unlink(missing_ok=True)
        return 0
    with _locked(path.parent):
        if path.exists():
            data = json.loads(path.read_text())
            data["failed"] = error
            _write(path, data)
    return 1


if __name__ == "__main__":
    sys.exit(main())
