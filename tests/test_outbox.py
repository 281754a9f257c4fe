"""The outbox of sign-up mails: queued with the sign-up, sent once, retried while the server is down.

Real SMTP servers throughout: the ``smtp_sink`` fixture for "up", a port where nothing
listens for "down", a socket that accepts and never answers for "hangs", and one that
refuses the recipient for good.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.config import Config
from newsletter.context import Context
from newsletter.demo.sink import free_port, start_controller
from newsletter.outbox import (
    FIRST_RETRY,
    GIVE_UP_AFTER,
    LONGEST_RETRY,
    OutboxReport,
    deliver_outbox,
    no_longer_needed,
    queue_signup_mail,
    retry_at,
)
from newsletter.publish import transport_factory
from newsletter.store import Store
from newsletter.store.models import OutboxKind, OutboxMessage, OutboxStatus, Subscriber, SubscriberStatus
from newsletter.subscribers import remove_subscribers, request_subscription
from newsletter.tokens import Tokens
from newsletter.web import create_app
from tests.conftest import SECRET, RecordingHandler, SMTPServer, add_subscribers, make_config
from tests.test_subscribers import config_file

BASE = "https://news.example.com/newsletter"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# --- helpers --------------------------------------------------------------------------------


def down_config(db_url: str, **web: Any) -> Config:
    """SMTP on a port where nothing listens: every connection is refused at once."""
    return make_config(db_url, None, smtp={"port": free_port(), "timeout": 2}, web=web)


def client_for(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_REFERER"] = "https://localhost/subscribe"
    return client


def subscribe(client: FlaskClient, email: str) -> Any:
    page = client.get("/subscribe")
    token = CSRF.search(page.get_data(as_text=True)).group(1)
    return client.post("/subscribe", data={"csrf_token": token, "email": email})


def rows(store: Store) -> list[OutboxMessage]:
    with store.session() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def status_of(store: Store, email: str) -> SubscriberStatus:
    with store.session() as session:
        return session.scalars(select(Subscriber.status).where(Subscriber.email == email)).one()


def mails_to(sink: SMTPServer, email: str) -> list[EmailMessage]:
    return [r.message for r in sink.handler.by_recipient().get(email, [])]


def confirm_path(message: EmailMessage) -> str:
    text = message.get_body(("plain",)).get_content()
    found = re.search(rf"{re.escape(BASE)}(/confirm/\S+)", text)
    assert found, text
    return found.group(1)


def deliver(config: Config, store: Store, clock: FixedClock, **kwargs: Any) -> OutboxReport:
    ctx = Context(config, store, clock, Tokens(config.require_secret_key(), clock))
    return deliver_outbox(ctx, transport_factory(config), **kwargs)


def queue_pending(store: Store, clock: FixedClock, count: int, prefix: str = "new") -> list[int]:
    """``count`` pending sign-ups, each with its confirmation queued (as the form leaves them)."""
    ids = []
    with store.session() as session:
        for i in range(count):
            signup = request_subscription(session, f"{prefix}{i}@example.org", clock)
            ids.append(queue_signup_mail(session, signup.subscriber_id, signup.email, OutboxKind.CONFIRM, clock.now()))
    return ids


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A server that accepts connections and never says a word: SMTP's greeting never comes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


class RefusingHandler(RecordingHandler):
    """Refuses every recipient for good, as a server does for a mailbox that does not exist."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        return "550 5.1.1 <" + address + ">: no such user"


@pytest.fixture
def refusing_smtp() -> Iterator[SMTPServer]:
    handler = RefusingHandler()
    controller = start_controller(handler, "127.0.0.1", free_port())
    try:
        yield SMTPServer(controller.hostname, controller.port, handler)
    finally:
        controller.stop()


# --- the policy -------------------------------------------------------------------------------


def test_retries_wait_a_minute_doubling_to_an_hour_and_stop_after_two_days() -> None:
    queued = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    now = queued + timedelta(minutes=5)
    waits = [retry_at(n, queued, now) - now for n in range(1, 10)]
    assert waits[:4] == [FIRST_RETRY, 2 * FIRST_RETRY, 4 * FIRST_RETRY, 8 * FIRST_RETRY]
    assert max(waits) == LONGEST_RETRY == waits[-1] == timedelta(hours=1)
    assert retry_at(10_000, queued, now) - now == LONGEST_RETRY  # no overflow, however many
    assert retry_at(3, queued, queued + GIVE_UP_AFTER) is None
    assert timedelta(hours=48) == GIVE_UP_AFTER


def test_a_mail_that_no_longer_applies_is_not_sent() -> None:
    assert no_longer_needed(OutboxKind.CONFIRM, SubscriberStatus.PENDING) == ""
    assert no_longer_needed(OutboxKind.CONFIRM, SubscriberStatus.UNSUBSCRIBED) == ""  # asked to come back
    assert "active already" in no_longer_needed(OutboxKind.CONFIRM, SubscriberStatus.ACTIVE)
    assert no_longer_needed(OutboxKind.ALREADY, SubscriberStatus.ACTIVE) == ""
    assert "unsubscribed" in no_longer_needed(OutboxKind.ALREADY, SubscriberStatus.UNSUBSCRIBED)


# --- an outage, end to end ----------------------------------------------------------------------


def test_a_sign_up_while_smtp_is_down_is_queued_then_delivered_once_with_a_working_link(
    db_url, store, clock, smtp_sink, caplog
):
    down = client_for(create_app(down_config(db_url), store=store, clock=clock))
    with caplog.at_level(logging.INFO, logger="newsletter"):
        response = subscribe(down, "ana@example.org")
    assert response.status_code == 303 and response.headers["Location"].endswith("/subscribe/check-your-inbox")
    assert status_of(store, "ana@example.org") == SubscriberStatus.PENDING
    (row,) = rows(store)
    assert (row.kind, row.status, row.recipient, row.attempts) == (
        OutboxKind.CONFIRM,
        OutboxStatus.PENDING,
        "ana@example.org",
        1,
    )
    assert row.next_attempt_at == clock.now() + FIRST_RETRY and "cannot connect" in row.last_error
    assert row.claimed_by == "" and row.claimed_until is None
    # Nothing secret is kept or logged: no link in the row, none in the log.
    stored = " ".join(str(v) for v in vars(row).values())
    assert "/confirm/" not in stored and "/confirm/" not in caplog.text and SECRET not in caplog.text
    assert "sign-up email to subscriber" in caplog.text

    up = make_config(db_url, smtp_sink)
    early = deliver(up, store, clock)  # not due for another minute
    assert (early.sent, early.waiting) == (0, 1) and smtp_sink.handler.received == []
    clock.advance(61)
    report = deliver(up, store, clock)
    assert (report.sent, report.deferred, report.given_up, report.waiting) == (1, 0, 0, 0)
    (mail,) = mails_to(smtp_sink, "ana@example.org")
    assert mail["Subject"] == "Please confirm your subscription to Breakfast in red"
    (row,) = rows(store)
    assert row.status == OutboxStatus.SENT and row.attempts == 2 and row.finished_at == clock.now()

    again = deliver(up, store, clock)  # nothing is sent twice
    assert again == OutboxReport() and len(smtp_sink.handler.received) == 1

    reader = client_for(create_app(up, store=store, clock=clock))
    confirmed = reader.get(confirm_path(mail))
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.get_data(as_text=True)
    assert status_of(store, "ana@example.org") == SubscriberStatus.ACTIVE


def test_the_answer_is_the_same_whether_smtp_is_up_or_down(db_url, store, clock, smtp_sink):
    answers = set()
    add_subscribers(store, clock, 1, prefix="active")
    for config, email in (
        (make_config(db_url, smtp_sink), "up@example.org"),
        (down_config(db_url), "down@example.org"),
        (down_config(db_url), "active0@example.org"),
    ):
        client = client_for(create_app(config, store=store, clock=clock))
        response = subscribe(client, email)
        followed = client.get(response.headers["Location"])
        answers.add((response.status_code, response.headers["Location"], followed.get_data(as_text=True)))
    assert len(answers) == 1
    assert [(r.recipient, r.kind, r.status) for r in rows(store)] == [
        ("up@example.org", OutboxKind.CONFIRM, OutboxStatus.SENT),
        ("down@example.org", OutboxKind.CONFIRM, OutboxStatus.PENDING),
        ("active0@example.org", OutboxKind.ALREADY, OutboxStatus.PENDING),
    ]


def test_a_hanging_server_delays_the_answer_only_by_its_timeout_and_loses_nothing(db_url, store, clock, hanging_port):
    config = make_config(db_url, None, smtp={"port": hanging_port, "timeout": 1})
    client = client_for(create_app(config, store=store, clock=clock))
    response = subscribe(client, "ana@example.org")
    assert response.status_code == 303
    (row,) = rows(store)
    assert row.status == OutboxStatus.PENDING and row.attempts == 1 and "timed out" in row.last_error


def test_the_hourly_limit_per_address_counts_mails_still_queued(db_url, store, clock, smtp_sink):
    down = client_for(create_app(down_config(db_url, subscribe_per_hour=100), store=store, clock=clock))
    for _ in range(5):
        assert subscribe(down, "victim@example.org").status_code == 303
    (row,) = rows(store)  # asking again while it waits brings it forward rather than doubling it
    assert row.status == OutboxStatus.PENDING and row.attempts == 3  # three tries, then held back
    up_config = make_config(db_url, smtp_sink, web={"subscribe_per_hour": 100})
    up = client_for(create_app(up_config, store=store, clock=clock))
    assert subscribe(up, "victim@example.org").status_code == 303  # the limit is used up: nothing sent
    assert smtp_sink.handler.received == []
    clock.advance(3601)
    assert deliver(up_config, store, clock).sent == 1
    assert len(mails_to(smtp_sink, "victim@example.org")) == 1


# --- retries, giving up, skipping ----------------------------------------------------------------


def test_failures_back_off_then_give_up_after_48_hours_and_say_so(db_url, store, clock, caplog):
    config = down_config(db_url)
    (mail_id,) = queue_pending(store, clock, 1)
    queued_at = clock.now()
    passes = 0
    while True:
        report = deliver(config, store, clock)
        passes += 1
        (row,) = rows(store)
        if report.given_up:
            break
        assert report.deferred == 1 and report.waiting == 1 and "cannot connect" in report.last_error
        assert row.next_attempt_at - clock.now() <= LONGEST_RETRY
        clock.set(row.next_attempt_at)
        assert passes < 100
    assert row.id == mail_id and row.status == OutboxStatus.FAILED
    assert row.last_error.startswith("gave up after 48 hours: ") and "cannot connect" in row.last_error
    assert clock.now() - queued_at >= GIVE_UP_AFTER and row.attempts == passes  # the last one was tried too
    assert report.waiting == 0 and "given up" in report.summary()
    assert deliver(config, store, clock) == OutboxReport()  # recorded, and left alone


def test_a_server_back_just_before_the_window_closes_still_gets_the_mail(db_url, store, clock, smtp_sink):
    queue_pending(store, clock, 1)
    assert deliver(down_config(db_url), store, clock).deferred == 1
    clock.advance(GIVE_UP_AFTER.total_seconds() + 3600)  # due long ago; the server is back
    assert deliver(make_config(db_url, smtp_sink), store, clock).sent == 1


def test_a_request_nobody_delivered_for_a_links_lifetime_is_given_up_untried(db_url, store, clock, smtp_sink):
    queue_pending(store, clock, 1)
    clock.advance(7 * 86_400)  # [web] confirm_days
    report = deliver(make_config(db_url, smtp_sink), store, clock)
    assert (report.sent, report.given_up) == (0, 1) and smtp_sink.handler.received == []
    (row,) = rows(store)
    assert row.status == OutboxStatus.FAILED and row.attempts == 0
    assert row.last_error == "not sent within 7 days of the request: no attempt was made"


def test_a_recipient_refused_for_good_is_given_up_at_once(db_url, store, clock, refusing_smtp):
    queue_pending(store, clock, 1)
    report = deliver(make_config(db_url, refusing_smtp), store, clock)
    assert (report.sent, report.given_up, report.waiting) == (0, 1, 0)
    (row,) = rows(store)
    assert row.status == OutboxStatus.FAILED and row.attempts == 1 and "550 5.1.1" in row.last_error


def test_one_unreachable_server_stops_the_pass_instead_of_timing_out_on_every_mail(db_url, store, clock):
    queue_pending(store, clock, 5)
    report = deliver(down_config(db_url), store, clock)
    assert (report.deferred, report.waiting) == (1, 5)
    assert sorted(r.attempts for r in rows(store)) == [0, 0, 0, 0, 1]
    assert all(r.claimed_by == "" for r in rows(store))  # the rest were never claimed


def test_a_mail_that_no_longer_applies_is_skipped_and_a_removed_reader_takes_theirs_along(
    db_url, store, clock, smtp_sink
):
    first, _ = queue_pending(store, clock, 2)
    with store.session() as session:
        session.scalars(
            select(Subscriber).where(Subscriber.email == "new0@example.org")
        ).one().status = SubscriberStatus.ACTIVE
        remove_subscribers(session, ["new1@example.org"], clock, source="test")
    report = deliver(make_config(db_url, smtp_sink), store, clock)
    assert (report.sent, report.skipped, report.waiting) == (0, 1, 0)
    (row,) = rows(store)
    assert row.id == first and row.status == OutboxStatus.SKIPPED and "active already" in row.last_error
    assert smtp_sink.handler.received == []


def test_a_lease_left_by_a_process_that_died_expires(db_url, store, clock, smtp_sink):
    from newsletter.store.outbox import claim_due

    queue_pending(store, clock, 1)
    with store.session() as session:
        assert claim_due(session, "dead-host:1", clock.now(), clock.now() + timedelta(minutes=10)) is not None
    config = make_config(db_url, smtp_sink)
    assert deliver(config, store, clock).sent == 0  # someone else holds it
    clock.advance(601)
    assert deliver(config, store, clock).sent == 1


# --- concurrency ----------------------------------------------------------------------------------


def test_two_passes_at_once_send_each_mail_once(db_url, store, clock, smtp_sink):
    queue_pending(store, clock, 30)
    config = make_config(db_url, smtp_sink)
    barrier = threading.Barrier(2)
    reports: list[OutboxReport] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            reports.append(deliver(config, store, clock))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    got = smtp_sink.handler.by_recipient()
    assert sorted(got) == sorted(f"new{i}@example.org" for i in range(30))
    assert all(len(mails) == 1 for mails in got.values())
    assert sum(r.sent for r in reports) == 30
    assert {r.status for r in rows(store)} == {OutboxStatus.SENT}


# --- the commands ------------------------------------------------------------------------------


def test_resend_confirmation_queues_then_sends_a_fresh_link(runner, tmp_path: Path, db_url, store, clock, smtp_sink):
    add_subscribers(store, clock, 1, SubscriberStatus.PENDING, prefix="waiting")
    cfg = config_file(tmp_path, db_url, smtp_sink.port)
    result = runner.invoke(cli, ["--config", cfg, "subscribers", "resend-confirmation", "Waiting0@Example.org"])
    assert result.exit_code == 0, result.output
    assert result.output == "sent a new confirmation link to waiting0@example.org\n"
    (mail,) = mails_to(smtp_sink, "waiting0@example.org")
    assert "/confirm/" in mail.get_body(("plain",)).get_content()
    assert [r.status for r in rows(store)] == [OutboxStatus.SENT]


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("nobody@example.org", "error: not on the list: nobody@example.org; nothing was changed\n"),
        ("reader0@example.org", "error: reader0@example.org is already active: there is nothing to confirm\n"),
        (
            "gone0@example.org",
            "error: gone0@example.org is unsubscribed: to come back they sign up again through the form themselves\n",
        ),
        ("not an address", None),
        ("ana@example.org\x1b[2J", None),
    ],
)
def test_resend_confirmation_refuses_anyone_not_pending(runner, tmp_path, db_url, store, clock, email, message):
    add_subscribers(store, clock, 1)
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    result = runner.invoke(
        cli, ["--config", config_file(tmp_path, db_url), "subscribers", "resend-confirmation", email]
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: ") and "\x1b" not in result.output
    if message is not None:
        assert result.output == message
    assert rows(store) == []


def test_the_outbox_command_shows_what_waits_and_sends_it(runner, tmp_path, db_url, store, clock, smtp_sink):
    add_subscribers(store, clock, 1, SubscriberStatus.PENDING, prefix="waiting")
    down_cfg = config_file(tmp_path, db_url, free_port())
    queued = runner.invoke(cli, ["--config", down_cfg, "subscribers", "resend-confirmation", "waiting0@example.org"])
    assert queued.exit_code == 0, queued.output
    assert queued.stdout.startswith("queued a new confirmation link to waiting0@example.org, not sent yet: ")
    assert "cannot connect" in queued.stdout and "newsletter subscribers outbox --send" in queued.stdout

    shown = runner.invoke(cli, ["--config", down_cfg, "subscribers", "outbox"])
    assert shown.exit_code == 0, shown.stdout
    line, counts = shown.stdout.splitlines()
    assert line.split()[:5] == ["1", "confirm", "waiting0@example.org", "1", "attempt"]
    assert "cannot connect" in line and counts == "1 pending, 0 sent, 0 skipped, 0 failed"

    # Not due yet (a minute's wait): --send has nothing to do.
    idle = runner.invoke(cli, ["--config", down_cfg, "subscribers", "outbox", "--send"])
    assert idle.exit_code == 0 and idle.stdout == "sign-up mails: 0 sent, 1 waiting\n"
    with store.session() as session:
        session.execute(OutboxMessage.__table__.update().values(next_attempt_at=datetime(2000, 1, 1, tzinfo=UTC)))
    failing = runner.invoke(cli, ["--config", down_cfg, "subscribers", "outbox", "--send"])
    assert failing.exit_code == 1 and "1 to retry" in failing.stdout and "last error: " in failing.stdout
    with store.session() as session:
        session.execute(OutboxMessage.__table__.update().values(next_attempt_at=datetime(2000, 1, 1, tzinfo=UTC)))
    up_cfg = config_file(tmp_path, db_url, smtp_sink.port)
    sent = runner.invoke(cli, ["--config", up_cfg, "subscribers", "outbox", "--send"])
    assert sent.exit_code == 0 and sent.stdout == "sign-up mails: 1 sent, 0 waiting\n"
    assert len(mails_to(smtp_sink, "waiting0@example.org")) == 1
    empty = runner.invoke(cli, ["--config", up_cfg, "subscribers", "outbox"])
    assert empty.stdout == "nothing waiting\n0 pending, 1 sent, 0 skipped, 0 failed\n"


def test_cron_and_the_daemon_deliver_queued_sign_up_mails(db_url, store, clock, tokens, smtp_sink, caplog) -> None:
    """`send --scheduled` (and the daemon's one-minute job, which calls the same) empties the queue."""
    from newsletter.due import send_scheduled
    from newsletter.scheduler import OUTBOX_JOB_ID, OUTBOX_MINUTES

    queue_pending(store, clock, 2)
    config = make_config(db_url, smtp_sink)
    ctx = Context(config, store, clock, tokens)
    with caplog.at_level(logging.INFO, logger="newsletter.scheduler"):
        send_scheduled(ctx)
    assert len(smtp_sink.handler.received) == 2
    assert "sign-up mails: 2 sent" in caplog.text
    assert {r.status for r in rows(store)} == {OutboxStatus.SENT}
    send_scheduled(ctx)  # nothing left: nothing sent twice
    assert len(smtp_sink.handler.received) == 2
    assert OUTBOX_JOB_ID and OUTBOX_MINUTES == 1
