"""Scale-out: any number of ``newsletter worker`` processes sending from one PostgreSQL database.

PostgreSQL is the work queue. Deliveries are claimed in batches with ``FOR UPDATE SKIP
LOCKED`` and a lease naming the worker ("host:pid"), so workers never wait on each other
and never take the same row; a worker that dies holds its batch only until the lease runs
out, then any other worker takes it over. Each worker runs the same send loop as
``newsletter send`` (``publish.run_edition``) with its own SMTP connections, so the
guarantees are the same: nobody skipped, duplicates bounded by connections per crash.

Workers report themselves in the ``workers`` table (for ``newsletter status``), and a
configured ``smtp.max_per_second`` is a token bucket in the database that all workers
draw from, because providers cap sending per account, not per process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from newsletter.clock import Clock
from newsletter.context import Context
from newsletter.delivery import RateLimiter, RunStats
from newsletter.errors import DeliveryError, NewsletterError, UsageError
from newsletter.publish import finish_edition, give_up_stale, refuse_example_sender, release_zones, run_edition
from newsletter.store import Store, worker_identity
from newsletter.store import deliveries as delivery_log
from newsletter.store.editions import enqueued_editions
from newsletter.store.models import DeliveryStatus, Edition
from newsletter.store.workers import count_sent_since, draw_tokens, save_worker_report, workers_seen_since
from newsletter.transports import PoolFactory, check_reachable

log = logging.getLogger(__name__)

LIVE_WITHIN = timedelta(seconds=60)  # a worker silent for longer is shown as gone
_GRANT_SECONDS = 0.25  # a worker draws this much of the shared rate at a time


def require_postgres(store: Store) -> None:
    if store.is_sqlite:
        raise UsageError(
            "newsletter worker needs PostgreSQL: SQLite has a single writer, so several sending processes "
            "would only queue behind each other. With SQLite, `newsletter send` is the one sender; for "
            "workers, set [store] url to postgresql+psycopg://..."
        )


class WorkerRegistry:
    """This process's row in ``workers``: what it is doing and how fast."""

    def __init__(self, store: Store, clock: Clock, identity: str) -> None:
        self.store = store
        self.clock = clock
        self.identity = identity
        self.started = clock.now()
        self._last = 0.0

    def beat(
        self,
        state: str,
        edition_id: int | None = None,
        totals: RunStats | None = None,
        rate: float = 0.0,
        force: bool = True,
    ) -> None:
        if not force and time.monotonic() - self._last < 2.0:
            return
        self._last = time.monotonic()
        now = self.clock.now()
        host, _, pid = self.identity.rpartition(":")
        values = {
            "host": host,
            "pid": int(pid) if pid.isdigit() else os.getpid(),
            "state": state,
            "edition_id": edition_id,
            "sent": totals.sent if totals else 0,
            "failed": totals.failed if totals else 0,
            "deferred": totals.deferred if totals else 0,
            "rate": rate,
            "heartbeat_at": now,
        }
        try:
            save_worker_report(self.store.engine, self.identity, self.started, values)
        except Exception as exc:  # noqa: BLE001 - a missed heartbeat only makes status stale
            log.warning("could not record this worker's state: %s", exc)


class SharedRateLimiter(RateLimiter):
    """A token bucket in ``rate_buckets`` that every worker draws from in small grants."""

    def __init__(self, store: Store, clock: Clock, per_second: float, name: str = "smtp") -> None:
        super().__init__(per_second)
        self.store = store
        self.clock = clock
        self.per_second = per_second
        self.name = name
        self._tokens = 0.0
        self._next_ask = 0.0

    def ready(self, now: float) -> bool:
        if self.per_second <= 0 or self._tokens >= 1:
            return True
        if now < self._next_ask:
            return False
        self._tokens += self._grant()
        self._next_ask = now + (0.0 if self._tokens >= 1 else min(_GRANT_SECONDS, 1 / self.per_second))
        return self._tokens >= 1

    def take(self, now: float) -> None:
        if self.per_second > 0:
            self._tokens -= 1

    def wait_time(self, now: float) -> float:
        return 0.0 if self.per_second <= 0 or self._tokens >= 1 else max(0.0, self._next_ask - now)

    def _grant(self) -> float:
        """Refill the shared bucket for the time passed, and take up to a quarter second's worth."""
        burst = max(1.0, self.per_second)
        want = max(1.0, self.per_second * _GRANT_SECONDS)
        now = self.clock.now()

        def draw(tokens: float, updated_at: datetime) -> tuple[float, float]:
            """Refill for the time since the last draw, up to a burst; take whole tokens only."""
            elapsed = max(0.0, (now - updated_at).total_seconds())
            available = min(burst, tokens + elapsed * self.per_second)
            granted = float(int(min(available, want)))
            return granted, available - granted

        return draw_tokens(self.store.engine, self.name, now, burst, draw)


@dataclass
class WorkerReport:
    totals: RunStats
    editions: int
    error: NewsletterError | None = None
    interrupted: bool = False


def open_editions(store: Store) -> list[Edition]:
    with store.session() as session:
        return enqueued_editions(session)


def _work_left(store: Store, edition_id: int, now: datetime) -> tuple[int, int]:
    """(claimable now, in flight elsewhere) for an edition, after recovering expired leases."""
    with store.engine.begin() as conn:
        delivery_log.recover(conn, edition_id, now, deferred_due=True)
        counts = delivery_log.status_counts(conn, edition_id)
    return counts[DeliveryStatus.PENDING], counts[DeliveryStatus.SENDING]


@dataclass
class _Loop:
    """What one worker process carries from edition to edition: who it is, its row in
    ``workers``, its running totals, the shared rate limit, its connections and its stop."""

    identity: str
    registry: WorkerRegistry
    totals: RunStats
    limiter: RateLimiter
    pools: PoolFactory | None
    stop: threading.Event
    on_progress: Callable[[RunStats], None] | None


def run_worker(
    ctx: Context,
    *,
    until_idle: bool = False,
    stop: threading.Event | None = None,
    poll_seconds: float = 2.0,
    pools: PoolFactory | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
) -> WorkerReport:
    """Claim and send deliveries of every edition being sent, until idle or until stopped."""
    config, store, clock = ctx.config, ctx.store, ctx.clock
    require_postgres(store)
    stop = stop or threading.Event()
    identity = worker_identity()
    registry = WorkerRegistry(store, clock, identity)
    limiter: RateLimiter = (
        SharedRateLimiter(store, clock, config.smtp.max_per_second)
        if config.smtp.max_per_second > 0
        else RateLimiter(0)
    )
    totals = RunStats()
    loop = _Loop(identity, registry, totals, limiter, pools, stop, on_progress)
    report = WorkerReport(totals, 0)
    log.info("worker %s started", identity)
    registry.beat("idle")
    try:
        while not stop.is_set():
            busy = False
            for edition in open_editions(store):
                give_up_stale(ctx, edition)  # or a workers-only site retries for ever
                release_zones(ctx, edition)  # readers whose morning has come
                claimable, elsewhere = _work_left(store, edition.id, clock.now())
                busy = busy or claimable > 0 or elsewhere > 0
                if claimable == 0:
                    finish_edition(ctx, edition.id)
                    continue
                if pools is None and config.delivery.transport == "smtp":
                    refuse_example_sender(config)
                    check_reachable(config.smtp)
                stats = _send_one(ctx, edition, loop)
                report.editions += 1
                finish_edition(ctx, edition.id)
                if stats.error is not None:
                    raise stats.error
                if stop.is_set():
                    break
            if until_idle and not busy:
                break
            registry.beat("idle", totals=totals)
            stop.wait(poll_seconds)
    except DeliveryError as exc:
        report.error = exc
        log.error("worker %s stops: %s (its claims went back to pending)", identity, exc)
    finally:
        report.interrupted = stop.is_set()
        registry.beat("stopped", totals=totals)
        log.info(
            "worker %s stopped: sent %d, deferred %d, failed %d", identity, totals.sent, totals.deferred, totals.failed
        )
    return report


def _send_one(ctx: Context, edition: Edition, loop: _Loop) -> RunStats:
    totals = loop.totals
    base = RunStats(sent=totals.sent, failed=totals.failed, deferred=totals.deferred)
    registry, on_progress = loop.registry, loop.on_progress

    def progress(stats: RunStats) -> None:
        combined = RunStats(
            sent=base.sent + stats.sent, failed=base.failed + stats.failed, deferred=base.deferred + stats.deferred
        )
        registry.beat("sending", edition.id, combined, stats.rate, force=False)
        if on_progress is not None:
            on_progress(stats)

    log.info("worker %s sending the edition of %s", loop.identity, edition.date)
    stats = run_edition(
        ctx,
        edition,
        worker=loop.identity,
        pools=loop.pools,
        stop=loop.stop,
        on_progress=progress,
        limiter=loop.limiter,
    )
    totals.sent += stats.sent
    totals.failed += stats.failed
    totals.deferred += stats.deferred
    totals.skipped += stats.skipped
    totals.possible_duplicates += stats.possible_duplicates
    return stats


@dataclass(frozen=True)
class WorkerView:
    id: str
    state: str
    edition_id: int | None
    sent: int
    rate: float
    heartbeat_at: datetime
    live: bool


def worker_views(store: Store, now: datetime) -> list[WorkerView]:
    """Workers that reported in the last hour, newest first; ``live`` if within a minute."""
    if store.is_sqlite:
        return []
    with store.session() as session:
        rows = workers_seen_since(session, now - timedelta(hours=1))
        return [
            WorkerView(
                w.id,
                w.state,
                w.edition_id,
                w.sent,
                w.rate,
                w.heartbeat_at,
                w.state != "stopped" and now - w.heartbeat_at < LIVE_WITHIN,
            )
            for w in rows
        ]


def edition_rate(store: Store, edition_id: int, now: datetime) -> float:
    """Messages per second of one edition over the last minute, all workers together."""
    with store.engine.connect() as conn:
        sent = count_sent_since(conn, edition_id, now - timedelta(minutes=1))
    return sent / 60.0
