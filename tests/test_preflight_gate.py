"""Preflight on the way out: the scheduler holds an edition with errors, tells the staff once,
checks it again when the editors change it, and a person sends it with --ignore-preflight.

Against a real SMTP sink on a pinned clock. Preflight runs for real, with no network: the
stories live on example domains (never fetched) and the error is one that needs none (a
malformed story link). SQLite only, but for the store's hold functions, which run on both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

import newsletter.cli.base
import newsletter.preflight.gate
from newsletter import editorial
from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.config import Config
from newsletter.context import Context
from newsletter.demo.sink import free_port
from newsletter.due import Action, EditionState, decide, send_scheduled
from newsletter.preflight import Tools
from newsletter.preflight.fetch import Response
from newsletter.preparation import prepare_edition
from newsletter.publish import _start
from newsletter.scheduler import EditionScheduler, schedule_summary
from newsletter.store import Store
from newsletter.store.holds import (
    HeldFinding,
    Hold,
    claim_hold_notice,
    hold_edition,
    hold_of,
    lift_hold,
    release_hold_notice,
)
from newsletter.store.models import Edition, EditionStatus
from newsletter.tokens import Tokens
from newsletter.transports import SMTPTransport
from tests.conftest import SECRET, SMTPServer, add_article, add_subscribers, make_config
from tests.test_cli import write_config

DAY = date(2026, 11, 24)
CUTOFF = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
STAFF = ["desk@news.example.com", "night.editor@news.example.com"]
BAD_URL = "https://news.example.com:99999/story"  # passes the importer; no client could open it
OVERRIDE = "newsletter send --date 2026-11-24 --ignore-preflight"
FOUND = f"links: malformed link: malformed address (Port out of range 0-65535): {BAD_URL}"


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite store: the gate adds queries only through the hold functions below."""
    found = Store(f"sqlite:///{tmp_path / 'newsletter.db'}")
    found.upgrade()
    yield found
    found.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 24, 6, 0, 30, tzinfo=UTC))  # just after the send time


def offline() -> Tools:
    """Preflight's tools with no network and no programs: any request fails the test."""

    def fetcher(method: str, url: str, *, timeout: float, read_limit: int = 0) -> Response:
        raise AssertionError(f"preflight fetched {url}: tests never use the network")

    return Tools(fetcher=fetcher, which=lambda name: None)


def configure(db: Store, sink: SMTPServer, tmp_path: Path, **preflight: Any) -> Config:
    settings = {"notify": STAFF, "screenshots": False, "screenshot_dir": str(tmp_path / "shots")} | preflight
    return make_config(str(db.engine.url), sink, preflight=settings)


def morning(db: Store, clock: FixedClock, *, bad: bool) -> list[str]:
    """Three readers and two stories before the cutoff; ``bad`` adds one whose link is malformed."""
    readers = add_subscribers(db, clock, 3)
    for i in range(2):
        add_article(db, clock, f"good-{i}", CUTOFF - timedelta(hours=1 + i))
    if bad:
        add_article(db, clock, "bad", CUTOFF - timedelta(minutes=30), url=BAD_URL, title="Harbour works")
    return readers


def status_of(db: Store) -> EditionStatus:
    with db.session() as session:
        return session.scalars(select(Edition.status).where(Edition.date == DAY)).one()


def mails(sink: SMTPServer) -> dict[str, list[EmailMessage]]:
    return {rcpt: [r.message for r in items] for rcpt, items in sink.handler.by_recipient().items()}


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[date]:
    """Every preflight the gate runs, by edition date."""
    seen: list[date] = []
    real = newsletter.preflight.gate.check_before_send

    def counting(ctx: Context, day: date, tools: Tools) -> Any:
        seen.append(day)
        return real(ctx, day, tools)

    monkeypatch.setattr(newsletter.preflight.gate, "check_before_send", counting)
    return seen


# --- the store: one hold per version, one notice per hold (both databases) -----------------------


def test_a_hold_is_per_version_and_its_notice_is_claimed_once(store: Store, clock: FixedClock) -> None:
    with store.session() as session:
        edition = Edition(date=DAY, window_start=CUTOFF, window_end=CUTOFF, subject="s", status=EditionStatus.READY,
                          nonce="n", created_at=clock.now())  # fmt: skip
        session.add(edition)
        session.flush()
        edition_id = edition.id
    found = [HeldFinding("error", "links", "malformed link: ü"), HeldFinding("warning", "css", "Outlook …")]
    now = clock.now()
    with store.session() as session:
        assert hold_edition(session, edition_id, "a" * 64, found, now)  # a new hold: tell the staff
        assert not hold_edition(session, edition_id, "a" * 64, found, now + timedelta(minutes=5))  # the same one
    with store.session() as session:
        assert claim_hold_notice(session, edition_id, "a" * 64, now)
        assert not claim_hold_notice(session, edition_id, "a" * 64, now)  # a second teller finds it taken
        release_hold_notice(session, edition_id, "a" * 64, "connect: refused " * 100)  # the server was down
    with store.reading() as session:
        hold = hold_of(session, edition_id)
    assert hold is not None and hold.day == DAY and hold.held_at == now and hold.notified_at is None
    assert hold.findings == tuple(found) and hold.errors == (found[0],) and len(hold.notice_error) == 500
    with store.session() as session:
        assert claim_hold_notice(session, edition_id, "a" * 64, now)  # tried again, once
        assert hold_edition(session, edition_id, "b" * 64, found[:1], now)  # the editors changed it: a new hold
    with store.reading() as session:
        hold = hold_of(session, edition_id)
    assert hold is not None and hold.fingerprint == "b" * 64 and hold.notified_at is None and hold.notice_error == ""
    with store.session() as session:
        assert lift_hold(session, edition_id) and not lift_hold(session, edition_id)
        assert hold_of(session, edition_id) is None


# --- the decision (pure) ------------------------------------------------------------------------


def test_a_held_edition_waits_in_its_grace_period_and_is_missed_after_it(tmp_path: Path) -> None:
    config = make_config("sqlite://", None)
    hold = Hold(1, DAY, "f" * 64, (HeldFinding("error", "size", "too big"),), CUTOFF, None, "")
    state = {DAY: EditionState(EditionStatus.READY, held=hold)}
    decision = decide(CUTOFF + timedelta(minutes=30), config, state.get)
    assert decision.action == Action.HELD
    assert "preflight found 1 error" in decision.reason and f"`{OVERRIDE}`" in decision.reason
    late = decide(CUTOFF + timedelta(hours=3), config, state.get)
    assert late.action == Action.MISSED and f"`{OVERRIDE}` sends it anyway" in late.reason
    not_blocking = make_config("sqlite://", None, preflight={"block_on_error": False})
    assert decide(CUTOFF + timedelta(minutes=30), not_blocking, state.get).action == Action.SEND


# --- the scheduler ------------------------------------------------------------------------------


def test_an_edition_with_an_error_is_held_and_the_staff_told_once_until_someone_sends_it(
    db: Store,
    clock: FixedClock,
    smtp_sink: SMTPServer,
    tmp_path: Path,
    checks: list[date],
    caplog: pytest.LogCaptureFixture,
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = configure(db, smtp_sink, tmp_path)
    ctx = Context(config, db, clock, Tokens(SECRET, clock))
    readers = morning(db, clock, bad=True)
    with caplog.at_level(logging.INFO, logger="newsletter"):
        first = send_scheduled(ctx, tools=offline())
    assert first.exit_code == 1 and first.reports == [] and len(first.held) == 1
    assert status_of(db) == EditionStatus.READY and checks == [DAY]  # made, saved, not sent
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"the edition of 2026-11-24: preflight error: {FOUND}",
        "the edition of 2026-11-24 is held, not sent: fix the errors (the scheduler checks a changed edition "
        f"again) or run `{OVERRIDE}` to send it as it is",
    ], errors
    got = mails(smtp_sink)
    assert sorted(got) == sorted(STAFF) and all(len(m) == 1 for m in got.values())  # no reader has anything
    notice = got[STAFF[0]][0]
    assert notice["Subject"] == "Held: the edition of 2026-11-24 has 1 error (preflight)"
    assert notice["To"] == ", ".join(STAFF) and notice["Auto-Submitted"] == "auto-generated"
    body = notice.get_content().replace("\r\n", "\n")
    assert f"  - {FOUND}\n" in body
    assert f"    {OVERRIDE}\n" in body
    prose = " ".join(body.split())
    assert "sends it if preflight finds no errors, until the grace period ends at 2026-11-24 08:00 GMT" in prose
    assert "And 8 warnings (headers, links, css); warnings never hold an edition." in prose  # no DKIM, and so on

    # every few minutes after, from cron or the daemon: no second check, no second mail, no send
    for _ in range(3):
        clock.advance(5 * 60)
        later = send_scheduled(ctx, tools=offline())
        assert later.exit_code == 0 and later.decision is not None and later.decision.action == Action.HELD
    daemon = EditionScheduler(ctx, tools=offline())
    daemon.on_edition_due()
    daemon.on_retry_tick()
    assert checks == [DAY] and len(smtp_sink.handler.received) == 2 and status_of(db) == EditionStatus.READY
    assert any("is held: preflight found 1 error" in line for line in schedule_summary(ctx))

    # a person: plain send checks again and refuses; --ignore-preflight sends it
    monkeypatch.setattr(newsletter.cli.base, "SystemClock", lambda: clock)
    path = write_config(tmp_path / "newsletter.toml", str(db.engine.url), smtp_sink, preflight={"notify": STAFF})
    refused = runner.invoke(cli, ["--config", str(path), "send", "--date", "2026-11-24"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"preflight error: {FOUND}" in refused.stderr
    assert refused.stderr.rstrip().splitlines()[-1].endswith(f"`{OVERRIDE}` sends it as it is")
    assert len(smtp_sink.handler.received) == 2 and status_of(db) == EditionStatus.READY
    sent = runner.invoke(cli, ["--config", str(path), "send", "--date", "2026-11-24", "--ignore-preflight"])
    assert sent.exit_code == 0, sent.output
    assert status_of(db) == EditionStatus.SENT
    assert sorted(mails(smtp_sink)) == sorted([*STAFF, *readers])
    assert send_scheduled(ctx, tools=offline()).reports == []  # done: nothing more


def test_a_held_edition_the_editors_fix_is_checked_again_and_sent(
    db: Store, clock: FixedClock, smtp_sink: SMTPServer, tmp_path: Path, checks: list[date]
) -> None:
    config = configure(db, smtp_sink, tmp_path)
    ctx = Context(config, db, clock, Tokens(SECRET, clock))
    readers = morning(db, clock, bad=True)
    assert send_scheduled(ctx, tools=offline()).held
    editorial.hide(db, clock, BAD_URL)  # the desk takes the story out
    clock.advance(5 * 60)
    result = send_scheduled(ctx, tools=offline())
    assert [r.outcome for r in result.reports] == ["sent"] and result.exit_code == 0
    assert checks == [DAY, DAY] and status_of(db) == EditionStatus.SENT
    assert sorted(mails(smtp_sink)) == sorted([*STAFF, *readers])  # the staff once, each reader once
    with db.reading() as session:
        edition_id = session.scalars(select(Edition.id).where(Edition.date == DAY)).one()
        assert hold_of(session, edition_id) is None


def test_a_clean_edition_goes_out_as_before_and_warnings_never_hold_it(
    db: Store, clock: FixedClock, smtp_sink: SMTPServer, tmp_path: Path, checks: list[date]
) -> None:
    config = configure(db, smtp_sink, tmp_path)  # no DKIM, example domains: warnings only
    ctx = Context(config, db, clock, Tokens(SECRET, clock))
    readers = morning(db, clock, bad=False)
    result = send_scheduled(ctx, tools=offline())
    assert [r.outcome for r in result.reports] == ["sent"] and result.exit_code == 0 and result.held == []
    assert checks == [DAY] and sorted(mails(smtp_sink)) == sorted(readers)  # nobody on the staff is mailed


def test_without_block_on_error_an_edition_with_errors_goes_out_and_they_are_logged(
    db: Store, clock: FixedClock, smtp_sink: SMTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = configure(db, smtp_sink, tmp_path, block_on_error=False)
    ctx = Context(config, db, clock, Tokens(SECRET, clock))
    readers = morning(db, clock, bad=True)
    with caplog.at_level(logging.WARNING, logger="newsletter"):
        result = send_scheduled(ctx, tools=offline())
    assert [r.outcome for r in result.reports] == ["sent"] and result.exit_code == 0
    assert sorted(mails(smtp_sink)) == sorted(readers)
    assert (
        f"the edition of 2026-11-24 goes out with a preflight error ([preflight] block_on_error = false): {FOUND}"
    ) in caplog.text


def test_a_mail_server_down_for_the_notice_is_logged_and_the_notice_given_on_a_later_pass(
    db: Store,
    clock: FixedClock,
    smtp_sink: SMTPServer,
    tmp_path: Path,
    checks: list[date],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = configure(db, smtp_sink, tmp_path)
    ctx = Context(config, db, clock, Tokens(SECRET, clock))
    morning(db, clock, bad=True)
    dead = make_config(str(db.engine.url), None, smtp={"port": free_port(), "timeout": 2}).smtp
    with caplog.at_level(logging.ERROR, logger="newsletter"):
        result = send_scheduled(ctx, tools=offline(), notices=lambda: SMTPTransport(dead))
    assert result.held and smtp_sink.handler.received == []
    assert "the staff could not be told that the edition of 2026-11-24 is held" in caplog.text
    assert "the next pass tries again" in caplog.text
    clock.advance(5 * 60)
    for _ in range(2):  # the next pass tells them, once; preflight is not run again
        assert send_scheduled(ctx, tools=offline()).exit_code == 0
    assert sorted(mails(smtp_sink)) == sorted(STAFF) and len(smtp_sink.handler.received) == 2 and checks == [DAY]


def test_a_part_sent_edition_resumes_without_preflight_and_a_test_copy_never_runs_it(
    db: Store,
    clock: FixedClock,
    smtp_sink: SMTPServer,
    tmp_path: Path,
    checks: list[date],
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = configure(db, smtp_sink, tmp_path)
    readers = morning(db, clock, bad=True)
    ctx = Context(config, db, clock, Tokens(SECRET, clock))
    _start(ctx, prepare_edition(ctx, DAY).id)  # started, then the process died
    result = send_scheduled(ctx, tools=offline())
    assert [r.outcome for r in result.reports] == ["sent"] and checks == []
    assert sorted(mails(smtp_sink)) == sorted(readers)

    monkeypatch.setattr(newsletter.cli.base, "SystemClock", lambda: clock)
    path = write_config(tmp_path / "newsletter.toml", str(db.engine.url), smtp_sink)
    copy = runner.invoke(cli, ["--config", str(path), "send", "--to", "me@example.org", "--date", "2026-11-25"])
    assert copy.exit_code == 0, copy.output
    assert checks == [] and "me@example.org" in mails(smtp_sink)
    both = runner.invoke(cli, ["--config", str(path), "send", "--scheduled", "--ignore-preflight"])
    assert both.exit_code == 2 and "--ignore-preflight" in both.stderr and "Traceback" not in both.output
