"""The send's failure policy: what a refusal, a timeout or a dropped line means for the reader and the run.

Plain data in, decisions out, no I/O: the send loop (``delivery.DeliveryRun``) tells the
policy each outcome and writes what it is handed back. The rules:

* A success resets both failure streaks and vouches for every failure held before it:
  the server works, so those refusals were about their recipients, and are recorded.
* A failure is held back until such a success. When ``max_consecutive_failures`` attempts
  fail in a row, the run stops as systemic, and the held rows go back to pending instead
  of failing part of the list for a fault of the server or the account.
* Hard bounces (5.1.x at RCPT) are the server answering for one address: a block of dead
  addresses in an old list must not look like a broken server, or every run would stop
  at the same block, so they have a streak of their own, ten times as long.
* A temporary failure is retried with exponential backoff and jitter while attempts
  remain; when they run out it is held as deferred (a later run retries it). While the
  run is stopping it goes straight back to pending.
* At the end, an operator's stop returns every unvouched failure to pending (it may still
  be the server's); a run in which the server accepted nothing, now or earlier for this
  edition, and refused many for good, is treated as systemic too.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from newsletter.config import DeliveryConfig
from newsletter.errors import DeliveryError, PermanentDeliveryError, SystemicDeliveryError, TemporaryDeliveryError
from newsletter.store.models import DeliveryStatus, Result, Work

HARD_BOUNCE_STREAK_FACTOR = 10


@dataclass(frozen=True, slots=True)
class Retry:
    """Send it again, on whichever connection is free, after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class Record:
    """Write this outcome in the next commit."""

    result: Result


@dataclass(frozen=True, slots=True)
class Hold:
    """Kept by the policy until a later success vouches for it (``vouched``) or the run ends (``final``)."""


Verdict = Retry | Record | Hold


class FailurePolicy:
    """The failure rules of one run, over the outcomes it is told of, in order."""

    def __init__(
        self,
        config: DeliveryConfig,
        *,
        proven: bool,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        """:param proven: this server has already delivered this edition (an earlier run sent some)."""
        self.config = config
        self.proven = proven
        self._jitter = jitter
        self.error: SystemicDeliveryError | None = None  # why the run must stop, once it must
        self.successes = 0
        self._streak = 0
        self._bounce_streak = 0
        self._held: list[tuple[Result, int]] = []  # failures, with the success count when they happened

    @property
    def held(self) -> int:
        return len(self._held)

    def succeeded(self) -> None:
        self._streak = self._bounce_streak = 0
        self.successes += 1

    def failed(self, work: Work, error: DeliveryError, tries: int, *, stopping: bool) -> Verdict:
        """What to do with ``work`` after ``error`` on its ``tries``-th attempt in this run."""
        if isinstance(error, SystemicDeliveryError):
            self._stop(error)
            return Record(_result(work, DeliveryStatus.PENDING, tries, error))
        if isinstance(error, PermanentDeliveryError) and error.is_hard_bounce:
            self._bounce_streak += 1
        else:
            self._streak += 1
        limit = self.config.max_consecutive_failures
        if self._streak >= limit or self._bounce_streak >= HARD_BOUNCE_STREAK_FACTOR * limit:
            self._stop(
                SystemicDeliveryError(
                    f"stopping: the last {max(self._streak, self._bounce_streak)} attempts in a row failed "
                    f"(last: {error}); the server or the account looks unwell, so nobody was marked failed for it"
                )
            )
        stopping = stopping or self.error is not None
        if isinstance(error, PermanentDeliveryError):
            held = _result(work, DeliveryStatus.FAILED, tries, error, bounced=error.is_hard_bounce)
        elif isinstance(error, TemporaryDeliveryError) and tries < self.config.max_attempts and not stopping:
            return Retry(self.backoff(tries))
        elif stopping and isinstance(error, TemporaryDeliveryError):
            return Record(_result(work, DeliveryStatus.PENDING, tries, error))
        else:
            held = _result(work, DeliveryStatus.DEFERRED, tries, error)
        self._held.append((held, self.successes))
        return Hold()

    def backoff(self, tries: int) -> float:
        """Exponential, capped, with jitter over its upper half: retries from many runs do not line up."""
        ceiling = min(self.config.backoff_max_seconds, self.config.backoff_seconds * 2 ** (tries - 1))
        return ceiling / 2 + self._jitter(0, ceiling / 2)

    def vouched(self, *, everything: bool = False) -> list[Result]:
        """The held failures a later success has vouched for (``everything``: all of them), to record now.

        Once the run is stopping as systemic nothing is vouched for: the held rows go back
        to pending at the end (``everything``), with their errors kept for the log.
        """
        if self.error is not None:
            if not everything:
                return []
            back = [_pending(r) for r, _ in self._held]
            self._held.clear()
            return back
        ready = [r for r, seen in self._held if everything or seen < self.successes]
        if ready:
            self._held = [(r, seen) for r, seen in self._held if not (everything or seen < self.successes)]
        return ready

    def final(self, *, interrupted: bool) -> list[Result]:
        """Everything still held, as the rows to write when the run ends."""
        if interrupted and self.error is None:
            # Stopped by the operator: a failure no later success vouched for may still be
            # the server's, so it is tried again next run rather than recorded for good.
            ready = self.vouched()
            ready += [_pending(r) for r, _ in self._held]
            self._held.clear()
            return ready
        refused = [r for r, _ in self._held if r.status == DeliveryStatus.FAILED]
        if not self.successes and not self.proven and len(refused) >= self.config.max_consecutive_failures:
            # Not one message accepted, now or earlier for this edition, and many refused for
            # good: a server refusing every address is more likely misconfigured than every
            # reader gone. (A handful, as on a small list, are recorded: they are real.)
            self._stop(
                SystemicDeliveryError(
                    f"the server accepted none of this run's messages (last: {refused[-1].error}); "
                    "nobody was marked failed for it"
                )
            )
            back = [r if r.status != DeliveryStatus.FAILED else _pending(r) for r, _ in self._held]
            self._held.clear()
            return back
        return self.vouched(everything=True)

    def _stop(self, error: SystemicDeliveryError) -> None:
        if self.error is None:
            self.error = error


def _result(work: Work, status: DeliveryStatus, tries: int, error: DeliveryError, *, bounced: bool = False) -> Result:
    return Result(work.delivery_id, work.subscriber_id, status, tries, str(error), bounced)


def _pending(result: Result) -> Result:
    return Result(result.delivery_id, result.subscriber_id, DeliveryStatus.PENDING, result.attempts, result.error)
