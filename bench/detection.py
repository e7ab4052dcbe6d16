"""Bench 4 (issue #10): detection floors in the lab, each signal's measured time to detect next to its floor.

One XID 48 (double-bit ECC error: fatal for the alert rule, a GPU reset for the agent) is injected with ``dcgmi
test --inject`` on one GPU of a GPU node whose gpu_health agent runs in dry-run mode (it detects and reports, and
drains and resets nothing), and four signals are polled side by side, every ``--poll`` seconds, from the injection
on:

==============  =========================================================  =========================================
signal          detected when                                              floor (read from what runs)
==============  =========================================================  =========================================
gpu_health      the agent shows the XID on that GPU                        the agent's poll interval (agent.json)
                (``chaosgpu.health.probes.gpu_health_saw_xid``)
DCGM health     ``dcgmi health -c`` lists an incident on that GPU          one health check (DCGM answers on demand;
                (``chaosgpu.gpu.probes.dcgm_health``)                      its median duration before the fault)
scrape          Prometheus has ``DCGM_FI_DEV_XID_ERRORS == 48`` for it     dcgm-exporter's collect interval + the
                                                                           scrape interval
alert rule      GpuXidFatal fires for it                                   collect + scrape + evaluation interval
                                                                           + the rule's ``for:``
==============  =========================================================  =========================================

A floor is the longest the configured intervals let detection take (a signal that polls every 10 s sees an event
at most 10 s late); the figure is the slowest round's time over the floor (goal <= 1.5 for every signal). Each
round uses another GPU (an alert of an earlier round is still firing: it resolves only once the XID has left the
exporter's window and the rule's look-back) and ends with ``gpusim boot`` (what a reboot does to the GPUs).

``python bench/detection.py [--node gpu-node-1] [--rounds 3]`` against a running lab (make lab).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # the lab's hosts and monitoring, as the lab tests see them

from labhosts import INVENTORY, Host, load_lab, unit_option_s, wait_for  # noqa: E402
from labmonitoring import Monitoring, matching  # noqa: E402

from bench.common import Bench, Figure, median, timed  # noqa: E402
from chaosgpu.gpu.probes import dcgm_health  # noqa: E402
from chaosgpu.health.probes import gpu_health_saw_xid  # noqa: E402

XID = 48
ALERT = "GpuXidFatal"
EXPORTER_UNIT = "dcgm-exporter.service"
AGENT_CONFIG = "/etc/gpu_health/agent.json"
CONFIGURATION = {"chaosgpu_inventory": str(INVENTORY)}
GOAL = "<= 1.5"


def floors(node: Host, monitoring: Monitoring) -> dict[str, float]:
    """Each signal's floor in seconds, from the node's running units and files and Prometheus' loaded config."""
    poll = float(json.loads(node.check(f"sudo cat {AGENT_CONFIG}"))["poll_interval_s"])
    collect = unit_option_s(node, EXPORTER_UNIT, "--collect-interval")
    scrape = monitoring.interval_s("scrape_interval")
    evaluation = monitoring.interval_s("evaluation_interval")
    rule_for = float(monitoring.rule(ALERT).get("duration", 0))
    health_check = median([timed(lambda: dcgm_health(node.name, configuration=CONFIGURATION)) for _ in range(3)])
    return {
        "gpu_health": poll,
        "DCGM health": health_check,
        "scrape": collect + scrape,
        "alert rule": collect + scrape + evaluation + rule_for,
    }


def signals(node: Host, monitoring: Monitoring, gpu: int) -> dict[str, Callable[[], bool]]:
    """One poll of each signal for an XID on ``gpu``: true once it shows the fault."""
    labels = {"host": node.name, "gpu": str(gpu)}

    def agent() -> bool:
        return gpu_health_saw_xid(node.name, xid=XID, gpu=gpu, within_s=300, configuration=CONFIGURATION)

    def health() -> bool:
        return str(gpu) in dcgm_health(node.name, configuration=CONFIGURATION)[node.name]["gpus"]

    def scrape() -> bool:
        selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return bool(monitoring.query(f"DCGM_FI_DEV_XID_ERRORS{{{selector}}} == {XID}"))

    def alert() -> bool:
        return matching(monitoring.active_alerts(), ALERT, labels, "firing")

    return {"gpu_health": agent, "DCGM health": health, "scrape": scrape, "alert rule": alert}


def one_round(node: Host, monitoring: Monitoring, gpu: int, deadline_s: float, interval_s: float) -> dict[str, float]:
    """Inject the XID on ``gpu``, watch every signal at once, recover the GPUs; seconds to detect per signal."""
    polls = signals(node, monitoring, gpu)
    already = [name for name, poll in polls.items() if poll()]
    if already:
        raise SystemExit(f"bench detection: {', '.join(already)} already show XID {XID} on GPU {gpu} of {node.name}")
    out = node.check(f"sudo dcgmi test --inject --gpuid {gpu} -f 230 -v {XID}")
    # The fault is there once dcgmi returns; the SSH round trip that carried the command is not detection time.
    # Every signal's clock starts then: its wait starts at once, side by side with the others.
    if "Successfully injected" not in out:
        raise SystemExit(f"bench detection: dcgmi did not inject on {node.name}: {out}")
    try:
        with ThreadPoolExecutor(max_workers=len(polls)) as pool:
            futures = {name: pool.submit(wait_for, poll, deadline_s, interval_s) for name, poll in polls.items()}
            seen = {name: took if ok else None for name, (ok, took) in ((n, f.result()) for n, f in futures.items())}
    finally:
        node.check("sudo gpusim boot")
    missed = [name for name, value in seen.items() if value is None]
    if missed:
        raise SystemExit(f"bench detection: {', '.join(missed)} never saw XID {XID} on GPU {gpu} in {deadline_s:g} s")
    return {name: float(value) for name, value in seen.items() if value is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", default="gpu-node-1", help="a GPU node whose gpu_health agent runs in dry-run mode")
    parser.add_argument("--rounds", type=int, default=3, help="one GPU each, from GPU 1 (at most 5)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between two polls of a signal")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 5:  # noqa: PLR2004 - GPUs 1-5: the lab tests use 0 and 6
        parser.error("--rounds must be between 1 and 5")
    lab = load_lab()
    if args.node not in lab.hosts:
        parser.error(f"--node {args.node} is not in {INVENTORY}")
    node, ops = lab.hosts[args.node], lab.group("ops")[0]
    agent = json.loads(node.check(f"sudo cat {AGENT_CONFIG}"))
    if not agent.get("dry_run"):
        parser.error(f"--node {args.node}: its gpu_health agent remediates (dry_run is off): pick a dry-run node")
    monitoring = Monitoring(ops)
    bench = Bench("detection")
    floor = floors(node, monitoring)
    print("bench detection: floors " + ", ".join(f"{k} {v:.2f} s" for k, v in floor.items()), flush=True)
    deadline = 3 * max(floor.values()) + 30
    for gpu in range(1, args.rounds + 1):
        measured = one_round(node, monitoring, gpu, deadline, args.poll)
        print(f"  round {gpu}/{args.rounds} (GPU {gpu}): " + ", ".join(f"{k} {v:.2f} s" for k, v in measured.items()))
        for name, value in measured.items():
            bench.samples.setdefault(f"{name} s", []).append(value)
    for name, value in floor.items():
        slowest = max(bench.samples[f"{name} s"])
        detail = f"slowest of {args.rounds}: {slowest:.2f} s; floor {value:.2f} s"
        bench.add(Figure(f"detection, {name}: time to detect / floor", slowest / value, "x", GOAL, detail))
    print(f"bench detection: wrote {bench.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
