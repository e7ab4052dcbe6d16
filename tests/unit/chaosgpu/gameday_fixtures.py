"""Activities and a control for the game day tests (no hosts): experiments name this module as their provider.

- ``touch``/``sleep_after_marker`` leave marker files, so a test sees what ran (and a SIGINT test knows when the
  action has started without guessing with a fixed sleep);
- ``fail`` fails as an activity does;
- the control ``after_experiment_control`` stands in for chaosgpu's objectives control: it writes the
  ``chaosgpu_objectives`` journal entry from the ``fake_objectives`` configuration key and fails the run when it
  says ``met: false``, as the real control does.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ActivityFailed

__all__ = ["CleanChecks", "after_experiment_control", "fail", "holds", "record_settings", "sleep_after_marker", "touch"]


def touch(path: str) -> str:
    """Create ``path`` (an action or a rollback that leaves a trace)."""
    Path(path).write_text("ran\n", encoding="utf-8")
    return path


def sleep_after_marker(marker: str, seconds: float = 60.0) -> None:
    """Create ``marker``, then sleep (an action long enough to be interrupted)."""
    Path(marker).write_text("started\n", encoding="utf-8")
    time.sleep(seconds)


def fail(message: str = "broken on purpose") -> None:
    """Fail as an activity does."""
    raise ActivityFailed(message)


def holds(value: bool = True) -> bool:
    """A steady-state probe returning ``value``."""
    return value


def after_experiment_control(
    context: Any,  # noqa: ARG001 - Chaos Toolkit's control signature
    state: Any = None,
    configuration: Any = None,
    **kwargs: Any,  # noqa: ARG001
) -> None:
    """Write ``configuration['fake_objectives']`` (the objectives control's journal entry) into the journal."""
    wait_marker = (configuration or {}).get("fake_wait_marker")
    if wait_marker:  # like the objectives control waiting for recovery after the rollbacks
        Path(wait_marker).write_text("waiting\n", encoding="utf-8")
        time.sleep(float((configuration or {}).get("fake_wait_s", 60)))
        Path(wait_marker + ".done").write_text("waited\n", encoding="utf-8")
    record = (configuration or {}).get("fake_objectives")
    if state is None or not isinstance(record, dict):
        return
    state["chaosgpu_objectives"] = record
    if not record.get("met", True) and state.get("status") == "completed":
        state["status"] = "failed"


def record_settings(path: str, configuration: Any = None) -> None:
    """Write what the experiment was given: its chaosgpu_inventory and the game day's environment."""
    seen = {
        "chaosgpu_inventory": (configuration or {}).get("chaosgpu_inventory"),
        "CHAOSGPU_INVENTORY": os.environ.get("CHAOSGPU_INVENTORY"),
        "CHAOSGPU_RUN_ID": os.environ.get("CHAOSGPU_RUN_ID"),
    }
    Path(path).write_text(json.dumps(seen), encoding="utf-8")


class CleanChecks:
    """Game day checks of a fleet that is always ready and never has a fault left (chaosgpu.gameday.Checks)."""

    def preflight(self) -> list[str]:
        return []

    def leftover(self) -> list[dict[str, Any]]:
        return []
