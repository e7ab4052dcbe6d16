"""The idempotent re-run of ``site.yml`` on one lab node, this checkout against an older revision, side by side.

An absolute re-run time on this 2-core machine moves by 10-20 % between runs minutes apart (the lab's own
containers, the host's other tenants). Two revisions run alternately in one session share that noise, so their
ratio holds where the absolute times do not.

The base revision is checked out into a temporary git worktree (its own collection link, the lab's SSH key and
cache shared with this checkout); both converge the same lab node to the same state, so each re-run must change
nothing (it fails otherwise). The worktree is removed afterwards.

``python bench/rerun_ab.py --base <revision> [--rounds 3] [--host gpu-node-1]`` against a running lab (make lab).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Bench, Figure, median, side_by_side
from bench.provisioning import playbook, task_stats


def worktree(base: str, directory: Path) -> Path:
    """A checkout of ``base`` in ``directory`` that runs against this checkout's lab."""
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(directory), base], cwd=ROOT, check=True, capture_output=True
    )
    collection = directory / ".collections" / "ansible_collections" / "gpuops"
    collection.mkdir(parents=True)
    (collection / "fleet").symlink_to(directory)
    (directory / ".cache").symlink_to(ROOT / ".cache")  # the lab's key and cache: inventories/lab finds them here
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare with (a commit, tag or branch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--host", default="gpu-node-1")
    args = parser.parse_args(argv)
    resolved = subprocess.run(
        ["git", "rev-parse", "--verify", "--short", f"{args.base}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if resolved.returncode:
        print(f"bench rerun_ab: --base {args.base!r} is not a revision of this repository", file=sys.stderr)
        return 2
    base = resolved.stdout.strip()
    tasks: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="gpuops-rerun-ab-") as scratch:
        tree = worktree(base, Path(scratch) / "base")
        try:

            def rerun(name: str, root: Path) -> None:
                parsed = playbook(root / "inventories" / "lab", "site.yml", "--limit", args.host, root=root)
                stats = task_stats(parsed, args.host)
                if stats["changed"]:
                    raise SystemExit(f"bench rerun_ab: the {name} re-run changed {stats['changed']} task(s)")
                tasks[name] = stats["tasks"]

            print(f"bench rerun_ab: site.yml --limit {args.host}, {base} against this checkout, {args.rounds} rounds")
            samples = side_by_side(
                {base: lambda: rerun(base, tree), "this checkout": lambda: rerun("this checkout", ROOT)},
                rounds=args.rounds,
            )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    bench = Bench("rerun_ab")
    bench.samples.update(samples)
    before, after = median(samples[base]), median(samples["this checkout"])
    bench.add(Figure(f"re-run at {base}: wall time (median)", before, "s"))
    bench.add(Figure("re-run of this checkout: wall time (median)", after, "s", "<= 60"))
    bench.add(Figure(f"re-run at {base}: tasks", tasks[base], "tasks"))
    bench.add(Figure("re-run of this checkout: tasks", tasks["this checkout"], "tasks"))
    bench.add(Figure(f"re-run: {base} / this checkout", before / after, "x"))
    print(f"bench rerun_ab: wrote {bench.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
