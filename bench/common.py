"""What every benchmark shares: side-by-side timing, the report file, the table.

A benchmark measures figures that hold on a noisy machine: ratios and counts of things measured side by side in
one run (alternating, after a warm-up), never an absolute time against a fixed threshold. Each writes
``reports/bench/<name>.json``::

    {"name": str, "started": iso8601, "ended": iso8601, "machine": {"cpus": int, "load1": float},
     "figures": [{"figure": str, "value": num|null, "unit": str, "goal": str|null, "met": bool|null,
                  "detail": str}],
     "samples": {label: [seconds, ...]}}

``bench/run.py`` prints the figures of every report as one table.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports" / "bench"


@dataclass
class Figure:
    """One line of the table: a value, its unit, the goal it is held to (``<= 3``, ``>= 10``) and whether met."""

    figure: str
    value: float | None
    unit: str = ""
    goal: str | None = None
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.goal is None or self.value is None:
            return None if self.goal is None else False
        op, _, bound = self.goal.partition(" ")
        limit = float(bound)
        return {"<=": self.value <= limit, ">=": self.value >= limit, "<": self.value < limit, ">": self.value > limit}[
            op
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value": None if self.value is None else round(self.value, 3),
            "unit": self.unit,
            "goal": self.goal,
            "met": self.met,
            "detail": self.detail,
        }


@dataclass
class Bench:
    """A benchmark run: its figures and raw samples, written by ``save``."""

    name: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    figures: list[Figure] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(f"bench {self.name}: {format_row(figure.as_dict())}", flush=True)
        return figure

    def save(self, directory: Path = REPORTS) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        report = {
            "name": self.name,
            "started": self.started.isoformat(),
            "ended": datetime.now(UTC).isoformat(),
            "machine": {"cpus": os.cpu_count(), "load1": load1},
            "figures": [f.as_dict() for f in self.figures],
            "samples": {k: [round(v, 4) for v in vs] for k, vs in self.samples.items()},
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def timed(action: Callable[[], Any]) -> float:
    """Seconds one call of ``action`` took (monotonic clock)."""
    began = time.monotonic()
    action()
    return time.monotonic() - began


def side_by_side(
    contenders: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1, log: Callable[[str], None] = print
) -> dict[str, list[float]]:
    """Run each contender ``warmup`` times (not counted), then ``rounds`` rounds in which every contender runs once,
    the order rotating each round, so that load on the machine falls on all of them alike. Seconds per run."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            samples[name].append(timed(contenders[name]))
        log(f"  round {index + 1}/{rounds}: " + ", ".join(f"{n} {samples[n][-1]:.2f} s" for n in names))
    return samples


def cpu_busy_seconds(stat: Path = Path("/proc/stat")) -> float:
    """CPU seconds this machine has spent busy since boot, all CPUs together (``/proc/stat``: every state but idle
    and iowait). The difference over an interval, against wall time x CPUs, says whether the machine was saturated:
    then a ratio such as T(8 hosts)/T(1) measures the CPUs the lab's hosts share, not the tool."""
    fields = stat.read_text(encoding="ascii").splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError(f"{stat}: first line is not the cpu total: {fields[:1]}")
    ticks = [int(v) for v in fields[1:]] + [0] * 8  # user nice system idle iowait irq softirq steal (guest...)
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is counted in user already


def controller_cpu_reader(proc: Path = Path("/proc")) -> Callable[[], float]:
    """A reader for CpuMeter of the controller's own CPU seconds: this process, its children that have exited, and
    the ssh master connections (``ssh: <socket> [mux]``, which detach from the client that started them and so are
    nobody's children). A master's last reading is kept after it exits, so the count never goes back."""
    seen: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().rstrip(b"\0")
                if not (title.startswith(b"ssh: ") and title.endswith(b" [mux]")):
                    continue
                fields = (entry / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
                seen[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            except (OSError, IndexError, ValueError):  # gone meanwhile, or not ours to read
                continue
        own = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return sum(u.ru_utime + u.ru_stime for u in own) + sum(seen.values())

    return read


class CpuMeter:
    """Busy CPU seconds of the whole machine spent inside ``wrap``ped calls, per label."""

    def __init__(self, read: Callable[[], float] = cpu_busy_seconds) -> None:
        self.read = read
        self.busy: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, label: str, action: Callable[[], Any], skip: int = 0) -> Callable[[], Any]:
        """``action``, metered under ``label``; its first ``skip`` calls run unmetered (``side_by_side``'s
        warm-up, which is not one of the rounds the medians come from)."""
        left = [skip]

        def measured() -> Any:
            if left[0] > 0:
                left[0] -= 1
                return action()
            cpu, began = self.read(), time.monotonic()
            try:
                return action()
            finally:
                self.busy[label] = self.busy.get(label, 0.0) + self.read() - cpu
                self.wall[label] = self.wall.get(label, 0.0) + time.monotonic() - began
                self.calls[label] = self.calls.get(label, 0) + 1

        return measured

    def idle(self, label: str, seconds: float) -> None:
        """Meter ``seconds`` of doing nothing here under ``label``: what the machine's other work (the lab's own
        services) takes of the CPUs before a measurement starts."""
        self.wrap(label, lambda: time.sleep(seconds))()

    def per_call(self, label: str) -> float:
        """Busy CPU seconds of the machine per metered call of ``label``."""
        calls = self.calls.get(label, 0)
        return self.busy.get(label, 0.0) / calls if calls else 0.0

    def work(self, label: str, load: float) -> float:
        """Busy CPU seconds per metered call of ``label`` less ``load`` CPUs (the lab's own) over its wall time."""
        calls = self.calls.get(label, 0)
        return self.per_call(label) - load * self.wall[label] / calls if calls else 0.0

    def share(self, label: str, cpus: int | None = None) -> float:
        """Busy share (%) of all CPUs during ``label``'s calls: near 100 means the machine was saturated."""
        wall = self.wall.get(label, 0.0)
        return 100.0 * self.busy.get(label, 0.0) / (wall * (cpus or os.cpu_count() or 1)) if wall > 0 else 0.0


def cpu_bound(
    meter: CpuMeter, one: str, many: str, hosts: int, idle: str, goal: float, cpus: int | None = None
) -> dict[str, float]:
    """How far the CPUs alone hold T(many)/T(one) for work on ``hosts`` hosts against one, on a machine whose CPUs
    the lab's hosts share with the controller (labels of ``meter``; ``idle`` metered the lab doing nothing).

    ``work_1``/``work_n``: CPU seconds a call took, the lab's own load (its busy rate while idle) removed;
    ``per_host``: the work each host past the first adds; ``least``: the ratio had the N-host call kept every CPU
    the lab leaves free busy, ``work_n / (cpus - idle load) / T(1)``: no tool can fan out faster on these CPUs;
    ``needed``: the work per extra host at which ``least`` would be ``goal``. T values are the metered calls' mean
    wall times."""
    cpus = cpus or os.cpu_count() or 1
    if hosts < 2:  # noqa: PLR2004 - a second host is what the figures are about
        raise ValueError(f"hosts must be >= 2, got {hosts}")
    for label in (one, many, idle):
        if not meter.calls.get(label):
            raise ValueError(f"nothing metered under {label!r}")
    load = meter.busy[idle] / meter.wall[idle]
    t_one = meter.wall[one] / meter.calls[one]
    work_1, work_n = meter.work(one, load), meter.work(many, load)
    free = cpus - load
    return {
        "load": load,
        "work_1": work_1,
        "work_n": work_n,
        "per_host": (work_n - work_1) / (hosts - 1),
        "least": work_n / free / t_one,
        "needed": (goal * t_one * free - work_1) / (hosts - 1),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def format_row(row: dict[str, Any]) -> str:
    value = "-" if row["value"] is None else f"{row['value']:g}"
    goal = f" (goal {row['goal']})" if row.get("goal") else ""
    verdict = {True: " met", False: " MISSED", None: ""}[row.get("met")]
    return f"{row['figure']}: {value} {row.get('unit', '')}".rstrip() + goal + verdict
