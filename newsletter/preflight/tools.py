"""The outside world preflight touches, in one place, so a test can swap any of it.

``Tools`` carries the web fetcher, the command runner, the program finder and the
monotonic clock; ``Tools.real`` builds the ones a command uses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from newsletter.preflight.fetch import Fetcher, UrllibFetcher
from newsletter.preflight.spam import Completed, Runner


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


@dataclass(frozen=True)
class Tools:
    fetcher: Fetcher
    run: Runner = run_command
    which: Callable[[str], str | None] = shutil.which
    monotonic: Callable[[], float] = time.monotonic

    @classmethod
    def real(cls, user_agent: str) -> Tools:
        return cls(fetcher=UrllibFetcher(user_agent))
