"""Time as a collaborator, so tests can stand on a daylight-saving morning without waiting for one."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the sender needs to know about time."""

    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait; a fixed clock advances instead of blocking."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FixedClock:
    """A clock that only moves when told to (or when something sleeps on it)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def set(self, at: datetime) -> None:
        self._now = at.astimezone(UTC)
