"""Bounces and complaints: the pure policy, recording reports in the store, and reporting them back."""

from __future__ import annotations

import itertools
import re
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from newsletter.bounce_policy import (
    COMPLAINT,
    EVENTS,
    HARD,
    SENDER,
    SOFT,
    Decision,
    PastBounce,
    UnknownFeedbackKindError,
    decide,
)
from newsletter.clock import FixedClock
from newsletter.errors import UsageError
from newsletter.store import Store
from newsletter.store.bounces import (
    DETAIL_WIDTH,
    DeliveryRef,
    Feedback,
    Recorded,
    bounce_reasons,
    clean_text,
    delivery_ref,
    edition_exists,
    edition_feedback,
    latest_edition_sent_to,
    record_feedback,
)
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Subscriber,
    SubscriberEvent,
    SubscriberStatus,
)
from newsletter.subscribers import change_status, daily_counts, remove_subscribers
from tests.conftest import SMTPServer
from tests.test_cli import Site, write_config
from tests.test_migrations import empty_url, schema_differences  # noqa: F401 - a fixture: a database with nothing in it
from tests.test_web_admin import app, staff  # noqa: F401 - fixtures: a logged-in admin

ACTIVE, PENDING = SubscriberStatus.ACTIVE, SubscriberStatus.PENDING
UNSUBSCRIBED, BOUNCED = SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
WINDOW = timedelta(days=14)
DAY = timedelta(days=1)


def policy(kind: str, status: SubscriberStatus, earlier: list[PastBounce] = [], edition: int | None = 7, **kw: Any):  # noqa: B006
    return decide(kind, status, earlier, edition, kw.pop("now", NOW), soft_limit=kw.pop("limit", 3),
                  soft_window=kw.pop("window", WINDOW))  # fmt: skip


# --- the pure policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "after"), [(ACTIVE, BOUNCED), (PENDING, BOUNCED), (UNSUBSCRIBED, None), (BOUNCED, None)]
)
def test_a_hard_bounce_bounces_an_active_or_pending_reader_at_once(status, after):
    assert policy(HARD, status) == Decision("hard_bounce", after, 0)


def test_soft_bounces_bounce_an_active_reader_on_the_limit_th_edition_within_the_window():
    earlier = [PastBounce(5, NOW - 6 * DAY), PastBounce(6, NOW - 3 * DAY)]
    assert policy(SOFT, ACTIVE, earlier[:1]) == Decision("soft_bounce", None, 2)
    assert policy(SOFT, ACTIVE, earlier) == Decision("soft_bounce", BOUNCED, 3)
    assert policy(SOFT, ACTIVE, earlier, limit=4) == Decision("soft_bounce", None, 3)
    assert policy(SOFT, ACTIVE, earlier, limit=1) == Decision("soft_bounce", BOUNCED, 3)
    assert policy(SOFT, ACTIVE, [], limit=1) == Decision("soft_bounce", BOUNCED, 1)


def test_the_same_edition_bouncing_twice_counts_once():
    twice = [PastBounce(7, NOW - DAY), PastBounce(7, NOW - DAY / 2), PastBounce(6, NOW - 2 * DAY)]
    assert policy(SOFT, ACTIVE, twice, edition=7) == Decision("soft_bounce", None, 2)
    assert policy(SOFT, ACTIVE, twice, edition=8).new_status == BOUNCED


def test_soft_bounces_without_an_edition_count_once_per_utc_day():
    morning, evening = datetime(2026, 11, 20, 1, 0, tzinfo=UTC), datetime(2026, 11, 20, 23, 59, tzinfo=UTC)
    same_day = [PastBounce(None, morning), PastBounce(None, evening)]
    assert policy(SOFT, ACTIVE, same_day, edition=None, now=evening + timedelta(minutes=5)).soft_count == 2
    assert policy(SOFT, ACTIVE, same_day, edition=None, now=evening).soft_count == 1
    # A day given in another zone is the same UTC day.
    plus_two = evening.astimezone(datetime.now(UTC).astimezone().tzinfo)
    assert policy(SOFT, ACTIVE, [PastBounce(None, plus_two)], edition=None, now=morning).soft_count == 1


def test_stale_soft_bounces_do_not_count_on_a_pinned_clock_across_days():
    clock = FixedClock(NOW)
    history: list[PastBounce] = []
    counts = []
    for edition in range(1, 6):  # one soft bounce every eight days: never three within 14 days
        decision = policy(SOFT, ACTIVE, history, edition=edition, now=clock.now())
        counts.append(decision.soft_count)
        assert decision.new_status is None
        history.append(PastBounce(edition, clock.now()))
        clock.advance(8 * 86400)
    assert counts == [1, 2, 2, 2, 2]
    # Exactly at the window's start still counts; a second before it does not.
    edge = [PastBounce(1, NOW - WINDOW), PastBounce(2, NOW - WINDOW - timedelta(seconds=1))]
    assert policy(SOFT, ACTIVE, edge, edition=3).soft_count == 2
    # A report dated after now (read out of order) is recent, not stale.
    assert policy(SOFT, ACTIVE, [PastBounce(1, NOW + DAY), PastBounce(2, NOW)], edition=3).new_status == BOUNCED


@pytest.mark.parametrize("status", [ACTIVE, PENDING, BOUNCED])
def test_a_complaint_unsubscribes_at_once(status):
    assert policy(COMPLAINT, status) == Decision("complaint", UNSUBSCRIBED, 0)


def test_a_complaint_from_someone_already_unsubscribed_changes_nothing():
    assert policy(COMPLAINT, UNSUBSCRIBED) == Decision("complaint", None, 0)


@pytest.mark.parametrize("status", list(SubscriberStatus))
def test_a_sender_side_rejection_never_changes_a_reader(status):
    many = [PastBounce(i, NOW - i * DAY) for i in range(1, 10)]
    assert policy(SENDER, status, many) == Decision("sender_block", None, 0)


def test_soft_bounces_never_bounce_a_pending_reader():
    many = [PastBounce(100 + i, NOW - i * DAY) for i in range(1, 10)]
    assert policy(SOFT, PENDING, many) == Decision("soft_bounce", None, 10)


@pytest.mark.parametrize(("kind", "status"), list(itertools.product(EVENTS, [UNSUBSCRIBED, BOUNCED])))
def test_a_reader_who_left_never_comes_back(kind, status):
    many = [PastBounce(i, NOW - i * DAY) for i in range(1, 10)]
    for earlier in ([], many):
        after = policy(kind, status, earlier).new_status
        assert after in (None, UNSUBSCRIBED, BOUNCED) and after not in (ACTIVE, PENDING)
        assert after is None or (kind == COMPLAINT and status == BOUNCED)


@pytest.mark.parametrize("kind", ["", "HARD", "spam", "hard\x00", "x" * 10_000])
def test_an_unknown_kind_is_a_usage_error_naming_it(kind):
    with pytest.raises(UnknownFeedbackKindError) as caught:
        policy(kind, ACTIVE)
    assert isinstance(caught.value, UsageError) and caught.value.kind == kind
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("complaints", "delivered", "alarming"),
    [(1, 100, False), (1, 0, False), (2, 1000, True), (2, 2000, False), (2, 1999, True), (30, 10_000, True)],
)
def test_complaints_are_alarming_above_a_tenth_of_a_percent_from_two_on(complaints, delivered, alarming):
    feedback = Feedback(delivered=delivered, hard=0, soft=0, sender=0, complaints=complaints)
    assert feedback.alarming is alarming
    assert feedback.complaint_rate == (complaints / delivered if delivered else 0)


def test_clean_text_makes_one_printable_line_within_the_width():
    hostile = "550\x00 5.7.1\r\nX-Evil: 1\t\x1b[31mred\x1b[0m \ud800\udfff \u202eevil\u2028" + "é" * 10_000
    cleaned = clean_text(hostile, DETAIL_WIDTH)
    assert len(cleaned) == DETAIL_WIDTH and cleaned.endswith("…")
    assert cleaned.startswith("550 5.7.1 X-Evil: 1 [31mred [0m \ufffd\ufffd evil é")
    assert cleaned.encode("utf-8")  # no lone surrogate left
    assert all(c.isprintable() for c in cleaned)
    assert clean_text("  short  ", 10) == "short" and clean_text("", 10) == ""


# --- recording reports ------------------------------------------------------------------------


def add_reader(session: Session, email: str, status: SubscriberStatus = ACTIVE) -> int:
    reader = Subscriber(email=email, name="", status=status, source="test", created_at=NOW - 30 * DAY,
                        updated_at=NOW - 30 * DAY, confirmed_at=NOW - 30 * DAY)  # fmt: skip
    session.add(reader)
    session.flush()
    return reader.id


def add_edition(session: Session, day: date, status: EditionStatus = EditionStatus.SENT) -> int:
    at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=6)
    edition = Edition(date=day, window_start=at - DAY, window_end=at, subject=f"Edition of {day}", status=status,
                      nonce=f"nonce{day:%m%d}", created_at=at)  # fmt: skip
    session.add(edition)
    session.flush()
    return edition.id


def deliver(session: Session, edition_id: int, subscriber_id: int, status: DeliveryStatus = DeliveryStatus.SENT) -> int:
    row = Delivery(edition_id=edition_id, subscriber_id=subscriber_id, status=status, attempts=1)
    session.add(row)
    session.flush()
    return row.id


def report(session: Session, subscriber_id: int, kind: str, **fields: Any) -> Recorded | None:
    values: dict[str, Any] = {"edition_id": None, "status": "", "diagnostic": "", "reference": "", "at": NOW,
                              "soft_limit": 3, "soft_window": WINDOW}  # fmt: skip
    values.update(fields)
    return record_feedback(session, subscriber_id=subscriber_id, kind=kind, **values)


def events(session: Session, subscriber_id: int | None = None) -> list[SubscriberEvent]:
    query = select(SubscriberEvent).order_by(SubscriberEvent.id)
    if subscriber_id is not None:
        query = query.where(SubscriberEvent.subscriber_id == subscriber_id)
    return list(session.scalars(query))


def test_a_hard_bounce_is_recorded_with_its_edition_status_and_diagnostic_and_bounces_the_reader(store: Store):
    with store.session() as session:
        ana = add_reader(session, "ana@example.org")
        edition = add_edition(session, date(2026, 11, 24))
        deliver(session, edition, ana)
    with store.session() as session:
        done = report(session, ana, HARD, edition_id=edition, status="5.1.1", reference="ref-1",
                      diagnostic="smtp; 550 5.1.1 <Ana@Example.org>: no such user")  # fmt: skip
    assert done == Recorded("bounced", 0, 0)
    with store.session() as session:
        reader = session.get(Subscriber, ana)
        assert reader.status == BOUNCED and reader.updated_at == NOW and reader.unsubscribed_at is None
        bounce, left = events(session, ana)
        assert (bounce.event, bounce.source, bounce.edition_id, bounce.status, bounce.reference, bounce.at) == (
            "hard_bounce",
            "mailbox",
            edition,
            "5.1.1",
            "ref-1",
            NOW,
        )
        # The reader's own address is not kept in the diagnostic: erasure must leave none behind.
        assert bounce.detail == "smtp; 550 5.1.1 <[address]>: no such user"
        assert (left.event, left.source, left.edition_id, left.at) == ("bounced", "mailbox", edition, NOW)
        bounced_today = daily_counts(session, UTC, NOW.date(), 1)[0]
        assert bounced_today.bounced == 1 and bounced_today.left == 1


def test_the_same_reference_is_recorded_once(store: Store):
    with store.session() as session:
        ana, tom = add_reader(session, "ana@example.org"), add_reader(session, "tom@example.org")
    with store.session() as session:
        assert report(session, ana, SOFT, reference="message-1:ana").action == "scored"
        assert report(session, ana, SOFT, reference="message-1:ana") == Recorded("already")  # same transaction
    for _ in range(3):
        with store.session() as session:
            assert report(session, ana, COMPLAINT, reference="message-1:ana") == Recorded("already")
    with store.session() as session:
        assert report(session, tom, SOFT, reference="message-1:ana").action == "scored"  # another reader's
        assert report(session, ana, SOFT, reference="").soft_count == 1  # no reference: never "seen"
        assert report(session, ana, SOFT, reference="").soft_count == 1
        long_one, long_two = "x" * 100 + "1", "x" * 100 + "2"  # the same once cut: kept apart by their hashes
        assert report(session, ana, SOFT, reference=long_one).action == "scored"
        assert report(session, ana, SOFT, reference=long_two).action == "scored"
        assert report(session, ana, SOFT, reference=long_one) == Recorded("already")
    with store.session() as session:
        assert [e.event for e in events(session, ana)] == ["soft_bounce"] * 5
        assert session.get(Subscriber, ana).status == ACTIVE


def test_two_processes_reading_the_same_report_record_it_once(store: Store):
    """The reader's row is locked first, so the second waits for the first and then finds its reference."""
    with store.session() as session:
        ana = add_reader(session, "ana@example.org")
    second: list[Recorded | None] = []
    started = threading.Event()

    def other_process() -> None:
        started.set()
        with store.session() as session:
            second.append(report(session, ana, HARD, reference="same"))

    with store.session() as session:
        assert report(session, ana, HARD, reference="same").action == "bounced"
        thread = threading.Thread(target=other_process)
        thread.start()
        started.wait(5)
        time.sleep(0.3)  # long enough for the other to be waiting on the lock
        assert second == []
    thread.join(30)
    assert second == [Recorded("already")]
    with store.session() as session:
        assert [e.event for e in events(session, ana)] == ["hard_bounce", "bounced"]


def test_a_report_about_a_reader_who_is_gone_records_nothing(store: Store, clock: FixedClock):
    with store.session() as session:
        ana = add_reader(session, "ana@example.org")
    with store.session() as session:
        remove_subscribers(session, ["ana@example.org"], clock, source="cli")
    with store.session() as session:
        for subscriber_id in (ana, 0, -1, 2**31, 2**63, 10**30):
            assert report(session, subscriber_id, HARD, reference="r") is None
        assert [e.event for e in events(session)] == ["removed"]


def test_a_reader_who_leaves_gets_none_of_the_deliveries_still_open(store: Store):
    with store.session() as session:
        ana, tom = add_reader(session, "ana@example.org"), add_reader(session, "tom@example.org")
        old = add_edition(session, date(2026, 11, 23))
        today = add_edition(session, date(2026, 11, 24), EditionStatus.SENDING)
        sent = deliver(session, old, ana)
        pending = deliver(session, today, ana, DeliveryStatus.PENDING)
        toms = deliver(session, today, tom, DeliveryStatus.PENDING)
        session.execute(insert(Edition), [{"date": date(2026, 11, 25), "window_start": NOW, "window_end": NOW,
                        "subject": "x", "status": EditionStatus.SENDING, "nonce": "n", "created_at": NOW}])  # fmt: skip
        later = session.scalar(select(Edition.id).where(Edition.date == date(2026, 11, 25)))
        deferred = deliver(session, later, ana, DeliveryStatus.DEFERRED)
    with store.session() as session:
        assert report(session, ana, COMPLAINT, edition_id=old, reference="arf-1") == Recorded("unsubscribed", 0, 2)
    with store.session() as session:
        status = {i: s for i, s in session.execute(select(Delivery.id, Delivery.status))}
        assert status == {sent: DeliveryStatus.SENT, pending: DeliveryStatus.SKIPPED,
                          deferred: DeliveryStatus.SKIPPED, toms: DeliveryStatus.PENDING}  # fmt: skip
        reader = session.get(Subscriber, ana)
        assert reader.status == UNSUBSCRIBED and reader.unsubscribed_at == NOW
        assert [(e.event, e.source) for e in events(session, ana)] == [("complaint", "mailbox"),
                                                                       ("unsubscribed", "complaint")]  # fmt: skip
        assert daily_counts(session, UTC, NOW.date(), 1)[0].unsubscribed == 1


def test_soft_bounces_score_until_the_limit_then_bounce(store: Store):
    with store.session() as session:
        ana = add_reader(session, "ana@example.org")
        editions = [add_edition(session, date(2026, 11, 20 + i)) for i in range(4)]
    actions = []
    for i, (edition, reference) in enumerate(
        [(editions[0], "a"), (editions[0], "b"), (editions[1], "c"), (editions[2], "d"), (editions[3], "e")]
    ):
        with store.session() as session:
            done = report(session, ana, SOFT, edition_id=edition, reference=reference, at=NOW + i * DAY)
            actions.append((done.action, done.soft_count))
    assert actions == [("scored", 1), ("scored", 1), ("scored", 2), ("bounced", 3), ("noted", 4)]
    with store.session() as session:
        assert [e.event for e in events(session, ana)] == ["soft_bounce"] * 4 + ["bounced", "soft_bounce"]
        assert session.get(Subscriber, ana).status == BOUNCED


def test_a_sender_side_rejection_is_noted_and_leaves_the_reader_alone(store: Store):
    with store.session() as session:
        ana = add_reader(session, "ana@example.org")
        pending = add_edition(session, date(2026, 11, 24), EditionStatus.SENDING)
        open_delivery = deliver(session, pending, ana, DeliveryStatus.PENDING)
    with store.session() as session:
        for i in range(5):
            assert report(session, ana, SENDER, status="5.7.1", reference=f"s{i}") == Recorded("noted")
    with store.session() as session:
        assert session.get(Subscriber, ana).status == ACTIVE
        assert session.get(Delivery, open_delivery).status == DeliveryStatus.PENDING


def test_reports_about_readers_who_left_are_noted_and_never_bring_them_back(store: Store):
    with store.session() as session:
        gone = add_reader(session, "gone@example.org", UNSUBSCRIBED)
        dead = add_reader(session, "dead@example.org", BOUNCED)
    with store.session() as session:
        for kind in (HARD, SOFT, SENDER, COMPLAINT):
            assert report(session, gone, kind, reference=f"g-{kind}").action == "noted"
        assert report(session, dead, HARD, reference="d1").action == "noted"
        assert report(session, dead, COMPLAINT, reference="d2").action == "unsubscribed"
    with store.session() as session:
        assert session.get(Subscriber, gone).status == UNSUBSCRIBED
        assert session.get(Subscriber, dead).status == UNSUBSCRIBED


def test_an_unknown_edition_or_kind(store: Store):
    with store.session() as session:
        ana = add_reader(session, "ana@example.org")
    with store.session() as session:
        for i, edition in enumerate((999, 0, -5, 2**31, 2**63)):
            assert report(session, ana, SOFT, edition_id=edition, reference=f"r{i}").soft_count == 1
        with pytest.raises(UnknownFeedbackKindError):
            report(session, ana, "spam", reference="x")
    with store.session() as session:
        assert {e.edition_id for e in events(session, ana)} == {None}


def test_hostile_diagnostics_and_references_are_cleaned_and_cut(store: Store):
    """Whatever a remote server says fits the columns, on PostgreSQL too (no NUL, no lone surrogates)."""
    junk = "\x00\x01\x1b[2J\r\n\u2028\ud800\udfff\x7f\x9b"
    diagnostic = ("550 5.7.1 " + junk) * 500 + "x" * 10_000
    assert len(diagnostic) > 10_000
    with store.session() as session:
        ana = add_reader(session, "ana@example.org")
    with store.session() as session:
        done = report(session, ana, SENDER, status="5.7.1\x00" + "9" * 100, diagnostic=diagnostic,
                      reference="\x00" + "r" * 1000 + "\ud800")  # fmt: skip
        assert done.action == "noted"
        again = report(session, ana, SENDER, status="5.7.1", reference="\x00" + "r" * 1000 + "\ud800")
        assert again == Recorded("already")
    with store.session() as session:
        (event,) = events(session, ana)
        assert event.status == "5.7.1 999…" and len(event.status) == 10
        assert len(event.detail) <= DETAIL_WIDTH and event.detail.endswith("5.7.1…")
        assert event.detail.startswith("550 5.7.1 [2J \ufffd\ufffd 550 5.7.1")
        assert re.fullmatch("[0-9a-f]{64}", event.reference)  # too long to keep: its hash instead
        assert all(c.isprintable() for c in event.detail + event.status + event.reference)


def test_migration_0009_keeps_the_events_there_are_and_goes_back(empty_url: str):  # noqa: F811
    from alembic import command
    from sqlalchemy import text

    store = Store(empty_url)
    try:
        cfg = store._alembic()
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0008")
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO subscribers (email, name, status, source, created_at, updated_at) "
                              "VALUES ('ana@example.org', '', 'active', '', :at, :at)"), {"at": NOW})  # fmt: skip
            conn.execute(text("INSERT INTO subscriber_events (subscriber_id, event, source, at) "
                              "VALUES (1, 'confirmed', 'cli', :at)"), {"at": NOW})  # fmt: skip
        store.upgrade()
        assert schema_differences(store) == []
        with store.session() as session:
            (event,) = events(session)
            assert (event.event, event.edition_id, event.status, event.detail, event.reference) == (
                "confirmed",
                None,
                "",
                "",
                "",
            )
            assert report(session, 1, HARD, status="5.1.1", reference="r").action == "bounced"
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM subscriber_events")).scalar() == 3
        store.upgrade()
        assert schema_differences(store) == []
    finally:
        store.dispose()


# --- attributing reports ---------------------------------------------------------------------


def test_delivery_ref_and_the_latest_edition_sent(store: Store, clock: FixedClock):
    with store.session() as session:
        ana, tom = add_reader(session, "ana@example.org"), add_reader(session, "tom@example.org")
        first, second, third = (add_edition(session, date(2026, 11, d)) for d in (22, 23, 24))
        deliver(session, second, ana)
        one = deliver(session, first, ana)  # made later, for an earlier edition
        deliver(session, third, ana, DeliveryStatus.FAILED)
        toms = deliver(session, third, tom)
    with store.session() as session:
        assert delivery_ref(session, one) == DeliveryRef(one, first, ana, "nonce1122", "ana@example.org")
        assert latest_edition_sent_to(session, ana) == second
        assert latest_edition_sent_to(session, tom) == third
        for nobody in (0, -1, 999, 2**31, 10**30):
            assert latest_edition_sent_to(session, nobody) is None
        for bad in (0, -1, 10**6, 2**63 - 1, 2**63, 10**30):
            assert delivery_ref(session, bad) is None
        assert edition_exists(session, third)
        assert not any(edition_exists(session, e) for e in (0, -1, 999, 2**31, 10**30))
    with store.session() as session:
        remove_subscribers(session, ["tom@example.org"], clock, source="cli")
    with store.session() as session:
        assert delivery_ref(session, toms) == DeliveryRef(toms, third, None, "nonce1124", None)


# --- reading them back -------------------------------------------------------------------------


def seed_feedback(store: Store, delivered: int = 1000) -> tuple[int, int]:
    """An edition delivered to ``delivered`` readers, with every kind of report; and one with none."""
    with store.session() as session:
        edition = add_edition(session, date(2026, 11, 24))
        quiet = add_edition(session, date(2026, 11, 23))
        session.execute(insert(Subscriber), [
            {"email": f"r{i}@example.org", "name": "", "status": ACTIVE, "source": "t", "created_at": NOW,
             "updated_at": NOW} for i in range(delivered)
        ])  # fmt: skip
        ids = session.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
        session.execute(
            insert(Delivery),
            [{"edition_id": edition, "subscriber_id": i, "status": DeliveryStatus.SENT, "attempts": 1} for i in ids]
            + [{"edition_id": quiet, "subscriber_id": i, "status": DeliveryStatus.SENT, "attempts": 1} for i in ids[:5]]
            + [{"edition_id": edition, "subscriber_id": None, "status": DeliveryStatus.FAILED, "attempts": 1}],
        )
    with store.session() as session:
        reports = [
            (ids[0], HARD, "5.1.1", "550 5.1.1 user unknown"),
            (ids[1], HARD, "5.1.1", "550 5.1.1 user unknown"),
            (ids[2], SOFT, "4.2.2", "452 4.2.2 mailbox full"),
            (ids[2], SOFT, "4.2.2", "452 4.2.2 mailbox full"),  # the same reader twice: one reader
            (ids[3], SENDER, "5.7.1", "550 5.7.1 blocked using zen.spamhaus.org"),
            (ids[4], SENDER, "5.7.1", "550 5.7.1 blocked using zen.spamhaus.org"),
            (ids[5], SENDER, "5.7.26", "550 5.7.26 unauthenticated: DMARC policy"),
            (ids[6], COMPLAINT, "", "abuse report"),
            (ids[7], COMPLAINT, "", "abuse report"),
        ]
        for n, (sid, kind, status, detail) in enumerate(reports):
            report(session, sid, kind, edition_id=edition, status=status, diagnostic=detail, reference=f"m{n}")
    return edition, quiet


def test_edition_feedback_counts_readers_per_kind(store: Store):
    edition, quiet = seed_feedback(store)
    with store.session() as session:
        found = edition_feedback(session, [edition, quiet, 999, 2**40])
    assert found[edition] == Feedback(
        delivered=1000, hard=2, soft=1, sender=3, complaints=2,
        sender_status="5.7.1", sender_detail="550 5.7.1 blocked using zen.spamhaus.org",
    )  # fmt: skip
    assert found[edition].complaint_rate == 0.002 and found[edition].alarming
    assert found[quiet] == Feedback(delivered=5, hard=0, soft=0, sender=0, complaints=0)
    assert not found[quiet].any and found[quiet].complaint_rate == 0
    assert found[999] == found[2**40] == Feedback(0, 0, 0, 0, 0)
    with store.session() as session:
        assert edition_feedback(session, []) == {}


def test_a_removed_readers_complaint_still_counts(store: Store, clock: FixedClock):
    edition, _ = seed_feedback(store, delivered=10)
    with store.session() as session:
        remove_subscribers(session, ["r6@example.org", "r7@example.org"], clock, source="cli")
    with store.session() as session:
        assert edition_feedback(session, [edition])[edition].complaints == 2


def test_bounce_reasons_say_what_bounced_each_reader(store: Store, clock: FixedClock):
    with store.session() as session:
        hard, soft, marked, refused, active, old = (
            add_reader(session, f"{name}@example.org")
            for name in ("hard", "soft", "marked", "refused", "active", "old")
        )
        session.get(Subscriber, old).status = BOUNCED  # bounced before reasons were kept
        editions = [add_edition(session, date(2026, 11, 20 + i)) for i in range(3)]
        session.add(Delivery(edition_id=editions[0], subscriber_id=refused, status=DeliveryStatus.FAILED,
                             attempts=1, last_error="rcpt: 550 5.1.1 <refused@example.org>: no such user"))  # fmt: skip
        session.add(SubscriberEvent(subscriber_id=refused, event="bounced", source="delivery", at=NOW - DAY))
    with store.session() as session:
        report(session, hard, SOFT, edition_id=editions[0], status="4.2.2", diagnostic="full", reference="1")
        report(session, hard, HARD, edition_id=editions[1], status="5.1.1", diagnostic="gone", reference="2",
               at=NOW + DAY)  # fmt: skip
        for i, edition in enumerate(editions):
            report(session, soft, SOFT, edition_id=edition, status="4.2.2", diagnostic=f"full {i}", at=NOW + i * DAY)
        report(session, marked, HARD, edition_id=editions[2], status="5.1.1", diagnostic="gone", reference="3")
        report(session, active, SOFT, edition_id=editions[2], status="4.4.1", diagnostic="timeout", reference="4")
    with store.session() as session:
        change_status(session, marked, ACTIVE, clock, source="admin:ana")  # back, then marked by hand
        change_status(session, marked, BOUNCED, clock, source="admin:ana")
    with store.session() as session:
        reasons = bounce_reasons(session, [hard, soft, marked, refused, active, old, 999, 2**40])
    assert set(reasons) == {hard, soft, marked, refused, active}  # ``active`` has a soft bounce on record
    assert (reasons[hard].event, reasons[hard].status, reasons[hard].detail) == ("hard_bounce", "5.1.1", "gone")
    assert (reasons[hard].at, reasons[hard].edition_date, reasons[hard].source) == (
        NOW + DAY,
        date(2026, 11, 21),
        "mailbox",
    )
    assert (reasons[soft].event, reasons[soft].detail, reasons[soft].edition_date) == (
        "soft_bounce",
        "full 2",
        date(2026, 11, 22),
    )
    assert (reasons[marked].event, reasons[marked].source, reasons[marked].detail) == ("bounced", "admin:ana", "")
    assert reasons[refused].source == "delivery" and reasons[refused].status == "5.1.1"
    assert reasons[refused].detail == "rcpt: 550 5.1.1 <refused@example.org>: no such user"
    assert reasons[refused].edition_date == date(2026, 11, 20)
    with store.session() as session:
        assert bounce_reasons(session, []) == {}


# --- reporting: the command line and the admin -------------------------------------------------


@pytest.fixture
def site(runner: CliRunner, tmp_path: Path, db_url: str, smtp_sink: SMTPServer) -> Site:
    """The command line on each test database (already migrated)."""
    return Site(runner, write_config(tmp_path / "newsletter.toml", db_url, smtp_sink))


def edition_block(output: str, day: str) -> list[str]:
    """The line of one edition in `status` and the indented lines under it."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(day))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("            "):
            break
        block.append(line.strip())
    return block


def test_status_lists_each_editions_feedback_with_warnings(site: Site, store: Store):
    seed_feedback(store)
    output = site("status").stdout
    block = edition_block(output, "2026-11-24")
    assert block[1] == ("feedback: 2 hard bounces, 1 soft bounce, 3 sender-side rejections, 2 complaints "
                        "(0.20 % of 1,000 delivered)")  # fmt: skip
    assert block[2].startswith("warning: complaints are 0.20 % of the mail delivered, above the 0.1 % to act at")
    assert block[3].startswith("SENDER REJECTED: the mail servers of 3 readers refused this edition")
    assert "(most often 5.7.1: 550 5.7.1 blocked using zen.spamhaus.org). The sender must act" in block[3]
    assert "SPF, DKIM and DMARC" in block[3] and "blocklist" in block[3]
    assert edition_block(output, "2026-11-23") == [edition_block(output, "2026-11-23")[0]]  # all zero: nothing said
    detail = site("status", "--date", "2026-11-24").stdout.splitlines()
    feedback = detail.index("  feedback: 2 hard bounces, 1 soft bounce, 3 sender-side rejections, 2 complaints "
                            "(0.20 % of 1,000 delivered)")  # fmt: skip
    assert detail[feedback + 1].startswith("  warning: complaints are 0.20 %")
    assert detail[feedback + 2].startswith("  SENDER REJECTED: the mail servers of 3 readers")
    quiet = site("status", "--date", "2026-11-23").stdout
    assert "feedback" not in quiet and "warning" not in quiet and "SENDER" not in quiet


def test_status_shows_a_lone_complaint_without_alarm(site: Site, store: Store):
    with store.session() as session:
        edition = add_edition(session, date(2026, 11, 24))
        ana = add_reader(session, "ana@example.org")
        deliver(session, edition, ana)
    with store.session() as session:
        report(session, ana, COMPLAINT, edition_id=edition, reference="arf")
    block = edition_block(site("status").stdout, "2026-11-24")
    assert block[1:] == ["feedback: 0 hard bounces, 0 soft bounces, 0 sender-side rejections, 1 complaint "
                         "(100.00 % of 1 delivered)"]  # fmt: skip


def test_subscribers_list_bounced_says_why(site: Site, store: Store, clock: FixedClock):
    with store.session() as session:
        edition = add_edition(session, date(2026, 11, 23))
        ana = add_reader(session, "ana@example.org")
        tom = add_reader(session, "tom@example.org")
        eve = add_reader(session, "eve@example.org")
        add_reader(session, "old@example.org", BOUNCED)
        add_reader(session, "fine@example.org")
    with store.session() as session:
        hostile = "550 5.1.1 <ANA@example.org> \x1b]0;owned\x07 gone " + "z" * 5000
        report(session, ana, HARD, edition_id=edition, status="5.1.1", diagnostic=hostile, reference="1")
        for i in range(3):
            report(session, tom, SOFT, status="4.2.2", diagnostic="452 mailbox full", at=NOW + i * DAY)
        change_status(session, eve, BOUNCED, clock, source="admin:ana")
    lines = site("subscribers", "list", "--status", "bounced").stdout.splitlines()
    assert re.fullmatch(r"1\s+bounced\s+ana@example.org", lines[0])
    assert lines[1].startswith("   why: hard bounce on 2026-11-24, 5.1.1: 550 5.1.1 <[address]> ]0;owned gone zzz")
    assert lines[1].endswith("z… (edition of 2026-11-23)") and len(lines[1]) < 200
    assert re.fullmatch(r"2\s+bounced\s+tom@example.org", lines[2])
    assert lines[3] == "   why: soft bounces (the last) on 2026-11-26, 4.2.2: 452 mailbox full"
    assert lines[5] == "   why: marked bounced by admin:ana on 2026-11-24"
    assert lines[7] == "   why: not on record (bounced before reasons were kept)"
    assert lines[8] == "0 pending, 1 active, 0 unsubscribed, 4 bounced"
    assert "\x1b" not in "".join(lines) and "\x07" not in "".join(lines)
    plain = site("subscribers", "list").stdout
    assert "why:" not in plain  # the full list stays one line per reader


@pytest.mark.parametrize("left", ["complaint", "hard"])
def test_a_reader_who_complained_or_bounced_is_not_brought_back_without_force(site: Site, store: Store, left: str):
    with store.session() as session:
        ana = add_reader(session, "ana@example.org")
    with store.session() as session:
        report(session, ana, left, reference="r")
    was = UNSUBSCRIBED if left == "complaint" else BOUNCED
    added = site("subscribers", "add", "ana@example.org").stdout
    assert added == f"already listed: ana@example.org ({was.value})\n"
    site("subscribers", "add", "ANA@example.org", "--pending")
    csv = site.path.parent / "readers.csv"
    csv.write_text("email,name\nana@example.org,Ana\n", encoding="utf-8")
    imported = site("subscribers", "import", str(csv)).stdout
    assert f"line 2: skipped: ana@example.org is {was.value}; not re-added without --force" in imported
    with store.session() as session:
        assert session.get(Subscriber, ana).status == was
    site("subscribers", "import", str(csv), "--force")
    with store.session() as session:
        assert session.get(Subscriber, ana).status == ACTIVE  # staff's word that they asked to come back


def test_the_admin_edition_page_shows_feedback_and_warnings(staff: FlaskClient, store: Store):  # noqa: F811
    seed_feedback(store)
    page = staff.get("/admin/editions/2026-11-24")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Bounces and complaints" in html
    figures = re.findall(r'<td class="num">([^<]*)</td>', html.split("Bounces and complaints")[1])
    assert figures[:6] == ["2", "1", "3", "2", "0.20 %", "1000"]
    assert "Too many complaints:" in html and "0.20 % of the mail delivered" in html
    assert "The sender must act:" in html and "the mail servers of 3 readers" in html
    assert "(most often 5.7.1: 550 5.7.1 blocked using zen.spamhaus.org)" in html and "SPF, DKIM and DMARC" in html
    quiet = staff.get("/admin/editions/2026-11-23").get_data(as_text=True)
    assert "Too many complaints" not in quiet and "The sender must act" not in quiet
    assert re.search(r"Bounces and complaints</h2>\s*<p>None.</p>", quiet)


def test_the_admin_page_escapes_a_hostile_diagnostic(staff: FlaskClient, store: Store):  # noqa: F811
    with store.session() as session:
        edition = add_edition(session, date(2026, 11, 24))
        ana = add_reader(session, "ana@example.org")
        deliver(session, edition, ana)
    with store.session() as session:
        report(session, ana, SENDER, edition_id=edition, status="5.7.1", reference="x",
               diagnostic="<script>alert(1)</script>\x00\ud800" + "y" * 10_000)  # fmt: skip
    page = staff.get("/admin/editions/2026-11-24")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "the mail servers of 1 reader refused" in html
