"""Mail that comes back: each message sorted, attributed and acted on, one transaction each.

A message arriving at the bounce or unsubscribe mailbox is one of:

* a bounce (DSN or an MTA's own format): hard, soft, or the sender's own problem;
* a complaint (an ARF report when a reader pressed "Report spam");
* an unsubscribe request someone mailed;
* an automatic reply (out of office and the like), which needs nothing;
* something nobody here can act on: a person writing, or a report too broken to read.

``newsletter.bounces`` classifies (pure); this module finds who a report is about and
records it through ``newsletter.store.bounces``. Who it is about comes from the strongest
evidence first: the signed VERP code of the address the bounce came back to (or of the
``X-Newsletter-Delivery`` header in the returned original), then our own Message-ID in the
returned headers, and only then the recipient addresses the report names. A code with a
wrong signature means someone tried to make us bounce a reader, so such a message changes
nobody.

Each handled message is filed away after its transaction commits; one that could not be
acted on stays in the mailbox, unread, and is counted. A crash between the commit and the
move only repeats a message whose records are keyed by a hash of it, so it changes
nothing the second time. ``dry_run`` makes the same changes in a transaction that is
rolled back, so it reports exactly what a real run would do.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from newsletter.bounces import Finding, Kind, classify
from newsletter.config import Config
from newsletter.context import Context
from newsletter.editions import counted
from newsletter.errors import ConfigError, TokenError, UsageError
from newsletter.inboxes import ImapInbox, Inbox, TooLarge, Unreadable, open_path
from newsletter.returnpath import Attribution, ReturnPaths, return_paths
from newsletter.store.bounces import Recorded, delivery_ref, latest_edition_sent_to, record_feedback
from newsletter.store.readers import subscriber_by_id, subscribers_by_email
from newsletter.subscribers import leave_by_address
from newsletter.unsubscribes import NOT_A_REQUEST, handle_request

log = logging.getLogger(__name__)

CLASSES = ("hard", "soft", "sender", "complaint", "unsubscribe", "autoreply", "unknown")
MAX_RECIPIENTS = 100  # a report naming more is not about one edition's reader; act on the first hundred
_FEEDBACK = (Kind.HARD, Kind.SOFT, Kind.SENDER, Kind.COMPLAINT)
# Our Message-IDs: <YYYYMMDD.DELIVERY-ID.NONCE@domain> (publish.message_id_parts).
_OUR_MESSAGE_ID = re.compile(r"<\d{8}\.(\d{1,18})\.([0-9a-f]{16})@([^>\s]+)>")
_SENDER_ADVICE = "check SPF, DKIM and DMARC for the sending domain, and whether its IP or domain is on a blocklist"

Transaction = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class Outcome:
    """What one message was and what came of it; ``keep`` leaves it in the mailbox."""

    message: str
    kind: str
    action: str
    recipients: tuple[str, ...] = ()
    status: str = ""
    diagnostic: str = ""
    keep: bool = False

    def as_json(self) -> dict[str, Any]:
        """The documented JSON form; other tools read these field names, so they never change."""
        return {
            "message": self.message,
            "class": self.kind,
            "recipients": list(self.recipients),
            "status": self.status,
            "diagnostic": self.diagnostic,
            "action": self.action,
        }


@dataclass
class MailboxReport:
    """Counts only: a mailbox of ten thousand messages must not be held in memory."""

    counts: Counter[str] = field(default_factory=Counter)
    kept: int = 0
    sender_problems: Counter[str] = field(default_factory=Counter)  # "5.7.1 diagnostic" -> messages

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.kind] += 1
        self.kept += outcome.keep
        if outcome.kind == Kind.SENDER:
            self.sender_problems[f"{outcome.status} {outcome.diagnostic}".strip()[:160]] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no new messages"
        parts = [f"{self.counts[kind]} {kind}" for kind in CLASSES if self.counts[kind]]
        text = f"{counted(self.total, 'message')}: " + ", ".join(parts)
        if self.kept:
            text += f"; {self.kept} left in the mailbox for a person to read"
        return text

    def warnings(self) -> list[str]:
        """Lines that need someone to act: the sender's own mail is being refused."""
        if not self.sender_problems:
            return []
        reply, _ = self.sender_problems.most_common(1)[0]
        count = sum(self.sender_problems.values())
        return [
            f"warning: {counted(count, 'bounce')} refused for the sender's reasons, not the reader's "
            f"(most often: {reply or 'no reason given'}); {_SENDER_ADVICE}"
        ]


@dataclass(frozen=True)
class _Run:
    """One pass over the mailboxes: its Context, the return-path codes it reads, and whether it only rehearses."""

    ctx: Context
    paths: ReturnPaths
    dry_run: bool

    @property
    def transaction(self) -> Transaction:
        store = self.ctx.store
        return store.rehearsal if self.dry_run else store.session


def configured_inboxes(config: Config) -> list[Callable[[], Inbox]]:
    """Openers for the mailboxes ``[bounces] maildir`` and ``[imap]`` name (none: an empty list)."""
    openers: list[Callable[[], Inbox]] = []
    if config.bounces.maildir:
        openers.append(lambda: _configured_maildir(config))
    if config.imap.host:
        openers.append(lambda: ImapInbox(config.imap))
    return openers


def _configured_maildir(config: Config) -> Inbox:
    path = Path(config.bounces.maildir)
    if not path.is_dir():
        raise ConfigError(config.source, "bounces.maildir", f"expected a Maildir folder; {path} is not a folder")
    try:
        return open_path(path)
    except UsageError as exc:
        raise ConfigError(config.source, "bounces.maildir", str(exc)) from None


def process(
    ctx: Context,
    inboxes: Iterable[Callable[[], Inbox]],
    *,
    dry_run: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> MailboxReport:
    """Handle every waiting message of each mailbox in turn; returns the counts.

    A mailbox that cannot be opened raises ``MailboxError`` before anything of it is
    handled; the mailboxes before it keep what was done.
    """
    run = _Run(ctx, return_paths(ctx.config), dry_run)
    report = MailboxReport()
    for opener in inboxes:
        with _opened(opener) as inbox:
            if not (dry_run or inbox.writable):
                raise UsageError(
                    f"{inbox.name} is not a Maildir: it can only be read with --dry-run "
                    "(deliver bounces to a Maildir or an IMAP folder to process them)"
                )
            for key, raw in inbox.pending():
                outcome = handle(raw, key, run)
                report.add(outcome)  # said before filing away: what was committed is never unreported
                log.info("%s %s: %s (%s)", inbox.name, key, outcome.kind, outcome.action)
                if on_outcome is not None:
                    on_outcome(outcome)
                if not dry_run and not outcome.keep:
                    inbox.file_away(key)
    return report


@contextmanager
def _opened(opener: Callable[[], Inbox]) -> Iterator[Inbox]:
    inbox = opener()
    try:
        yield inbox
    finally:
        inbox.close()


_PARSER = BytesParser(policy=policy.default)


def handle(raw: bytes, key: str, run: _Run) -> Outcome:
    """One message: classify it, act on it in one transaction, and say what happened."""
    if isinstance(raw, Unreadable):
        return Outcome(key, "unknown", f"left in the mailbox: it cannot be read ({raw.reason})", keep=True)
    if isinstance(raw, TooLarge):
        size = f"{raw.size / 1_000_000:.1f} MB"
        return Outcome(key, "unknown", f"left in the mailbox: too large to be a report ({size})", keep=True)
    try:
        msg = _PARSER.parsebytes(raw)
        assert isinstance(msg, EmailMessage)
        bounces = run.ctx.config.bounces
        local = bounces.return_address(run.ctx.config.sender).rpartition("@")[0]
        finding = classify(msg, return_local=local, delimiter=bounces.delimiter)
    except Exception as exc:  # noqa: BLE001 - hostile bytes: the email package raises many kinds
        return Outcome(key, "unknown", f"left in the mailbox: not a readable message ({type(exc).__name__})", keep=True)
    if finding.kind == Kind.COMPLAINT and finding.feedback_type == "opt-out":
        return _opt_out(finding, key, run)  # a mail client's "unsubscribe" button, not a spam report
    if finding.kind in _FEEDBACK:
        return _feedback(finding, raw, key, run)
    if finding.kind == Kind.AUTOREPLY:
        return Outcome(key, "autoreply", "nothing to do: an automatic reply", diagnostic=finding.diagnostic)
    if finding.automatic:
        return Outcome(
            key,
            "unknown",
            "left in the mailbox: an automatic message, but not a report this could read",
            diagnostic=finding.diagnostic,
            keep=True,
        )
    config = run.ctx.config
    request = handle_request(msg, run.transaction, run.ctx.clock, run.ctx.tokens, config.web.unsubscribe_days)
    if request.action == NOT_A_REQUEST:
        return Outcome(key, "unknown", f"left in the mailbox for a person: {request.detail}", keep=True)
    action = {"not-listed": "not on the list", "test-copy": "a test copy: nobody to unsubscribe"}.get(
        request.action, request.action
    )
    recipients = (request.address.lower(),) if request.address else ()
    if run.dry_run and action == "unsubscribed":
        action = "would be unsubscribed"
    return Outcome(key, "unsubscribe", f"{action}: {request.detail}", recipients)


def _feedback(finding: Finding, raw: bytes, key: str, run: _Run) -> Outcome:
    """A bounce or complaint: attributed and recorded in one transaction, or left for a person.

    With VERP on, only signed evidence (the code of the address it came back to, or of the
    returned ``X-Newsletter-Delivery`` header) changes a reader: anyone can mail the bounce
    address a report naming any reader, and our Message-IDs can be guessed. With VERP off
    the operator has chosen attribution by what the report names, as Mailman does.
    """
    failed = finding.recipients[:MAX_RECIPIENTS]
    addresses = tuple(dict.fromkeys(f.address for f in failed if f.address))
    digest = hashlib.sha256(raw).hexdigest()[:40]
    kind = str(finding.kind)
    base = Outcome(key, kind, "", addresses, finding.status, finding.diagnostic)
    with run.transaction() as session:
        named, forged = _attribute(finding, session, run)
        if named is not None:
            report = _Report(kind, finding.status, finding.diagnostic, finding.feedback_type)
            action, acted = _record(session, run, named.subscriber_id, named.edition_id, report, digest)
            return _replace(base, action=action, keep=not acted)
        if forged:
            return _replace(base, action=f"left in the mailbox: {_FORGED}", keep=True)
        if run.ctx.config.bounces.verp:
            return _replace(base, action=f"left in the mailbox: {_UNSIGNED}", keep=True)
        if not addresses:
            return _replace(base, action="left in the mailbox: it names no recipient", keep=True)
        actions, acted_on_any = [], False
        listed = subscribers_by_email(session, addresses, for_update=True)
        for item in failed:
            subscriber = listed.get(item.address)
            if subscriber is None:
                actions.append(f"{item.address or 'an unnamed recipient'}: not on the list")
                continue
            edition_id = latest_edition_sent_to(session, subscriber.id)
            report = _Report(str(item.kind), item.status, item.diagnostic, finding.feedback_type)
            action, acted = _record(session, run, subscriber.id, edition_id, report, digest)
            actions.append(action)
            acted_on_any = acted_on_any or acted
    action = "; ".join(dict.fromkeys(actions))
    return _replace(base, action=action if acted_on_any else f"left in the mailbox: {action}", keep=not acted_on_any)


_FORGED = "its return-path code does not verify (damaged, forged, or signed before [web] secret_key changed)"
_UNSIGNED = "it carries no signed code of ours, and with VERP on a report naming readers is not trusted alone"


def _opt_out(finding: Finding, key: str, run: _Run) -> Outcome:
    """An ARF ``opt-out`` report: the reader asked to leave (Apple Mail's button); not a complaint."""
    addresses = tuple(dict.fromkeys(f.address for f in finding.recipients if f.address))
    with run.transaction() as session:
        named, forged = _attribute(finding, session, run)
        subscriber = subscriber_by_id(session, named.subscriber_id) if named is not None else None
        email = subscriber.email if subscriber is not None else ("" if forged or not addresses else addresses[0])
        if not email:
            action = f"left in the mailbox: {_FORGED if forged else 'it names no reader'}"
            return Outcome(key, "unsubscribe", action, addresses, keep=True)
        result = leave_by_address(session, email, run.ctx.clock, source="opt-out")
    action = {"not-listed": f"{email}: not on the list", "already": f"{email} had already left"}.get(
        result.value, f"{email} {'would be ' if run.dry_run else ''}unsubscribed (opt-out)"
    )
    return Outcome(key, "unsubscribe", action, (email,), diagnostic=finding.diagnostic)


def _replace(outcome: Outcome, **changes: Any) -> Outcome:
    return Outcome(**{**outcome.__dict__, **changes})


def _attribute(finding: Finding, session: Session, run: _Run) -> tuple[Attribution | None, bool]:
    """The edition and reader a report is about, from signed evidence; and whether a code was forged."""
    forged = False
    for code in (*finding.return_codes, *finding.delivery_refs):
        try:
            return run.paths.read(code), False
        except TokenError:
            forged = True
    if run.ctx.config.bounces.verp:
        return None, forged  # our Message-IDs can be guessed: signed codes only
    domain = run.ctx.config.sender.domain
    for message_id in finding.message_ids:
        match = _OUR_MESSAGE_ID.fullmatch(message_id.strip())
        if match is None or match[3].lower() != domain:
            continue
        ref = delivery_ref(session, int(match[1]))
        if ref is not None and ref.nonce == match[2] and ref.subscriber_id is not None:
            return Attribution(ref.edition_id, ref.subscriber_id), False
    return None, forged


@dataclass(frozen=True)
class _Report:
    """What is recorded for one reader."""

    kind: str
    status: str
    diagnostic: str
    feedback_type: str


def _record(
    session: Session, run: _Run, subscriber_id: int, edition_id: int | None, report: _Report, digest: str
) -> tuple[str, bool]:
    """Record one report for one reader; returns what was said and whether the reader was there."""
    bounces = run.ctx.config.bounces
    subscriber = subscriber_by_id(session, subscriber_id)
    who = subscriber.email if subscriber is not None else f"reader #{subscriber_id}"
    diagnostic = report.diagnostic or (f"feedback type {report.feedback_type}" if report.feedback_type else "")
    recorded = record_feedback(
        session,
        subscriber_id=subscriber_id,
        edition_id=edition_id,
        kind=report.kind,
        status=report.status,
        diagnostic=diagnostic,
        reference=f"{digest}:{subscriber_id}",
        at=run.ctx.clock.now(),
        soft_limit=bounces.soft_bounces,
        soft_window=timedelta(days=bounces.soft_window_days),
    )
    return _said(recorded, who, run, bounces.soft_bounces), recorded is not None


def _said(recorded: Recorded | None, who: str, run: _Run, soft_limit: int) -> str:
    if recorded is None:
        return f"left in the mailbox: {who} has been removed from the list since"
    text = {
        "bounced": f"{who} marked bounced",
        "unsubscribed": f"{who} unsubscribed (complaint)",
        "scored": f"soft bounce {recorded.soft_count} of {soft_limit} for {who}",
        "noted": f"recorded for {who}, who stays as they were",
        "already": f"already recorded for {who}",
    }.get(recorded.action, f"{recorded.action}: {who}")
    return f"would be: {text}" if run.dry_run and recorded.action != "already" else text
