"""The outside world preflight touches, in one place, so a test can swap any of it.

``Tools`` carries the web fetcher, the command runner, the program finder and the
monotonic clock; ``Tools.real`` builds the ones a command uses.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from newsletter.preflight.commands import Runner, run_command
from newsletter.preflight.fetch import Fetcher, UrllibFetcher


@dataclass(frozen=True)
class Tools:
    fetcher: Fetcher
    run: Runner = run_command
    which: Callable[[str], str | None] = shutil.which
    monotonic: Callable[[], float] = time.monotonic

    @classmethod
    def real(cls, user_agent: str) -> Tools:
        return cls(fetcher=UrllibFetcher(user_agent))
