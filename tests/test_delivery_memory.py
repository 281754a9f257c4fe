"""Memory does not grow with the list: the send streams claimed batches, it never loads the list."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from datetime import date

import pytest
from sqlalchemy import delete, update

from newsletter.context import Context
from newsletter.demo.sink import free_port
from newsletter.publish import send_edition
from newsletter.store.models import Delivery, Edition, EditionStatus, Subscriber
from tests.conftest import add_subscribers, make_config, morning_articles


def peak_bytes_sending_to(count: int, ctx: Context) -> int:
    store = ctx.store
    with store.engine.begin() as conn:
        conn.execute(delete(Delivery))
        conn.execute(delete(Subscriber))
        conn.execute(update(Edition).values(status=EditionStatus.READY, enqueued_at=None))
    add_subscribers(store, ctx.clock, count)
    tracemalloc.start()
    try:
        report = send_edition(ctx, day=date(2026, 11, 24))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.outcome == "sent" and report.stats is not None and report.stats.sent == count
    return peak


@pytest.mark.slow
def test_peak_memory_of_a_send_does_not_grow_with_the_list(tmp_path, clock, tokens):
    from newsletter.store import Store

    url = f"sqlite:///{tmp_path / 'memory.db'}"
    store = Store(url)
    store.upgrade()
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "newsletter.demo.sink", "--port", str(port)], stdout=subprocess.PIPE)
    try:
        assert sink.stdout is not None and sink.stdout.readline().startswith(b"ready")
        config = make_config(url, None, smtp={"port": port}, delivery={"batch_size": 100})
        morning_articles(store, clock)
        ctx = Context(config, store, clock, tokens)
        small = peak_bytes_sending_to(200, ctx)
        large = peak_bytes_sending_to(2000, ctx)
    finally:
        sink.terminate()
        sink.communicate(timeout=10)
        store.dispose()
    print(f"\npeak Python heap while sending: 200 readers {small / 1e6:.1f} MB, 2000 readers {large / 1e6:.1f} MB")
    assert large < small + 2_000_000, "ten times the readers must not need more memory"
