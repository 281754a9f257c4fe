"""Personalising the next few messages on other threads while the send loop waits on the network.

Without DKIM a reader's message costs the loop some twenty microseconds, and threads would
only add hand-over costs. With DKIM each copy needs its own body hash and private-key
signature (RSA-2048 takes a quarter of a millisecond on a current core), during which
OpenSSL and hashlib release the GIL. Preparing the messages next in the queue on a small pool of threads lets those
signatures use the machine's other cores, and the time the loop spends waiting for SMTP
replies, instead of stalling every connection in turn.

Preparing has no side effects: a message prepared and never sent (the run stopped, or its
lease ran out) is simply dropped. The loop still decides what is sent, in what order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from itertools import islice
from typing import Generic, Protocol, TypeVar

_R = TypeVar("_R")


class _Keyed(Protocol):
    @property
    def delivery_id(self) -> int: ...


_W = TypeVar("_W", bound=_Keyed)


class Lookahead(Generic[_W, _R]):
    """Runs ``prepare(work, now)`` for the first ``depth`` works of a queue, ahead of need."""

    def __init__(self, prepare: Callable[[_W, datetime], _R], threads: int, depth: int) -> None:
        self._prepare = prepare
        self._depth = depth
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="newsletter-prepare")
        self._ready: dict[int, Future[_R]] = {}

    def fill(self, queue: Iterable[_W], now: datetime) -> None:
        """Start preparing whichever of the next ``depth`` works are not under way yet."""
        for work in islice(queue, self._depth):
            if work.delivery_id not in self._ready:
                self._ready[work.delivery_id] = self._pool.submit(self._prepare, work, now)

    def take(self, work: _W, now: datetime) -> _R:
        """The prepared result for ``work`` (waiting for it if need be), else prepare it now.

        An exception raised while preparing is raised here, as a direct call would.
        """
        future = self._ready.pop(work.delivery_id, None)
        if future is None:
            return self._prepare(work, now)
        return future.result()

    def forget(self, delivery_ids: Collection[int]) -> None:
        """Drop what was prepared for works the loop will not send (their lease ran out)."""
        for delivery_id in delivery_ids:
            future = self._ready.pop(delivery_id, None)
            if future is not None:
                future.cancel()

    def close(self) -> None:
        self._ready.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
