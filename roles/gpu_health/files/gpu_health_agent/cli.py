"""Command line: ``python3 -m gpu_health_agent --config /etc/gpu_health/agent.json [...]``.

Without options it runs until SIGTERM. ``--check-config`` checks the file and prints the effective policy (the
role's template can use it as its ``validate:`` command); ``--once`` runs one poll (and whatever it leads to);
``--clear-rma`` asks the running agent to clear an RMA mark after the GPU was replaced;
``--maintenance-start REASON`` / ``--maintenance-end`` drain and undrain the node for planned maintenance through
the same drain plugins (``maintenance.py``) and print what they did as one JSON object.
Exit status: 0 done, 2 invalid config, 3 maintenance ended but the agent holds the node drained (incident, RMA),
1 anything else.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import threading
from dataclasses import asdict, replace
from types import FrameType

from gpu_health_agent import __version__, maintenance
from gpu_health_agent.agent import Agent, request_clear_rma
from gpu_health_agent.config import Config, ConfigError, load_config

__all__ = ["main", "policy_table"]

DEFAULT_CONFIG = "/etc/gpu_health/agent.json"
RC_CONFIG = 2


def policy_table(config: Config) -> dict[str, object]:
    """The rules in force, as JSON-ready data (XIDs as string keys)."""
    rules = config.policy.rulebook
    return {
        "xid": {str(xid): asdict(rule) for xid, rule in sorted(rules.xid.items())},
        "unknown_xid": asdict(rules.unknown_xid),
        "conditions": {name: asdict(rule) for name, rule in sorted(rules.conditions.items())},
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu_health_agent", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"JSON config (default {DEFAULT_CONFIG})")
    parser.add_argument("--check-config", action="store_true", help="check the config, print the policy, exit")
    parser.add_argument("--once", action="store_true", help="one poll cycle, then exit")
    parser.add_argument("--dry-run", action="store_true", help="log what would be done, do nothing (overrides)")
    parser.add_argument("--clear-rma", action="store_true", help="ask the running agent to clear the RMA mark")
    planned = parser.add_mutually_exclusive_group()
    planned.add_argument("--maintenance-start", metavar="REASON", help="drain the node for planned maintenance")
    planned.add_argument("--maintenance-end", action="store_true", help="undrain after maintenance (not an incident's)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _maintenance(config: Config, reason: str | None) -> int:
    by = os.environ.get("SUDO_USER") or getpass.getuser()
    if reason is not None:
        outcome, command = maintenance.start(config, reason, by), "maintenance-start"
    else:
        outcome, command = maintenance.end(config), "maintenance-end"
    print(json.dumps(outcome.to_json(command, config.node_name), indent=1))
    return outcome.rc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return RC_CONFIG
    if args.maintenance_start is not None or args.maintenance_end:
        # An operator's explicit command: the config's dry_run (a trial of the agent's own reactions) does not turn
        # it into a preview, or an upgrade would run under live jobs on a node whose agent is on trial. Only the
        # command line's --dry-run does.
        return _maintenance(replace(config, dry_run=args.dry_run), args.maintenance_start)
    if args.dry_run:
        config = replace(config, dry_run=True)
    if args.check_config:
        summary = {"config": args.config, "node_name": config.node_name, "policy": policy_table(config)}
        print(json.dumps(summary, indent=1))
        return 0
    if args.clear_rma:
        path = request_clear_rma(config, getpass.getuser())
        print(f"clear-rma requested ({path}); the running agent takes it at its next poll")
        return 0
    agent = Agent(config)
    if args.once:
        agent.start()
        agent.cycle()
        return 0
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run(stop)
    return 0
