"""Bench 3 (issue #10): fault injection latency, chaosgpu against an ad-hoc Ansible command, side by side.

One cycle = the fault injected and reverted on one GPU node:

- chaosgpu: ``fill_disk`` of 64 MiB under /var/tmp (the fault written to the host's ledger with its deadline, the
  free space checked, the file made with fallocate) then ``revert_faults`` (the file removed, the ledger entry
  removed), in this process, over chaosgpu's OpenSSH transport;
- Ansible: the same two commands as ``ansible <host> -b -m ansible.builtin.command -a 'fallocate -l 64M ...'`` and
  ``-a 'rm -f ...'``, the way an operator runs them by hand (no ledger, no deadline, no free-space check).

(A fault that stops and starts a service would soon hit systemd's start limit in a loop, which measures systemd.)

Figures: the ratio of the Ansible cycle's median to chaosgpu's (goal >= 10), and the fan-out: one chaosgpu cycle
on every GPU node of the inventory against the same cycle on one (goal <= 2). Run: ``python bench/injection.py
[--inventory inventories/lab] [--rounds 5]`` against a running lab.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Bench, CpuMeter, Figure, controller_cpu_reader, cpu_bound, median, side_by_side

SIZE_MB = 64
DIRECTORY = "/var/tmp"  # noqa: S108 - on the lab node, where chaosgpu fills it; not a temporary file here
ADHOC_FILE = f"{DIRECTORY}/bench-injection-adhoc"
IDLE_S = 20.0  # how long the lab's own CPU use is metered before the fan-out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", default=str(ROOT / "inventories" / "lab"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    os.environ["CHAOSGPU_RUN_ID"] = "bench-injection"
    from chaosgpu.activity import get_inventory, get_transport  # noqa: PLC0415 - after the environment is set
    from chaosgpu.fleet.actions import revert_faults  # noqa: PLC0415
    from chaosgpu.ledger import ROOT_SHELL  # noqa: PLC0415
    from chaosgpu.node.actions import fill_disk  # noqa: PLC0415

    configuration = {"chaosgpu_inventory": args.inventory, "chaosgpu_max_share": 1.0}
    inventory = get_inventory(configuration)
    nodes = sorted(inventory.groups.get("gpu_nodes", []))
    if not nodes:
        print(f"bench injection: no host in group gpu_nodes of {args.inventory}", file=sys.stderr)
        return 2
    one, every = nodes[0], ":".join(nodes)
    host = inventory.hosts[one]

    def empty_calls() -> None:  # what any fault's two calls cost before their scripts do anything
        for _ in range(2):
            get_transport().check(host, ROOT_SHELL, stdin="true\n")

    def chaosgpu_cycle(pattern: str) -> None:
        fill_disk(pattern, DIRECTORY, SIZE_MB, duration_s=300, configuration=configuration)
        revert_faults(pattern, configuration=configuration)

    def ansible_cycle() -> None:
        for command in (f"fallocate -l {SIZE_MB}M {ADHOC_FILE}", f"rm -f {ADHOC_FILE}"):
            subprocess.run(
                [
                    str(Path(sys.executable).parent / "ansible"),
                    one,
                    "-i",
                    args.inventory,
                    "-b",
                    "-m",
                    "ansible.builtin.command",
                    "-a",
                    command,
                ],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )

    bench = Bench("injection")
    print(f"bench injection: {SIZE_MB} MiB taken and given back on {one}, {args.rounds} rounds", flush=True)
    samples = side_by_side(
        {"chaosgpu": lambda: chaosgpu_cycle(one), "ansible-adhoc": ansible_cycle}, rounds=args.rounds
    )
    bench.samples.update({f"{k} 1 host": v for k, v in samples.items()})
    chaos, adhoc = median(samples["chaosgpu"]), median(samples["ansible-adhoc"])
    bench.add(Figure("injection: chaosgpu cycle, 1 host (median)", chaos, "s"))
    bench.add(Figure("injection: ansible ad-hoc cycle, 1 host (median)", adhoc, "s"))
    bench.add(Figure("injection: ansible ad-hoc / chaosgpu", adhoc / chaos, "x", ">= 10"))

    if len(nodes) > 1:
        fan_out(bench, nodes, args.rounds, lambda: chaosgpu_cycle(one), lambda: chaosgpu_cycle(every), empty_calls)
    print(f"bench injection: wrote {bench.save()}")
    return 0


def fan_out(
    bench: Bench,
    nodes: list[str],
    rounds: int,
    one: Callable[[], None],
    every: Callable[[], None],
    empty_calls: Callable[[], None],
) -> None:
    """The fan-out figures: a cycle on every node against the same cycle on one, side by side, with what bounds it."""
    print(f"bench injection: fan-out, {len(nodes)} hosts against 1, {rounds} rounds side by side", flush=True)
    meter, controller = CpuMeter(), CpuMeter(controller_cpu_reader())
    meter.idle("idle", IDLE_S)

    def metered(label: str, action: Callable[[], None]) -> Callable[[], None]:
        return meter.wrap(label, controller.wrap(label, action, skip=1), skip=1)

    fan = side_by_side(
        {
            "1 host": metered("1 host", one),
            "all": metered("all", every),
            "2 empty calls": metered("2 empty calls", empty_calls),
        },
        rounds,
    )
    bench.samples.update({f"chaosgpu fan-out {k}": v for k, v in fan.items()})
    t_one = median(fan["1 host"])
    bench.add(Figure(f"injection: fan-out T({len(nodes)} hosts) / T(1)", median(fan["all"]) / t_one, "x", "<= 2"))
    # The lab's hosts are containers on this machine's CPUs. Near 100 % busy, a fan-out cycle is bound by the CPU
    # work of its hosts (their sshd, sudo, shells, systemd), not by waiting: what each extra host's work costs,
    # against what the goal leaves for it, says whether any tool could fan out within the goal here (the warm-up
    # cycles are not metered).
    cpus = os.cpu_count() or 1
    bench.add(Figure(f"injection: CPU busy during the {len(nodes)}-host cycles", meter.share("all"), "%"))
    bench.add(Figure("injection: the lab idle: CPU busy", meter.share("idle"), "%"))
    bound = cpu_bound(meter, "1 host", "all", len(nodes), "idle", goal=2.0, cpus=cpus)
    bench.add(Figure("injection: CPU work of a 1-host cycle (lab load removed)", bound["work_1"], "s"))
    bench.add(Figure("injection: CPU work per host past the first", bound["per_host"], "s"))
    label = f"injection: least fan-out T({len(nodes)})/T(1) {cpus} CPUs allow at that work"
    bench.add(Figure(label, bound["least"], "x"))
    label = f"injection: CPU work per extra host at which the fan-out = 2 fits {cpus} CPUs"
    bench.add(Figure(label, bound["needed"], "s"))
    # Two root calls over SSH that run nothing (ssh, sshd, sudo, bash) are the least a fault's inject and revert
    # take on a host: work that no ledger script can shed.
    empty = meter.work("2 empty calls", bound["load"])
    bench.add(Figure("injection: CPU work of 2 empty root calls over SSH, 1 host", empty, "s"))
    # Where each host has CPUs of its own, only the controller's work per host is shared, and most of it is Python
    # under one GIL: T(N) ~ T(1) + (N - 1) x the controller's CPU per extra host, on one CPU.
    per_host = (controller.per_call("all") - controller.per_call("1 host")) / (len(nodes) - 1)
    bench.add(Figure("injection: the controller's CPU per host past the first", per_host, "s"))
    projected = (t_one + (len(nodes) - 1) * per_host) / t_one
    label = f"injection: fan-out T({len(nodes)})/T(1) projected for hosts with CPUs of their own"
    bench.add(Figure(label, projected, "x"))


if __name__ == "__main__":
    sys.exit(main())
