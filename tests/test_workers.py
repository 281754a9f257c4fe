"""Scale-out on the real PostgreSQL: several worker processes, crashes, leases, a shared rate limit."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from newsletter.clock import SystemClock
from newsletter.context import Context
from newsletter.demo.sink import start_controller
from newsletter.publish import send_edition
from newsletter.store import Store
from newsletter.store.models import Delivery, DeliveryStatus, Edition, EditionStatus
from newsletter.workers import run_worker
from tests.conftest import add_article, add_subscribers, fresh_postgres, make_config, morning_articles, replace
from tests.faults import Faults
from tests.test_delivery_crash import CONNECTIONS, CountingHandler, newsletter, write_config
from tests.test_delivery_faults import faulty_server


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    return fresh_postgres(request)


@pytest.fixture
def pg_store(pg_url: str):  # type: ignore[no-untyped-def]
    store = Store(pg_url)
    yield store
    store.dispose()


def statuses(store: Store) -> Counter[DeliveryStatus]:
    with store.session() as session:
        return Counter(session.scalars(select(Delivery.status)))


def wait_all(processes: list[subprocess.Popen[str]], timeout: float = 60) -> list[tuple[int, str, str]]:
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        results.append((process.returncode, out, err))
    return results


def test_worker_refuses_sqlite_with_a_clear_line(runner, tmp_path):
    from newsletter.cli import cli

    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", 2525)
    result = runner.invoke(cli, ["--config", str(config), "db", "upgrade"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["--config", str(config), "worker", "--until-idle"])
    assert result.exit_code == 2
    assert "needs PostgreSQL" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_three_worker_processes_send_each_reader_exactly_once(pg_url, pg_store, clock, tokens, tmp_path):
    handler = CountingHandler(delay=0.001)
    server = start_controller(handler)
    try:
        config_path = write_config(tmp_path, pg_url, server.port)
        config = make_config(pg_url, None, smtp={"port": server.port})
        morning_articles(pg_store, clock)
        emails = add_subscribers(pg_store, clock, 900)
        assert send_edition(Context(config, pg_store, clock, tokens), day=date(2026, 11, 24), enqueue_only=True).ok
        workers = [newsletter(config_path, "worker", "--until-idle", "--poll", "0.2") for _ in range(3)]
        results = wait_all(workers)
    finally:
        server.stop()
    assert [code for code, _, _ in results] == [0, 0, 0], results
    assert all(handler.copies[e] == 1 for e in emails)
    assert statuses(pg_store) == Counter({DeliveryStatus.SENT: len(emails)})
    with pg_store.session() as session:
        edition = session.scalars(select(Edition)).one()
        message_ids = set(session.scalars(select(Delivery.message_id)))
        assert edition.status == EditionStatus.SENT and len(message_ids) == len(emails)
    sent_by = [int(out.split("sent ")[1].split(",")[0]) for _, out, _ in results]
    assert sum(sent_by) == len(emails) and sum(1 for n in sent_by if n) >= 2, "the work was shared"


@pytest.mark.slow
def test_a_killed_workers_batch_is_finished_by_another_after_its_lease(pg_url, pg_store, clock, tokens, tmp_path):
    handler = CountingHandler(delay=0.01)
    server = start_controller(handler)
    try:
        config_path = write_config(tmp_path, pg_url, server.port)
        text = config_path.read_text().replace("lease_seconds = 600", "lease_seconds = 10")
        config_path.write_text(text)
        config = make_config(pg_url, None, smtp={"port": server.port})
        morning_articles(pg_store, clock)
        emails = add_subscribers(pg_store, clock, 500)
        send_edition(Context(config, pg_store, clock, tokens), day=date(2026, 11, 24), enqueue_only=True)
        doomed = newsletter(config_path, "worker", "--until-idle")
        while sum(handler.copies.values()) < 60:
            time.sleep(0.01)
        doomed.kill()
        doomed.communicate()
        claimed_by_dead = statuses(pg_store)[DeliveryStatus.SENDING]
        assert claimed_by_dead > 0, "the dead worker held a batch"
        started = time.monotonic()
        ((code, _out, err),) = wait_all([newsletter(config_path, "worker", "--until-idle", "--poll", "0.5")])
        waited = time.monotonic() - started
    finally:
        server.stop()
    assert code == 0, err
    assert all(handler.copies[e] >= 1 for e in emails)
    duplicates = sum(n - 1 for n in handler.copies.values())
    assert duplicates <= CONNECTIONS
    assert statuses(pg_store) == Counter({DeliveryStatus.SENT: len(emails)})
    assert waited >= 5, "the survivor waited for the lease instead of stealing a live batch"


def test_two_editions_at_once_and_a_failing_worker_gives_its_claims_back(pg_url, pg_store, clock, tokens):
    morning_articles(pg_store, clock)
    emails = add_subscribers(pg_store, clock, 60)
    good = CountingHandler(delay=0)
    server = start_controller(good)
    try:
        ctx = Context(make_config(pg_url, None, smtp={"port": server.port}), pg_store, clock, tokens)
        send_edition(ctx, day=date(2026, 11, 24), enqueue_only=True)
        add_article(pg_store, clock, "next-day", datetime(2026, 11, 25, 5, 0, tzinfo=UTC))
        clock.set(datetime(2026, 11, 25, 6, 5, tzinfo=UTC))
        send_edition(ctx, day=date(2026, 11, 25), enqueue_only=True)

        with faulty_server(Faults(rcpt_temporary=1.0, close_421=False)) as (_bad, bad_port):
            failing = make_config(
                pg_url, None, smtp={"port": bad_port}, delivery={"max_consecutive_failures": 5, "max_attempts": 2}
            )
            report = run_worker(replace(ctx, config=failing), until_idle=True, poll_seconds=0.1)
        assert report.error is not None and "in a row failed" in str(report.error)
        left = statuses(pg_store)
        assert left[DeliveryStatus.SENDING] == 0 and left[DeliveryStatus.FAILED] == 0
        assert left[DeliveryStatus.PENDING] == 2 * len(emails)

        report = run_worker(ctx, until_idle=True, poll_seconds=0.1)
    finally:
        server.stop()
    assert report.error is None and report.totals.sent == 2 * len(emails)
    assert all(good.copies[e] == 2 for e in emails)
    with pg_store.session() as session:
        assert {e.status for e in session.scalars(select(Edition))} == {EditionStatus.SENT}


def test_workers_alone_give_up_on_deferrals_after_give_up_hours(pg_url, pg_store, clock, tokens):
    morning_articles(pg_store, clock)
    emails = add_subscribers(pg_store, clock, 3)
    config = make_config(pg_url, None, delivery={"max_attempts": 1, "give_up_hours": 2})
    send_edition(Context(config, pg_store, clock, tokens), day=date(2026, 11, 24), enqueue_only=True)
    with faulty_server(Faults(dead_mailboxes=frozenset(), rcpt_temporary=1.0, close_421=False)) as (_s, port):
        busy = make_config(pg_url, None, smtp={"port": port}, delivery={"max_attempts": 1, "give_up_hours": 2})
        ctx = Context(busy, pg_store, clock, tokens)
        run_worker(ctx, until_idle=True, poll_seconds=0.1)
        assert statuses(pg_store)[DeliveryStatus.DEFERRED] == len(emails)
        clock.advance(3 * 3600)  # the morning is long gone: no worker retries it for ever
        run_worker(ctx, until_idle=True, poll_seconds=0.1)
    assert statuses(pg_store)[DeliveryStatus.FAILED] == len(emails)
    with pg_store.session() as session:
        assert session.scalars(select(Edition)).one().status == EditionStatus.SENT


@pytest.mark.slow
def test_workers_started_before_the_edition_pick_it_up(pg_url, pg_store, clock, tokens, tmp_path):
    handler = CountingHandler(delay=0)
    server = start_controller(handler)
    try:
        config_path = write_config(tmp_path, pg_url, server.port)
        config = make_config(pg_url, None, smtp={"port": server.port})
        workers = [newsletter(config_path, "worker", "--poll", "0.3") for _ in range(2)]
        time.sleep(1.5)  # they are up, finding nothing to do
        morning_articles(pg_store, clock)
        emails = add_subscribers(pg_store, clock, 200)
        send_edition(Context(config, pg_store, clock, tokens), day=date(2026, 11, 24), enqueue_only=True)
        deadline = time.monotonic() + 30
        while sum(handler.copies.values()) < len(emails) and time.monotonic() < deadline:
            time.sleep(0.1)
        for process in workers:
            process.send_signal(signal.SIGTERM)
        results = wait_all(workers)
    finally:
        server.stop()
    assert all(handler.copies[e] == 1 for e in emails)
    assert [code for code, _, _ in results] == [130, 130], "a stopped daemon says so"
    with pg_store.session() as session:
        assert session.scalars(select(Edition)).one().status == EditionStatus.SENT


@pytest.mark.slow
def test_the_rate_limit_holds_across_workers(pg_url, pg_store, clock, tokens, tmp_path):
    handler = CountingHandler(delay=0)
    server = start_controller(handler)
    try:
        config_path = write_config(tmp_path, pg_url, server.port)
        limited = config_path.read_text().replace("connections = 4", "connections = 4\nmax_per_second = 40")
        config_path.write_text(limited)
        config = make_config(pg_url, None, smtp={"port": server.port})
        morning_articles(pg_store, clock)
        emails = add_subscribers(pg_store, clock, 200)
        send_edition(Context(config, pg_store, clock, tokens), day=date(2026, 11, 24), enqueue_only=True)
        started = time.monotonic()
        results = wait_all([newsletter(config_path, "worker", "--until-idle", "--poll", "0.2") for _ in range(2)])
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert [code for code, _, _ in results] == [0, 0], results
    assert all(handler.copies[e] == 1 for e in emails)
    # 200 messages at 40/s with a one-second burst: at least (200 - 40) / 40 = 4 s, whatever the worker count.
    assert elapsed >= 4.0, elapsed
    assert timedelta(seconds=elapsed) < timedelta(seconds=20)


def test_status_shows_workers_and_the_editions_rate(pg_url, pg_store, clock, tokens, runner, tmp_path):
    from newsletter.cli import cli

    morning_articles(pg_store, clock)
    add_subscribers(pg_store, clock, 5)
    handler = CountingHandler(delay=0)
    server = start_controller(handler)
    try:
        ctx = Context(make_config(pg_url, None, smtp={"port": server.port}), pg_store, clock, tokens)
        send_edition(ctx, day=date(2026, 11, 24), enqueue_only=True)
        run_worker(replace(ctx, clock=SystemClock()), until_idle=True, poll_seconds=0.1)
        config_path = write_config(tmp_path, pg_url, server.port)
        result = runner.invoke(cli, ["--config", str(config_path), "status"])
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert "worker " in result.output and "stopped" in result.output and "sent 5;" in result.output
