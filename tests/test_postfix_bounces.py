"""Bounces as a real MTA writes them: an edition sent through a private Postfix to readers who do not exist.

Hand-written DSN fixtures only prove that the parser reads what its author imagined.
Here Debian's Postfix (see ``tests/postfix_instance.py``) accepts the whole edition at
RCPT time, delivers the copies of the readers it knows, and for the others generates
the delivery status notifications a mailbox provider's server would: asynchronously,
to the envelope sender, with ``Status: 5.1.1``. Those land in a Maildir, and
``newsletter mailbox process`` must attribute each one to its reader: a dry run reports
them as hard bounces and changes nothing; the real run marks exactly those readers
bounced and files every report away.

Postfix needs root; without it, or without the package, the test is skipped, except in
CI (``$NEWSLETTER_TEST_DATABASE_URL`` set), where ``.ci/run`` installs Postfix and a
missing one is a failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.config import Config, load_config
from newsletter.context import Context
from newsletter.publish import message_id_parts, send_edition
from newsletter.store import Store
from newsletter.store.models import Delivery, DeliveryStatus, Edition, Subscriber, SubscriberStatus
from newsletter.tokens import Tokens
from tests.conftest import PG_ENV, SECRET, morning_articles
from tests.postfix_instance import POSTFIX, Postfix, start_postfix, unavailable_reason

KNOWN = ("ana", "ben", "cleo")  # mailboxes that exist at readers.test
UNKNOWN = tuple(f"former-reader-{i}" for i in range(1, 6))  # accepted at RCPT, bounced at delivery


@pytest.fixture
def postfix() -> Iterator[Postfix]:
    reason = unavailable_reason()
    if reason:
        if not POSTFIX.exists() and os.environ.get(PG_ENV):  # CI: the bounce test must run, not quietly skip
            pytest.fail(f"{reason}; .ci/run installs it")
        pytest.skip(reason)
    with start_postfix(KNOWN) as instance:
        yield instance


def write_config(tmp_path: Path, db_url: str, postfix: Postfix) -> Path:
    """A configuration file that sends through the private Postfix and reads its bounce Maildir."""
    path = tmp_path / "newsletter.toml"
    path.write_text(
        f"""
[newsletter]
publication = "The Example Gazette"
address = "1 Quay Street, Portside"
[store]
url = "{db_url}"
[smtp]
host = "127.0.0.1"
port = {postfix.port}
security = "none"
timeout = 5
[sender]
from_address = "breakfast@news.test"
envelope_from = "{postfix.return_address}"
[web]
base_url = "https://news.test/newsletter"
secret_key = "{SECRET}"
[delivery]
backoff_seconds = 0.01
backoff_max_seconds = 0.05
[bounces]
address = "{postfix.return_address}"
verp = true
maildir = "{postfix.bounce_maildir}"
""",
        encoding="utf-8",
    )
    return path


def add_readers(store: Store, clock: FixedClock, domain: str, local_parts: tuple[str, ...]) -> list[str]:
    now = clock.now()
    emails = [f"{local}@{domain}" for local in local_parts]
    with store.session() as session:
        session.add_all(
            Subscriber(
                email=email,
                name=local.replace("-", " ").title(),
                status=SubscriberStatus.ACTIVE,
                source="test",
                created_at=now,
                updated_at=now,
                confirmed_at=now,
            )
            for local, email in zip(local_parts, emails, strict=True)
        )
    return emails


def sent_message_ids(config: Config, store: Store) -> dict[str, str]:
    """The Message-ID each reader's copy went out with, from the delivery records."""
    with store.session() as session:
        edition = session.scalars(select(Edition)).one()
        prefix, suffix = message_id_parts(config, edition)
        rows = session.execute(
            select(Subscriber.email, Delivery.id, Delivery.status).join(
                Subscriber, Delivery.subscriber_id == Subscriber.id
            )
        ).all()
    assert {status for _, _, status in rows} == {DeliveryStatus.SENT}
    return {email: f"{prefix}{delivery_id}{suffix}" for email, delivery_id, _ in rows}


def statuses(store: Store) -> dict[str, str]:
    """Every reader's status, to see exactly whom the bounce processing changed."""
    with store.session() as session:
        return {s.email: s.status.value for s in session.scalars(select(Subscriber))}


def read(path: Path) -> EmailMessage:
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def dsn_fields(dsn: EmailMessage) -> tuple[Message, list[Message], EmailMessage]:
    """The per-message fields, the per-recipient field groups and the returned message of a DSN."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = {part.get_content_type(): part for part in dsn.iter_parts()}
    status_groups = parts["message/delivery-status"].get_payload()
    returned = parts["message/rfc822"].get_payload()[0]
    return status_groups[0], status_groups[1:], returned


def process_mailbox(runner: CliRunner, config_path: Path, maildir: Path, *options: str) -> list[dict[str, Any]]:
    """``newsletter mailbox process --json`` on the Maildir: one outcome per message."""
    args = ["--config", str(config_path), "mailbox", "process", "--json", *options, str(maildir)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_unknown_readers_bounce_with_real_postfix_dsns(
    postfix, tmp_path, db_url, store, clock, tokens: Tokens, runner: CliRunner
):
    config_path = write_config(tmp_path, db_url, postfix)
    config = load_config(config_path, {})
    morning_articles(store, clock)
    known = add_readers(store, clock, postfix.local_domain, KNOWN)
    unknown = add_readers(store, clock, postfix.local_domain, UNKNOWN)

    report = send_edition(Context(config, store, clock, tokens))

    assert report.outcome == "sent", report.message
    message_ids = sent_message_ids(config, store)
    assert sorted(message_ids) == sorted(known + unknown)  # Postfix took every copy at RCPT time
    for local, email in zip(KNOWN, known, strict=True):
        (copy,) = postfix.wait_for(postfix.reader_maildir(local), 1)
        assert read(copy)["Message-ID"] == message_ids[email]

    dsns = [read(path) for path in postfix.wait_for(postfix.bounce_maildir, len(unknown))]

    bounced: dict[str, EmailMessage] = {}
    for dsn in dsns:
        assert dsn["From"].addresses[0].username == "MAILER-DAEMON"
        assert dsn["Auto-Submitted"] == "auto-replied"
        # The DSN went to the envelope sender of the copy: the return address, VERP-coded or not.
        local, _, domain = dsn["Delivered-To"].partition("@")
        assert domain == postfix.return_domain
        assert local == postfix.return_local or local.startswith(postfix.return_local + "+")
        per_message, recipients, returned = dsn_fields(dsn)
        assert per_message["Reporting-MTA"] == f"dns; mx.{postfix.local_domain}"
        (recipient,) = recipients  # one copy per reader, so one recipient per report
        final = recipient["Final-Recipient"]
        assert final.startswith("rfc822;")
        email = final.split(";", 1)[1].strip()
        assert recipient["Action"] == "failed"
        assert recipient["Status"] == "5.1.1"
        assert recipient["Diagnostic-Code"] == f'X-Postfix; unknown user: "{email.split("@")[0]}"'
        assert returned["Message-ID"] == message_ids[email]  # the original, returned in full
        bounced[email] = dsn
    assert sorted(bounced) == sorted(unknown)
    assert postfix.delivered(postfix.reader_maildir(UNKNOWN[0])) == []

    # What bounce processing makes of them: first look, then act.
    everyone_active = {email: "active" for email in known + unknown}
    outcomes = process_mailbox(runner, config_path, postfix.bounce_maildir, "--dry-run")
    assert statuses(store) == everyone_active  # a dry run changes nothing
    assert len(postfix.delivered(postfix.bounce_maildir)) == len(unknown)
    reported: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        assert outcome["class"] == "hard", outcome
        assert outcome["status"] == "5.1.1", outcome
        assert "unknown user" in outcome["diagnostic"], outcome
        (recipient,) = outcome["recipients"]
        reported[recipient] = outcome
    assert sorted(reported) == sorted(unknown)

    outcomes = process_mailbox(runner, config_path, postfix.bounce_maildir)
    assert sorted(r for o in outcomes for r in o["recipients"]) == sorted(unknown)
    assert statuses(store) == everyone_active | {email: "bounced" for email in unknown}
    assert postfix.delivered(postfix.bounce_maildir) == []  # every report was handled and filed
    assert len(postfix.delivered(postfix.bounce_maildir / ".Processed")) == len(unknown)
    assert process_mailbox(runner, config_path, postfix.bounce_maildir) == []
