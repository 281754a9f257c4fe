"""Unsubscribe requests by email, from a real Maildir, including the mailto of a really sent edition."""

from __future__ import annotations

import mailbox
import re
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import select

from newsletter.cli import cli
from newsletter.context import Context
from newsletter.inbound import MailboxReport, Outcome, process
from newsletter.inboxes import open_path
from newsletter.publish import send_edition
from newsletter.store import Store
from newsletter.store.models import Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.tokens import UNSUBSCRIBE
from tests.conftest import add_subscribers, morning_articles
from tests.test_subscribers import config_file


def process_maildir(ctx: Context, path: Path) -> tuple[MailboxReport, list[Outcome]]:
    outcomes: list[Outcome] = []
    report = process(ctx, [lambda: open_path(path)], on_outcome=outcomes.append)
    return report, outcomes


def mail(sender: str, subject: str, body: str = "", **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "breakfast@news.example.com"
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body or "sent from my phone")
    return msg.as_bytes()


def statuses(store: Store) -> dict[str, str]:
    with store.session() as session:
        return {s.email: s.status.value for s in session.scalars(select(Subscriber))}


def test_requests_by_token_and_by_sender_and_nothing_twice(store, clock, tokens, ctx, tmp_path: Path):
    add_subscribers(store, clock, 6)
    add_subscribers(store, clock, 1, SubscriberStatus.UNSUBSCRIBED, prefix="gone")
    with store.session() as session:
        ids = {s.email: s.id for s in session.scalars(select(Subscriber))}
    token = tokens.make(UNSUBSCRIBE, ids["reader0@example.org"], "reader0@example.org")
    box_path = tmp_path / "unsubscribe"
    box = mailbox.Maildir(box_path, create=True)
    sent = [
        (mail("Someone Else <other@example.net>", f"unsubscribe {token}"), "unsubscribe"),  # forwarded: the token
        (mail("Reader One <READER1@example.org>", "Re: Unsubscribe"), "unsubscribe"),
        (mail("reader2@example.org", "Re: Breakfast in red: Tuesday", "Loved the bridge story!"), "kept"),
        (mail("reader3@example.org", "Out of office: unsubscribe", Auto_Submitted="auto-replied"), "autoreply"),
        (mail("stranger@example.net", "unsubscribe"), "unsubscribe"),
        (mail("reader4@example.org", f"unsubscribe {token[:-4]}XXXX"), "unsubscribe"),  # mangled: the sender asked
        (mail("gone0@example.org", "unsubscribe"), "unsubscribe"),
        (mail("reader5@example.org", "unsubscribe", Precedence="bulk"), "kept"),  # a robot's, not a person's
        (b"this is not really an email at all", "kept"),
        (b'From: "\r\nSubject: unsubscribe\r\n\r\nheaders the email package cannot parse\r\n', "kept"),
        (mail("reader5@example.org", "Re: why I will not unsubscribe"), "kept"),  # mentions it, does not ask
        (mail("reader5@example.org", "Automatic reply: unsubscribe", X_Autoreply="yes"), "autoreply"),
        (mail("MAILER-DAEMON@mx.example.net", "unsubscribe"), "kept"),
    ]
    expected = {box.add(raw): what for raw, what in sent}
    box.close()

    report, outcomes = process_maildir(ctx, box_path)

    got = {o.message: "kept" if o.keep else o.kind for o in outcomes}
    assert got == expected
    actions = sorted(o.action.split(":")[0] for o in outcomes if o.kind == "unsubscribe")
    assert actions == ["already", "not on the list", "unsubscribed", "unsubscribed", "unsubscribed"]
    assert report.summary() == (
        "13 messages: 5 unsubscribe, 2 autoreply, 6 unknown; 6 left in the mailbox for a person to read"
    )
    now = statuses(store)
    assert [e for e, s in sorted(now.items()) if s == "unsubscribed"] == [
        "gone0@example.org",
        "reader0@example.org",
        "reader1@example.org",
        "reader4@example.org",
    ]
    with store.session() as session:
        assert {e.source for e in session.scalars(select(SubscriberEvent))} == {"mailto"}
    # What was handled was filed away, marked seen; what nobody could act on waits, unread.
    left = mailbox.Maildir(box_path, create=False)
    assert sorted(left.keys()) == sorted(k for k, what in expected.items() if what == "kept")
    assert all(left.get_message(k).get_subdir() == "new" for k in left.keys())  # noqa: SIM118 - a Maildir iterates messages
    processed = mailbox.Maildir(box_path / ".Processed", create=False)
    assert len(processed) == 7 and all("S" in message.get_flags() for message in processed)
    again, outcomes = process_maildir(ctx, box_path)
    assert again.summary() == "6 messages: 6 unknown; 6 left in the mailbox for a person to read"
    assert statuses(store) == now


def test_the_mailto_of_a_sent_edition_unsubscribes_its_reader(store, clock, ctx, smtp_sink, tmp_path):
    morning_articles(store, clock)
    add_subscribers(store, clock, 2)
    assert send_edition(ctx).outcome == "sent"
    (received,) = smtp_sink.handler.by_recipient()["reader1@example.org"]
    mailto = re.findall(r"<(mailto:[^>]+)>", received.message["List-Unsubscribe"])[0]
    parts = urlsplit(mailto)
    subject = unquote(parts.query.removeprefix("subject="))
    box = mailbox.Maildir(tmp_path / "in", create=True)
    # What a mail client sends for that link, from whichever address the reader uses now.
    box.add(mail("Reader One <reader1.new@example.net>", subject))
    box.close()
    report, outcomes = process_maildir(ctx, tmp_path / "in")
    assert report.counts["unsubscribe"] == 1 and outcomes[0].action.startswith("unsubscribed")
    assert statuses(store) == {"reader0@example.org": "active", "reader1@example.org": "unsubscribed"}


def test_cli_process(runner, tmp_path, db_url, store, clock):
    add_subscribers(store, clock, 1)
    box = mailbox.Maildir(tmp_path / "box", create=True)
    box.add(mail("reader0@example.org", "unsubscribe"))
    box.close()
    cfg = config_file(tmp_path, db_url)
    result = runner.invoke(cli, ["--config", cfg, "unsubscribes", "process", str(tmp_path / "box")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "1 message: 1 unsubscribe"
    assert statuses(store) == {"reader0@example.org": "unsubscribed"}
    again = runner.invoke(cli, ["--config", cfg, "unsubscribes", "process", str(tmp_path / "box")])
    assert again.output.splitlines()[-1] == "no new messages"
    (tmp_path / "plain").mkdir()
    wrong = runner.invoke(cli, ["--config", cfg, "unsubscribes", "process", str(tmp_path / "plain")])
    assert wrong.exit_code == 2 and wrong.output.startswith("error: ") and "is not a Maildir" in wrong.output
