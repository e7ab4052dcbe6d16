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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Bench, CpuMeter, Figure, cpu_bound, median, side_by_side

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
    from chaosgpu.activity import get_inventory  # noqa: PLC0415 - after the environment is set
    from chaosgpu.fleet.actions import revert_faults  # noqa: PLC0415
    from chaosgpu.node.actions import fill_disk  # noqa: PLC0415

    configuration = {"chaosgpu_inventory": args.inventory, "chaosgpu_max_share": 1.0}
    inventory = get_inventory(configuration)
    nodes = sorted(inventory.groups.get("gpu_nodes", []))
    if not nodes:
        print(f"bench injection: no host in group gpu_nodes of {args.inventory}", file=sys.stderr)
        return 2
    one, every = nodes[0], ":".join(nodes)

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

    print(f"bench injection: fan-out, {len(nodes)} hosts against 1, {args.rounds} rounds side by side", flush=True)
    meter = CpuMeter()
    meter.idle("idle", IDLE_S)
    fan = side_by_side(
        {
            "1 host": meter.wrap("1 host", lambda: chaosgpu_cycle(one), skip=1),
            "all": meter.wrap("all", lambda: chaosgpu_cycle(every), skip=1),
        },
        args.rounds,
    )
    bench.samples.update({f"chaosgpu fan-out {k}": v for k, v in fan.items()})
    ratio = median(fan["all"]) / median(fan["1 host"])
    bench.add(Figure(f"injection: fan-out T({len(nodes)} hosts) / T(1)", ratio, "x", "<= 2"))
    # The lab's hosts are containers on this machine's CPUs. Near 100 % busy, a fan-out cycle is bound by the CPU
    # work of its hosts (their sshd, sudo, shells, systemd), not by waiting: what each extra host's work costs,
    # against what the goal leaves for it, says whether any tool could fan out within the goal here (the warm-up
    # cycles are not metered).
    cpus = os.cpu_count() or 1
    bench.add(Figure(f"injection: CPU busy during the {len(nodes)}-host cycles", meter.share("all"), "%"))
    bench.add(Figure("injection: the lab idle: CPU busy", meter.share("idle"), "%"))
    if len(nodes) > 1:
        bound = cpu_bound(meter, "1 host", "all", len(nodes), "idle", goal=2.0, cpus=cpus)
        bench.add(Figure("injection: CPU work of a 1-host cycle (lab load removed)", bound["work_1"], "s"))
        bench.add(Figure("injection: CPU work per host past the first", bound["per_host"], "s"))
        label = f"injection: least fan-out T({len(nodes)})/T(1) {cpus} CPUs allow at that work"
        bench.add(Figure(label, bound["least"], "x"))
        label = f"injection: CPU work per extra host at which the fan-out = 2 fits {cpus} CPUs"
        bench.add(Figure(label, bound["needed"], "s"))
    print(f"bench injection: wrote {bench.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
