"""The subscriber list: events behind every change, removal, paging, export, stats, and their commands."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.errors import UsageError
from newsletter.store import Store
from newsletter.store.models import Delivery, StaffUser, Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.subscriber_csv import export_rows
from newsletter.subscribers import (
    ConfirmResult,
    InvalidAddressError,
    LeaveResult,
    add_subscriber,
    confirm_subscription,
    daily_counts,
    leave,
    leave_by_address,
    normalise_email,
    page_subscribers,
    remove_subscriber,
    request_subscription,
    set_status,
)
from newsletter.tokens import CONFIRM, UNSUBSCRIBE, Tokens
from tests.conftest import SECRET, add_subscribers

LONDON = ZoneInfo("Europe/London")


def events(store: Store) -> list[tuple[int | None, str, str]]:
    with store.session() as session:
        rows = session.scalars(select(SubscriberEvent).order_by(SubscriberEvent.id))
        return [(e.subscriber_id, e.event, e.source) for e in rows]


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


def test_removal_deletes_the_row_and_its_deliveries_but_keeps_an_anonymous_count(config, store, clock, tokens):
    from newsletter.publish import send_edition
    from tests.conftest import morning_articles

    morning_articles(store, clock)
    add_subscribers(store, clock, 2)
    with store.session() as session:
        set_status(session.scalars(select(Subscriber).order_by(Subscriber.id)).first(), SubscriberStatus.BOUNCED, clock)
    send_edition(config, store, clock, tokens)
    with store.session() as session:
        assert remove_subscriber(session, "Reader1@example.org", clock, source="cli")
        assert not remove_subscriber(session, "reader1@example.org", clock, source="cli")
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert session.scalars(select(Subscriber.email)).all() == ["reader0@example.org"]
    assert events(store)[-1] == (None, "removed", "cli")
    assert all(sid is None or sid == 1 for sid, _, _ in events(store))


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
    assert rows[0] == ["email", "name", "status", "created_at", "confirmed_at", "unsubscribed_at"]
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
    removed = runner.invoke(cli, ["--config", cfg, "subscribers", "remove", "ana@example.org", "zed@example.org"])
    assert removed.exit_code == 0
    assert "removed: ana@example.org" in removed.output and "not on the list: zed@example.org" in removed.output
    bad = runner.invoke(cli, ["--config", cfg, "subscribers", "remove", "not-an-address"])
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and "Traceback" not in bad.output


def test_cli_export_and_stats(runner, tmp_path, db_url, store, clock):
    cfg = config_file(tmp_path, db_url)
    runner.invoke(cli, ["--config", cfg, "subscribers", "add", "ana@example.org", "--name", "Ana García"])
    runner.invoke(cli, ["--config", cfg, "subscribers", "add", "tom@example.org", "--pending"])
    out = runner.invoke(cli, ["--config", cfg, "subscribers", "export"])
    assert out.exit_code == 0, out.output
    rows = list(csv.reader(io.StringIO(out.output)))
    assert rows[0] == ["email", "name", "status", "created_at", "confirmed_at", "unsubscribed_at"]
    assert rows[1][:3] == ["ana@example.org", "Ana García", "active"] and rows[2][2] == "pending"
    target = tmp_path / "active.csv"
    written = runner.invoke(cli, ["--config", cfg, "subscribers", "export", "--status", "active", "--out", str(target)])
    assert "wrote 1 subscribers" in written.output
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
