"""The morning scheduler: when the trigger fires, what each trigger decides, and that sending stays once.

The trigger and the decision are pure and run on a controllable clock, so daylight-saving
mornings and grace periods are tested without waiting for them. ``send --scheduled`` runs
against a real database and SMTP server on a fixed clock. The daemon runs in a thread on
the real clock, with the send time set a little before or after now.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time as time_
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import inspect, select

from newsletter.articles import ImportSummary
from newsletter.cli import cli
from newsletter.clock import FixedClock, SystemClock
from newsletter.config import Config, FeedConfig
from newsletter.context import Context
from newsletter.demo.sink import free_port, start_controller
from newsletter.due import (
    Action,
    EditionState,
    EditionTrigger,
    decide,
    latest_scheduled_day,
    scheduled_day,
    send_scheduled,
)
from newsletter.editions import cutoff
from newsletter.errors import ArticleImportError
from newsletter.preparation import prepare_edition
from newsletter.publish import _start, send_edition
from newsletter.scheduler import EDITION_JOB_ID, JOB_TABLE, EditionScheduler, schedule_summary, stored_next_run
from newsletter.store import Store
from newsletter.store.locks import DatabaseLock
from newsletter.store.models import Article, Edition, EditionStatus
from newsletter.tokens import Tokens
from tests.conftest import SECRET, RecordingHandler, SMTPServer, add_article, add_subscribers, make_config

LONDON = ZoneInfo("Europe/London")
HAVANA = ZoneInfo("America/Havana")  # clocks change at midnight: 00:00 -> 01:00 in March, 01:00 -> 00:00 in November
SANTIAGO = ZoneInfo("America/Santiago")  # 24:00 -> 01:00 in September, 24:00 -> 23:00 in April
UTC_ZONE = ZoneInfo("UTC")
EVERY_DAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --- the trigger ------------------------------------------------------------------------------


def fire_times(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Fire times in [start, end), asked for as APScheduler's loop asks: again just after each run."""
    found = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire < end:
        found.append(fire)
        fire = trigger.get_next_fire_time(fire, fire.astimezone(UTC) + timedelta(milliseconds=20))
    return found


def local(fires: list[datetime], zone: ZoneInfo) -> list[tuple[date, time]]:
    return [(f.astimezone(zone).date(), f.astimezone(zone).time()) for f in fires]


def days(first: date, count: int) -> list[date]:
    return [first + timedelta(days=i) for i in range(count)]


@pytest.mark.parametrize(
    ("first", "utc_hours"),
    [
        (date(2026, 3, 26), [6, 6, 6, 5, 5, 5]),  # Sunday 29 March: GMT -> BST
        (date(2026, 10, 22), [5, 5, 5, 6, 6, 6]),  # Sunday 25 October: BST -> GMT
        (date(2026, 11, 23), [6, 6, 6, 6, 6, 6]),  # an ordinary week
    ],
)
def test_fires_once_a_day_at_six_in_london_across_the_clock_changes(first: date, utc_hours: list[int]) -> None:
    trigger = EditionTrigger(time(6), LONDON, EVERY_DAY)
    start = datetime.combine(first, time(0), tzinfo=LONDON)
    fires = fire_times(trigger, start, start + timedelta(days=6))
    assert local(fires, LONDON) == [(d, time(6)) for d in days(first, 6)]
    assert [f.astimezone(UTC).hour for f in fires] == utc_hours


@pytest.mark.parametrize(
    ("zone", "send_time", "first", "change"),
    [
        (HAVANA, time(0, 30), date(2026, 3, 6), date(2026, 3, 8)),  # 00:30 does not exist on the 8th
        (HAVANA, time(0, 30), date(2026, 10, 30), date(2026, 11, 1)),  # 00:30 happens twice on the 1st
        (SANTIAGO, time(0, 0), date(2026, 9, 4), date(2026, 9, 6)),  # midnight does not exist on the 6th
        (SANTIAGO, time(23, 30), date(2026, 4, 2), date(2026, 4, 4)),  # 23:30 happens twice on the 4th
        (LONDON, time(1, 30), date(2026, 3, 27), date(2026, 3, 29)),  # 01:30 does not exist
        (LONDON, time(1, 30), date(2026, 10, 23), date(2026, 10, 25)),  # 01:30 happens twice
    ],
)
def test_fires_once_a_day_when_the_send_time_is_skipped_or_repeated(
    zone: ZoneInfo, send_time: time, first: date, change: date
) -> None:
    trigger = EditionTrigger(send_time, zone, EVERY_DAY)
    start = datetime.combine(first, time(0), tzinfo=zone) - timedelta(minutes=1)
    fires = fire_times(trigger, start, start + timedelta(days=5))
    config = make_config("sqlite://", None, newsletter={"timezone": zone.key, "send_time": f"{send_time:%H:%M}"})
    assert [scheduled_day(f, config) for f in fires] == days(first, 5)
    # exactly at each edition's cutoff, the instant its window closes
    assert [f.astimezone(UTC) for f in fires] == [cutoff(d, send_time, zone) for d in days(first, 5)]
    assert change in {scheduled_day(f, config) for f in fires}


def test_a_restart_between_the_two_passes_of_a_repeated_time_does_not_fire_again() -> None:
    trigger = EditionTrigger(time(0, 30), HAVANA, EVERY_DAY)
    first_pass = cutoff(date(2026, 11, 1), time(0, 30), HAVANA)  # 00:30 CDT = 04:30 UTC
    restarted = first_pass + timedelta(minutes=40)  # 00:10 CST: the wall clock reads 00:30 again soon
    fire = trigger.get_next_fire_time(None, restarted)
    assert fire is not None and fire.astimezone(UTC) == cutoff(date(2026, 11, 2), time(0, 30), HAVANA)


def test_agrees_with_apschedulers_cron_on_ordinary_days_and_honours_weekdays() -> None:
    weekdays = ("mon", "tue", "wed", "thu", "fri")
    ours = EditionTrigger(time(6, 15), LONDON, weekdays)
    theirs = CronTrigger(day_of_week="mon-fri", hour=6, minute=15, second=0, timezone=LONDON)
    start = datetime(2026, 11, 2, tzinfo=LONDON)
    fires = fire_times(ours, start, start + timedelta(days=14))
    assert fires == fire_times(theirs, start, start + timedelta(days=14))
    assert len(fires) == 10 and all(f.astimezone(LONDON).weekday() < 5 for f in fires)


def test_missed_runs_are_counted_from_the_previous_fire_time() -> None:
    """APScheduler counts runs missed while down by asking from the last fire time: one per day."""
    trigger = EditionTrigger(time(6), LONDON, EVERY_DAY)
    last_run = cutoff(date(2026, 11, 20), time(6), LONDON)
    now = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    missed = []
    fire = trigger.get_next_fire_time(last_run, now)
    while fire is not None and fire <= now:
        missed.append(fire)
        fire = trigger.get_next_fire_time(fire, now)
    assert local(missed, LONDON) == [(d, time(6)) for d in days(date(2026, 11, 21), 4)]


def test_the_trigger_survives_the_job_table() -> None:
    trigger = EditionTrigger(time(0, 30), HAVANA, ("mon", "wed"))
    restored = pickle.loads(pickle.dumps(trigger))
    start = datetime(2026, 10, 1, tzinfo=UTC)
    assert fire_times(restored, start, start + timedelta(days=60)) == fire_times(
        trigger, start, start + timedelta(days=60)
    )
    assert str(restored) == str(trigger)


# --- the decision -----------------------------------------------------------------------------


def config_with(**scheduler: Any) -> Config:
    return make_config("sqlite://", None, scheduler=scheduler)


def states(**by_day: EditionState) -> Any:
    table = {date.fromisoformat(k.removeprefix("d").replace("_", "-")): v for k, v in by_day.items()}
    return table.get


NOTHING = states()
SENT = EditionState(EditionStatus.SENT)


@pytest.mark.parametrize(
    ("now", "state_of", "action", "day"),
    [
        (datetime(2026, 11, 24, 6, 0, tzinfo=UTC), NOTHING, Action.SEND, date(2026, 11, 24)),
        (datetime(2026, 11, 24, 7, 59, tzinfo=UTC), NOTHING, Action.SEND, date(2026, 11, 24)),
        (datetime(2026, 11, 24, 8, 0, tzinfo=UTC), NOTHING, Action.SEND, date(2026, 11, 24)),  # grace is inclusive
        (datetime(2026, 11, 24, 8, 0, 1, tzinfo=UTC), NOTHING, Action.MISSED, date(2026, 11, 24)),
        (datetime(2026, 11, 24, 5, 59, tzinfo=UTC), states(d2026_11_23=SENT), Action.DONE, date(2026, 11, 23)),
        (datetime(2026, 11, 24, 5, 59, tzinfo=UTC), NOTHING, Action.MISSED, date(2026, 11, 23)),
        (datetime(2026, 11, 24, 6, 5, tzinfo=UTC), states(d2026_11_24=SENT), Action.DONE, date(2026, 11, 24)),
        (
            datetime(2026, 11, 24, 6, 5, tzinfo=UTC),
            states(d2026_11_24=EditionState(EditionStatus.SKIPPED)),
            Action.DONE,
            date(2026, 11, 24),
        ),
        (
            datetime(2026, 11, 24, 6, 5, tzinfo=UTC),
            states(d2026_11_24=EditionState(EditionStatus.READY)),
            Action.SEND,
            date(2026, 11, 24),
        ),
        (
            datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
            states(d2026_11_24=EditionState(EditionStatus.READY)),
            Action.MISSED,
            date(2026, 11, 24),
        ),
        # a crash left it part-sent: resumed whatever the hour
        (
            datetime(2026, 11, 24, 15, 0, tzinfo=UTC),
            states(d2026_11_24=EditionState(EditionStatus.SENDING, open_now=40)),
            Action.RESUME,
            date(2026, 11, 24),
        ),
        # every message recorded but the edition not marked sent: resuming finishes it
        (
            datetime(2026, 11, 24, 6, 30, tzinfo=UTC),
            states(d2026_11_24=EditionState(EditionStatus.SENDING)),
            Action.RESUME,
            date(2026, 11, 24),
        ),
        # only deferrals left, due at 06:45: not before
        (
            datetime(2026, 11, 24, 6, 30, tzinfo=UTC),
            states(
                d2026_11_24=EditionState(
                    EditionStatus.SENDING, deferred=2, next_retry_at=datetime(2026, 11, 24, 6, 45, tzinfo=UTC)
                )
            ),
            Action.NOT_DUE,
            date(2026, 11, 24),
        ),
        (
            datetime(2026, 11, 24, 6, 45, tzinfo=UTC),
            states(
                d2026_11_24=EditionState(
                    EditionStatus.SENDING, deferred=2, next_retry_at=datetime(2026, 11, 24, 6, 45, tzinfo=UTC)
                )
            ),
            Action.RESUME,
            date(2026, 11, 24),
        ),
        # 29 March: 06:00 BST is 05:00 UTC; 25 October: 06:00 GMT is 06:00 UTC
        (datetime(2026, 3, 29, 5, 0, tzinfo=UTC), NOTHING, Action.SEND, date(2026, 3, 29)),
        (datetime(2026, 3, 29, 4, 59, tzinfo=UTC), states(d2026_03_28=SENT), Action.DONE, date(2026, 3, 28)),
        (datetime(2026, 10, 25, 5, 59, tzinfo=UTC), states(d2026_10_24=SENT), Action.DONE, date(2026, 10, 24)),
        (datetime(2026, 10, 25, 6, 0, tzinfo=UTC), NOTHING, Action.SEND, date(2026, 10, 25)),
    ],
)
def test_decide(now: datetime, state_of: Any, action: Action, day: date) -> None:
    decision = decide(now, config_with(), state_of)
    assert (decision.action, decision.day) == (action, day), decision.reason


def test_missed_says_so_in_one_line_with_the_way_to_send_it_anyway() -> None:
    decision = decide(datetime(2026, 11, 24, 9, 30, tzinfo=UTC), config_with(), NOTHING)
    assert decision.action == Action.MISSED
    assert decision.reason == (
        "the edition of 2026-11-24 was missed: its send time 2026-11-24 06:00 GMT passed 3h 30m ago, beyond the "
        "120-minute grace period, so it is not sent unattended; `newsletter send --date 2026-11-24` sends it anyway"
    )


def test_grace_zero_still_allows_a_minute_to_wake_up() -> None:
    config = config_with(grace_minutes=0)
    assert decide(datetime(2026, 11, 24, 6, 0, 40, tzinfo=UTC), config, NOTHING).action == Action.SEND
    assert decide(datetime(2026, 11, 24, 6, 1, 1, tzinfo=UTC), config, NOTHING).action == Action.MISSED
    longer = config_with(grace_minutes=300)
    assert decide(datetime(2026, 11, 24, 10, 59, tzinfo=UTC), longer, NOTHING).action == Action.SEND


def test_deferrals_count_as_due_when_the_retry_tick_asks() -> None:
    waiting = EditionState(EditionStatus.SENDING, deferred=2, next_retry_at=datetime(2026, 11, 24, 6, 45, tzinfo=UTC))
    now = datetime(2026, 11, 24, 6, 30, tzinfo=UTC)
    assert decide(now, config_with(), states(d2026_11_24=waiting), retry_deferred=True).action == Action.RESUME


def test_only_scheduled_weekdays_are_due() -> None:
    config = config_with(days=["mon", "tue", "wed", "thu", "fri"])
    saturday = datetime(2026, 11, 28, 6, 30, tzinfo=UTC)
    decision = decide(saturday, config, NOTHING)
    assert decision.day == date(2026, 11, 27) and decision.action == Action.MISSED
    assert decide(saturday, config, states(d2026_11_27=SENT)).action == Action.DONE
    monday = datetime(2026, 11, 30, 6, 1, tzinfo=UTC)
    assert (decide(monday, config, NOTHING).action, decide(monday, config, NOTHING).day) == (
        Action.SEND,
        date(2026, 11, 30),
    )


def test_a_send_time_in_havanas_missing_midnight_hour_is_due_just_after_the_gap() -> None:
    config = make_config(
        "sqlite://", None, newsletter={"timezone": "America/Havana", "send_time": "00:30"}, scheduler={}
    )
    gap_day = date(2026, 3, 8)
    due_at = cutoff(gap_day, time(0, 30), HAVANA)
    assert due_at == datetime(2026, 3, 8, 5, 30, tzinfo=UTC)  # 01:30 CDT, an hour past the gap's start
    before = decide(due_at - timedelta(seconds=1), config, states(d2026_03_07=SENT))
    assert (before.action, before.day) == (Action.DONE, date(2026, 3, 7))
    at = decide(due_at, config, NOTHING)
    assert (at.action, at.day) == (Action.SEND, gap_day)


# --- send --scheduled, in process on a fixed clock -----------------------------------------------


def morning(store: Store, clock: FixedClock, readers: int = 3) -> list[str]:
    for i in range(3):
        add_article(store, clock, f"story-{i}", datetime(2026, 11, 24, 5, 0, tzinfo=UTC) - timedelta(hours=i))
    return add_subscribers(store, clock, readers)


def editions(store: Store) -> dict[date, EditionStatus]:
    with store.session() as session:
        return {e.date: e.status for e in session.scalars(select(Edition))}


def test_send_scheduled_every_five_minutes_sends_each_edition_once(store, clock, ctx, smtp_sink) -> None:
    readers = morning(store, clock)
    outcomes = []
    clock.set(datetime(2026, 11, 24, 5, 50, tzinfo=UTC))
    while clock.now() < datetime(2026, 11, 25, 6, 20, tzinfo=UTC):
        if clock.now() == datetime(2026, 11, 24, 12, 0, tzinfo=UTC):
            add_article(store, clock, "afternoon", clock.now())
        result = send_scheduled(ctx)
        assert result.exit_code == 0
        outcomes += [(clock.now(), r.outcome) for r in result.reports]
        clock.advance(5 * 60)
    assert outcomes == [
        (datetime(2026, 11, 24, 6, 0, tzinfo=UTC), "sent"),
        (datetime(2026, 11, 25, 6, 0, tzinfo=UTC), "sent"),
    ]
    got = smtp_sink.handler.by_recipient()
    assert sorted(got) == sorted(readers)
    assert all(len(copies) == 2 for copies in got.values())
    assert editions(store) == {date(2026, 11, 24): EditionStatus.SENT, date(2026, 11, 25): EditionStatus.SENT}


def test_send_scheduled_past_the_grace_period_sends_nothing_and_send_date_still_can(
    store, clock, ctx, smtp_sink, caplog
) -> None:
    readers = morning(store, clock)
    clock.set(datetime(2026, 11, 24, 8, 1, tzinfo=UTC))
    with caplog.at_level(logging.INFO, logger="newsletter.scheduler"):
        result = send_scheduled(ctx)
    assert result.exit_code == 0 and result.reports == []
    assert result.decision is not None and result.decision.action == Action.MISSED
    assert smtp_sink.handler.received == [] and editions(store) == {}
    assert "`newsletter send --date 2026-11-24` sends it anyway" in caplog.text
    assert send_edition(ctx, day=date(2026, 11, 24)).outcome == "sent"
    assert sorted(smtp_sink.handler.by_recipient()) == sorted(readers)


def test_send_scheduled_leaves_an_edition_whose_lock_is_held_and_exits_0(store, clock, ctx, smtp_sink):
    morning(store, clock)
    clock.set(datetime(2026, 11, 24, 6, 0, 5, tzinfo=UTC))
    with DatabaseLock(store, "edition:2026-11-24", clock, holder="otherhost:4242"):
        result = send_scheduled(ctx)
    assert result.exit_code == 0 and result.reports == []
    (line,) = result.lock_held
    assert line.startswith("the edition of 2026-11-24 is being sent by ") and "leaving it to that process" in line
    if store.is_sqlite:
        assert "otherhost:4242" in line
    assert smtp_sink.handler.received == []
    # once that process is gone, the next run sends it
    assert [r.outcome for r in send_scheduled(ctx).reports] == ["sent"]


def test_send_scheduled_resumes_an_edition_left_part_sent_even_after_the_grace_period(
    store, clock, ctx, smtp_sink
) -> None:
    readers = morning(store, clock, readers=5)
    clock.set(datetime(2026, 11, 24, 6, 0, tzinfo=UTC))
    edition = prepare_edition(ctx, date(2026, 11, 24))
    _start(ctx, edition.id)  # the delivery log exists: then the process died
    clock.set(datetime(2026, 11, 24, 11, 0, tzinfo=UTC))
    result = send_scheduled(ctx)
    assert [r.outcome for r in result.reports] == ["sent"]
    assert sorted(smtp_sink.handler.by_recipient()) == sorted(readers)


def test_send_scheduled_also_resumes_an_older_edition_left_part_sent(store, clock, ctx, smtp_sink):
    morning(store, clock, readers=2)
    clock.set(datetime(2026, 11, 24, 6, 0, tzinfo=UTC))
    _start(ctx, prepare_edition(ctx, date(2026, 11, 24)).id)
    clock.set(datetime(2026, 11, 25, 6, 2, tzinfo=UTC))  # the next morning: no new articles
    result = send_scheduled(ctx)
    assert sorted((r.day, r.outcome) for r in result.reports) == [
        (date(2026, 11, 24), "sent"),
        (date(2026, 11, 25), "skipped"),
    ]
    assert len(smtp_sink.handler.received) == 2


class DeferringHandler(RecordingHandler):
    """Answers 451 to one address until told to accept it."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused
        self.accepting = False
        self.connections = 0

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]):  # noqa: N802
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        if address == self.refused and not self.accepting:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


def test_deferred_messages_wait_for_their_retry_time_in_cron_mode(db_url, store, clock, tokens) -> None:
    readers = morning(store, clock)
    handler = DeferringHandler(readers[1])
    controller = start_controller(handler)
    try:
        config = make_config(db_url, SMTPServer("127.0.0.1", controller.port, handler), delivery={"max_attempts": 1})
        ctx = Context(config, store, clock, tokens)
        clock.set(datetime(2026, 11, 24, 6, 0, tzinfo=UTC))
        assert [r.outcome for r in send_scheduled(ctx).reports] == ["incomplete"]
        connections = handler.connections
        clock.advance(5 * 60)
        result = send_scheduled(ctx)
        assert result.decision is not None and result.decision.action == Action.NOT_DUE
        assert result.reports == [] and handler.connections == connections  # not even a connection
        handler.accepting = True
        clock.advance(11 * 60)  # past the retry time (retry_deferred_minutes = 15)
        assert [r.outcome for r in send_scheduled(ctx).reports] == ["sent"]
    finally:
        controller.stop()
    assert sorted(handler.by_recipient()) == sorted(readers)
    assert all(len(c) == 1 for c in handler.by_recipient().values())


def with_feed(config: Config, **scheduler: Any) -> Config:
    return replace(
        config,
        feeds=(FeedConfig(url="https://news.example.com/feed.xml"),),
        scheduler=replace(config.scheduler, **scheduler),
    )


def test_feeds_are_fetched_just_before_the_edition_is_prepared(config, store, clock, tokens, smtp_sink) -> None:
    add_subscribers(store, clock, 2)
    calls = []

    def fetch() -> list[ImportSummary]:
        calls.append(clock.now())
        add_article(store, clock, "from-the-feed", datetime(2026, 11, 24, 5, 58, tzinfo=UTC))
        return [ImportSummary("https://news.example.com/feed.xml", new=1)]

    clock.set(datetime(2026, 11, 24, 6, 0, 10, tzinfo=UTC))
    for _ in range(3):
        send_scheduled(Context(with_feed(config), store, clock, tokens), fetch=fetch)
        clock.advance(300)
    assert calls == [datetime(2026, 11, 24, 6, 0, 10, tzinfo=UTC)]  # once: later runs find the edition made
    with store.session() as session:
        article = session.scalars(select(Article).where(Article.guid == "from-the-feed")).one()
        assert article.edition is not None and article.edition.date == date(2026, 11, 24)
    assert len(smtp_sink.handler.received) == 2


def test_a_failing_feed_does_not_stop_the_edition_and_fetch_feeds_false_skips_it(
    config, store, clock, tokens, smtp_sink, caplog
) -> None:
    morning(store, clock, readers=1)

    def broken() -> list[ImportSummary]:
        raise ArticleImportError("https://news.example.com/feed.xml: connection refused")

    clock.set(datetime(2026, 11, 24, 6, 1, tzinfo=UTC))
    with caplog.at_level(logging.WARNING, logger="newsletter.scheduler"):
        result = send_scheduled(Context(with_feed(config), store, clock, tokens), fetch=broken)
    assert [r.outcome for r in result.reports] == ["sent"]
    assert "fetching feeds before the edition of 2026-11-24 failed: https://news.example.com/feed.xml" in caplog.text

    def never() -> list[ImportSummary]:
        raise AssertionError("fetch_feeds = false")

    clock.set(datetime(2026, 11, 25, 6, 1, tzinfo=UTC))
    send_scheduled(Context(with_feed(config, fetch_feeds=False), store, clock, tokens), fetch=never)


# --- the daemon's jobs, called directly on a fixed clock -----------------------------------------


def test_the_retry_tick_sends_once_the_server_is_back_and_reports_a_miss_once(
    db_url, store, clock, tokens, scheduler_log
) -> None:
    readers = morning(store, clock)
    handler = RecordingHandler()
    port = free_port()  # nothing listens here until the server "comes back"
    config = make_config(db_url, SMTPServer("127.0.0.1", port, handler))
    daemon = EditionScheduler(Context(config, store, clock, tokens))

    clock.set(datetime(2026, 11, 24, 6, 0, tzinfo=UTC))
    daemon.on_edition_due()
    assert editions(store) == {date(2026, 11, 24): EditionStatus.READY}
    assert "the scheduler tries again in 15 minutes" in scheduler_log.text
    clock.set(datetime(2026, 11, 24, 6, 15, tzinfo=UTC))
    daemon.on_retry_tick()  # still down
    controller = start_controller(handler, "127.0.0.1", port)
    try:
        clock.set(datetime(2026, 11, 24, 6, 30, tzinfo=UTC))
        daemon.on_retry_tick()
        clock.set(datetime(2026, 11, 24, 6, 45, tzinfo=UTC))
        daemon.on_retry_tick()
    finally:
        controller.stop()
    assert sorted(handler.by_recipient()) == sorted(readers) and len(handler.received) == 3
    assert editions(store) == {date(2026, 11, 24): EditionStatus.SENT}

    # the next morning the server is down until the grace period has run out: one line says so
    add_article(store, clock, "wednesday", datetime(2026, 11, 25, 5, 0, tzinfo=UTC))
    clock.set(datetime(2026, 11, 25, 6, 0, tzinfo=UTC))
    daemon.on_edition_due()
    for minutes in range(15, 240, 15):
        clock.set(datetime(2026, 11, 25, 6, 0, tzinfo=UTC) + timedelta(minutes=minutes))
        daemon.on_retry_tick()
    missed = [r.getMessage() for r in scheduler_log.records if "was missed" in r.getMessage()]
    assert missed == [
        "the edition of 2026-11-25 was missed: its send time 2026-11-25 06:00 GMT passed 2h 15m ago, beyond the "
        "120-minute grace period, so it is not sent unattended; `newsletter send --date 2026-11-25` sends it anyway"
    ]
    assert len(handler.received) == 3


# --- the command line (real clock: the send time is set just before now) ---------------------------


def just_before_now(seconds: int) -> str:
    return f"{datetime.now(UTC) - timedelta(seconds=seconds):%H:%M:%S}"


def seed(config_path: Path, readers: int) -> list[str]:
    from newsletter.config import load_config

    store = Store(load_config(config_path, environ={}).store.url)
    store.upgrade()
    emails = seed_now(store, readers)
    store.dispose()
    return emails


def write_toml(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def site_config(tmp_path: Path, db_url: str, smtp_port: int, send_time: str, **extra: dict[str, Any]) -> Path:
    """A config file in UTC with the given send time, feeds off."""
    sections: dict[str, dict[str, Any]] = {
        "newsletter": {"publication": "The Example Gazette", "timezone": "UTC", "send_time": send_time},
        "store": {"url": db_url},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "timeout": 5},
        "sender": {"from_address": "breakfast@news.example.com"},
        "web": {"base_url": "https://news.example.com/newsletter", "secret_key": SECRET},
        "scheduler": {"fetch_feeds": False},
    }
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    return write_toml(tmp_path / "newsletter.toml", sections)


def test_cli_send_scheduled_twice_sends_once_then_is_silent(runner, tmp_path, db_url, smtp_sink) -> None:
    path = site_config(tmp_path, db_url, smtp_sink.port, just_before_now(60))
    readers = seed(path, 3)
    first = runner.invoke(cli, ["--config", str(path), "send", "--scheduled"])
    assert first.exit_code == 0, first.output
    assert ": sent 3, deferred 0, failed 0" in first.stdout
    again = runner.invoke(cli, ["--config", str(path), "send", "--scheduled"])
    assert again.exit_code == 0 and again.stdout == "" and again.stderr == ""
    assert sorted(smtp_sink.handler.by_recipient()) == sorted(readers) and len(smtp_sink.handler.received) == 3


def test_cli_send_scheduled_refuses_a_date_and_says_why(runner, tmp_path, db_url, smtp_sink) -> None:
    path = site_config(tmp_path, db_url, smtp_sink.port, "06:00")
    result = runner.invoke(cli, ["--config", str(path), "send", "--scheduled", "--date", "2026-11-24"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --scheduled decides the edition itself") and result.stdout == ""


def test_cli_status_shows_the_next_scheduled_send(runner, tmp_path, db_url, smtp_sink) -> None:
    path = site_config(tmp_path, db_url, smtp_sink.port, "06:00", scheduler={"days": ["mon"]})
    seed(path, 1)
    result = runner.invoke(cli, ["--config", str(path), "status"])
    assert result.exit_code == 0, result.output
    now = datetime.now(UTC)
    monday = now.date() + timedelta(days=(7 - now.weekday()) % 7)
    if cutoff(monday, time(6), UTC_ZONE) <= now:
        monday += timedelta(days=7)
    assert f"next scheduled send: the edition of {monday} at {monday} 06:00 UTC (in " in result.stdout
    assert "scheduler job in the database" not in result.stdout  # no daemon has run here


# --- the daemon, in a thread on the real clock ------------------------------------------------------


@pytest.fixture
def scheduler_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The scheduler's records, even when the CLI has stopped them propagating to the root logger."""
    logger = logging.getLogger("newsletter")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # or the root's capture would record each line twice
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)
        logger.propagate = propagate


def real_config(db_url: str, smtp_sink: SMTPServer, send_time: str, **scheduler: Any) -> Config:
    return make_config(
        db_url,
        smtp_sink,
        newsletter={"timezone": "UTC", "send_time": send_time},
        scheduler={"fetch_feeds": False, **scheduler},
    )


def seed_now(store: Store, readers: int, published: datetime | None = None) -> list[str]:
    """An article (published half an hour ago unless said), and ``readers`` subscribers."""
    clock = FixedClock(datetime.now(UTC))
    add_article(store, clock, "story", published or clock.now() - timedelta(minutes=30))
    return add_subscribers(store, clock, readers)


class Running:
    """An ``EditionScheduler`` running in a thread until ``stop()``."""

    def __init__(self, config: Config, store: Store) -> None:
        clock = SystemClock()
        self.daemon = EditionScheduler(Context(config, store, clock, Tokens(SECRET, clock)))
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.daemon.run()

    def stop(self) -> int | None:
        self.daemon.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()
        return self.code


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time_.monotonic() + timeout
    while not condition():
        assert time_.monotonic() < deadline, "timed out"
        time_.sleep(0.05)


def drop_job_table(store: Store) -> None:
    if inspect(store.engine).has_table(JOB_TABLE):
        with store.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {JOB_TABLE}")


@pytest.fixture
def fresh_store(store: Store) -> Iterator[Store]:
    """The store without a job table left by an earlier test on the same PostgreSQL database."""
    drop_job_table(store)
    yield store
    drop_job_table(store)


def test_daemon_sends_a_run_missed_within_grace_at_start_up_once_and_keeps_the_schedule(
    db_url, fresh_store, smtp_sink, scheduler_log
) -> None:
    store = fresh_store
    config = real_config(db_url, smtp_sink, just_before_now(300))
    readers = seed_now(store, 4)
    running = Running(config, store)
    try:
        wait_for(lambda: EditionStatus.SENT in editions(store).values())
        time_.sleep(0.3)  # would a second run follow? (it must not)
    finally:
        code = running.stop()
    assert code == 0
    got = smtp_sink.handler.by_recipient()
    assert sorted(got) == sorted(readers) and all(len(c) == 1 for c in got.values())
    (day,) = editions(store)
    stored = stored_next_run(store)
    assert stored == cutoff(day + timedelta(days=1), config.newsletter.send_time, UTC_ZONE)
    text = scheduler_log.text
    assert f"the edition of {day} is due" in text and f"edition {day}: sent 4," in text
    assert "next send: " in text and "scheduler stopped" in text
    assert any(
        line.startswith("scheduler job in the database: next run at") for line in schedule_summary(running.daemon.ctx)
    )


def test_daemon_started_past_the_grace_period_logs_the_miss_once_and_sends_nothing(
    db_url, fresh_store, smtp_sink, scheduler_log
) -> None:
    store = fresh_store
    config = real_config(db_url, smtp_sink, just_before_now(3 * 3600), grace_minutes=60)
    seed_now(store, 2)
    earlier = _sent_edition_days_ago(store, 7)  # editions went out before: this one was expected
    running = Running(config, store)
    try:
        wait_for(lambda: "was missed" in scheduler_log.text)
        time_.sleep(0.3)
    finally:
        assert running.stop() == 0
    missed = [r for r in scheduler_log.records if "was missed" in r.getMessage()]
    assert len(missed) == 1 and missed[0].levelno == logging.WARNING
    assert "beyond the 60-minute grace period" in missed[0].getMessage()
    assert "sends it anyway" in missed[0].getMessage()
    assert smtp_sink.handler.received == [] and editions(store) == {earlier: EditionStatus.SENT}


def test_a_fresh_install_started_after_the_send_time_has_missed_nothing(
    db_url, fresh_store, smtp_sink, scheduler_log
) -> None:
    config = real_config(db_url, smtp_sink, just_before_now(3 * 3600), grace_minutes=60)
    seed_now(fresh_store, 2)
    running = Running(config, fresh_store)
    try:
        wait_for(lambda: "next send:" in scheduler_log.text)
        time_.sleep(0.5)
    finally:
        assert running.stop() == 0
    assert "was missed" not in scheduler_log.text
    assert "passed before this schedule covered it" in scheduler_log.text
    assert scheduler_log.text.count("next send:") == 1
    assert "stopping (nothing was being sent)" in scheduler_log.text
    assert smtp_sink.handler.received == [] and editions(fresh_store) == {}


def _sent_edition_days_ago(store: Store, days: int) -> date:
    now = datetime.now(UTC)
    day = now.date() - timedelta(days=days)
    with store.session() as session:
        session.add(
            Edition(date=day, window_start=now - timedelta(days=days + 1), window_end=now - timedelta(days=days),
                    subject="s", status=EditionStatus.SENT, nonce="n0", created_at=now - timedelta(days=days))
        )  # fmt: skip
    return day


def test_daemon_fires_at_the_send_time_while_running(db_url, fresh_store, smtp_sink, scheduler_log) -> None:
    store = fresh_store
    fire_at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    config = real_config(db_url, smtp_sink, f"{fire_at:%H:%M:%S}")
    readers = seed_now(store, 3)
    running = Running(config, store)
    try:
        time_.sleep(1)
        assert smtp_sink.handler.received == []  # yesterday's is long past the grace period
        wait_for(lambda: EditionStatus.SENT in editions(store).values())
        sent_at = datetime.now(UTC)
    finally:
        assert running.stop() == 0
    assert fire_at <= sent_at < fire_at + timedelta(seconds=5)
    assert sorted(smtp_sink.handler.by_recipient()) == sorted(readers)
    assert len(smtp_sink.handler.received) == 3


def test_daemon_resumes_an_edition_left_sending_at_start_up(db_url, fresh_store, smtp_sink, scheduler_log) -> None:
    store = fresh_store
    config = real_config(db_url, smtp_sink, just_before_now(6 * 3600))  # long past the grace period
    clock = SystemClock()
    day = latest_scheduled_day(clock.now(), config)
    readers = seed_now(store, 3, published=cutoff(day, config.newsletter.send_time, UTC_ZONE) - timedelta(hours=1))
    ctx = Context(config, store, clock, Tokens(SECRET, clock))
    edition = prepare_edition(ctx, day)
    _start(ctx, edition.id)
    running = Running(config, store)
    try:
        wait_for(lambda: EditionStatus.SENT in editions(store).values())
    finally:
        assert running.stop() == 0
    assert sorted(smtp_sink.handler.by_recipient()) == sorted(readers)
    assert "was left part-sent: resuming it" in scheduler_log.text
    assert "was missed" not in scheduler_log.text


def test_the_job_table_row_is_the_edition_job(db_url, fresh_store, smtp_sink) -> None:
    store = fresh_store
    config = real_config(db_url, smtp_sink, "06:00")
    running = Running(config, store)
    try:
        wait_for(lambda: stored_next_run(store) is not None)
    finally:
        assert running.stop() == 0
    with store.engine.connect() as conn:
        ids = [row[0] for row in conn.exec_driver_sql(f"SELECT id FROM {JOB_TABLE}")]
    assert ids == [EDITION_JOB_ID]  # the retry and feed ticks live in memory only
