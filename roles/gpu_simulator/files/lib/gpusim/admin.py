# STAND-IN: gpuops.fleet GPU simulator (lab only). Not NVIDIA software.
"""`gpusim` (init, show, xid, boot, reset-state) and `gpusim-hog`, a process that holds GPUs like a CUDA job."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from gpusim import health
from gpusim import state as st

__all__ = ["hog_main", "main"]

RC_CUDA_ERROR = 1


def _cmd_init(config: st.Config, _: argparse.Namespace) -> int:
    print("changed" if st.init_state(config) else "unchanged")
    return 0


def _cmd_show(config: st.Config, args: argparse.Namespace) -> int:
    data = st.load_state(config)
    if args.json:
        print(json.dumps(data, indent=1, sort_keys=True))
        return 0
    for view in st.compute_view(config, data):
        flags = " LOST" if view.lost else ""
        print(
            f"GPU {view.index} {view.gpu['pci_bus_id']} {view.gpu['uuid']} {view.temperature}C {view.power:.1f}W "
            f"util={view.util}% mem={view.memory_used}MiB xid={view.gpu['last_xid']} procs={len(view.processes)}"
            f"{flags}"
        )
    return 0


def _cmd_xid(config: st.Config, args: argparse.Namespace) -> int:
    with st.mutate(config) as data:
        gpus = {gpu["index"]: gpu for gpu in data["gpus"]}
        if args.gpu not in gpus:
            print(f"gpusim: no GPU {args.gpu} (this node has {len(gpus)})", file=sys.stderr)
            return 2
        line = st.record_xid(config, gpus[args.gpu], args.xid, health.xid_message(args.xid), args.pid, args.name)
    print(line)
    return 0


def _cmd_boot(config: st.Config, _: argparse.Namespace) -> int:
    installed = st.installed_driver_version(config)
    with st.mutate(config) as data:
        st.boot(data)
        data["loaded_driver_version"] = installed  # a boot loads the driver installed now
    return 0


def _cmd_reset_state(config: st.Config, _: argparse.Namespace) -> int:
    with st.mutate(config) as data:
        data.clear()
        data.update(st.default_state(config))
        data["loaded_driver_version"] = st.installed_driver_version(config)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpusim", description="gpuops.fleet GPU simulator admin (STAND-IN, lab)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create the state if missing or if GPU count/profile changed")
    show = sub.add_parser("show", help="print the simulated GPUs")
    show.add_argument("--json", action="store_true")
    xid = sub.add_parser("xid", help="an XID happens on a GPU (kernel-log line, DCGM field 230; 79: GPU lost)")
    xid.add_argument("--gpu", type=int, required=True)
    xid.add_argument("--xid", type=int, required=True)
    xid.add_argument("--pid", type=int, default=None)
    xid.add_argument("--name", default=None)
    sub.add_parser("boot", help="what a reboot does: lost GPUs back, volatile counters and DCGM caches cleared")
    sub.add_parser("reset-state", help="forget everything: a fresh node")
    args = parser.parse_args(argv)
    commands = {
        "init": _cmd_init,
        "show": _cmd_show,
        "xid": _cmd_xid,
        "boot": _cmd_boot,
        "reset-state": _cmd_reset_state,
    }
    try:
        return commands[args.command](st.load_config(), args)
    except st.StateError as err:
        print(f"gpusim: {err}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------------------------
# gpusim-hog


def _visible(arg: str | None) -> list[int]:
    text = arg if arg is not None else os.environ.get("CUDA_VISIBLE_DEVICES", "0")
    return [int(part) for part in text.split(",") if part.strip()]


def _refusal(views: list[st.GpuView], gpus: list[int], memory: int) -> str | None:
    by_index = {view.index: view for view in views}
    for index in gpus:
        view = by_index.get(index)
        if view is None:
            return "CUDA error: invalid device ordinal"
        if view.lost:
            return "CUDA error: unspecified launch failure (GPU is lost)"
        mode = view.gpu["compute_mode"]
        if mode == "Prohibited" or (mode == "Exclusive_Process" and view.processes):
            return "CUDA error: all CUDA-capable devices are busy or unavailable"
        if view.memory_used + memory > view.memory_total - view.memory_reserved:
            return f"CUDA error: out of memory (tried to allocate {memory} MiB on GPU {index})"
    return None


def hog_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpusim-hog", description="hold simulated GPUs like a CUDA job (lab)")
    parser.add_argument("--gpu", default=None, help="GPU indices (default: CUDA_VISIBLE_DEVICES, else 0)")
    parser.add_argument("--memory-mib", type=int, default=1024)
    parser.add_argument("--util", type=int, default=100, choices=range(101), metavar="PCT")
    parser.add_argument("--seconds", type=float, default=0, help="0: until SIGTERM")
    parser.add_argument("--name", default="gpusim-hog", help="process name nvidia-smi shows")
    args = parser.parse_args(argv)
    config = st.load_config()
    gpus = _visible(args.gpu)
    refusal = _refusal(st.compute_view(config, st.load_state(config)), gpus, args.memory_mib)
    if refusal:
        print(refusal, file=sys.stderr)
        return RC_CUDA_ERROR
    record: dict[str, Any] = {
        "pid": os.getpid(),
        "name": args.name,
        "gpus": gpus,
        "used_memory_mib": args.memory_mib,
        "util": args.util,
        "started": st.now(),
    }
    stop = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        st.register_process(config, record)
    except OSError as err:
        print(f"gpusim-hog: cannot register in {config.procs_dir}: {err.strerror}", file=sys.stderr)
        return RC_CUDA_ERROR
    deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
    try:
        while not stop and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
    finally:
        st.unregister_process(config, os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
