"""Running another program (SpamAssassin, Chromium) with its input and a time limit.

Checks take the runner as a parameter, so tests can pass a fake; ``run_command`` is the
real one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Completed:
    """What a command did: its exit status and output (stderr kept for the error message)."""

    returncode: int
    stdout: bytes
    stderr: bytes = b""


Runner = Callable[[list[str], bytes, float], Completed]
"""Runs a command with its input and a timeout in seconds: ``run_command`` or a test's fake."""


def run_command(argv: list[str], data: bytes, timeout: float) -> Completed:
    """Run ``argv`` with ``data`` on stdin; on timeout stop it and everything it started.

    The command gets a process group of its own, so a browser's helper processes go with it
    instead of outliving the check. Raises ``subprocess.TimeoutExpired`` or ``OSError``.
    """
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return Completed(process.returncode, stdout, stderr)
