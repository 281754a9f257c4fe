"""Hearing back: bounces and complaints for sent editions, read from a real Maildir and acted on.

Every report here answers a message the pipeline really sent (through the aiosmtpd sink),
so the VERP address, the returned headers and our Message-ID are the real ones.
"""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.cli import cli
from newsletter.context import Context
from newsletter.errors import UsageError
from newsletter.inbound import MailboxReport, Outcome, process
from newsletter.inboxes import open_path
from newsletter.publish import send_edition
from newsletter.store import Store
from newsletter.store.models import Delivery, Edition, Subscriber, SubscriberEvent, SubscriberStatus
from tests.conftest import SECRET, FixedClock, add_article, add_subscribers, make_config, morning_articles
from tests.faults import Faults, FaultyHandler, dsn

BOUNCES = "breakfast"  # the local part of the sender, which is also the bounce address here


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: this module tests the reading and routing of returned mail; the store
    functions it relies on are tested on both databases in test_bounce_records.py and
    test_postfix_bounces.py (CI's time is short)."""
    url = f"sqlite:///{tmp_path / 'newsletter.db'}"
    store = Store(url)
    store.upgrade()
    store.dispose()
    return url


def arf(to: str, original: bytes, rcpt: str | None) -> bytes:
    """An RFC 5965 feedback report: a reader pressed "Report spam"."""
    head = original.split(b"\r\n\r\n", 1)[0]
    rcpt_line = f"Original-Rcpt-To: {rcpt}\r\n" if rcpt else ""
    return (
        (
            "From: feedbackloop@mail.example\r\n"
            f"To: {to}\r\n"
            "Subject: FW: Breakfast in red\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n'
            "\r\n--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
            "\r\n--F\r\nContent-Type: message/feedback-report\r\n\r\n"
            "Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
            f"{rcpt_line}"
            "\r\n--F\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        ).encode()
        + head
        + b"\r\n\r\n--F--\r\n"
    )


ROOT = Path(__file__).resolve().parent.parent


def config_text(tmp_path: Path, db_url: str, extra: str = "") -> str:
    path = tmp_path / "newsletter.toml"
    path.write_text(
        f'[newsletter]\npublication = "The Example Gazette"\n[store]\nurl = "{db_url}"\n'
        f'[sender]\nfrom_address = "breakfast@news.example.com"\n'
        f'[web]\nbase_url = "https://news.example.com/newsletter"\nsecret_key = "{SECRET}"\n{extra}',
        encoding="utf-8",
    )
    return str(path)


@pytest.fixture
def box(tmp_path: Path) -> mailbox.Maildir:
    return mailbox.Maildir(tmp_path / "bounces", create=True)


def statuses(store) -> dict[str, str]:
    with store.session() as session:
        return {s.email: s.status.value for s in session.scalars(select(Subscriber))}


def run(ctx: Context, path: Path, dry_run: bool = False) -> tuple[MailboxReport, list[Outcome]]:
    outcomes: list[Outcome] = []
    report = process(ctx, [lambda: open_path(path)], dry_run=dry_run, on_outcome=outcomes.append)
    return report, outcomes


@pytest.fixture
def sent(store, clock, ctx, smtp_sink):
    """Yesterday's edition, sent to four readers; returns what each received."""
    morning_articles(store, clock)
    add_subscribers(store, clock, 4)
    assert send_edition(ctx).outcome == "sent"
    return {email: copies[0] for email, copies in smtp_sink.handler.by_recipient().items()}


def test_hard_soft_and_sender_bounces_by_verp(store, ctx, sent, box) -> None:
    r = sent
    box.add(dsn(r["reader1@example.org"].mail_from, "reader1@example.org", r["reader1@example.org"].data))
    box.add(
        dsn(
            r["reader2@example.org"].mail_from,
            "reader2@example.org",
            r["reader2@example.org"].data,
            status="4.2.2",
            diagnostic="smtp; 452 4.2.2 Mailbox full",
            action="delayed",
        )
    )
    box.add(
        dsn(
            r["reader3@example.org"].mail_from,
            "reader3@example.org",
            r["reader3@example.org"].data,
            status="5.7.1",
            diagnostic="smtp; 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        )
    )
    path = Path(box._path)

    report, outcomes = run(ctx, path, dry_run=True)
    assert sorted((o.kind, o.recipients, o.status) for o in outcomes) == [
        ("hard", ("reader1@example.org",), "5.1.1"),
        ("sender", ("reader3@example.org",), "5.7.1"),
        ("soft", ("reader2@example.org",), "4.2.2"),
    ]
    assert all(o.action.startswith("would be: ") for o in outcomes)
    assert set(statuses(store).values()) == {"active"} and len(box) == 3  # a dry run changes nothing

    report, outcomes = run(ctx, path)
    actions = {o.kind: o.action for o in outcomes}
    assert actions["hard"] == "reader1@example.org marked bounced"
    assert actions["soft"] == "soft bounce 1 of 3 for reader2@example.org"
    assert actions["sender"] == "recorded for reader3@example.org, who stays as they were"
    assert report.summary() == "3 messages: 1 hard, 1 soft, 1 sender"
    (warning,) = report.warnings()
    assert "sender's reasons" in warning and "spamhaus" in warning and "DMARC" in warning
    assert statuses(store)["reader1@example.org"] == "bounced"
    assert statuses(store)["reader3@example.org"] == "active"
    assert len(box) == 0 and len(mailbox.Maildir(path / ".Processed", create=False)) == 3
    with store.session() as session:
        event = session.scalars(select(SubscriberEvent).where(SubscriberEvent.event == "hard_bounce")).one()
        edition_id = session.scalars(select(Edition.id)).one()
        assert (event.edition_id, event.status) == (edition_id, "5.1.1") and "User unknown" in event.detail


def test_tomorrows_edition_skips_the_bounced_reader(store, clock, ctx, sent, box, smtp_sink) -> None:
    r = sent["reader0@example.org"]
    box.add(dsn(r.mail_from, "reader0@example.org", r.data))
    run(ctx, Path(box._path))
    smtp_sink.handler.received.clear()
    clock.set(datetime(2026, 11, 25, 6, 30, tzinfo=UTC))
    add_article(store, clock, "tomorrow", datetime(2026, 11, 25, 5, 0, tzinfo=UTC))
    assert send_edition(ctx).outcome == "sent"
    assert sorted(smtp_sink.handler.by_recipient()) == [f"reader{i}@example.org" for i in (1, 2, 3)]


def test_a_relay_that_rewrites_the_envelope_is_matched_by_our_signed_header(store, ctx, sent, box) -> None:
    original = sent["reader2@example.org"].data
    # The report went to the plain bounce address; the returned header's signed code says whose it was.
    box.add(dsn("breakfast@news.example.com", "reader2@example.org", original, returned="message"))
    stripped = b"\r\n".join(line for line in original.split(b"\r\n") if not line.startswith(b"X-Newsletter-Delivery"))
    # Without it, only our Message-ID is left, which readers can guess for each other: not enough.
    kept = box.add(dsn("breakfast@news.example.com", "reader3@example.org", stripped))
    _, outcomes = run(ctx, Path(box._path))
    assert [o.action for o in outcomes if not o.keep] == ["reader2@example.org marked bounced"]
    assert statuses(store)["reader2@example.org"] == "bounced" and statuses(store)["reader3@example.org"] == "active"
    assert list(box.keys()) == [kept]


def test_a_report_without_a_signed_code_changes_nobody_while_verp_is_on(store, ctx, sent, box):
    """Anyone can mail the bounce address: a DSN or an ARF naming readers is not evidence alone."""
    plain = b"From: someone@example.org\r\nMessage-ID: <other@elsewhere.example>\r\n\r\nhello\r\n"
    box.add(dsn("breakfast@news.example.com", "reader3@example.org", plain))
    box.add(arf("breakfast@news.example.com", b"To: reader2@example.org\r\n\r\n", rcpt="reader2@example.org"))
    report, outcomes = run(ctx, Path(box._path))
    assert all(o.keep and o.action.startswith("left in the mailbox: it carries no signed code") for o in outcomes)
    assert set(statuses(store).values()) == {"active"} and len(box) == 2 and report.kept == 2


def test_with_verp_off_a_report_is_matched_by_the_addresses_it_names(db_url, store, clock, tokens, smtp_sink, box):
    config = make_config(db_url, smtp_sink, bounces={"verp": False})
    ctx = Context(config, store, clock, tokens)
    morning_articles(store, clock)
    add_subscribers(store, clock, 4)
    assert send_edition(ctx).outcome == "sent"
    plain = b"From: someone@example.org\r\nMessage-ID: <other@elsewhere.example>\r\n\r\nhello\r\n"
    box.add(dsn("breakfast@news.example.com", "READER3@example.org", plain))
    box.add(dsn("breakfast@news.example.com", "never-mailed@example.net", plain))
    _, outcomes = run(ctx, Path(box._path))
    actions = sorted(o.action for o in outcomes)
    assert actions == [
        "left in the mailbox: never-mailed@example.net: not on the list",
        "reader3@example.org marked bounced",
    ]
    with store.session() as session:
        event = session.scalars(select(SubscriberEvent).where(SubscriberEvent.event == "hard_bounce")).one()
        assert event.edition_id == session.scalars(select(Edition.id)).one()  # the last edition they were sent


def test_a_forged_verp_code_bounces_nobody(store, ctx, sent, box) -> None:
    real = sent["reader1@example.org"].mail_from
    local, domain = real.split("@")
    code = local.split("+", 1)[1]
    edition, subscriber, signature = code.split("-")
    victim = f"{edition}-{int(subscriber, 16) + 1:x}-{signature}"  # another reader, the same signature
    plain = b"From: x@example.org\r\n\r\nhello\r\n"
    box.add(dsn(f"breakfast+{victim}@{domain}", "reader2@example.org", plain))
    box.add(dsn(f"breakfast+{code[:-3]}@{domain}", "reader3@example.org", plain))  # cut short on the way
    _, outcomes = run(ctx, Path(box._path))
    assert all(o.keep and "return-path code does not verify" in o.action for o in outcomes) and len(outcomes) == 2
    assert set(statuses(store).values()) == {"active"}


def test_a_bounce_for_a_removed_reader_and_a_multi_recipient_report(store, ctx, sent, box, runner, tmp_path) -> None:
    r = sent["reader0@example.org"]
    with store.session() as session:
        reader = session.scalars(select(Subscriber).where(Subscriber.email == "reader0@example.org")).one()
        session.query(Delivery).filter(Delivery.subscriber_id == reader.id).update({"subscriber_id": None})
        session.delete(reader)
    box.add(dsn(r.mail_from, "reader0@example.org", r.data))
    two = dsn(sent["reader1@example.org"].mail_from, "reader1@example.org", b"From: a@b.example\r\n\r\nx\r\n").replace(
        b"Original-Recipient: rfc822;reader1@example.org\r\n",
        b"Original-Recipient: rfc822;reader1@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"Final-Recipient: rfc822; reader2@example.org\r\n",
    )
    box.add(two)
    _, outcomes = run(ctx, Path(box._path))
    actions = sorted(o.action for o in outcomes)
    # A signed report is about the one reader its code names, however many addresses it lists.
    assert actions[0].startswith("left in the mailbox: reader #") and actions[0].endswith("removed from the list since")
    assert actions[1] == "reader1@example.org marked bounced"
    assert statuses(store)["reader2@example.org"] == "active"


def test_soft_bounces_on_three_editions_within_the_window_bounce_a_reader(config, store, tokens, box) -> None:
    clock = FixedClock(datetime(2026, 11, 2, 5, 0, tzinfo=UTC))
    ctx = Context(config, store, clock, tokens)
    add_subscribers(store, clock, 1)
    full = "smtp; 452 4.2.2 <{r}>: Mailbox full"
    with store.session() as session:
        reader = session.scalars(select(Subscriber)).one().id
    from newsletter.returnpath import return_paths

    paths = return_paths(config)

    def soft_bounce_for_edition_of(day: int, hour: int = 9) -> str:
        clock.set(datetime(2026, 11, day, 5, 0, tzinfo=UTC))
        add_article(store, clock, f"day-{day}", datetime(2026, 11, day, 4, 0, tzinfo=UTC))
        assert send_edition(ctx, day=clock.now().date()).outcome == "sent"
        with store.session() as session:
            edition = session.scalars(select(Edition).order_by(Edition.id.desc())).first()
        clock.set(datetime(2026, 11, day, hour, 0, tzinfo=UTC))
        to = paths.mail_from(paths.code(edition.id, reader))
        box.add(dsn(to, "reader0@example.org", b"X: y\r\n\r\n", status="4.2.2", diagnostic=full, action="failed"))
        _, outcomes = run(ctx, Path(box._path))
        return outcomes[-1].action

    assert soft_bounce_for_edition_of(2) == "soft bounce 1 of 3 for reader0@example.org"
    assert soft_bounce_for_edition_of(3) == "soft bounce 2 of 3 for reader0@example.org"
    # More than 14 days on, the first two have gone stale: counting starts again.
    assert soft_bounce_for_edition_of(20) == "soft bounce 1 of 3 for reader0@example.org"
    assert soft_bounce_for_edition_of(21) == "soft bounce 2 of 3 for reader0@example.org"
    assert statuses(store) == {"reader0@example.org": "active"}
    assert soft_bounce_for_edition_of(22) == "reader0@example.org marked bounced"
    assert statuses(store) == {"reader0@example.org": "bounced"}


def test_a_complaint_unsubscribes_at_once_with_the_edition_recorded(store, ctx, sent, box) -> None:
    box.add(arf("fbl@news.example.com", sent["reader2@example.org"].data, rcpt=None))  # redacted: our header says
    box.add(arf("fbl@news.example.com", sent["reader3@example.org"].data, rcpt="reader3@example.org"))
    _report, outcomes = run(ctx, Path(box._path))
    assert [o.kind for o in outcomes] == ["complaint", "complaint"]
    assert sorted(o.action for o in outcomes) == [
        "reader2@example.org unsubscribed (complaint)",
        "reader3@example.org unsubscribed (complaint)",
    ]
    assert statuses(store)["reader2@example.org"] == "unsubscribed"
    with store.session() as session:
        events = session.scalars(select(SubscriberEvent).where(SubscriberEvent.event == "complaint")).all()
        assert len(events) == 2 and all(e.edition_id is not None for e in events)


def test_rerunning_after_a_crash_before_the_move_changes_nothing(store, ctx, sent, box) -> None:
    r = sent["reader2@example.org"]
    raw = dsn(r.mail_from, "reader2@example.org", r.data, status="4.2.2", diagnostic="smtp; 452 4.2.2 full")
    box.add(raw)
    run(ctx, Path(box._path))
    box.add(raw)  # as if the move had not happened: the same message again
    _, outcomes = run(ctx, Path(box._path))
    assert outcomes[0].action == "already recorded for reader2@example.org"
    with store.session() as session:
        assert len(session.scalars(select(SubscriberEvent).where(SubscriberEvent.event == "soft_bounce")).all()) == 1


def test_mbox_and_single_files_are_read_only(store, ctx, sent, tmp_path) -> None:
    r = sent["reader1@example.org"]
    raw = dsn(r.mail_from, "reader1@example.org", r.data)
    eml = tmp_path / "one.eml"
    eml.write_bytes(raw)
    mbox_path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(mbox_path)
    box.add(raw)
    box.add(raw)
    box.close()
    for path, count in ((eml, 1), (mbox_path, 2)):
        _report, outcomes = run(ctx, path, dry_run=True)
        assert [o.kind for o in outcomes] == ["hard"] * count
        with pytest.raises(UsageError) as info:
            run(ctx, path)
        assert "only be read with --dry-run" in str(info.value)
    assert statuses(store)["reader1@example.org"] == "active"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe\x00garbage" * 100, "left in the mailbox"),
        (b"Content-Type: multipart/report; boundary=x\r\nFrom: MAILER-DAEMON@x\r\n\r\n--x\r\n" * 2000, "left"),
        (
            b"From: MAILER-DAEMON@x\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n\r\n\x1b$B%a!<%k\x1b(B\r\n",
            "left",
        ),
    ],
)
def test_what_cannot_be_read_stays_in_the_mailbox_unread(ctx, box, content, expected) -> None:
    key = box.add(content)
    _, (outcome,) = run(ctx, Path(box._path))
    assert outcome.keep and outcome.action.startswith(expected)
    assert box.get_message(key).get_subdir() == "new"


def test_paths_that_are_not_mailboxes_are_refused_in_one_line(ctx, tmp_path) -> None:
    (tmp_path / "folder").mkdir()
    for path in (tmp_path / "folder", Path("/dev/zero")):
        with pytest.raises(UsageError):
            run(ctx, path, dry_run=True)


_MEASURE = """
import resource, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from newsletter.clock import FixedClock
from newsletter.config import load_config
from newsletter.context import Context
from newsletter.inboxes import open_path
from newsletter.inbound import process
from newsletter.store import Store
from newsletter.tokens import Tokens
config = load_config(sys.argv[1], environ={})
clock = FixedClock(datetime(2026, 11, 24, tzinfo=UTC))
ctx = Context(config, Store(config.store.url), clock, Tokens(config.web.secret_key, clock))
report = process(ctx, [lambda: open_path(Path(sys.argv[2]))], dry_run=True)
print(report.counts["autoreply"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_ten_thousand_messages_in_bounded_memory(tmp_path) -> None:
    """The peak memory of reading 10,000 messages is that of reading 1,000: one at a time."""
    auto = (
        b"From: ana@example.org\r\nTo: breakfast@news.example.com\r\nSubject: Out of office\r\n"
        b"Auto-Submitted: auto-replied\r\n\r\nI am away until Monday.\r\n" + b"x" * 2000 + b"\r\n"
    )
    db_url = f"sqlite:///{tmp_path / 'newsletter.db'}"  # a dry run reads no table: one database is enough
    Store(db_url).upgrade()
    cfg = config_text(tmp_path, db_url)
    peaks = {}
    for count in (1_000, 10_000):
        box = mailbox.Maildir(tmp_path / f"box{count}", create=True)
        for _ in range(count):
            box.add(auto)
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, cfg, box._path], capture_output=True, text=True, check=True, cwd=ROOT
        )
        handled, peak_kb = map(int, out.stdout.split())
        assert handled == count
        peaks[count] = peak_kb
    assert peaks[10_000] - peaks[1_000] < 8_000, peaks  # KB: nothing kept per message


def test_cli_dry_run_json_then_for_real(db_url, store, clock, tokens, sent, box, runner, tmp_path, config) -> None:
    r = sent["reader1@example.org"]
    box.add(dsn(r.mail_from, "reader1@example.org", r.data))
    cfg = config_text(tmp_path, db_url, f'[bounces]\nmaildir = "{box._path}"\n')
    dry = runner.invoke(cli, ["--config", cfg, "mailbox", "process", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    (line,) = dry.output.splitlines()
    row = json.loads(line)
    assert list(row) == ["message", "class", "recipients", "status", "diagnostic", "action"]
    assert (row["class"], row["recipients"], row["status"]) == ("hard", ["reader1@example.org"], "5.1.1")
    assert "User unknown" in row["diagnostic"] and row["action"].startswith("would be: ")
    real = runner.invoke(cli, ["--config", cfg, "unsubscribes", "process"])  # the old name still works
    assert real.exit_code == 0, real.output
    assert real.output.splitlines()[-1] == "1 message: 1 hard"
    assert "reader1@example.org marked bounced" in real.output
    listed = runner.invoke(cli, ["--config", cfg, "subscribers", "list", "--status", "bounced"])
    assert "reader1@example.org" in listed.output and "5.1.1" in listed.output


def test_the_parsed_dsn_helper_is_a_valid_report(sent) -> None:
    r = sent["reader1@example.org"]
    msg = BytesParser(policy=policy.default).parsebytes(dsn(r.mail_from, "reader1@example.org", r.data))
    assert msg.get_content_type() == "multipart/report"
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]


def test_a_mail_clients_unsubscribe_button_is_an_unsubscribe_not_a_complaint(store, clock, ctx, box):
    raw = (Path(__file__).parent / "data/bounces/sisimai/arf-26.eml").read_bytes()
    with store.session() as session:
        from newsletter.store.readers import insert_subscribers

        now = clock.now()
        reader = Subscriber(email="example@icloud.com", name="", status=SubscriberStatus.ACTIVE, source="test",
                            created_at=now, updated_at=now, confirmed_at=now)  # fmt: skip
        insert_subscribers(session, [reader], "subscribed", "test", now)
    box.add(raw)
    _, (outcome,) = run(ctx, Path(box._path))
    assert (outcome.kind, outcome.action) == ("unsubscribe", "example@icloud.com unsubscribed (opt-out)")
    assert statuses(store) == {"example@icloud.com": "unsubscribed"}
    with store.session() as session:
        assert not session.scalars(select(SubscriberEvent).where(SubscriberEvent.event == "complaint")).all()


def test_every_corpus_message_is_handled_without_error_and_nothing_is_lost(ctx, box):
    """The real-world reports name nobody on this list: each is read, reported and filed, or kept."""
    corpus = sorted((Path(__file__).parent / "data/bounces").rglob("*.eml"))
    for path in corpus:
        box.add(path.read_bytes())
    report, outcomes = run(ctx, Path(box._path))
    assert report.total == len(corpus) == len(outcomes)
    assert len(box) == report.kept and report.kept == sum(o.keep for o in outcomes)
    assert len(mailbox.Maildir(Path(box._path) / ".Processed", create=False)) == len(corpus) - report.kept
    assert all(
        o.kind in ("hard", "soft", "sender", "complaint", "autoreply", "unknown", "unsubscribe") for o in outcomes
    )


# --- unattended: the daemon's job and cron's send --scheduled ----------------------------------


def test_send_scheduled_reads_the_mailbox_before_the_morning_send(db_url, store, clock, tokens, smtp_sink, tmp_path):
    from newsletter.due import send_scheduled

    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    config = make_config(db_url, smtp_sink, bounces={"maildir": str(tmp_path / "bounces")})
    ctx = Context(config, store, clock, tokens)
    morning_articles(store, clock)
    add_subscribers(store, clock, 3)
    assert send_edition(ctx).outcome == "sent"
    dead = smtp_sink.handler.by_recipient()["reader1@example.org"][0]
    box.add(dsn(dead.mail_from, "reader1@example.org", dead.data))
    smtp_sink.handler.received.clear()
    add_article(store, clock, "wednesday", datetime(2026, 11, 25, 5, 0, tzinfo=UTC))
    clock.set(datetime(2026, 11, 25, 6, 5, tzinfo=UTC))
    result = send_scheduled(ctx)
    assert [r.outcome for r in result.reports] == ["sent"]
    assert sorted(smtp_sink.handler.by_recipient()) == ["reader0@example.org", "reader2@example.org"]
    assert len(box) == 0


def test_a_mailbox_that_cannot_be_read_does_not_stop_the_send(db_url, store, clock, tokens, smtp_sink, caplog):
    from newsletter.demo.sink import free_port
    from newsletter.due import send_scheduled

    imap = {"host": "127.0.0.1", "port": free_port(), "security": "none", "username": "u", "timeout": 2}
    config = make_config(db_url, smtp_sink, imap=imap)
    morning_articles(store, clock)
    add_subscribers(store, clock, 2)
    clock.set(datetime(2026, 11, 24, 6, 5, tzinfo=UTC))
    result = send_scheduled(Context(config, store, clock, tokens))
    assert [r.outcome for r in result.reports] == ["sent"]
    assert "the bounce mailbox was not read: cannot reach IMAP server 127.0.0.1" in caplog.text


def test_the_daemon_reads_the_mailbox_every_few_minutes(db_url, store, clock, tokens, smtp_sink, tmp_path):
    from apscheduler.schedulers.blocking import BlockingScheduler

    from newsletter.scheduler import MAILBOX_JOB_ID, EditionScheduler, mailbox_job

    config = make_config(db_url, smtp_sink, bounces={"maildir": str(tmp_path / "b"), "process_minutes": 7})
    daemon = EditionScheduler(Context(config, store, clock, tokens))
    scheduler = BlockingScheduler(timezone=UTC)
    scheduler.add_jobstore("memory", alias="memory")
    daemon._add_jobs(scheduler)
    job = scheduler.get_job(MAILBOX_JOB_ID)
    assert job is not None and job.trigger.interval == timedelta(minutes=7)
    add_subscribers(store, clock, 1)
    box = mailbox.Maildir(tmp_path / "b", create=True)
    from newsletter.returnpath import return_paths

    with store.session() as session:
        reader = session.scalars(select(Subscriber)).one().id
    paths = return_paths(config)
    box.add(dsn(paths.mail_from(paths.code(1, reader)), "reader0@example.org", b"X: y\r\n\r\n"))
    mailbox_job(daemon=daemon)
    assert statuses(store) == {"reader0@example.org": "bounced"}
    quiet = EditionScheduler(Context(make_config(db_url, smtp_sink), store, clock, tokens))  # no mailbox configured
    scheduler = BlockingScheduler(timezone=UTC)
    scheduler.add_jobstore("memory", alias="memory")
    quiet._add_jobs(scheduler)
    assert scheduler.get_job(MAILBOX_JOB_ID) is None


def test_end_to_end_a_relay_that_accepts_then_bounces(db_url, store, clock, tokens, tmp_path, runner) -> None:
    """The relay takes every message, then reports two dead mailboxes by mail; the next morning skips them."""
    from aiosmtpd.controller import Controller

    from newsletter.demo.sink import free_port

    bounces = tmp_path / "bounces"
    dead = frozenset({"reader1@example.org", "reader3@example.org"})
    handler = FaultyHandler(Faults(bounce_later=dead, bounce_maildir=str(bounces)))
    server = Controller(handler, hostname="127.0.0.1", port=free_port())  # type: ignore[arg-type]
    server.start()
    try:
        config = make_config(db_url, None, smtp={"port": server.port}, bounces={"maildir": str(bounces)})
        ctx = Context(config, store, clock, tokens)
        morning_articles(store, clock)
        add_subscribers(store, clock, 5)
        report = send_edition(ctx)
        assert report.outcome == "sent" and report.stats is not None and report.stats.sent == 5  # all accepted
        assert len(mailbox.Maildir(bounces, create=False)) == 2
        _, outcomes = run(ctx, bounces)
        assert sorted(o.action for o in outcomes) == [f"{r} marked bounced" for r in sorted(dead)]
        handler.accepted.clear()
        add_article(store, clock, "wednesday", datetime(2026, 11, 25, 5, 0, tzinfo=UTC))
        clock.set(datetime(2026, 11, 25, 6, 30, tzinfo=UTC))
        assert send_edition(ctx).outcome == "sent"
        assert sorted(handler.accepted) == ["reader0@example.org", "reader2@example.org", "reader4@example.org"]
    finally:
        server.stop()


def test_a_fifo_or_odd_file_in_the_maildir_is_left_and_the_others_are_handled(ctx, sent, box):
    import os

    r = sent["reader1@example.org"]
    os.mkfifo(Path(box._path) / "new" / "1700000000.fifo.host")  # opening it would block the run for ever
    box.add(dsn(r.mail_from, "reader1@example.org", r.data))
    _, outcomes = run(ctx, Path(box._path))
    by_kind = {o.kind: o for o in outcomes}
    assert by_kind["unknown"].keep and by_kind["unknown"].action == (
        "left in the mailbox: it cannot be read (not a regular file)"
    )
    assert by_kind["hard"].action == "reader1@example.org marked bounced"


def test_a_configured_maildir_that_is_not_one_is_a_config_error(db_url, store, clock, tokens, tmp_path) -> None:
    from newsletter.errors import ConfigError
    from newsletter.inbound import configured_inboxes

    (tmp_path / "plain").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for where in ("plain", "file.txt", "missing"):
        config = make_config(db_url, None, bounces={"maildir": str(tmp_path / where)})
        with pytest.raises(ConfigError) as info:
            process(Context(config, store, clock, tokens), configured_inboxes(config))
        assert info.value.key == "bounces.maildir"
