"""The one way the agent runs a command: an argument list (never a shell string) with a timeout.

Sources and action plugins take a ``Runner``, so tests record the argv and answer with recorded output."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["RC_NOT_FOUND", "RC_TIMEOUT", "RunResult", "Runner", "subprocess_runner"]

RC_TIMEOUT = 124  # as timeout(1) reports it
RC_NOT_FOUND = 127  # as a shell reports a missing program
RC_CANNOT_RUN = 126


@dataclass(frozen=True)
class RunResult:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str = ""

    @property
    def output(self) -> str:
        """stdout, then stderr: nvidia-smi and dcgmi print some errors on each."""
        return self.stdout + (("\n" if self.stdout and not self.stdout.endswith("\n") else "") + self.stderr)

    def tail(self, limit: int = 300) -> str:
        text = " ".join(self.output.split())
        return f"rc {self.rc}: {text[-limit:]}" if text else f"rc {self.rc}"


Runner = Callable[[Sequence[str], float], RunResult]


def subprocess_runner(argv: Sequence[str], timeout: float) -> RunResult:
    """Run ``argv`` with LC_ALL=C; a timeout is rc 124, a missing program rc 127, never an exception."""
    args = tuple(argv)
    env = {**os.environ, "LC_ALL": "C"}
    try:
        done = subprocess.run(  # noqa: S603 - an argument list from the agent's validated config, no shell
            args, capture_output=True, text=True, errors="replace", timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode("utf-8", "replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        return RunResult(args, RC_TIMEOUT, out, f"timed out after {timeout:g} s")
    except FileNotFoundError:
        return RunResult(args, RC_NOT_FOUND, "", f"{args[0]}: command not found")
    except OSError as err:
        return RunResult(args, RC_CANNOT_RUN, "", f"{args[0]}: {err.strerror}")
    return RunResult(args, done.returncode, done.stdout, done.stderr)
