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

from bench.common import ROOT, Bench, CpuMeter, Figure, median, side_by_side

SIZE_MB = 64
DIRECTORY = "/var/tmp"  # noqa: S108 - on the lab node, where chaosgpu fills it; not a temporary file here
ADHOC_FILE = f"{DIRECTORY}/bench-injection-adhoc"


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
    fan = side_by_side(
        {
            "1 host": meter.wrap("1 host", lambda: chaosgpu_cycle(one), skip=1),
            "all": meter.wrap("all", lambda: chaosgpu_cycle(every), skip=1),
        },
        args.rounds,
    )
    bench.samples.update({f"chaosgpu {k}": v for k, v in fan.items()})
    ratio = median(fan["all"]) / median(fan["1 host"])
    bench.add(Figure(f"injection: fan-out T({len(nodes)} hosts) / T(1)", ratio, "x", "<= 2"))
    # The lab's hosts are containers on this machine's CPUs. Near 100 % busy, a fan-out cycle is bound by the CPU
    # work of its hosts (their sshd, sudo, shells, systemd), not by waiting: its busy CPU seconds over every CPU,
    # against T(1), say how far that work alone keeps the ratio (the warm-up cycles are not metered).
    cpus = os.cpu_count() or 1
    floor = meter.per_call("all") / cpus / median(fan["1 host"])
    bench.add(Figure("injection: busy CPU of the machine per 1-host cycle", meter.per_call("1 host"), "s"))
    bench.add(Figure(f"injection: CPU busy during the {len(nodes)}-host cycles", meter.share("all"), "%"))
    label = f"injection: fan-out at the CPU time it took on {cpus} CPUs (busy CPU s / CPUs / T(1))"
    bench.add(Figure(label, floor, "x"))
    print(f"bench injection: wrote {bench.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
