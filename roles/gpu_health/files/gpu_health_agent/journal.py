"""Structured journal events: one JSON object per line on stdout, which systemd's journal captures.

Keys follow the journal's conventions (upper case): ``MESSAGE`` (the sentence), ``PRIORITY`` (syslog level as a
string), ``SYSLOG_IDENTIFIER``, ``GPU_HEALTH_EVENT`` (what happened: xid, incident_opened, action_requested,
action_result, ...), ``TIMESTAMP`` (epoch seconds) and the event's fields (``GPU``, ``XID``, ``DECISION``,
``ACTION``, ``OUTCOME``, ...). ``journalctl -u gpu-health -o cat | jq`` reads them back.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from gpu_health_agent.engine import INFO, Note

__all__ = ["Journal"]

IDENTIFIER = "gpu_health"


class Journal:
    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.time) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.clock = clock

    def emit(self, event: str, message: str, priority: int = INFO, **fields: Any) -> None:
        record: dict[str, Any] = {
            "MESSAGE": message,
            "PRIORITY": str(priority),
            "SYSLOG_IDENTIFIER": IDENTIFIER,
            "GPU_HEALTH_EVENT": event,
            "TIMESTAMP": round(self.clock(), 3),
        }
        for key, value in fields.items():
            if value is not None:
                record[key.upper()] = value
        self.stream.write(json.dumps(record, sort_keys=False, default=str) + "\n")
        self.stream.flush()

    def note(self, note: Note) -> None:
        self.emit(note.event, note.message, note.priority, **dict(note.fields))
