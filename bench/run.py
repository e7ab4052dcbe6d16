"""``make bench``: run the benchmarks, then print every figure of reports/bench/*.json as one table.

``python bench/run.py [NAME ...]`` runs the named benchmarks (default: all of BENCHES, in that order; each in its
own process, so one that fails does not stop the others) and ``python bench/run.py --table`` only prints the
table. Exit 1 when a benchmark failed or a figure missed its goal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPORTS, ROOT

# name -> what it needs; run in this order.
BENCHES = {
    "provisioning": "the running lab (make lab); grows it to 8 GPU nodes and back",
    "injection": "the running lab (make lab)",
    "task_cost": "the running lab (make lab)",
    "detection": "the running lab (make lab)",
    "gameday_time": "a finished game day (make gameday)",
}


def table(directory: Path = REPORTS) -> tuple[list[str], bool]:
    """The table's lines and whether every figure with a goal met it."""
    lines, ok = [], True
    rows = []
    for path in sorted(directory.glob("*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        for row in report.get("figures", []):
            rows.append((report["name"], row))
            ok = ok and row.get("met") is not False
    if not rows:
        return ["no benchmark reports in " + str(directory)], False
    width = max(len(row["figure"]) for _, row in rows)
    lines.append(f"{'figure':<{width}}  {'value':>10}  {'unit':<4}  {'goal':<8}  result")
    for _, row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.3g}"
        verdict = {True: "met", False: "MISSED", None: ""}[row.get("met")]
        lines.append(f"{row['figure']:<{width}}  {value:>10}  {row['unit']:<4}  {row.get('goal') or '':<8}  {verdict}")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(BENCHES)})")
    parser.add_argument("--table", action="store_true", help="only print the table of the existing reports")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    failed = []
    if not args.table:
        for name in args.names or list(BENCHES):
            print(f"=== bench {name} (needs {BENCHES[name]})", flush=True)
            if subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py")], cwd=ROOT, check=False).returncode:
                failed.append(name)
    lines, met = table()
    print("\n".join(lines))
    if failed:
        print(f"bench: FAILED to run: {', '.join(failed)}")
    return 0 if met and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
