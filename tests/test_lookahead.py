"""Messages prepared ahead on other threads: the same results, in the loop's order, errors included."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from newsletter.errors import MessageError
from newsletter.lookahead import Lookahead

NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Work:
    delivery_id: int


def test_results_are_those_of_a_direct_call_and_are_prepared_before_they_are_asked_for() -> None:
    threads: set[str] = set()

    def prepare(work: Work, now: datetime) -> str:
        threads.add(threading.current_thread().name)
        if work.delivery_id == 3:
            raise MessageError("reader 3 has a broken address")
        return f"message {work.delivery_id} at {now:%H:%M}"

    ahead: Lookahead[Work, str] = Lookahead(prepare, threads=2, depth=4)
    queue = [Work(i) for i in range(1, 7)]
    try:
        ahead.fill(queue, NOW)
        assert ahead.take(queue[0], NOW) == "message 1 at 06:00"
        assert ahead.take(Work(99), NOW) == "message 99 at 06:00"  # never queued: prepared on the spot
        assert ahead.take(queue[1], NOW) == "message 2 at 06:00"
        with pytest.raises(MessageError, match="reader 3"):
            ahead.take(queue[2], NOW)
        ahead.forget([5, 6])
        assert ahead.take(queue[4], NOW) == "message 5 at 06:00"  # forgotten, then wanted after all
    finally:
        ahead.close()
    assert any(name.startswith("newsletter-prepare") for name in threads)


def test_close_does_not_wait_for_work_nobody_will_take() -> None:
    started = threading.Event()
    release = threading.Event()

    def slow(work: Work, now: datetime) -> int:
        started.set()
        release.wait(5)
        return work.delivery_id

    ahead: Lookahead[Work, int] = Lookahead(slow, threads=1, depth=50)
    ahead.fill([Work(i) for i in range(50)], NOW)
    started.wait(5)
    release.set()
    ahead.close()  # the 49 not started are cancelled, not run
