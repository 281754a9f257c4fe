"""The subscriber list: events behind every change, removal, paging, export, stats, and their commands."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.errors import UsageError, ValidationError
from newsletter.publish import send_edition
from newsletter.store import Store
from newsletter.store.deliveries import status_counts
from newsletter.store.models import (
    Base,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    StaffUser,
    Subscriber,
    SubscriberEvent,
    SubscriberStatus,
)
from newsletter.store.readers import active_zone_counts, set_timezone
from newsletter.subscriber_csv import export_rows
from newsletter.subscribers import (
    LEFT,
    ConfirmResult,
    ConsentRequiredError,
    InvalidAddressError,
    InvalidTextError,
    LeaveResult,
    NotListedError,
    add_subscriber,
    change_zone,
    confirm_subscription,
    daily_counts,
    escape_controls,
    leave,
    leave_by_address,
    new_subscriber,
    normalise_email,
    page_subscribers,
    reactivate,
    remove_subscriber,
    remove_subscribers,
    request_subscription,
    set_status,
    unsubscribe_addresses,
)
from newsletter.tokens import CONFIRM, UNSUBSCRIBE, Tokens
from tests.conftest import SECRET, add_subscribers, morning_articles

LONDON = ZoneInfo("Europe/London")


def events(store: Store) -> list[tuple[int | None, str, str]]:
    with store.session() as session:
        rows = session.scalars(select(SubscriberEvent).order_by(SubscriberEvent.id))
        return [(e.subscriber_id, e.event, e.source) for e in rows]


def names(store: Store) -> dict[str, str]:
    with store.session() as session:
        return dict(session.execute(select(Subscriber.email, Subscriber.name)).all())


def config_file(tmp_path: Path, db_url: str, smtp_port: int = 2525) -> str:
    path = tmp_path / "newsletter.toml"
    path.write_text(
        f"""
[newsletter]
publication = "The Example Gazette"
[store]
url = "{db_url}"
[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
[sender]
from_address = "breakfast@news.example.com"
[web]
base_url = "https://news.example.com/newsletter"
secret_key = "{SECRET}"
""",
        encoding="utf-8",
    )
    return str(path)


# --- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ana@Example.ORG", "ana@example.org"),
        ("  tom@example.org ", "tom@example.org"),
        ("x@bücher.de", "x@xn--bcher-kva.de"),
    ],
)
def test_normalise_email(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "ana", "ana@", "@example.org", "a b@example.org", "ana@example.org\r\nBcc: x@y.z"])
def test_normalise_email_refuses_bad_addresses(raw):
    with pytest.raises(InvalidAddressError):
        normalise_email(raw)


# --- events ----------------------------------------------------------------------------------


def test_every_change_is_an_event(store, clock):
    with store.session() as session:
        ana = add_subscriber(session, "ana@example.org", clock, source="cli").subscriber
        tom = add_subscriber(
            session, "tom@example.org", clock, status=SubscriberStatus.PENDING, source="cli"
        ).subscriber
        add_subscriber(session, "tom@example.org", clock)  # pending -> active
        set_status(ana, SubscriberStatus.UNSUBSCRIBED, clock, source="admin")
        set_status(ana, SubscriberStatus.UNSUBSCRIBED, clock, source="admin")  # no change, no event
        add_subscriber(session, "ana@example.org", clock)  # stays out without force
        add_subscriber(session, "ana@example.org", clock, force=True, name="Ana")
        set_status(tom, SubscriberStatus.BOUNCED, clock, source="delivery")
        ids = ana.id, tom.id
    assert events(store) == [
        (ids[0], "confirmed", "cli"),
        (ids[1], "subscribed", "cli"),
        (ids[1], "confirmed", "cli"),
        (ids[0], "unsubscribed", "admin"),
        (ids[0], "reactivated", "cli"),
        (ids[1], "bounced", "delivery"),
    ]


def test_double_opt_in_and_leaving(store, clock, tokens):
    with store.session() as session:
        signup = request_subscription(session, "Ana@Example.org", clock, name="Ana")
    assert signup.send_confirmation and signup.email == "ana@example.org"
    claim = tokens.read(CONFIRM, tokens.make(CONFIRM, signup.subscriber_id, signup.email), 7)
    with store.session() as session:
        assert confirm_subscription(session, claim, clock) == ConfirmResult.CONFIRMED
        assert confirm_subscription(session, claim, clock) == ConfirmResult.ALREADY
        again = request_subscription(session, "ana@example.org", clock)
    assert not again.send_confirmation
    leave_claim = tokens.read(UNSUBSCRIBE, tokens.make(UNSUBSCRIBE, signup.subscriber_id, signup.email), 365)
    with store.session() as session:
        assert leave(session, leave_claim, clock, source="one-click") == LeaveResult.UNSUBSCRIBED
        assert leave(session, leave_claim, clock, source="one-click") == LeaveResult.ALREADY
        assert confirm_subscription(session, claim, clock) == ConfirmResult.STALE
        assert request_subscription(session, "ana@example.org", clock).send_confirmation
        assert confirm_subscription(session, claim, clock) == ConfirmResult.REACTIVATED
        assert leave(
            session, tokens.read(UNSUBSCRIBE, tokens.make(UNSUBSCRIBE, 0, "x@example.org"), 1), clock, source="x"
        ) == (LeaveResult.TEST_COPY)
    assert [e for _, e, _ in events(store)] == [
        "subscribed",
        "confirmed",
        "unsubscribed",
        "subscribed",
        "reactivated",
    ]


def test_a_bounce_without_an_event_still_needs_a_fresh_request(store, clock, tokens):
    add_subscribers(store, clock, 1, SubscriberStatus.BOUNCED)
    with store.session() as session:
        reader = session.scalars(select(Subscriber)).one()
        claim = tokens.read(CONFIRM, tokens.make(CONFIRM, reader.id, reader.email), 7)
        assert confirm_subscription(session, claim, clock) == ConfirmResult.STALE
    clock.advance(60)
    with store.session() as session:
        request_subscription(session, "reader0@example.org", clock)
        assert confirm_subscription(session, claim, clock) == ConfirmResult.REACTIVATED


def test_leave_by_address(store, clock):
    add_subscribers(store, clock, 1)
    with store.session() as session:
        assert leave_by_address(session, "READER0@example.org", clock, source="mailto") == LeaveResult.UNSUBSCRIBED
        assert leave_by_address(session, "nobody@example.org", clock, source="mailto") == LeaveResult.NOT_LISTED


def everything_stored(store: Store) -> str:
    """Every value of every row of every table, as one lower-cased text to search."""
    with store.engine.connect() as conn:
        return "\n".join(
            repr(tuple(row)).lower() for table in Base.metadata.sorted_tables for row in conn.execute(table.select())
        )


def test_removal_keeps_the_editions_counts_and_no_trace_of_the_address(store, clock, ctx):
    morning_articles(store, clock)
    add_subscribers(store, clock, 3)
    assert send_edition(ctx).outcome == "sent"
    with store.engine.begin() as conn:  # a server's reply may quote the address
        conn.execute(
            update(Delivery)
            .where(Delivery.subscriber_id == 2)
            .values(last_error="250 2.1.5 <reader1@example.org>: Reader 1 ok")
        )
    assert "reader1@example.org" in everything_stored(store)
    with store.session() as session:
        assert remove_subscriber(session, "Reader1@example.org", clock, source="cli")
        assert not remove_subscriber(session, "reader1@example.org", clock, source="cli")
        edition_id = session.scalars(select(Edition.id)).one()
    with store.engine.connect() as conn:
        counts = status_counts(conn, edition_id)
    assert counts[DeliveryStatus.SENT] == 3 and sum(counts.values()) == 3
    stored = everything_stored(store)
    assert "reader1@example.org" not in stored and "reader 1" not in stored
    assert "reader0@example.org" in stored and "reader2@example.org" in stored
    with store.session() as session:
        assert session.scalars(select(Delivery.subscriber_id).order_by(Delivery.id)).all() == [1, None, 3]
    assert events(store)[-1] == (None, "removed", "cli")
    assert all(sid != 2 for sid, _, _ in events(store))


def test_removal_skips_the_readers_open_deliveries_so_the_edition_can_finish(store, clock, ctx, smtp_sink):
    morning_articles(store, clock)
    add_subscribers(store, clock, 4)
    assert send_edition(ctx, enqueue_only=True).outcome == "enqueued"
    with store.engine.begin() as conn:  # one in flight with a worker, one waiting for a retry
        conn.execute(update(Delivery).where(Delivery.subscriber_id == 3).values(status=DeliveryStatus.DEFERRED))
        conn.execute(
            update(Delivery)
            .where(Delivery.subscriber_id == 4)
            .values(status=DeliveryStatus.SENDING, claimed_by="elsewhere:1", claimed_until=clock.now())
        )
    with store.session() as session:
        removed = remove_subscribers(
            session, ["reader1@example.org", "reader2@example.org", "reader3@example.org"], clock, source="cli"
        )
    assert [(r.email, r.skipped) for r in removed] == [
        ("reader1@example.org", 1),
        ("reader2@example.org", 1),
        ("reader3@example.org", 1),
    ]
    with store.session() as session:
        rows = session.execute(select(Delivery.subscriber_id, Delivery.status, Delivery.claimed_by)).all()
    assert sorted(rows, key=lambda r: r[0] or 0) == [
        (None, DeliveryStatus.SKIPPED, ""),
        (None, DeliveryStatus.SKIPPED, ""),
        (None, DeliveryStatus.SKIPPED, ""),
        (1, DeliveryStatus.PENDING, ""),
    ]
    report = send_edition(ctx)
    assert report.outcome == "sent", report.message
    assert sorted(smtp_sink.handler.by_recipient()) == ["reader0@example.org"]
    with store.session() as session:
        edition = session.scalars(select(Edition)).one()
        assert edition.status == EditionStatus.SENT
        assert (edition.sent_count, edition.skipped_count, edition.recipient_count) == (1, 3, 4)


def test_removing_several_is_all_or_nothing(store, clock):
    add_subscribers(store, clock, 2)
    with store.session() as session, pytest.raises(NotListedError) as caught:
        remove_subscribers(session, ["reader0@example.org", "nobody@example.org"], clock, source="cli")
    assert caught.value.missing == ("nobody@example.org",)
    assert str(caught.value) == "not on the list: nobody@example.org; nothing was changed"
    with store.session() as session:
        assert len(session.scalars(select(Subscriber)).all()) == 2
        with pytest.raises(InvalidAddressError):
            remove_subscribers(session, ["reader0@example.org", "not an address"], clock, source="cli")
        twice = remove_subscribers(session, ["reader0@example.org", "READER0@example.org"], clock, source="cli")
        assert [r.email for r in twice] == ["reader0@example.org"]


# --- unsubscribing and re-activating by staff -----------------------------------------------


def test_unsubscribe_keeps_the_reader_and_their_history(store, clock):
    add_subscribers(store, clock, 1)
    add_subscribers(store, clock, 1, SubscriberStatus.BOUNCED, prefix="dead")
    with store.session() as session:
        done = unsubscribe_addresses(
            session, ["Reader0@example.org", "dead0@example.org", "reader0@example.org"], clock, source="cli"
        )
        again = unsubscribe_addresses(session, ["reader0@example.org"], clock, source="cli")
    assert [(d.email, d.was) for d in done] == [
        ("reader0@example.org", SubscriberStatus.ACTIVE),
        ("dead0@example.org", SubscriberStatus.BOUNCED),
    ]
    assert [(d.email, d.was) for d in again] == [("reader0@example.org", SubscriberStatus.UNSUBSCRIBED)]
    with store.session() as session:
        reader = session.scalars(select(Subscriber).where(Subscriber.email == "reader0@example.org")).one()
        assert reader.status == SubscriberStatus.UNSUBSCRIBED and reader.unsubscribed_at == clock.now()
    assert events(store) == [(1, "unsubscribed", "cli"), (2, "unsubscribed", "cli")]
    with store.session() as session, pytest.raises(NotListedError):
        unsubscribe_addresses(session, ["dead0@example.org", "nobody@example.org"], clock, source="cli")


def test_reactivate_needs_confirmed_consent_and_records_who(store, clock):
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    add_subscribers(store, clock, 1, SubscriberStatus.BOUNCED, prefix="dead")
    add_subscribers(store, clock, 1, SubscriberStatus.PENDING, prefix="wait")
    with store.session() as session:
        for subscriber_id in (1, 2):
            with pytest.raises(ConsentRequiredError) as caught:
                reactivate(session, subscriber_id, clock, by="admin:ana", confirmed=False)
            assert isinstance(caught.value, UsageError) and caught.value.status in LEFT
        assert caught.value.email == "dead0@example.org"
        assert reactivate(session, 3, clock, by="admin:ana", confirmed=False)  # pending: never left
        assert reactivate(session, 1, clock, by="admin:ana", confirmed=True)
        assert not reactivate(session, 1, clock, by="admin:ana", confirmed=True)  # already active
        with pytest.raises(NotListedError):
            reactivate(session, 99, clock, by="admin:ana", confirmed=True)
        with pytest.raises(InvalidTextError):
            reactivate(session, 2, clock, by="admin:\x1b[2J", confirmed=True)
        with pytest.raises(InvalidTextError):
            reactivate(session, 2, clock, by=" ", confirmed=True)
    assert events(store) == [(3, "confirmed", "admin:ana"), (1, "reactivated", "admin:ana")]
    with store.session() as session:
        statuses = dict(session.execute(select(Subscriber.id, Subscriber.status)).all())
    assert statuses == {1: SubscriberStatus.ACTIVE, 2: SubscriberStatus.BOUNCED, 3: SubscriberStatus.ACTIVE}


def test_cli_force_records_who_reactivated(runner, tmp_path, db_url, store, clock, monkeypatch):
    monkeypatch.setenv("LOGNAME", "tom")
    monkeypatch.setenv("USER", "tom")
    add_subscribers(store, clock, 2, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    cfg = config_file(tmp_path, db_url)
    kept = runner.invoke(cli, ["--config", cfg, "subscribers", "add", "gone0@example.org"])
    assert kept.exit_code == 0 and kept.output == "already listed: gone0@example.org (unsubscribed)\n"
    forced = runner.invoke(cli, ["--config", cfg, "subscribers", "add", "gone0@example.org", "--force"])
    assert forced.exit_code == 0 and forced.output == "already listed: gone0@example.org (active)\n"
    csv_file = tmp_path / "back.csv"
    csv_file.write_text("email\ngone1@example.org\n", encoding="utf-8")
    imported = runner.invoke(cli, ["--config", cfg, "subscribers", "import", str(csv_file), "--force"])
    assert imported.exit_code == 0 and "re-activated 1" in imported.output
    assert events(store) == [(1, "reactivated", "cli:tom"), (2, "reactivated", "cli:tom")]


# --- names as typed, and no control characters ---------------------------------------------


def test_names_are_kept_in_the_order_typed(store, clock):
    with store.session() as session:
        add_subscriber(session, "li@example.org", clock, name="  Li   Wei ")
        add_subscriber(session, "ana@example.org", clock, name="García, Ana")
        request_subscription(session, "wei@example.org", clock, name="Wei\tLi")
    assert names(store) == {"li@example.org": "Li Wei", "ana@example.org": "García, Ana", "wei@example.org": "Wei Li"}


@pytest.mark.parametrize("bad", ["\x1b]0;owned\x07", "Ana\x07", "Ana\x7f", "Ana\x9b31m", "Ana\x00", "Ana\udcff"])
def test_control_characters_never_get_into_a_name(store, clock, bad):
    with store.session() as session:
        with pytest.raises(InvalidTextError) as caught:
            add_subscriber(session, "ana@example.org", clock, name=bad)
        assert caught.value.field == "a subscriber's name"
        assert escape_controls(str(caught.value)) == str(caught.value)  # the message is safe to print
        with pytest.raises(InvalidTextError):
            request_subscription(session, "ana@example.org", clock, name=bad)  # the public form's entry point
        with pytest.raises(InvalidTextError):
            add_subscriber(session, "ana@example.org", clock, source=f"crm{bad}")
    assert names(store) == {}


def test_escape_controls_shows_them_as_escapes():
    assert escape_controls("Ana\x1b]0;x\x07 Zoë\x7f\x9b\t") == "Ana\\x1b]0;x\\x07 Zoë\\x7f\\x9b\\t"
    assert escape_controls("Li Wei 李伟") == "Li Wei 李伟"


def test_keyset_pages(store, clock):
    add_subscribers(store, clock, 7)
    add_subscribers(store, clock, 2, SubscriberStatus.PENDING, prefix="wait_")
    with store.session() as session:
        first = page_subscribers(session, size=3)
        assert [s.email for s in first.rows] == ["reader0@example.org", "reader1@example.org", "reader2@example.org"]
        assert first.previous_before == 0 and first.next_after == first.rows[-1].id
        second = page_subscribers(session, after_id=first.next_after, size=3)
        assert second.rows[0].email == "reader3@example.org" and second.previous_before == second.rows[0].id
        back = page_subscribers(session, before_id=second.previous_before, size=3)
        assert [s.id for s in back.rows] == [s.id for s in first.rows] and back.previous_before == 0
        last = page_subscribers(session, status=SubscriberStatus.PENDING, size=3)
        assert [s.email for s in last.rows] == ["wait_0@example.org", "wait_1@example.org"] and last.next_after == 0
        # LIKE wildcards typed by staff are literal text.
        assert page_subscribers(session, search="_0").rows[0].email == "wait_0@example.org"
        assert len(page_subscribers(session, search="_0").rows) == 1
        assert page_subscribers(session, search="%").rows == []


# --- export and stats ------------------------------------------------------------------------


def test_export_rows_are_csv_safe(store, clock):
    with store.session() as session:
        add_subscriber(session, "ana@example.org", clock, name='=HYPERLINK("http://evil")')
        add_subscriber(session, "tom@example.org", clock, name="Tom, Jr.", status=SubscriberStatus.PENDING)
        rows = list(export_rows(session, batch=1))
    assert rows[0] == ["email", "name", "status", "created_at", "confirmed_at", "unsubscribed_at", "timezone"]
    assert rows[1][:3] == ["ana@example.org", '\'=HYPERLINK("http://evil")', "active"]
    assert rows[1][3] == "2026-11-24T06:30:00+00:00" and rows[2][4] == ""
    assert len(rows) == 3


def test_daily_counts_by_local_day(store, clock):
    with store.session() as session:
        add_subscriber(session, "ana@example.org", clock)  # 24 Nov 06:30 UTC: joined
        clock.set(datetime(2026, 11, 24, 23, 30, tzinfo=UTC))  # still the 24th in London (GMT)
        request_subscription(session, "tom@example.org", clock)
        clock.set(datetime(2026, 11, 25, 0, 30, tzinfo=UTC))
        set_status(
            session.scalars(select(Subscriber).where(Subscriber.email == "ana@example.org")).one(),
            SubscriberStatus.UNSUBSCRIBED,
            clock,
        )
        remove_subscriber(session, "tom@example.org", clock)
        rows = daily_counts(session, LONDON, date(2026, 11, 25), 3)
    assert [r.day for r in rows] == [date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25)]
    assert (rows[1].signups, rows[1].joined, rows[1].left) == (1, 1, 0)
    assert (rows[2].unsubscribed, rows[2].removed, rows[2].left) == (1, 1, 2)
    assert rows[0].left == rows[0].joined == 0


# --- commands --------------------------------------------------------------------------------


def test_cli_add_remove_list(runner, tmp_path, db_url, store):
    cfg = config_file(tmp_path, db_url)
    assert (
        runner.invoke(cli, ["--config", cfg, "subscribers", "add", "Ana@example.org", "--name", "Ana"]).exit_code == 0
    )
    for i in range(3):
        runner.invoke(cli, ["--config", cfg, "subscribers", "add", f"r{i}@example.org", "--pending"])
    listed = runner.invoke(cli, ["--config", cfg, "subscribers", "list", "--status", "pending", "--limit", "2"])
    assert listed.exit_code == 0, listed.output
    assert "r0@example.org" in listed.output and "r2@example.org" not in listed.output
    assert "more: add --after" in listed.output and "3 pending, 1 active" in listed.output
    after = listed.output.split("--after ")[1].split()[0]
    rest = runner.invoke(cli, ["--config", cfg, "subscribers", "list", "--status", "pending", "--after", after])
    assert "r2@example.org" in rest.output and "r0@example.org" not in rest.output
    searched = runner.invoke(cli, ["--config", cfg, "subscribers", "list", "--search", "ANA"])
    assert "ana@example.org" in searched.output and "r1@" not in searched.output
    unknown = runner.invoke(cli, ["--config", cfg, "subscribers", "remove", "ana@example.org", "zed@example.org"])
    assert unknown.exit_code == 2
    assert unknown.stdout == "" and unknown.stderr == "error: not on the list: zed@example.org; nothing was changed\n"
    assert "ana@example.org" in runner.invoke(cli, ["--config", cfg, "subscribers", "list"]).output
    removed = runner.invoke(cli, ["--config", cfg, "subscribers", "remove", "ana@example.org", "Ana@Example.org"])
    assert removed.exit_code == 0 and removed.output == "removed: ana@example.org\n"
    bad = runner.invoke(cli, ["--config", cfg, "subscribers", "remove", "not-an-address"])
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and "Traceback" not in bad.output


def test_cli_unsubscribe(runner, tmp_path, db_url, store, clock):
    add_subscribers(store, clock, 2)
    add_subscribers(store, clock, 1, SubscriberStatus.BOUNCED, prefix="dead")
    cfg = config_file(tmp_path, db_url)
    unknown = runner.invoke(cli, ["--config", cfg, "subscribers", "unsubscribe", "reader0@example.org", "zed@x.org"])
    assert unknown.exit_code == 2 and unknown.stdout == ""
    assert unknown.stderr == "error: not on the list: zed@x.org; nothing was changed\n"
    assert events(store) == []
    done = runner.invoke(
        cli, ["--config", cfg, "subscribers", "unsubscribe", "Reader0@example.org", "dead0@example.org"]
    )
    assert done.exit_code == 0, done.output
    assert done.output == "unsubscribed: reader0@example.org\nunsubscribed: dead0@example.org (was bounced)\n"
    again = runner.invoke(cli, ["--config", cfg, "subscribers", "unsubscribe", "reader0@example.org"])
    assert again.exit_code == 0 and again.output == "already unsubscribed: reader0@example.org\n"
    assert events(store) == [(1, "unsubscribed", "cli"), (3, "unsubscribed", "cli")]
    with store.session() as session:
        assert [s.status for s in session.scalars(select(Subscriber).order_by(Subscriber.id))] == [
            SubscriberStatus.UNSUBSCRIBED,
            SubscriberStatus.ACTIVE,
            SubscriberStatus.UNSUBSCRIBED,
        ]
    help_text = runner.invoke(cli, ["subscribers", "unsubscribe", "--help"]).output
    assert "newsletter subscribers unsubscribe" in help_text.split("Example:")[1]


def test_cli_list_is_aligned_and_escapes_what_was_stored(runner, tmp_path, db_url, store, clock):
    with store.session() as session:
        for email, name in [
            ("a@example.org", "Li Wei"),
            ("long.address.here@example.org", "N" * 60),
            ("esc@example.org", "Evil\x1b]0;owned\x07 \x9b2J"),  # stored before names were checked
        ]:
            session.add(new_subscriber(email, name, SubscriberStatus.ACTIVE, "test", clock.now()))
        session.add(new_subscriber("p@example.org", "", SubscriberStatus.PENDING, "test", clock.now()))
    cfg = config_file(tmp_path, db_url)
    listed = runner.invoke(cli, ["--config", cfg, "subscribers", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[:4] == [
        "1  active   a@example.org                  Li Wei",
        "2  active   long.address.here@example.org  " + "N" * 39 + "…",
        "3  active   esc@example.org                Evil\\x1b]0;owned\\x07 \\x9b2J",
        "4  pending  p@example.org",
    ]
    assert not any(c in listed.output for c in "\x1b\x07\x9b")
    huge = runner.invoke(cli, ["--config", cfg, "subscribers", "list", "--after", "99999999999999999999999"])
    assert huge.exit_code == 2 and "Traceback" not in huge.output and "--after" in huge.output
    last = runner.invoke(cli, ["--config", cfg, "subscribers", "list", "--after", str(2**31 - 1)])
    assert last.exit_code == 0 and "no subscribers match" in last.output
    with store.session() as session:
        assert page_subscribers(session, after_id=2**63).rows == []
        assert [s.id for s in page_subscribers(session, before_id=2**63, size=2).rows] == [3, 4]


def test_cli_export_and_stats(runner, tmp_path, db_url, store, clock):
    cfg = config_file(tmp_path, db_url)
    runner.invoke(cli, ["--config", cfg, "subscribers", "add", "ana@example.org", "--name", "Ana García"])
    runner.invoke(cli, ["--config", cfg, "subscribers", "add", "tom@example.org", "--pending"])
    out = runner.invoke(cli, ["--config", cfg, "subscribers", "export"])
    assert out.exit_code == 0, out.output
    rows = list(csv.reader(io.StringIO(out.output)))
    assert rows[0] == ["email", "name", "status", "created_at", "confirmed_at", "unsubscribed_at", "timezone"]
    assert rows[1][:3] == ["ana@example.org", "Ana García", "active"] and rows[2][2] == "pending"
    target = tmp_path / "active.csv"
    written = runner.invoke(cli, ["--config", cfg, "subscribers", "export", "--status", "active", "--out", str(target)])
    assert "wrote 1 subscriber to" in written.output
    assert target.read_text(encoding="utf-8").splitlines()[1].startswith("ana@example.org,Ana García,active,")
    stats = runner.invoke(cli, ["--config", cfg, "subscribers", "stats", "--days", "3"])
    assert stats.exit_code == 0, stats.output
    assert "subscribers: 1 pending, 1 active, 0 unsubscribed, 0 bounced" in stats.output
    today = datetime.now(LONDON).date()
    line = next(line for line in stats.output.splitlines() if line.startswith(today.isoformat()))
    assert line.split()[1:4] == ["1", "1", "0"]
    assert (today - timedelta(days=2)).isoformat() in stats.output


def test_cli_staff_add(runner, tmp_path, db_url, store):
    cfg = config_file(tmp_path, db_url)
    made = runner.invoke(cli, ["--config", cfg, "staff", "add", "ana"], input="a long password 1\na long password 1\n")
    assert made.exit_code == 0 and "created staff user ana" in made.output
    assert "a long password" not in made.output
    twice = runner.invoke(cli, ["--config", cfg, "staff", "add", "ana", "--password-stdin"], input="another password\n")
    assert twice.exit_code == 2 and "already exists" in twice.output
    reset = runner.invoke(
        cli, ["--config", cfg, "staff", "add", "ana", "--password-stdin", "--replace"], input="another password\n"
    )
    assert reset.exit_code == 0 and "new password set" in reset.output
    short = runner.invoke(cli, ["--config", cfg, "staff", "add", "tom", "--password-stdin"], input="short\n")
    assert short.exit_code == 2 and "at least 12 characters" in short.output
    spaced = runner.invoke(cli, ["--config", cfg, "staff", "add", "to m", "--password-stdin"], input="x" * 20 + "\n")
    assert spaced.exit_code == 2
    with store.session() as session:
        (user,) = session.scalars(select(StaffUser)).all()
        assert user.username == "ana" and user.password_hash.startswith("scrypt:")
        assert "another password" not in user.password_hash


def test_add_staff_user_refuses_bad_names_directly(store, clock):
    from newsletter.web.auth import add_staff_user

    with store.session() as session, pytest.raises(UsageError):
        add_staff_user(session, "", "a long enough password", clock)


def test_tokens_for_removed_readers_name_nobody(store, clock):
    tokens = Tokens(SECRET, FixedClock(clock.now()))
    add_subscribers(store, clock, 1)
    with store.session() as session:
        reader = session.scalars(select(Subscriber)).one()
        claim = tokens.read(UNSUBSCRIBE, tokens.make(UNSUBSCRIBE, reader.id, reader.email), 365)
        remove_subscriber(session, reader.email, clock)
    with store.session() as session:
        assert leave(session, claim, clock, source="one-click") == LeaveResult.NOT_LISTED


# --- each reader's own time zone ------------------------------------------------------------


def zones(store: Store) -> dict[str, str]:
    with store.session() as session:
        return dict(session.execute(select(Subscriber.email, Subscriber.timezone)).all())


def test_the_store_sets_a_zone_and_counts_active_readers_by_zone(store, clock):
    add_subscribers(store, clock, 4)
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    later = clock.now() + timedelta(hours=1)
    with store.session() as session:
        assert set_timezone(session, 1, "Asia/Kolkata", later)
        assert set_timezone(session, 2, "Asia/Kolkata", later)
        assert set_timezone(session, 3, "Pacific/Chatham", later)
        assert set_timezone(session, 5, "Asia/Kolkata", later)  # not active: not counted
        assert not set_timezone(session, 99, "UTC", later) and not set_timezone(session, 2**40, "UTC", later)
    with store.session() as session:
        assert active_zone_counts(session) == {"Asia/Kolkata": 2, "": 1, "Pacific/Chatham": 1}
        assert session.get(Subscriber, 1).updated_at == later
        assert set_timezone(session, 1, "", later)
    with store.session() as session:
        assert list(active_zone_counts(session).items()) == [("", 2), ("Asia/Kolkata", 1), ("Pacific/Chatham", 1)]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_zone_travels_with_the_sign_up_and_a_confirm_never_wipes_it(store, clock, tokens):
    with store.session() as session:
        ana = request_subscription(session, "ana@example.org", clock, timezone="asia/kolkata")
        request_subscription(session, "ana@example.org", clock)  # again, from a browser without scripts
    assert zones(store) == {"ana@example.org": "Asia/Kolkata"}
    claim = tokens.read(CONFIRM, tokens.make(CONFIRM, ana.subscriber_id, ana.email), 7)
    with store.session() as session:
        assert confirm_subscription(session, claim, clock) == ConfirmResult.CONFIRMED
        request_subscription(session, "ana@example.org", clock, timezone="America/New_York")  # a stranger
    assert zones(store) == {"ana@example.org": "Asia/Kolkata"}  # an active reader's zone is not the form's
    with store.session() as session:
        unsubscribe_addresses(session, ["ana@example.org"], clock, source="cli")
    clock.advance(86_400)
    with store.session() as session:
        request_subscription(session, "ana@example.org", clock, timezone="Europe/Paris")
    assert zones(store) == {"ana@example.org": "Asia/Kolkata"}  # waits for her confirmation
    fresh = tokens.read(CONFIRM, tokens.make(CONFIRM, ana.subscriber_id, ana.email), 7)
    with store.session() as session:
        assert confirm_subscription(session, fresh, clock, issued_at=fresh.issued_at) == ConfirmResult.REACTIVATED
    assert zones(store) == {"ana@example.org": "Europe/Paris"}
    with store.session() as session:
        unsubscribe_addresses(session, ["ana@example.org"], clock, source="cli")
    clock.advance(86_400)
    with store.session() as session:
        request_subscription(session, "ana@example.org", clock)  # back, without a zone this time
    again = tokens.read(CONFIRM, tokens.make(CONFIRM, ana.subscriber_id, ana.email), 7)
    with store.session() as session:
        assert confirm_subscription(session, again, clock, issued_at=again.issued_at) == ConfirmResult.REACTIVATED
    assert zones(store) == {"ana@example.org": "Europe/Paris"}
    with store.session() as session, pytest.raises(ValidationError) as caught:
        request_subscription(session, "tom@example.org", clock, timezone="Mars/Olympus_Mons")
    assert caught.value.field == "timezone" and zones(store) == {"ana@example.org": "Europe/Paris"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_staff_change_a_zone_by_address_or_id_checking_it_first(store, clock):
    add_subscribers(store, clock, 1)
    with store.session() as session:
        change = change_zone(session, "US/Eastern", clock, field="--timezone", email="Reader0@example.org")
    assert (change.email, change.before, change.after, change.changed) == (
        "reader0@example.org",
        "",
        "US/Eastern",
        True,
    )
    with store.session() as session:
        assert not change_zone(session, "us/eastern", clock, field="zone", subscriber_id=1).changed
        assert change_zone(session, "none", clock, field="zone", subscriber_id=1).after == ""
    with store.session() as session, pytest.raises(ValidationError, match=r"^--timezone: "):
        change_zone(session, "Mars/X", clock, field="--timezone", email="nobody@example.org")  # the zone first
    with store.session() as session, pytest.raises(NotListedError):
        change_zone(session, "UTC", clock, field="--timezone", email="nobody@example.org")
    assert zones(store) == {"reader0@example.org": ""}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_edit_sets_and_clears_a_zone_and_list_and_stats_show_it(runner, tmp_path, db_url, store, clock):
    add_subscribers(store, clock, 2)
    cfg = config_file(tmp_path, db_url)

    def edit(*args: str):
        return runner.invoke(cli, ["--config", cfg, "subscribers", "edit", *args])

    done = edit("Reader0@example.org", "--timezone", "asia/kolkata")
    assert (
        done.exit_code == 0
        and done.output == "reader0@example.org: time zone now Asia/Kolkata (was the newsletter's)\n"
    )
    assert edit("reader0@example.org", "--timezone", "Asia/Kolkata").output.endswith("already Asia/Kolkata\n")
    listing = runner.invoke(cli, ["--config", cfg, "subscribers", "list"]).output.splitlines()
    assert listing[:2] == [
        "1  active  reader0@example.org  Reader 0  Asia/Kolkata",
        "2  active  reader1@example.org  Reader 1",
    ]
    stats = runner.invoke(cli, ["--config", cfg, "subscribers", "stats", "--days", "1"]).output
    assert "active readers by time zone: 1 the newsletter's, 1 Asia/Kolkata" in stats
    for zone, words in [
        ("Mars/Olympus_Mons", "--timezone: 'Mars/Olympus_Mons' is not a time zone we know"),
        ("Europe/London\n", "--timezone: holds a line break or control character"),
        ("Europe/\x1b]0;owned\x07London", "--timezone: holds a line break or control character"),
        ("../../etc/passwd", "--timezone: '../../etc/passwd' is not a time zone name"),
        ("x" * 10_000, "--timezone: 'xxxxxxxxxxxxxxxxxxx…' is too long"),
        ("localtime", "--timezone: 'localtime' is not the time zone of a place"),
    ]:
        bad = edit("reader0@example.org", "--timezone", zone)
        assert bad.exit_code == 2 and bad.stdout == "", zone
        assert bad.stderr.startswith("error: " + words) and bad.stderr.count("\n") == 1 and "\x1b" not in bad.stderr
    assert edit("reader0@example.org").stderr == (
        "error: nothing to change: give --timezone ZONE (or --timezone none to clear it)\n"
    )
    assert edit("zed@example.org", "--timezone", "UTC").exit_code == 2
    assert zones(store)["reader0@example.org"] == "Asia/Kolkata"  # nothing half-written
    cleared = edit("reader0@example.org", "--timezone", "none")
    assert cleared.output == "reader0@example.org: time zone now the newsletter's (was Asia/Kolkata)\n"
    assert edit("reader0@example.org", "--timezone", "").output.endswith("already the newsletter's\n")
    assert "Asia/Kolkata" not in runner.invoke(cli, ["--config", cfg, "subscribers", "list"]).output
