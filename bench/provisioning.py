"""Bench 1 and 2 (issue #10): provisioning speed and scale on the lab.

1. The idempotent re-run of ``site.yml`` on one GPU node: wall time, tasks run, seconds per task (goals: < 0.35
   s/task, <= 60 s), and the same re-run on N = 1, 2, 4, 8 GPU nodes, side by side in rotating order, with the
   ratio T(N)/T(1) at the repository's default forks (goal: T(8)/T(1) <= 3). A re-run that changes anything is a
   failure (the roles are idempotent).
2. The first converge of ``site.yml`` on fresh nodes (the ones the lab grows by), split into package
   download/install tasks (apt, package, the driver's and runtime's installs) and everything else.

The lab grows on demand: an inventory of ``--nodes`` GPU nodes (the lab's three, then gpu-node-4.. with the next
ports and addresses, every extra one a dry-run gpu_health agent) is written under reports/bench/, with the lab's
group_vars; ``lab_up.yml`` creates the missing containers and ``site.yml`` converges the whole grown lab (Slurm,
Prometheus and HAProxy learn the new nodes). Afterwards the extra containers are removed and the lab is converged
back to its own inventory, so the lab is left as it was found (``--keep`` leaves it grown).

``python bench/provisioning.py [--nodes 8] [--rounds 2] [--keep]`` against a running lab (make lab).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    REPORTS,
    ROOT,
    Bench,
    CpuMeter,
    Figure,
    controller_cpu_reader,
    cpu_bound,
    median,
    side_by_side,
)

LAB = ROOT / "inventories" / "lab"
BIN = Path(sys.executable).parent
LAB_NODES = 3
# How long the lab's idle CPU use is measured before the re-runs.
IDLE_S = 30.0
# Tasks whose time is package download and install (item 2).
PACKAGE_ACTIONS = {
    "ansible.builtin.apt",
    "apt",
    "gpuops.fleet.apt_installed",
    "ansible.builtin.package",
    "package",
    "ansible.builtin.apt_repository",
    "ansible.builtin.deb822_repository",
}


def grown_inventory(nodes: int, directory: Path) -> Path:
    """inventories/lab with ``nodes`` GPU nodes: the lab's own, then gpu-node-4.. (ports 2224.., addresses .14..)."""
    tree = yaml.safe_load((LAB / "hosts.yml").read_text(encoding="utf-8"))
    gpu_hosts = tree["all"]["children"]["lab"]["children"]["gpu_nodes"]["hosts"]
    template = dict(gpu_hosts["gpu-node-1"])
    for index in range(LAB_NODES + 1, nodes + 1):
        gpu_hosts[f"gpu-node-{index}"] = {
            **template,
            "ansible_port": 2220 + index,
            "lab_address": f"172.30.99.{10 + index}",
            "gpu_health_dry_run": True,
        }
    # The lab finds its key and files from the checkout (lab_checkout_dir), not from this inventory's directory.
    for group in ("gpu_nodes", "ops"):
        for values in tree["all"]["children"]["lab"]["children"][group]["hosts"].values():
            values["lab_checkout_dir"] = str(ROOT)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    link = directory / "group_vars"
    if not link.is_symlink():
        link.symlink_to(LAB / "group_vars")
    return directory


def playbook(inventory: Path, name: str, *extra: str, root: Path = ROOT) -> dict[str, Any]:
    """ansible-playbook with the JSON callback: the parsed result (plays, tasks with durations, stats). ``root``:
    the checkout whose playbook and ansible.cfg run (another revision's worktree for bench/rerun_ab.py)."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_JSON_INDENT": "0",
    }
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(root / "playbooks" / name), *extra],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        parsed: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        tail = result.stderr[-2000:]
        raise SystemExit(f"bench provisioning: {name} printed no JSON (exit {result.returncode}): {tail}") from None
    failed = {h: s for h, s in parsed["stats"].items() if s["failures"] or s["unreachable"]}
    if result.returncode or failed:
        why = [
            f"{host}: {task['task']['name']}: {str(res.get('msg', ''))[:300]}"
            for play in parsed["plays"]
            for task in play["tasks"]
            for host, res in task["hosts"].items()
            if res.get("failed") or res.get("unreachable")
        ]
        raise SystemExit(f"bench provisioning: {name} {' '.join(extra)} failed (exit {result.returncode}): {why}")
    return parsed


def _seconds(duration: dict[str, str]) -> float:
    def parse(stamp: str) -> float:
        return time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + stamp[19:].rstrip("Z"))

    return parse(duration["end"]) - parse(duration["start"])


def task_stats(parsed: dict[str, Any], host: str) -> dict[str, Any]:
    """For one host: tasks run (ok, changed, skipped or failed), how many changed, package seconds, other seconds,
    and how many times facts were gathered."""
    tasks = changed = facts = 0
    package_s = other_s = 0.0
    for play in parsed["plays"]:
        for task in play["tasks"]:
            result = task["hosts"].get(host)
            if result is None:
                continue
            tasks += 1
            changed += bool(result.get("changed"))
            seconds = _seconds(task["task"]["duration"])
            action = str(result.get("action", ""))
            # This host's facts; a loop of setup delegated to other hosts (slurm's read of the hosts a --limit
            # leaves out) gathers theirs.
            facts += action in ("ansible.builtin.gather_facts", "gather_facts", "ansible.builtin.setup", "setup") and (
                "results" not in result
            )
            if action in PACKAGE_ACTIONS:
                package_s += seconds
            else:
                other_s += seconds
    return {"tasks": tasks, "changed": changed, "package_s": package_s, "other_s": other_s, "facts": facts}


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one linear measurement script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8, help="grow the lab to this many GPU nodes (>= 3)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="leave the lab grown")
    args = parser.parse_args(argv)
    if args.nodes < LAB_NODES:
        print(f"bench provisioning: --nodes must be >= {LAB_NODES}", file=sys.stderr)
        return 2
    bench = Bench("provisioning")
    inventory = grown_inventory(args.nodes, REPORTS / f"inventory-{args.nodes}")
    extra = [f"gpu-node-{i}" for i in range(LAB_NODES + 1, args.nodes + 1)]
    try:
        if extra:
            print(f"bench provisioning: growing the lab by {', '.join(extra)}", flush=True)
            playbook(inventory, "lab_up.yml")
            began = time.monotonic()
            first = playbook(inventory, "site.yml")
            wall = time.monotonic() - began
            # A task's duration is its wall time across every host it ran on at once, so the split is the
            # playbook's wall time spent in the tasks a fresh node ran: package tasks against the rest.
            fresh = task_stats(first, extra[0])
            package, other = fresh["package_s"], fresh["other_s"]
            bench.samples["first converge package_s"] = [package]
            bench.samples["first converge other_s"] = [other]
            bench.add(Figure(f"first converge with {len(extra)} fresh nodes: wall time", wall, "s"))
            bench.add(Figure("first converge: in package download/install tasks", package, "s"))
            bench.add(Figure("first converge: in every other task", other, "s"))
            bench.add(Figure("first converge: package share", 100 * package / (package + other), "%"))

        sizes = [n for n in (1, 2, 4, 8) if n <= args.nodes]
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}

        def rerun(n: int) -> None:
            hosts = ",".join(f"gpu-node-{i}" for i in range(1, n + 1))
            parsed = playbook(inventory, "site.yml", "--limit", hosts)
            stats = [task_stats(parsed, f"gpu-node-{i}") for i in range(1, n + 1)]
            changed = sum(s["changed"] for s in stats)
            if changed:
                raise SystemExit(f"bench provisioning: the re-run on {hosts} changed {changed} task(s): not idempotent")
            runs[n].append(stats[0])

        print(f"bench provisioning: re-runs of site.yml on N = {sizes} GPU nodes, {args.rounds} rounds", flush=True)
        # The machine's busy CPU, and the controller's own: ansible-playbook, its workers, its ssh masters.
        meter, controller = CpuMeter(), CpuMeter(controller_cpu_reader())
        # The grown lab's services (each GPU node's workload, agent, exporters; ops-1's Prometheus) run on the same
        # CPUs as every re-run: what they take while nothing else runs is part of why T(1) is longer in a grown lab.
        meter.idle("idle", IDLE_S)
        bench.add(Figure(f"the lab idle, {args.nodes} GPU nodes and ops-1: CPU busy", meter.share("idle"), "%"))
        contenders: dict[str, Callable[[], None]] = {
            str(n): meter.wrap(str(n), controller.wrap(str(n), functools.partial(rerun, n), skip=1), skip=1)
            for n in sizes
        }
        samples = side_by_side(contenders, rounds=args.rounds)
        bench.samples.update({f"re-run N={k}": v for k, v in samples.items()})
        one = median(samples["1"])
        tasks = runs[1][-1]["tasks"]
        bench.add(Figure("re-run of site.yml, 1 node: wall time", one, "s", "<= 60"))
        bench.add(Figure("re-run of site.yml, 1 node: tasks", tasks, "tasks"))
        bench.add(Figure("re-run of site.yml, 1 node: seconds per task", one / tasks, "s", "< 0.35"))
        bench.add(Figure("re-run of site.yml, 1 node: fact gatherings", runs[1][-1]["facts"], "", "<= 1"))
        for n in sizes[1:]:
            goal = "<= 3" if n == 8 else None  # noqa: PLR2004 - the issue's goal is for eight nodes
            bench.add(Figure(f"re-run of site.yml: T({n})/T(1)", median(samples[str(n)]) / one, "x", goal))
        # The lab's nodes are containers on this machine's CPUs. Near 100 % busy, the largest re-run is bound by the
        # CPU work it takes (the controller's and every node's), not by waiting: Ansible's forks run the hosts at
        # once, the CPUs do not. What each extra node's work costs, against what the goal leaves for it, says
        # whether any scheduling could meet the goal here (the warm-up runs are not metered).
        cpus, largest = os.cpu_count() or 1, sizes[-1]

        for n in (sizes[0], largest):
            bench.add(Figure(f"re-run of site.yml, N={n}: CPU busy", meter.share(str(n)), "%"))
            per_node = controller.per_call(str(n)) / n
            bench.add(Figure(f"re-run of site.yml, N={n}: the controller's CPU per node", per_node, "s"))
        if largest > 1:
            bound = cpu_bound(meter, "1", str(largest), largest, "idle", goal=3.0, cpus=cpus)
            label = f"re-run of site.yml: CPU work per node past the first (N={largest}, lab load removed)"
            bench.add(Figure(label, bound["per_host"], "s"))
            label = f"re-run of site.yml: least T({largest})/T(1) {cpus} CPUs allow at that work (lab load removed)"
            bench.add(Figure(label, bound["least"], "x"))
            label = f"re-run of site.yml: CPU work per extra node at which T({largest})/T(1) = 3 fits {cpus} CPUs"
            bench.add(Figure(label, bound["needed"], "s"))
            # Where each node has CPUs of its own, only the controller's work is shared: Ansible's forks are
            # processes, so its CPU per extra node spreads over this machine's CPUs.
            per_node = (controller.per_call(str(largest)) - controller.per_call("1")) / (largest - 1)
            bench.add(Figure("re-run of site.yml: the controller's CPU per node past the first", per_node, "s"))
            projected = (one + (largest - 1) * per_node / cpus) / one
            label = f"re-run of site.yml: T({largest})/T(1) projected for nodes with CPUs of their own"
            bench.add(Figure(label, projected, "x"))
    finally:
        if extra and not args.keep:
            print("bench provisioning: shrinking the lab back to its own inventory", flush=True)
            names = [f"gpuops-lab-{h}" for h in extra]
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True, check=False)
            playbook(LAB, "site.yml")
    print(f"bench provisioning: wrote {bench.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
