"""The send loop: claim a batch, send it over N connections, record every outcome.

One thread does the work, in a loop: claim pending deliveries (a lease, in batches, in id
order), personalise them, hand them to idle connections of a ``Pool`` (see
``newsletter.transports``), collect what the server said, and write the outcomes to the
delivery log in one transaction per turn of the loop (a group commit for whatever
finished meanwhile).

The duplicate bound. A message can reach a reader twice only if the server accepted it and
the run died before "sent" was committed. A connection writes its next message's final
"." only once its previous message is recorded (the pool asks ``is_durable``), so each
connection holds at most one accepted-but-unrecorded message: a crash (kill -9, power
loss: commits are durable) duplicates at most ``connections`` messages.

Failures. What a refusal or a timeout means is decided by ``failures.FailurePolicy``, a
plain object the loop tells each outcome: temporary failures (4xx, timeouts, drops) are
retried with backoff, then deferred; permanent ones (5xx) fail that recipient only, a
5.1.x at RCPT marks the subscriber bounced; and failures are held back until a later
success proves the server works, so a broken server stops the run instead of failing
the list. This module keeps the loop and its I/O: claims, leases, the pool, commits.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from newsletter.clock import Clock
from newsletter.config import DeliveryConfig
from newsletter.errors import NewsletterError, StoreError
from newsletter.failures import FailurePolicy, Record, Retry
from newsletter.lookahead import Lookahead
from newsletter.store import Store
from newsletter.store import deliveries as delivery_log
from newsletter.store.models import DeliveryStatus, Result, Work
from newsletter.transports import Completion, Outgoing, Pool, PoolFactory

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# On a stop, how long a message in flight may still wait for its answer: well inside
# systemd's TimeoutStopSec (90 s in contrib/), even though the final "." may take minutes.
STOP_WAIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Personal:
    """One reader's message: its envelope sender (a VERP address per reader) and its wire bytes, whole or in parts."""

    mail_from: str
    data: bytes | Sequence[bytes]


Personaliser = Callable[[Work, datetime], Personal]
"""Builds one reader's message; its Message-ID is prefix + delivery id + suffix."""


@dataclass
class RunStats:
    """What one run did; ``interrupted`` and ``error`` say why it stopped early, if it did."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0
    skipped: int = 0
    released: int = 0
    possible_duplicates: int = 0
    to_send: int = 0  # open deliveries when the run began
    elapsed: float = 0.0
    commits: int = 0
    interrupted: bool = False
    error: NewsletterError | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.deferred + self.skipped

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


class RateLimiter:
    """At most ``per_second`` message starts per second (0: no limit), in this process.

    ``newsletter.workers.SharedRateLimiter`` has the same interface for a limit that holds
    across processes.
    """

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0

    def ready(self, now: float) -> bool:
        return not self._interval or now >= self._next

    def take(self, now: float) -> None:
        if self._interval:
            self._next = max(self._next, now) + self._interval

    def wait_time(self, now: float) -> float:
        return max(0.0, self._next - now) if self._interval else 0.0


@dataclass(order=True)
class _Retry:
    due: float
    delivery_id: int
    work: Work = field(compare=False)


class DeliveryRun:
    """Send one edition's open deliveries until none are left, or until told to stop."""

    def __init__(
        self,
        store: Store,
        edition_id: int,
        personalise: Personaliser,
        pool_factory: PoolFactory,
        clock: Clock,
        config: DeliveryConfig,
        *,
        limiter: RateLimiter | None = None,
        worker: str,
        stop: threading.Event | None = None,
        on_progress: Callable[[RunStats], None] | None = None,
        message_id: tuple[str, str] = ("<", ">"),
        prepare_threads: int = 0,
    ) -> None:
        self.store = store
        self.edition_id = edition_id
        self.personalise = personalise
        self.pool_factory = pool_factory
        self.clock = clock
        self.config = config
        self.worker = worker
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.message_id = message_id
        self.stats = RunStats()

        self._limiter = limiter or RateLimiter(0)
        # Messages costly to build (DKIM) are built ahead, on other threads; see lookahead.py.
        self._ahead: Lookahead[Work, Personal] | None = (
            Lookahead(personalise, prepare_threads, depth=4 * prepare_threads) if prepare_threads else None
        )
        self._queue: deque[Work] = deque()  # claimed, not started
        self._retries: list[_Retry] = []
        self._inflight: dict[int, Work] = {}
        self._tries: dict[int, int] = {}  # attempts this run, per delivery in hand
        self._unrecorded: list[Result] = []  # finished, to write in the next commit
        self._undurable: set[int] = set()  # accepted by the server, not yet committed
        self._policy = FailurePolicy(config, proven=False)  # what failures mean: see failures.py
        self._exhausted = False
        self._stopping = False
        self._db_failed = False
        self._oldest = 0.0  # when the oldest unrecorded outcome arrived
        self._renew_at = 0.0  # (monotonic) when the leases are renewed next

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> RunStats:
        started = time.monotonic()
        with self.store.engine.connect() as conn:
            self._conn = conn
            self._fast = delivery_log.FastSentLog(conn)
            with conn.begin():
                # And whether this server has delivered this edition already, which the policy weighs.
                self.stats.to_send, self._policy.proven = delivery_log.run_start(conn, self.edition_id)
            pool = self.pool_factory(self._is_durable)
            try:
                self._loop(pool, started)
            finally:
                try:
                    self._wind_down(pool)
                finally:
                    pool.close()
                    if self._ahead is not None:
                        self._ahead.close()
                    self.stats.elapsed = time.monotonic() - started
        if self.on_progress:
            self.on_progress(self.stats)
        return self.stats

    def _loop(self, pool: Pool, started: float) -> None:
        renew_every = self.config.lease_seconds / 3
        self._renew_at = time.monotonic() + renew_every
        next_progress = 0.0
        while True:
            now = time.monotonic()
            if now >= self._renew_at:  # first: after a stall, before sending anything more
                self._renew_leases()
                self._renew_at = now + renew_every
            if self.stop.is_set() and not self._stopping:
                self.stats.interrupted = True
                self._stopping = True
                pool.hurry(STOP_WAIT_SECONDS)
            if not self._stopping and not self._exhausted and len(self._queue) < self.config.batch_size:
                self._claim()
            self._start_messages(pool, now)
            for completion in pool.poll(self._poll_timeout(pool, now)):
                self._complete(completion)
            now = time.monotonic()
            # Connections that just finished get their next envelope out before we commit,
            # so the commit (and its fsync) overlaps with that round trip.
            self._start_messages(pool, now)
            # Group commit, when a connection needs it: its next message is transmitted and
            # held before the final ".", so one commit serves all that finished meanwhile.
            if self._unrecorded and (pool.waiting_on_log() or not self._inflight or now - self._oldest > 0.05):
                self._commit()
            now = time.monotonic()
            if self.on_progress and now >= next_progress:
                self.stats.elapsed = now - started
                self.on_progress(self.stats)
                next_progress = now + 0.2
            if (
                not self._inflight
                and not self._unrecorded
                and (self._stopping or (self._exhausted and not self._queue and not self._retries))
            ):
                return

    def _poll_timeout(self, pool: Pool, now: float) -> float:
        if self._inflight and pool.idle() == 0:
            return 0.2  # every connection busy: wake on I/O
        waits = [0.2]
        if self._retries:
            waits.append(self._retries[0].due - now)
        if self._queue or self._retries:
            waits.append(self._limiter.wait_time(now))
        return max(0.0, min(waits)) if (self._queue or self._retries or self._inflight) else 0.05

    def _start_messages(self, pool: Pool, now: float) -> None:
        if now >= self._renew_at:
            return  # a stall since the loop began: renew (and drop lost claims) before sending more
        while not self._stopping and pool.idle() and self._limiter.ready(now):
            if self._retries and self._retries[0].due <= now:
                work = heapq.heappop(self._retries).work
            elif self._queue:
                work = self._queue.popleft()
            else:
                return
            try:
                if self._ahead is None:
                    personal = self.personalise(work, self.clock.now())
                else:
                    personal = self._ahead.take(work, self.clock.now())
                    self._ahead.fill(self._queue, self.clock.now())
            except NewsletterError as exc:  # a malformed address or header: this reader only
                self._unrecorded.append(
                    Result(work.delivery_id, work.subscriber_id, DeliveryStatus.FAILED, 0, str(exc))
                )
                continue
            self._limiter.take(now)
            self._tries[work.delivery_id] = self._tries.get(work.delivery_id, 0) + 1
            self._inflight[work.delivery_id] = work
            if not pool.start(Outgoing(work.delivery_id, personal.mail_from, work.email, personal.data)):
                return  # a connection would not open: count that failure before trying again

    def _is_durable(self, key: Hashable) -> bool:
        return key not in self._undurable

    # --- outcomes ----------------------------------------------------------------------------

    def _complete(self, completion: Completion) -> None:
        assert isinstance(completion.key, int)
        work = self._inflight.pop(completion.key)
        tries = self._tries.pop(work.delivery_id, 1)
        error = completion.error
        if error is None:
            self._policy.succeeded()
            self._undurable.add(work.delivery_id)
            if not self._unrecorded:
                self._oldest = time.monotonic()
            self._unrecorded.append(Result(work.delivery_id, work.subscriber_id, DeliveryStatus.SENT, tries))
            return
        if error.stage == "commit":
            self.stats.possible_duplicates += 1
        verdict = self._policy.failed(work, error, tries, stopping=self._stopping)
        self._follow_policy()
        if isinstance(verdict, Retry):
            self._tries[work.delivery_id] = tries
            heapq.heappush(self._retries, _Retry(time.monotonic() + verdict.delay, work.delivery_id, work))
        elif isinstance(verdict, Record):
            self._unrecorded.append(verdict.result)

    def _follow_policy(self) -> None:
        """Stop, once the policy says the run must (it says why once)."""
        if self._policy.error is not None and self.stats.error is None:
            self.stats.error = self._policy.error
            log.error("%s", self._policy.error)
        if self.stats.error is not None:
            self._stopping = True

    # --- the database --------------------------------------------------------------------

    def _commit(self) -> None:
        """Every outcome since the last commit, in one transaction and one fsync (group commit).

        The loop waits for it: a connection's next message must not be committed before
        this is durable. Measured here, a thread that fsyncs on the side while the loop goes
        on costs more (in interpreter-lock hand-offs) than it saves.
        """
        results = self._unrecorded + self._policy.vouched()
        self._unrecorded = []
        if not results:
            return
        now = self.clock.now()
        if all(r.status == DeliveryStatus.SENT for r in results):
            groups = _sent_by_attempts(results)
            self._with_retries(lambda: self._fast.commit(groups, now, self.message_id))
        else:
            retry_at = now + timedelta(minutes=self.config.retry_deferred_minutes)

            def write() -> None:
                with self._conn.begin():
                    delivery_log.record(self._conn, results, now, retry_at, self.message_id, worker=self.worker)

            self._with_retries(write)
        self.stats.commits += 1
        for result in results:
            self._count(result)
        self._undurable.difference_update(r.delivery_id for r in results)

    def _count(self, result: Result) -> None:
        status = result.status
        if status == DeliveryStatus.SENT:
            self.stats.sent += 1
        elif status == DeliveryStatus.FAILED:
            self.stats.failed += 1
        elif status == DeliveryStatus.DEFERRED:
            self.stats.deferred += 1
        else:
            self.stats.released += 1
        if result.error and status in (DeliveryStatus.FAILED, DeliveryStatus.DEFERRED):
            self.stats.errors.append(result.error)
            del self.stats.errors[:-20]

    def _claim(self) -> None:
        lease_until = self.clock.now() + timedelta(seconds=self.config.lease_seconds)

        def claim() -> tuple[list[Work], int]:
            with self._conn.begin():
                return delivery_log.claim(self._conn, self.edition_id, self.worker, self.config.batch_size, lease_until)

        work, skipped = self._with_retries(claim)
        self.stats.skipped += skipped
        self._queue.extend(work)
        if not work and not skipped:
            self._exhausted = True

    def _renew_leases(self) -> None:
        lease_until = self.clock.now() + timedelta(seconds=self.config.lease_seconds)

        def renew() -> set[int]:
            with self._conn.begin():
                return delivery_log.extend_leases(self._conn, self.edition_id, self.worker, lease_until)

        held = self._with_retries(renew)
        # Rows whose lease lapsed (this process stalled) may be another worker's now: never
        # start them here, or both would send.
        lost = {w.delivery_id for w in self._queue if w.delivery_id not in held}
        lost.update(r.work.delivery_id for r in self._retries if r.work.delivery_id not in held)
        if lost:
            log.warning("the lease on %d deliveries ran out; leaving them to whoever holds them now", len(lost))
            self._queue = deque(w for w in self._queue if w.delivery_id not in lost)
            self._retries = [r for r in self._retries if r.work.delivery_id not in lost]
            heapq.heapify(self._retries)
            for delivery_id in lost:
                self._tries.pop(delivery_id, None)
            if self._ahead is not None:
                self._ahead.forget(lost)

    def _with_retries(self, operation: Callable[[], _T]) -> _T:
        """Run a database step; a database that keeps failing stops the run (nothing is lost:
        unrecorded messages stay claimed, and their lease hands them to a later run)."""
        for attempt in range(1, 4):
            try:
                return operation()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    self._conn.rollback()
                if attempt == 3:
                    self._db_failed = True
                    raise StoreError(f"cannot write the delivery log in {self.store.safe_url}: {exc}") from exc
                log.warning("database write failed (%s); retrying", exc)
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    def _wind_down(self, pool: Pool) -> None:
        """Let messages in flight finish, record everything, and hand back what was not sent."""
        self._stopping = True
        if self._db_failed:
            return  # messages waiting for the log never get their final "."; nothing more to write
        pool.hurry(STOP_WAIT_SECONDS)  # an answer still missing then counts as a possible duplicate
        deadline = time.monotonic() + 2 * STOP_WAIT_SECONDS
        while self._inflight and time.monotonic() < deadline:
            for completion in pool.poll(0.05):
                self._complete(completion)
            if self._unrecorded:
                self._commit()
        unsent = [*self._queue, *(r.work for r in self._retries), *self._inflight.values()]
        self._queue.clear()
        self._retries.clear()
        self._unrecorded.extend(
            Result(w.delivery_id, w.subscriber_id, DeliveryStatus.PENDING, self._tries.get(w.delivery_id, 0))
            for w in unsent
        )
        self._unrecorded.extend(self._policy.final(interrupted=self.stats.interrupted))
        self._follow_policy()
        if self._unrecorded:
            self._commit()


def _sent_by_attempts(results: list[Result]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for result in results:
        groups.setdefault(result.attempts, []).append(result.delivery_id)
    return groups


__all__ = ["DeliveryRun", "Personal", "RunStats", "StoreError"]
