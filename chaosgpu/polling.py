"""Waiting by polling, never by sleeping a fixed time: ask a condition every second until it holds or the wait is
over. Probes that take a ``wait_s`` use this, so an experiment waits exactly as long as the fleet needs."""

from __future__ import annotations

import time
from collections.abc import Callable

from chaoslib.exceptions import ActivityFailed

__all__ = ["POLL_S", "until"]

POLL_S = 1.0


def until(check: Callable[[], bool], wait_s: float, poll_s: float | None = None) -> bool:
    """``check()`` until it holds or ``wait_s`` passed (at least one call); whether it held. While waiting, a check
    that fails (a host rebooting does not answer, a file not written yet) counts as not holding; the last failure is
    raised when the wait ends without the condition ever holding and the last check failed. With ``wait_s`` 0 a
    failure is raised at once."""
    interval = POLL_S if poll_s is None else poll_s  # read at each call: tests shorten it
    deadline = time.monotonic() + wait_s
    while True:
        failure: ActivityFailed | None = None
        try:
            if check():
                return True
        except ActivityFailed as err:
            if wait_s <= 0:
                raise
            failure = err
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if failure is not None:
                raise failure
            return False
        time.sleep(min(interval, remaining))
