"""Bench: what one Ansible task costs on this machine, split into wall time, controller CPU and the node's CPU.

Explains where the re-run's time goes (bench/provisioning.py) and why T(N)/T(1) is bound by the CPUs the lab's
hosts share with the controller. Playbooks of ``--tasks`` identical tasks run on one lab node, side by side:

- ``module``: ``ansible.builtin.command: true``: one module run on the node (the AnsiballZ payload unpacked and
  its ansible.module_utils compiled from source by a fresh Python, every time);
- ``skipped``: the same task with a ``when`` that is false: the controller only;
- ``apt``: ``ansible.builtin.apt`` of a package that is installed (what a re-run asks);
- ``apt_installed``: ``gpuops.fleet.apt_installed`` of the same package (dpkg asked with one raw command).

Per task: wall seconds, the controller's CPU seconds (ansible-playbook and its children) and the node's CPU seconds
(the lab container's cgroup, less its idle rate measured first). Figures: those, and apt / apt_installed.
Run: ``python bench/task_cost.py [--host gpu-node-1] [--tasks 40] [--rounds 3]`` against a running lab.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Bench, Figure, median, side_by_side

LAB = ROOT / "inventories" / "lab"
BIN = Path(sys.executable).parent
PACKAGE = "nftables"  # installed on every GPU node by the firewall role

# "empty" runs no task: the playbook's own start-up and end, taken off every other kind's figures.
TASKS: dict[str, dict[str, object] | None] = {
    "empty": None,
    "module": {"ansible.builtin.command": "true", "changed_when": False},
    "skipped": {"ansible.builtin.command": "true", "changed_when": False, "when": "bench_never | default(false)"},
    "apt": {"ansible.builtin.apt": {"name": PACKAGE, "state": "present"}, "become": True},
    "apt_installed": {"gpuops.fleet.apt_installed": {"name": PACKAGE, "state": "present"}, "become": True},
}


def cgroup_cpu_reader(container: str, root: Path = Path("/sys/fs/cgroup")) -> Callable[[], float] | None:
    """A reader of the CPU seconds the container has used (cgroup v1 cpuacct or v2 cpu.stat), or None."""
    done = subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True, text=True, check=False
    )
    cid = done.stdout.strip()
    if done.returncode or not cid:
        return None
    v1 = root / "cpuacct" / "docker" / cid / "cpuacct.usage"
    if v1.exists():
        return lambda: int(v1.read_text(encoding="ascii")) / 1e9
    for v2 in (root / "system.slice" / f"docker-{cid}.scope" / "cpu.stat", root / "docker" / cid / "cpu.stat"):
        if v2.exists():
            return functools.partial(_usage_seconds, v2)
    return None


def _usage_seconds(path: Path) -> float:
    for line in path.read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    raise ValueError(f"{path}: no usage_usec")


def write_playbooks(directory: Path, host: str, count: int) -> dict[str, Path]:
    """One playbook per kind of task: ``count`` copies of it on ``host``, no facts gathered."""
    paths = {}
    for kind, task in TASKS.items():
        tasks = [] if task is None else [{"name": f"{kind} {i}", **task} for i in range(count)]
        path = directory / f"{kind}.yml"
        path.write_text(json.dumps([{"hosts": host, "gather_facts": False, "tasks": tasks}]), encoding="utf-8")
        paths[kind] = path
    return paths


def figures(
    bench: Bench,
    samples: dict[str, list[float]],
    controller: dict[str, float],
    node: dict[str, float] | None,
    tasks: int,
    runs: int,
) -> None:
    """Per task of each kind, less the empty playbook: wall (medians), controller and node CPU (means over ``runs``,
    the warm-up included); then apt against apt_installed."""
    per_task: dict[str, float] = {}
    for kind in TASKS:
        bench.samples[f"{kind} x{tasks}"] = samples[kind]
        if kind == "empty":
            bench.add(
                Figure("task cost: a playbook with no task (start-up, taken off below)", median(samples[kind]), "s")
            )
            continue
        per_task[kind] = (median(samples[kind]) - median(samples["empty"])) / tasks
        own_cpu = (controller[kind] - controller["empty"]) / runs / tasks
        bench.add(Figure(f"task cost: {kind}: wall per task (median)", per_task[kind], "s"))
        bench.add(Figure(f"task cost: {kind}: controller CPU per task", own_cpu, "s"))
        if node is not None:
            bench.add(Figure(f"task cost: {kind}: node CPU per task", (node[kind] - node["empty"]) / runs / tasks, "s"))
    bench.add(
        Figure(
            "task cost: apt / apt_installed (wall per task, package installed)",
            per_task["apt"] / per_task["apt_installed"],
            "x",
        )
    )
    if node is None:
        bench.add(Figure("task cost: node CPU", None, detail="no cgroup CPU accounting found for the lab container"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="gpu-node-1")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error(f"--tasks must be >= 1, got {args.tasks}")

    node_cpu = cgroup_cpu_reader(f"gpuops-lab-{args.host}")
    idle_rate = 0.0
    if node_cpu is not None:
        before = node_cpu()
        time.sleep(5)
        idle_rate = (node_cpu() - before) / 5
    controller: dict[str, float] = {}
    node: dict[str, float] = {}
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
    }

    def runner(kind: str, path: Path) -> Callable[[], None]:
        def run() -> None:
            own = resource.getrusage(resource.RUSAGE_CHILDREN)
            node_before = node_cpu() if node_cpu else 0.0
            began = time.monotonic()
            done = subprocess.run(
                [str(BIN / "ansible-playbook"), "-i", str(LAB), str(path)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.monotonic() - began
            if done.returncode:
                raise SystemExit(f"bench task_cost: {kind} failed (exit {done.returncode}): {done.stdout[-1500:]}")
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = (after.ru_utime - own.ru_utime) + (after.ru_stime - own.ru_stime)
            controller[kind] = controller.get(kind, 0.0) + used
            if node_cpu:
                node[kind] = node.get(kind, 0.0) + max(0.0, node_cpu() - node_before - idle_rate * wall)

        return run

    bench = Bench("task_cost")
    print(f"bench task_cost: {args.tasks} tasks of each kind on {args.host}, {args.rounds} rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-task-cost-") as tmp:
        paths = write_playbooks(Path(tmp), args.host, args.tasks)
        samples = side_by_side({kind: runner(kind, path) for kind, path in paths.items()}, rounds=args.rounds)
    figures(bench, samples, controller, node if node_cpu else None, args.tasks, runs=args.rounds + 1)
    print(f"bench task_cost: wrote {bench.save()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
