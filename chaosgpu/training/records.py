"""What a training job's own records say about its interruptions: when it stopped, when it resumed, from which
checkpoint, and how much work was lost. Pure functions over the JSON lines experiments/lab/files/fake_training.py
writes (one object a line, ``event`` start | step | checkpoint | done, ``time`` epoch seconds, ``host``, ``job_id``;
``step`` on step/checkpoint/done; ``restart``, ``resumed_from``, ``checkpoint_time`` on start).

``summarize(text)``::

    {"runs": [{"host", "job_id", "restart", "started", "resumed_from", "first_step_time", "last_time",
               "last_step", "checkpoints": int, "last_checkpoint_time": epoch|null}],
     "interruptions": [{"from_host", "to_host", "moved": bool, "stopped": epoch (the last record before it),
                        "resumed": epoch|null (the first step after the restart), "resume_s": num|null,
                        "resumed_from": int, "lost_steps": int, "work_lost_s": num}],
     "done": bool, "last_step": int, "last_time": epoch|null}

``resume_s`` (time until training resumes) is from the interrupted run's last record to the resumed run's first
step; ``work_lost_s`` (the recovery point) is the progress the interrupted run made after the checkpoint the next
run resumed from: its last record's time minus that checkpoint's time (0 when it resumed from where it stopped).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["RecordsError", "summarize"]


class RecordsError(ValueError):
    """The records are not a training job's: the message names the line and what is wrong."""


def _parse(text: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            # A power loss can cut the last line short: only the final line may be torn.
            if number == len(text.splitlines()):
                continue
            raise RecordsError(f"line {number}: not JSON: {line[:120]!r}") from None
        if not isinstance(record, dict) or record.get("event") not in ("start", "step", "checkpoint", "done"):
            raise RecordsError(f"line {number}: not a training record: {line[:120]!r}")
        if isinstance(record.get("time"), bool) or not isinstance(record.get("time"), int | float):
            raise RecordsError(f"line {number}: no time: {line[:120]!r}")
        if record["event"] != "start" and not isinstance(record.get("step"), int):
            raise RecordsError(f"line {number}: a {record['event']} record without a step: {line[:120]!r}")
        record["_line"] = number
        records.append(record)
    if records and records[0]["event"] != "start":
        raise RecordsError(f"line {records[0]['_line']}: the records do not begin with a start record")
    return records


def _runs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for record in records:
        if record["event"] == "start":
            runs.append(
                {
                    "host": record.get("host", ""),
                    "job_id": str(record.get("job_id", "")),
                    "restart": int(record.get("restart") or 0),
                    "started": float(record["time"]),
                    "resumed_from": int(record.get("resumed_from") or 0),
                    "first_step_time": None,
                    "last_time": float(record["time"]),
                    "last_step": int(record.get("resumed_from") or 0),
                    "_checkpoints": {},
                }
            )
            continue
        run = runs[-1]
        run["last_time"] = float(record["time"])
        run["last_step"] = max(run["last_step"], record["step"])
        if record["event"] == "step" and run["first_step_time"] is None:
            run["first_step_time"] = float(record["time"])
        if record["event"] == "checkpoint":
            run["_checkpoints"][record["step"]] = float(record["time"])
    return runs


def _checkpoint_time(runs: list[dict[str, Any]], upto: int, step: int) -> float | None:
    """When the checkpoint of ``step`` was written, by any run up to index ``upto``."""
    for run in reversed(runs[: upto + 1]):
        if step in run["_checkpoints"]:
            return float(run["_checkpoints"][step])
    return None


def _interruption(runs: list[dict[str, Any]], index: int) -> dict[str, Any]:
    before, after = runs[index], runs[index + 1]
    step = after["resumed_from"]
    if step > before["last_step"]:
        raise RecordsError(
            f"run {index + 2} resumed from step {step}, beyond the last step {before['last_step']} before it"
        )
    checkpoint_time = _checkpoint_time(runs, index, step) if step else None
    if step and checkpoint_time is None:
        raise RecordsError(f"run {index + 2} resumed from step {step}, a checkpoint no earlier run recorded")
    resumed = after["first_step_time"]
    # Progress since the checkpoint that was resumed from is lost: from that checkpoint, or from the interrupted
    # run's start when the checkpoint is older than that run (it made none) or there was none at all.
    lost_since = before["started"] if checkpoint_time is None else max(checkpoint_time, before["started"])
    return {
        "from_host": before["host"],
        "to_host": after["host"],
        "moved": before["host"] != after["host"],
        "stopped": before["last_time"],
        "resumed": resumed,
        "resume_s": None if resumed is None else round(resumed - before["last_time"], 3),
        "resumed_from": step,
        "lost_steps": before["last_step"] - step,
        "work_lost_s": round(max(0.0, before["last_time"] - lost_since), 3),
    }


def summarize(text: str) -> dict[str, Any]:
    """The summary of a training job's records (see the module docstring); RecordsError names a bad line."""
    records = _parse(text)
    runs = _runs(records)
    interruptions = [_interruption(runs, i) for i in range(len(runs) - 1)]
    return {
        "runs": [
            {k: v for k, v in run.items() if not k.startswith("_")}
            | {
                "checkpoints": len(run["_checkpoints"]),
                "last_checkpoint_time": max(run["_checkpoints"].values()) if run["_checkpoints"] else None,
            }
            for run in runs
        ],
        "interruptions": interruptions,
        "done": bool(records) and records[-1]["event"] == "done",
        "last_step": runs[-1]["last_step"] if runs else 0,
        "last_time": runs[-1]["last_time"] if runs else None,
    }
