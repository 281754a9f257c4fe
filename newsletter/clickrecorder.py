"""Which requests count as a reader's click, and the writer that records them in batches.

Clicks must not slow the send. On SQLite every write transaction takes the whole
database, so a transaction per click, at 10,000 clicks a minute, would queue the delivery
log's commits behind them. The web process therefore queues clicks in memory and writes
them every second (sooner when ``batch`` are waiting) in one transaction, with one insert
statement for all its rows: the send waits for at most one short transaction a second
(about 10 ms for 10,000 clicks a minute; ``benchmarks/clicks.py`` measures it). On
PostgreSQL the same batching saves commits, and the clicks table shares no lock with
deliveries. The same transaction brings the report's rollups up to date
(``store.clicks.record_clicks``): a few milliseconds more per batch (about 2 ms on SQLite
for a second of 10,000 clicks a minute at a million readers), paid once a second rather
than by every report and chart that counts the clicks.

The queue is bounded (``capacity``, 100,000 by default: ten minutes of the heaviest
traffic planned for). While the database cannot be written, a batch goes back to the
head of the queue and is tried again a second later; once the queue is full, the oldest
clicks are dropped and counted (``stats().dropped``, and a warning in the log), so a long
outage costs some clicks, never the web process's memory. What is queued is written at
``close()``, which runs at interpreter exit (a WSGI worker's normal exit included); a
killed process loses at most the last second's clicks. After a fork the child starts
with an empty queue of its own.

**Link scanners.** Mail security services (Microsoft Defender's Safe Links, Barracuda,
Mimecast, Proofpoint, …) fetch every link of a message as it arrives, before any reader
could have clicked. The rule: a request whose user agent names a scanner (or says
nothing at all) and that arrives ``scanner_seconds`` or less after the reader's copy was
sent (the delivery's ``sent_at``) is not recorded; the same agent later is taken to be a
person (a reader's browser with a preview or bot extension, a forwarded mail opened
later). When the send time is unknown (the reader has been removed since, or the copy has
not gone yet) a scanner's request is not recorded. ``scanner_seconds = 0`` turns the rule
off. Scanners that look like an ordinary browser are counted: no user-agent list catches
them, and the report's unique counts limit what one of them adds to one per link.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from newsletter.errors import StoreError
from newsletter.store import Store
from newsletter.store.clicks import ClickRow, record_clicks, sent_times

log = logging.getLogger(__name__)

SCANNER_AGENTS = (
    "bingpreview",  # Microsoft Defender for Office 365 Safe Links, Bing's link previews
    "existence discovery",  # Microsoft Office probing a link before opening it
    "barracuda",  # Barracuda Email Security's link protection
    "mimecast",  # Mimecast URL Protect
    "proofpoint",  # Proofpoint URL Defense
    "urlscan",  # urlscan.io and the services built on it
    "google-safety",  # Google's Safe Browsing fetcher
    "headlesschrome",  # automated browsers sandboxes detonate links in
    "python-requests",  # scripts and the simpler scanners
    "go-http-client",
    "curl/",
    "wget/",
    "bot",  # generic words: only ever decisive within the window after the send
    "crawler",
    "spider",
    "preview",
    "scanner",
)
"""Substrings (lower case) of user agents taken to be link scanners; an empty user agent is one too."""

_SCANNER = re.compile("|".join(re.escape(a) for a in SCANNER_AGENTS))


def looks_like_scanner(user_agent: str | None) -> bool:
    """Whether a user agent is a link scanner's (see ``SCANNER_AGENTS``); a missing one is."""
    agent = (user_agent or "").strip().lower()
    return not agent or _SCANNER.search(agent) is not None


def counts_as_reader(scanner: bool, at: datetime, sent_at: datetime | None, scanner_seconds: int) -> bool:
    """The scanner rule: a scanner's request counts only when it comes more than ``scanner_seconds`` after the send."""
    if not scanner or scanner_seconds <= 0:
        return True
    if sent_at is None:
        return False
    return (at - sent_at).total_seconds() > scanner_seconds


@dataclass(frozen=True)
class RecorderStats:
    """What a recorder has done since it was made, for logs, benchmarks and tests."""

    queued: int  # waiting to be written now
    written: int  # rows inserted
    ignored: int  # scanners' requests that the rule left out
    dropped: int  # lost: the queue overflowed, or the database refused a batch outright
    failures: int  # batches that could not be written when tried
    batches: int = 0  # transactions committed
    writing_seconds: float = 0.0  # BEGIN to COMMIT, waits for the lock included: what a send may have waited for


_RECORDERS: weakref.WeakSet[ClickRecorder] = weakref.WeakSet()


class ClickRecorder:
    """Queues clicks in memory and writes them in batches, from a thread started by the first click.

    :param scanner_seconds: ``[tracking] scanner_seconds``: the scanner rule's window.
    :param interval: seconds between writes while clicks arrive.
    :param batch: at most this many rows per transaction; this many waiting wakes the writer early.
    :param capacity: the most clicks held in memory; beyond it the oldest are dropped.
    :param background: False for no writer thread: nothing is written until ``flush()`` or
        ``close()`` (a script's one-off batch, a test that drives the writes itself).
    """

    def __init__(
        self,
        store: Store,
        *,
        scanner_seconds: int = 30,
        interval: float = 1.0,
        batch: int = 1_000,
        capacity: int = 100_000,
        background: bool = True,
    ) -> None:
        self._store = store
        self._background = background
        self.scanner_seconds = scanner_seconds
        self.interval = interval
        self.batch = max(1, batch)
        self.capacity = max(self.batch, capacity)
        self._written = self._ignored = self._dropped = self._failures = self._batches = 0
        self._writing = 0.0
        self._reported_drops = 0
        self._failing = 0  # failed tries in a row, to keep the log to a few lines during an outage
        self._closed = False
        self._reset()
        _RECORDERS.add(self)

    def _reset(self) -> None:
        """Fresh locks, queue and no writer: at construction, and in the child after a fork."""
        self._lock = threading.Lock()  # the queue and the counters
        self._write_lock = threading.RLock()  # one batch in flight at a time; flush() holds it across batches
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._queue: deque[tuple[ClickRow, bool]] = deque()
        self._thread: threading.Thread | None = None

    def record(self, row: ClickRow, *, scanner: bool = False) -> None:
        """Queue one click (or open); ``scanner`` when the request's user agent looks like a link scanner's.

        Never touches the database and never blocks on it: the request answers at once.
        """
        with self._lock:
            self._queue.append((row, scanner))
            if len(self._queue) > self.capacity:
                self._queue.popleft()
                self._dropped += 1
            due = len(self._queue) >= self.batch
        if self._closed:  # a request after shutdown began: write it now rather than lose it
            self._flush_quietly()
            return
        if self._thread is None and self._background:
            self._start()
        if due:
            self._wake.set()

    def flush(self) -> int:
        """Write everything queued before the call, one transaction per ``batch``; returns the rows written.

        A batch the writer thread has in flight is finished first, so once this returns every
        click recorded before it is in the database. ``StoreError`` when the database cannot
        be written: the batch is back in the queue.
        """
        written = 0
        with self._write_lock:
            with self._lock:
                due = len(self._queue)
            while due > 0:
                taken, n, _ = self._write_batch()
                if not taken:
                    break
                written += n
                due -= taken
        return written

    def close(self) -> None:
        """Stop the writer and write what is still queued; safe to call more than once."""
        self._closed = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)
        self._flush_quietly()

    def stats(self) -> RecorderStats:
        with self._lock:
            return RecorderStats(
                len(self._queue),
                self._written,
                self._ignored,
                self._dropped,
                self._failures,
                self._batches,
                self._writing,
            )

    # --- the writer -------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="click-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            while not self._stop.is_set():
                try:
                    _, _, waiting = self._write_batch()
                except StoreError:
                    break  # logged, and the batch is back in the queue: try again next interval
                except Exception:  # noqa: BLE001 - the writer must outlive any one batch; it was logged and counted
                    break
                if waiting < self.batch:
                    break  # no backlog: the rest waits for the next wake-up
                self._stop.wait(0.01)  # a backlog: let the send's commits in between our transactions
            self._report_drops()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except StoreError:
            log.error("%d clicks could not be written before exit and are lost", self.stats().queued)
        except Exception:  # shutting down: say what was lost, raise nothing
            log.exception("clicks could not be written before exit")

    def _write_batch(self) -> tuple[int, int, int]:
        """Write up to ``batch`` queued clicks in one transaction; returns (taken, rows written, still waiting)."""
        with self._write_lock:
            with self._lock:
                items = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            if not items:
                return 0, 0, 0
            began = time.perf_counter()
            try:
                with self._store.session() as session:
                    rows = self._readers_only(session, items)
                    written = record_clicks(session, rows)
            except StoreError as exc:
                self._requeue(items)
                self._failing += 1
                if self._failing in (1, 10, 100) or self._failing % 600 == 0:
                    log.warning("clicks not written (%s): %d waiting, trying again", exc, self.stats().queued)
                raise
            except Exception:
                with self._lock:
                    self._dropped += len(items)
                    self._failures += 1
                log.exception("a batch of %d clicks was refused by the database and is dropped", len(items))
                raise
            if self._failing:
                log.info("clicks are being written again after %d failed tries", self._failing)
                self._failing = 0
            with self._lock:
                self._writing += time.perf_counter() - began
                self._batches += 1
                self._written += written
                self._ignored += len(items) - len(rows)
                waiting = len(self._queue)
            return len(items), written, waiting

    def _readers_only(self, session: Session, items: Sequence[tuple[ClickRow, bool]]) -> list[ClickRow]:
        """The rows the scanner rule keeps, with the send times it needs read in the batch's transaction."""
        suspects = [
            (row.edition_id, row.subscriber_id) for row, scanner in items if scanner and row.subscriber_id is not None
        ]
        sent = sent_times(session, suspects) if suspects and self.scanner_seconds > 0 else {}
        return [
            row
            for row, scanner in items
            if counts_as_reader(
                scanner, row.at, sent.get((row.edition_id, row.subscriber_id or 0)), self.scanner_seconds
            )
        ]

    def _requeue(self, items: list[tuple[ClickRow, bool]]) -> None:
        """Put a batch back at the head of the queue, then drop the oldest beyond ``capacity``."""
        with self._lock:
            self._failures += 1
            self._queue.extendleft(reversed(items))
            while len(self._queue) > self.capacity:
                self._queue.popleft()
                self._dropped += 1

    def _report_drops(self) -> None:
        with self._lock:
            dropped, new = self._dropped, self._dropped - self._reported_drops
            self._reported_drops = dropped
        if new:
            log.warning(
                "%d clicks dropped (%d in all): the queue overflowed while the database was unavailable, "
                "or the database refused them",
                new,
                dropped,
            )


def _close_all() -> None:
    for recorder in list(_RECORDERS):
        recorder.close()


def _after_fork_in_child() -> None:
    # The parent's queue is the parent's to write, and its locks may have been held by a
    # thread that does not exist here.
    for recorder in list(_RECORDERS):
        recorder._reset()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
