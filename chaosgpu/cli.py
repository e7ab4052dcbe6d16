"""The ``chaosgpu`` command. More subcommands (status, cleanup) come with the fault ledger."""

from __future__ import annotations

import argparse
import sys

from chaosgpu import __version__, load_exported_activities

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chaosgpu`` console script."""
    parser = argparse.ArgumentParser(prog="chaosgpu", description="GPU fleet chaos engineering helpers")
    parser.add_argument("--version", action="version", version=f"chaosgpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("activities", help="list the actions and probes chaosgpu exports")
    args = parser.parse_args(argv)
    if args.command == "activities":
        for activity in load_exported_activities():
            sys.stdout.write(f"{activity['type']:<6} {activity['mod']}.{activity['name']}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
