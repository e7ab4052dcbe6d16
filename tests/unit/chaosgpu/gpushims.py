"""A simulated GPU node on this machine for chaosgpu.gpu's tests: the lab's simulator (roles/gpu_simulator) in a
temporary directory, with its host engine running, and stand-ins on PATH as the node has them (nvidia-smi, dcgmi,
gpusim, gpusim-hog), plus a recording fake of systemd (systemd-run, systemctl, journalctl) that runs transient units
as background processes. Every call of a stand-in is logged (argv shell-quoted, one call per line) in
``<root>/calls.log``."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "gpu_simulator"))

from simhelpers import LIB, Sim, make_sim  # noqa: E402

_SHIM = """#!/bin/bash
{exports}
{{ printf '%q ' "${{0##*/}}" "$@"; echo; }} >>{log}
exec {python} {target} "$@"{extra}
"""

_FAKE_SYSTEMD = r'''#!{python}
"""Fake systemd-run / systemctl / journalctl (tests only): units are files under FAKE_SYSTEMD_DIR."""
import json, os, shlex, signal, subprocess, sys, time
from pathlib import Path
STATE = Path({state!r})
LOG = Path({log!r})
tool = os.path.basename(sys.argv[0])
args = sys.argv[1:]
with LOG.open("a") as log:
    log.write(shlex.join([tool, *args]) + "\n")

def unit_name(name):
    return name if "." in name else name + ".service"

def pid_of(unit):
    try:
        pid = int((STATE / (unit + ".pid")).read_text())
    except (OSError, ValueError):
        return 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return 0
    try:
        if Path(f"/proc/{{pid}}/stat").read_text().split(")")[-1].split()[0] == "Z":
            os.waitpid(pid, os.WNOHANG)
            return 0
    except (OSError, ChildProcessError):
        pass
    return pid

def state_of(unit):
    if (STATE / (unit + ".pid")).exists():
        if pid_of(unit):
            return "active"
        (STATE / (unit + ".pid")).unlink()  # --collect: an ended transient unit is gone
        return None
    path = STATE / (unit + ".state")
    return path.read_text().strip() if path.exists() else None

if tool == "systemd-run":
    unit, command = None, []
    rest = list(args)
    while rest and rest[0].startswith("-"):
        opt = rest.pop(0)
        if opt in ("--unit", "--description", "-p", "--property"):
            value = rest.pop(0)
            if opt == "--unit":
                unit = value
        elif opt.startswith("--unit="):
            unit = opt.split("=", 1)[1]
    unit = unit_name(unit)
    if state_of(unit):
        sys.exit(f"Failed to start transient service unit: Unit {{unit}} was already loaded or has a fragment file.")
    env = dict(os.environ)
    for opt in args:
        if opt.startswith("--setenv="):
            key, _, value = opt[len("--setenv="):].partition("=")
            env[key] = value
    out = open(STATE / (unit + ".log"), "w")
    child = subprocess.Popen(rest, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True)
    (STATE / (unit + ".pid")).write_text(str(child.pid))
    sys.exit(0)

if tool == "journalctl":
    unit = unit_name(args[args.index("-u") + 1])
    path = STATE / (unit + ".log")
    sys.stdout.write(path.read_text() if path.exists() else "-- No entries --\n")
    sys.exit(0)

command = args[0]
names = [a for a in args[1:] if not a.startswith("-")]
if command == "show":
    prop = args[args.index("-p") + 1]
    unit = unit_name(names[-1])
    state = state_of(unit)
    value = {{"LoadState": "loaded" if state else "not-found", "ActiveState": state or "inactive",
              "MainPID": str(pid_of(unit))}}[prop]
    print(value)
    sys.exit(0)
if command == "is-active":
    state = state_of(unit_name(names[0])) or "inactive"
    if "--quiet" not in args:
        print(state)
    sys.exit(0 if state == "active" else 3)
if command in ("stop", "start"):
    rc = 0
    for name in names:
        unit = unit_name(name)
        state = state_of(unit)
        if state is None:
            print(f"Failed to {{command}} {{unit}}: Unit {{unit}} not loaded.", file=sys.stderr)
            rc = 5
            continue
        if (STATE / (unit + ".fail-" + command)).exists():
            print(f"Job for {{unit}} failed.", file=sys.stderr)
            rc = 1
            continue
        pid = pid_of(unit)
        if command == "stop" and pid:
            os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                if not pid_of(unit):
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
            (STATE / (unit + ".pid")).unlink(missing_ok=True)
        elif not pid:
            (STATE / (unit + ".state")).write_text("active" if command == "start" else "inactive")
    sys.exit(rc)
sys.exit(f"fake systemctl: {{command}} is not faked")
'''


# Stand-ins for PyTorch and CuPy (tests only): enough of their CUDA API for chaosgpu's load program. Memory a process
# takes is registered with the simulator like gpusim-hog does, so the node's nvidia-smi lists the process and its
# memory; every call is appended to FAKE_CUDA_LOG as JSON. FAKE_CUDA_TOTAL_MIB is each GPU's memory.
_FAKE_CUDA_COMMON = """
import json, os
PROCS = {procs!r}
LOG = {log!r}
TOTAL = {total_mib} << 20
_used = {{}}
_busy = set()


def _note(**event):
    with open(LOG, "a") as log:
        log.write(json.dumps(event) + "\\n")


def _register():
    gpus = sorted(_used)
    record = {{"pid": os.getpid(), "name": "python3", "gpus": gpus,
              "used_memory_mib": max(_used.values()) >> 20 if _used else 0, "util": 100 if _busy else 0}}
    path = os.path.join(PROCS, f"{{os.getpid()}}.json")
    with open(path + ".tmp", "w") as out:
        json.dump(record, out)
    os.replace(path + ".tmp", path)


def _take(gpu, size):
    _used[gpu] = _used.get(gpu, 0) + size
    _note(call="alloc", gpu=gpu, bytes=size)
    _register()


def _info(gpu):
    return TOTAL - _used.get(gpu, 0), TOTAL
"""

_FAKE_TORCH = """
uint8 = "uint8"


class Tensor:
    def __init__(self, gpu):
        self.device = gpu


def _gpu(device):
    return int(str(device).rsplit(":", 1)[-1])


class cuda:
    @staticmethod
    def is_available():
        return True

    @staticmethod
    def mem_get_info(gpu):
        return _info(_gpu(gpu))

    @staticmethod
    def synchronize(device=None):
        _note(call="synchronize", gpu=device)


def empty(size, dtype=None, device=None):
    _take(_gpu(device), size)
    return Tensor(_gpu(device))


def rand(*shape, device=None):
    _take(_gpu(device), shape[0] * shape[1] * 4)
    return Tensor(_gpu(device))


def empty_like(tensor):
    return rand(8192, 8192, device=f"cuda:{tensor.device}")


def mm(a, b, out=None):
    if a.device not in _busy:
        _busy.add(a.device)
        _register()
        _note(call="mm", gpu=a.device)
    return out
"""

_FAKE_CUPY = """
uint8 = "uint8"
float32 = "float32"
_current = [0]


class _Array:
    def __init__(self, gpu):
        self.gpu = gpu


class _Device:
    def __init__(self, gpu):
        self.gpu = gpu

    def __enter__(self):
        _current.append(self.gpu)
        return self

    def __exit__(self, *exc):
        _current.pop()

    def synchronize(self):
        _note(call="synchronize", gpu=self.gpu)


class _Runtime:
    @staticmethod
    def memGetInfo():
        return _info(_current[-1])

    @staticmethod
    def getDeviceCount():
        return 8


class cuda:
    Device = _Device
    runtime = _Runtime


class random:
    @staticmethod
    def random(shape, dtype=None):
        _take(_current[-1], shape[0] * shape[1] * 4)
        return _Array(_current[-1])


def empty(size, dtype=None):
    _take(_current[-1], size)
    return _Array(_current[-1])


def empty_like(array):
    return random.random((8192, 8192))


def matmul(a, b, out=None):
    if a.gpu not in _busy:
        _busy.add(a.gpu)
        _register()
        _note(call="matmul", gpu=a.gpu)
    return out
"""


def write_fake_cuda(directory: Path, procs: Path, log: Path, total_mib: int = 81559) -> Path:
    """Write fake ``torch`` and ``cupy`` packages into ``directory`` (put it on PYTHONPATH); returns it."""
    common = _FAKE_CUDA_COMMON.format(procs=str(procs), log=str(log), total_mib=total_mib)
    for name, body in (("torch", _FAKE_TORCH), ("cupy", _FAKE_CUPY)):
        package = directory / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(common + body)
    return directory


@dataclass
class GpuNode:
    """The simulated node: its simulator, the bin directory to put first on PATH, the fake systemd's units."""

    sim: Sim
    bin: Path
    units: Path
    log: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def bash(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [shlex.split(line) for line in self.log.read_text().splitlines() if line.strip()]

    def gpus(self) -> list[dict[str, Any]]:
        return list(self.sim.state()["gpus"])

    def set_service(self, name: str, state: str) -> None:
        (self.units / f"{name}.service.state").write_text(state)

    def service(self, name: str) -> str | None:
        path = self.units / f"{name}.service.state"
        return path.read_text().strip() if path.exists() else None

    def running_units(self) -> list[str]:
        found = []
        for path in sorted(self.units.glob("*.pid")):
            try:
                os.kill(int(path.read_text()), 0)
            except (ProcessLookupError, ValueError):
                continue
            found.append(path.name.removesuffix(".pid"))
        return found

    def stop_units(self) -> None:
        for path in self.units.glob("*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(path.read_text()), 15)


def make_node(tmp_path: Path) -> Iterator[GpuNode]:
    """Generator for a fixture: the node, and everything it started stopped afterwards."""
    sim = make_sim(tmp_path / "sim")
    port = sim.hostengine()
    bin_dir = tmp_path / "bin"
    units = tmp_path / "units"
    bin_dir.mkdir()
    units.mkdir()
    log = tmp_path / "calls.log"
    # The simulator's settings, unless the caller's environment gives its own.
    exports = "\n".join(f'export {k}="${{{k}:-{v}}}"' for k, v in sim.env.items() if k not in ("PATH", "PYTHONPATH"))
    exports += f'\nexport PYTHONPATH="{LIB}${{PYTHONPATH:+:$PYTHONPATH}}"'
    stand_ins = {
        "nvidia-smi": ("-m gpusim.nvsmi", ""),
        "dcgmi": ("-m gpusim.dcgmi", f" --host 127.0.0.1:{port}"),
        "gpusim": ("-m gpusim.admin", ""),
        "gpusim-hog": ("-c 'import sys; from gpusim.admin import hog_main; sys.exit(hog_main())'", ""),
    }
    for name, (target, extra) in stand_ins.items():
        path = bin_dir / name
        path.write_text(_SHIM.format(exports=exports, log=log, python=sys.executable, target=target, extra=extra))
        path.chmod(0o755)
    fake = bin_dir / "fake-systemd"
    fake.write_text(_FAKE_SYSTEMD.format(python=sys.executable, state=str(units), log=str(log)))
    fake.chmod(0o755)
    for tool in ("systemd-run", "systemctl", "journalctl"):
        (bin_dir / tool).symlink_to(fake)
    node = GpuNode(sim, bin_dir, units, log)
    for service in ("nvidia-persistenced", "nvidia-dcgm", "dcgm-exporter"):
        node.set_service(service, "active")
    try:
        yield node
    finally:
        node.stop_units()
        time.sleep(0.1)
        sim.stop()


__all__ = ["LIB", "GpuNode", "make_node", "write_fake_cuda"]
