"""Unsubscribe requests that arrive by email: the mailto in every edition's List-Unsubscribe.

That mailto is ``mailto:{address}?subject=unsubscribe%20{token}``, so most requests carry
the same signed token as the one-click link and say exactly who wants to leave. A request
without a usable token (typed by hand, or its token mangled) unsubscribes the sender's
From address, but only when it asks to ("unsubscribe" in the subject) and is not an
automatic reply, so a reader answering the newsletter or an out-of-office robot never
unsubscribes anyone.

Each message handled is moved into the Maildir's ``Processed`` folder (marked seen), so
running again does no work twice; a crash between the database commit and the move only
repeats an unsubscribe, which changes nothing.
"""

from __future__ import annotations

import logging
import mailbox
import re
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path

from newsletter.clock import Clock
from newsletter.config import Config
from newsletter.errors import TokenError, UsageError
from newsletter.store import Store
from newsletter.subscribers import LeaveResult, leave, leave_by_address
from newsletter.tokens import UNSUBSCRIBE, Tokens

log = logging.getLogger(__name__)

PROCESSED_FOLDER = "Processed"
_TOKEN = re.compile(r"\bunsubscribe\s+([A-Za-z0-9_.\-]{20,256})", re.IGNORECASE)
_ASKS = re.compile(r"\bunsubscribe\b", re.IGNORECASE)


@dataclass(frozen=True)
class Outcome:
    """What one message led to: ``action`` is unsubscribed, already, not-listed, test-copy or ignored."""

    action: str
    detail: str
    key: str = ""


@dataclass
class ProcessReport:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.action for o in self.outcomes)

    def summary(self) -> str:
        if not self.outcomes:
            return "no new messages"
        counts = self.counts
        order = ("unsubscribed", "already", "not-listed", "test-copy", "ignored")
        parts = [f"{counts[a]} {a.replace('-', ' ')}" for a in order if counts[a]]
        return f"{len(self.outcomes)} messages: " + ", ".join(parts)


def _is_automatic(msg: EmailMessage) -> bool:
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(msg.get("Precedence", "")).strip().lower()
    return auto != "no" or precedence in ("bulk", "junk", "list", "auto_reply") or msg.get("Return-Path") == "<>"


def _sender(msg: EmailMessage) -> str:
    addresses = [addr for _, addr in getaddresses([str(v) for v in msg.get_all("From", [])]) if addr]
    return addresses[0] if len(addresses) == 1 else ""


def handle_message(msg: EmailMessage, store: Store, clock: Clock, tokens: Tokens, max_age_days: int) -> Outcome:
    """Act on one message; never raises for a bad message, only for a broken database."""
    subject = " ".join(str(msg.get("Subject", "")).split())
    if _is_automatic(msg):
        return Outcome("ignored", "an automatic message")
    for candidate in _TOKEN.findall(subject):
        try:
            claim = tokens.read(UNSUBSCRIBE, candidate, max_age_days)
        except TokenError:
            continue
        with store.session() as session:
            result = leave(session, claim, clock, source="mailto")
        return Outcome(_action(result), f"subscriber {claim.subscriber_id} (signed request)")
    sender = _sender(msg)
    if not _ASKS.search(subject):
        return Outcome("ignored", f"from {sender or 'nobody'}: the subject does not ask to unsubscribe")
    if not sender:
        return Outcome("ignored", "no single From address")
    try:
        with store.session() as session:
            result = leave_by_address(session, sender, clock, source="mailto")
    except UsageError:
        return Outcome("ignored", f"from {sender[:80]!r}: not a valid address")
    return Outcome(_action(result), sender)


def _action(result: LeaveResult) -> str:
    return "already" if result == LeaveResult.ALREADY else result.value


def process_maildir(path: Path, config: Config, store: Store, clock: Clock, tokens: Tokens) -> ProcessReport:
    """Handle every message in ``new`` and ``cur``, moving each to ``Processed`` once done."""
    if not all((path / sub).is_dir() for sub in ("new", "cur", "tmp")):
        raise UsageError(f"{path} is not a Maildir (it needs new/, cur/ and tmp/ folders)")
    box = mailbox.Maildir(path, factory=None, create=False)
    folders = box.list_folders()
    done = box.get_folder(PROCESSED_FOLDER) if PROCESSED_FOLDER in folders else box.add_folder(PROCESSED_FOLDER)
    report = ProcessReport()
    parser = BytesParser(policy=policy.default)
    try:
        for key in sorted(box.keys()):
            try:
                raw = box.get_bytes(key)
            except (KeyError, FileNotFoundError):
                continue  # taken by a concurrent run
            parsed = parser.parsebytes(raw)
            assert isinstance(parsed, EmailMessage)
            outcome = handle_message(parsed, store, clock, tokens, config.web.unsubscribe_days)
            report.outcomes.append(Outcome(outcome.action, outcome.detail, key))
            message = mailbox.MaildirMessage(raw)
            message.set_subdir("cur")
            message.add_flag("S")
            done.add(message)
            box.discard(key)
            log.info("%s: %s (%s)", key, outcome.action, outcome.detail)
    finally:
        box.close()
    return report
