#!/usr/bin/env python3
"""Check chaosgpu's GPU code on a host with a real NVIDIA GPU, and capture what the GPU says as test fixtures.

Standard library only: it loads chaosgpu/gpu/commands.py from this checkout by path (no chaoslib needed). It

1. captures ``nvidia-smi -L``, ``-q``, the ``--query-gpu`` calls the probes and faults make (health fields,
   memory-event counters, compute mode) and ``--query-compute-apps``, plus ``dcgmi discovery -l`` and
   ``dcgmi health -c -j`` where DCGM is installed, into ``<out>/fixtures/`` (one text file per call, and
   ``nvidia_smi_calls.json`` in the format of tests/unit/plugins/modules/fixtures/nvidia_smi/);
2. runs the GPU probes' parsers on those captures;
3. runs round trips of the GPU load and the process kill on one GPU: memory pressure and compute burn with the
   load program chaosgpu installs (PyTorch or CuPy in ``--python``; skipped, and said so, when neither imports), and
   a kill, with the kill fault's own command restricted to a process this script started;
4. writes ``<out>/summary.json`` and exits 0 when nothing failed (skipped steps are not failures), 1 otherwise, 2
   when there is no usable nvidia-smi at all.

It never changes a card setting: every nvidia-smi call goes through one function that allows only read-only
options (no -pm, -c, -pl, -lgc/-rgc, -ac/-rac, -mig, -r, -e). Loads run as this script's own child processes;
with ``--systemd`` (root on a systemd host) the load also runs through the fault's own systemd-run commands.
``--tool gpusim-hog`` runs the round trips with the lab simulator's stand-in (how the unit tests run this script).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMMANDS_PATH = ROOT / "chaosgpu" / "gpu" / "commands.py"

# nvidia-smi options this script may pass: read-only ones only.
READ_ONLY_OPTIONS = ("-L", "-q", "-i", "-d", "--query-gpu", "--query-compute-apps", "--format", "--id", "--list-gpus")
READY_TIMEOUT_S = 90.0  # CUDA start-up and a large allocation on a busy host
SETTLE_TIMEOUT_S = 30.0
RC_GPU_LOST = 15  # nvidia-smi: a GPU is lost (fallen off the bus); the others still answer
MEMORY_SLACK_MIB = 256  # CUDA context and allocator rounding around the memory a load holds
BURN_UTILIZATION_PCT = 50
MAX_MEMORY_FRACTION = 0.9  # leave room for the CUDA context and the others on the GPU


def load_commands() -> ModuleType:
    """chaosgpu.gpu.commands from this checkout, without importing the chaosgpu package (and so chaoslib)."""
    spec = importlib.util.spec_from_file_location("chaosgpu_gpu_commands", COMMANDS_PATH)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {COMMANDS_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


C = load_commands()


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Recorder:
    """Runs read-only commands and keeps every call (argv, exit status, output, seconds) for the fixtures."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def run(self, argv: list[str], timeout: float = 120) -> dict[str, Any]:
        started = time.monotonic()
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
            call = {"argv": argv, "rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        except FileNotFoundError:
            call = {"argv": argv, "rc": 127, "stdout": "", "stderr": f"{argv[0]}: not found"}
        except subprocess.TimeoutExpired:
            call = {"argv": argv, "rc": 124, "stdout": "", "stderr": f"timed out after {timeout:g} s"}
        call["seconds"] = round(time.monotonic() - started, 3)
        self.calls.append(call)
        return call

    def nvidia_smi(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        check_read_only(list(args))
        return self.run(["nvidia-smi", *args], timeout)


def check_read_only(args: list[str]) -> None:
    """Refuse any nvidia-smi argument that is not a read-only option or the value of one."""
    expect_value = False
    for arg in args:
        if expect_value:
            expect_value = False
            continue
        name = arg.split("=", 1)[0]
        if name not in READ_ONLY_OPTIONS:
            raise ValueError(f"refusing nvidia-smi {' '.join(args)}: {arg} is not a read-only option of this script")
        expect_value = name in ("-i", "--id", "-d") and "=" not in arg


# --- 1. captures ------------------------------------------------------------------------------------------------


def memory_event_fields() -> list[str]:
    fields: list[str] = []
    for event in C.MEMORY_EVENTS.values():
        fields += [query for _, query, _ in event if query not in fields]
    return fields


def capture(recorder: Recorder, out: Path) -> dict[str, dict[str, Any]]:
    health = ",".join(C.GPU_HEALTH_FIELDS)
    calls = {
        "list": recorder.nvidia_smi("-L"),
        "query": recorder.nvidia_smi("-q"),
        "health_csv": recorder.nvidia_smi(f"--query-gpu={health}", "--format=csv"),
        "health": recorder.nvidia_smi(f"--query-gpu={health}", "--format=csv,noheader,nounits"),
        "memory_events": recorder.nvidia_smi(
            f"--query-gpu=index,{','.join(memory_event_fields())}", "--format=csv,noheader,nounits"
        ),
        "modes": recorder.nvidia_smi(
            "--query-gpu=index,uuid,pci.bus_id,compute_mode,memory.total,memory.used",
            "--format=csv,noheader,nounits",
        ),
        "apps": recorder.nvidia_smi(
            "--query-compute-apps=pid,gpu_uuid,process_name,used_gpu_memory", "--format=csv,noheader,nounits"
        ),
    }
    if shutil.which("dcgmi"):
        calls["dcgm_discovery"] = recorder.run(["dcgmi", "discovery", "-l"])
        calls["dcgm_health"] = recorder.run(["dcgmi", "health", "-c", "-j"])
    fixtures = out / "fixtures"
    fixtures.mkdir(parents=True, exist_ok=True)
    for name, call in calls.items():
        (fixtures / f"{name}.txt").write_text(
            call["stdout"] + (f"\n--- stderr\n{call['stderr']}" if call["stderr"] else "")
        )
    gpu_name = next((line.split(": ", 1)[1] for line in calls["list"]["stdout"].splitlines() if ": " in line), "?")
    (fixtures / "nvidia_smi_calls.json").write_text(
        json.dumps(
            {
                "source": f"captured on {socket.gethostname()} ({gpu_name}) by scripts/gpu-check.py at {now_iso()}",
                "calls": [
                    {"argv": c["argv"], "rc": c["rc"], "stdout": c["stdout"]}
                    for c in recorder.calls
                    if c["argv"][0] == "nvidia-smi"
                ],
            },
            indent=1,
        )
        + "\n"
    )
    return calls


# --- 2. probes on the captures ------------------------------------------------------------------------------------


def run_probes(calls: dict[str, dict[str, Any]]) -> dict[str, Any]:
    listed = C.parse_gpu_list(calls["list"]["stdout"])
    health = C.parse_gpu_health(calls["health"]["stdout"])
    apps = C.parse_compute_apps(calls["apps"]["stdout"])
    fields = memory_event_fields()
    events = C.parse_gpu_health(calls["memory_events"]["stdout"], ["index", *fields])
    supported = {
        name: all(row[query] is not None for row in events.gpus for _, query, _ in spec)
        for name, spec in C.MEMORY_EVENTS.items()
    }
    problems = []
    if not listed.count:
        problems.append(f"nvidia-smi -L lists no GPU: {listed.other}")
    if len(health.gpus) != listed.count:
        problems.append(f"the health query parsed {len(health.gpus)} rows for {listed.count} GPUs: {health.other}")
    if health.other:
        problems.append(f"health query lines the parser did not read: {list(health.other)}")
    if len(events.gpus) != listed.count:
        problems.append(f"the memory-event query parsed {len(events.gpus)} rows: {list(events.other)}")
    result: dict[str, Any] = {
        "gpu_count": listed.count,
        "lost": listed.lost,
        "gpus": [dict(row) for row in health.gpus],
        "compute_apps": apps,
        "memory_events_supported": supported,
    }
    if "dcgm_health" in calls:
        try:
            parsed = C.parse_dcgm_health(calls["dcgm_health"]["stdout"])
            result["dcgm_health"] = {"overall": parsed.overall, "gpus": parsed.gpus}
        except ValueError as err:
            result["dcgm_health"] = {"error": str(err)}
    else:
        result["dcgm_health"] = {"skipped": "no dcgmi on this host"}
    result["status"] = "failed" if problems else "passed"
    result["problems"] = problems
    return result


# --- 3. round trips ---------------------------------------------------------------------------------------------


def choose_tool(wanted: str, python: str) -> tuple[str | None, str]:
    """The load tool and why: torch or cupy when ``python`` imports it with a GPU, gpusim-hog only when asked for."""
    if wanted == "gpusim-hog":
        return ("gpusim-hog", "asked for") if shutil.which("gpusim-hog") else (None, "no gpusim-hog on PATH")
    probes = {
        "torch": "import torch, sys; sys.exit(not torch.cuda.is_available())",
        "cupy": "import cupy; cupy.cuda.runtime.getDeviceCount()",
    }
    for tool in ("torch", "cupy") if wanted == "auto" else (wanted,):
        try:
            done = subprocess.run(  # noqa: S603 - an argument list, no shell
                [python, "-c", probes[tool]], capture_output=True, text=True, timeout=120, check=False
            )
        except (FileNotFoundError, subprocess.TimeoutExpired) as err:
            return None, f"{python}: {err}"
        if done.returncode == 0:
            return tool, f"{tool} imports in {python} and sees a GPU"
    return None, f"neither torch nor cupy imports with a GPU in {python}"


class GpuView:
    """Reads one GPU through nvidia-smi (read-only)."""

    def __init__(self, recorder: Recorder, gpu: int) -> None:
        self.recorder = recorder
        self.gpu = gpu
        row = self.query("uuid,memory.total")
        self.uuid, self.total_mib = row[0], int(row[1])

    def query(self, fields: str) -> list[str]:
        call = self.recorder.nvidia_smi(f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", str(self.gpu))
        if call["rc"] != 0:
            raise RuntimeError(f"nvidia-smi -i {self.gpu} exited {call['rc']}: {call['stdout']}{call['stderr']}")
        return [cell.strip() for cell in call["stdout"].strip().split(",")]

    def used_mib(self) -> int:
        return int(self.query("memory.used")[0])

    def utilization(self) -> int:
        return int(self.query("utilization.gpu")[0])

    def pids(self) -> set[int]:
        call = self.recorder.nvidia_smi("--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader,nounits")
        return {app["pid"] for app in C.parse_compute_apps(call["stdout"]) if app["gpu_uuid"] == self.uuid}


def wait_until(predicate: Any, timeout: float, interval: float = 0.5) -> tuple[bool, float]:
    started = time.monotonic()
    while True:
        if predicate():
            return True, round(time.monotonic() - started, 2)
        if time.monotonic() - started > timeout:
            return False, round(time.monotonic() - started, 2)
        time.sleep(interval)


class Load:
    """A load process this script owns: the load program (torch/cupy) or gpusim-hog."""

    def __init__(self, tool: str, python: str, workdir: Path, view: GpuView, memory_mib: int, burn: bool) -> None:
        self.view = view
        self.ready_file = workdir / f"ready-{os.getpid()}-{time.monotonic_ns()}"
        if tool == "gpusim-hog":
            argv = ["gpusim-hog", "--gpu", str(view.gpu), "--memory-mib", str(memory_mib)]
            argv += ["--util", "100" if burn else "0", "--name", "chaosgpu-gpu-check"]
        else:
            program = workdir / "gpuload.py"
            program.write_text(C.LOADER_PROGRAM)
            argv = [python, str(program), "--tool", tool, "--gpus", str(view.gpu), "--memory-mib", str(memory_mib)]
            argv += ["--ready-file", str(self.ready_file)] + (["--burn"] if burn else [])
        self.tool = tool
        self.argv = argv
        self.log = workdir / f"load-{time.monotonic_ns()}.log"
        env = {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        with self.log.open("w") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the load exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
        if self.tool != "gpusim-hog":
            return self.ready_file.exists()
        return self.listed()

    def listed(self) -> bool:
        """nvidia-smi lists the process on its GPU (not where PIDs are namespaced away, e.g. some containers)."""
        return self.process.pid in self.view.pids()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(SETTLE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def round_trip_memory(view: GpuView, tool: str, python: str, work: Path, fraction: float) -> dict[str, Any]:
    before = view.used_mib()
    memory = int(view.total_mib * fraction)
    load = Load(tool, python, work, view, memory, burn=False)
    try:
        held, took = wait_until(load.ready, READY_TIMEOUT_S)
        used = view.used_mib()
        listed, _ = wait_until(load.listed, 10)
        result: dict[str, Any] = {
            "memory_mib": memory,
            "used_before_mib": before,
            "used_during_mib": used,
            "ready_s": took,
            "listed_by_nvidia_smi": listed,
        }
        if not held:
            return {**result, "status": "failed", "why": f"not holding GPU {view.gpu} after {took} s"}
        if used < before + memory - MEMORY_SLACK_MIB:
            return {**result, "status": "failed", "why": "nvidia-smi does not show the memory held"}
    finally:
        rc = load.stop()
    freed, took = wait_until(
        lambda: view.used_mib() <= before + MEMORY_SLACK_MIB and load.process.pid not in view.pids(), SETTLE_TIMEOUT_S
    )
    result.update({"exit_status": rc, "used_after_mib": view.used_mib(), "released_s": took})
    if rc != 0:
        return {**result, "status": "failed", "why": f"the load exited {rc} on SIGTERM"}
    if not freed:
        return {**result, "status": "failed", "why": "the memory was not released"}
    return {**result, "status": "passed"}


def round_trip_burn(view: GpuView, tool: str, python: str, work: Path) -> dict[str, Any]:
    load = Load(tool, python, work, view, 256, burn=True)
    try:
        held, ready_s = wait_until(load.ready, READY_TIMEOUT_S)
        if not held:
            return {"status": "failed", "why": f"not running on GPU {view.gpu} after {ready_s} s"}
        busy, took = wait_until(lambda: view.utilization() >= BURN_UTILIZATION_PCT, SETTLE_TIMEOUT_S)
        result: dict[str, Any] = {"ready_s": ready_s, "busy_s": took, "utilization_pct": view.utilization()}
    finally:
        rc = load.stop()
    gone, _ = wait_until(lambda: load.process.pid not in view.pids(), SETTLE_TIMEOUT_S)
    result["exit_status"] = rc
    if not busy:
        return {**result, "status": "failed", "why": f"utilization stayed below {BURN_UTILIZATION_PCT}%"}
    if rc != 0 or not gone:
        return {**result, "status": "failed", "why": f"the load exited {rc} on SIGTERM / still listed: {not gone}"}
    return {**result, "status": "passed"}


def round_trip_kill(recorder: Recorder, view: GpuView, tool: str, python: str, work: Path) -> dict[str, Any]:
    load = Load(tool, python, work, view, 256, burn=False)
    try:
        held, ready_s = wait_until(load.ready, READY_TIMEOUT_S)
        if not held:
            return {"status": "failed", "why": f"the process to kill is not on GPU {view.gpu} after {ready_s} s"}
        listed, _ = wait_until(load.listed, 10)
        if not listed:
            why = "nvidia-smi does not list the process it runs (PIDs in another namespace?): nothing a kill could find"
            return {"status": "skipped", "why": why}
        inject, _ = C.kill_commands([view.gpu], "KILL", [load.process.pid])
        done = recorder.run(["bash", "-c", inject], timeout=60)
        rc = load.process.wait(10)
    finally:
        load.stop()
    gone, took = wait_until(lambda: load.process.pid not in view.pids(), SETTLE_TIMEOUT_S)
    result = {
        "inject_rc": done["rc"],
        "inject_said": (done["stdout"] + done["stderr"]).strip(),
        "exit_status": rc,
        "gone_s": took,
    }
    if done["rc"] != 0 or rc != -signal.SIGKILL or not gone:
        return {**result, "status": "failed", "why": "the kill command did not end the process it was given"}
    return {**result, "status": "passed"}


def round_trip_systemd(recorder: Recorder, view: GpuView, tool: str, python: str, work: Path) -> dict[str, Any]:
    """The memory-pressure fault's own inject and revert commands (systemd-run), as the ledger would run them."""
    before = view.used_mib()
    key = C.new_key()
    inject, revert = C.load_commands(
        [view.gpu], key=key, memory_mib=512, tool=tool, python=python, max_runtime_s=300, state_dir=str(work / "state")
    )
    done = recorder.run(["bash", "-c", inject], timeout=120)
    during = view.used_mib()
    undone = recorder.run(["bash", "-c", revert], timeout=120)
    freed, took = wait_until(lambda: view.used_mib() <= before + MEMORY_SLACK_MIB, SETTLE_TIMEOUT_S)
    result = {
        "unit": C.load_unit(key),
        "inject_rc": done["rc"],
        "revert_rc": undone["rc"],
        "used_during_mib": during,
        "released_s": took,
    }
    if done["rc"] != 0:
        return {**result, "status": "failed", "why": (done["stdout"] + done["stderr"])[-2000:]}
    if undone["rc"] != 0 or not freed:
        return {**result, "status": "failed", "why": (undone["stdout"] + undone["stderr"])[-2000:] or "not freed"}
    return {**result, "status": "passed"}


def round_trips(recorder: Recorder, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    tool, why = choose_tool(args.tool, args.python)
    trips: dict[str, Any] = {"tool": tool, "tool_why": why}
    names = ("memory_pressure", "compute_burn", "process_kill", "systemd_load")
    if tool is None:
        return {**trips, **{name: {"status": "skipped", "why": why} for name in names}}
    view = GpuView(recorder, args.gpu)
    steps = {
        "memory_pressure": lambda: round_trip_memory(view, tool, args.python, work, args.memory_fraction),
        "compute_burn": lambda: round_trip_burn(view, tool, args.python, work),
        "process_kill": lambda: round_trip_kill(recorder, view, tool, args.python, work),
    }
    systemd = os.geteuid() == 0 and Path("/run/systemd/system").is_dir() and shutil.which("systemd-run")
    if args.systemd and systemd:
        steps["systemd_load"] = lambda: round_trip_systemd(recorder, view, tool, args.python, work)
    else:
        trips["systemd_load"] = {"status": "skipped", "why": "needs --systemd, root and a running systemd"}
    for name, step in steps.items():
        started = time.monotonic()
        try:
            trips[name] = step()
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as err:
            trips[name] = {"status": "failed", "why": str(err)}
        trips[name]["seconds"] = round(time.monotonic() - started, 2)
    return trips


# --- main -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check"), help="output directory (default ./gpu-check)")
    parser.add_argument("--gpu", type=int, default=0, help="the GPU of the round trips (nvidia-smi index)")
    parser.add_argument("--tool", choices=("auto", "torch", "cupy", "gpusim-hog"), default="auto")
    parser.add_argument("--python", default=sys.executable, help="the Python with torch or cupy (default: this one)")
    parser.add_argument("--memory-fraction", type=float, default=0.5, help="memory pressure: share of the GPU's memory")
    parser.add_argument("--systemd", action="store_true", help="also run the fault's systemd-run commands (root)")
    args = parser.parse_args(argv)
    if not 0 < args.memory_fraction <= MAX_MEMORY_FRACTION:
        parser.error("--memory-fraction must be above 0 and at most 0.9")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    recorder = Recorder()
    summary: dict[str, Any] = {"host": socket.gethostname(), "started": now_iso(), "settings_changed": False}
    calls = capture(recorder, out)
    if calls["list"]["rc"] not in (0, RC_GPU_LOST):
        summary.update(status="failed", why=f"nvidia-smi -L exited {calls['list']['rc']}: {calls['list']['stderr']}")
        summary["ended"] = now_iso()
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps(summary, indent=1))
        return 2
    summary["probes"] = run_probes(calls)
    summary["round_trips"] = round_trips(recorder, args, work)
    summary["nvidia_smi_calls"] = [" ".join(c["argv"]) for c in recorder.calls if c["argv"][0] == "nvidia-smi"]
    steps = [summary["probes"]] + [v for v in summary["round_trips"].values() if isinstance(v, dict)]
    summary["status"] = "failed" if any(step.get("status") == "failed" for step in steps) else "passed"
    summary["ended"] = now_iso()
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "nvidia_smi_calls"}, indent=1))
    return 0 if summary["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
