"""Unsubscribe requests that arrive by email: the mailto in every edition's List-Unsubscribe.

That mailto is ``mailto:{address}?subject=unsubscribe%20{token}``, so most requests carry
the same signed token as the one-click link and say exactly who wants to leave. A request
without a usable token (typed by hand, or its token mangled) unsubscribes the sender's
From address, but only when it asks to (the subject starts with "unsubscribe", after any
Re: or Fwd:), so a reader answering the newsletter never unsubscribes anyone.

``newsletter.inbound`` sets bounces, complaints and automatic replies aside first, and
hands ``handle_request`` only what a person wrote; a message that does not ask to leave,
or has headers too broken to read, is left in the mailbox for a person to read. A
crash between the database commit and filing the message away only repeats an
unsubscribe, which changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses

from sqlalchemy.orm import Session

from newsletter.clock import Clock
from newsletter.errors import TokenError, UsageError
from newsletter.subscribers import LeaveResult, leave, leave_by_address
from newsletter.tokens import UNSUBSCRIBE, Tokens

Transaction = Callable[[], AbstractContextManager[Session]]
_TOKEN = re.compile(r"\bunsubscribe\s+([A-Za-z0-9_.\-]{20,256})", re.IGNORECASE)
NOT_A_REQUEST = "not-a-request"


@dataclass(frozen=True)
class Outcome:
    """What one message led to: ``action`` is unsubscribed, already, not-listed, test-copy,
    or ``NOT_A_REQUEST`` (nothing done: the message is for a person to read)."""

    action: str
    detail: str
    address: str = ""


# Reply and forward prefixes of common mail clients, in several languages.
_PREFIXES = re.compile(r"^(?:(?:re|fwd?|aw|sv|wg|tr|rif|antw|vs)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_ASKS = re.compile(r"unsubscribe\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Request:
    subject: str
    sender: str


def _read(msg: EmailMessage) -> _Request:
    """The parts of a message that matter; raises on headers too broken to parse."""
    subject = " ".join(str(msg.get("Subject", "")).split())
    addresses = [addr for _, addr in getaddresses([str(v) for v in msg.get_all("From", [])]) if addr]
    sender = addresses[0] if len(addresses) == 1 else ""
    return _Request(subject, sender)


def handle_request(
    msg: EmailMessage, transaction: Transaction, clock: Clock, tokens: Tokens, max_age_days: int
) -> Outcome:
    """Act on one message a person wrote (the caller has set reports and robots aside);
    never raises for a bad message, only for a broken database.

    Without a valid token the subject must *start* with "unsubscribe" (after any Re: or
    Fwd:), so a reply that merely mentions the word leaves nobody. ``transaction`` opens
    the one database transaction of this message (a rehearsal on a dry run).
    """
    try:
        request = _read(msg)
    except Exception as exc:  # noqa: BLE001 - pure parsing: the email package raises many kinds on hostile headers
        return Outcome(NOT_A_REQUEST, f"headers too broken to read ({type(exc).__name__})")
    for candidate in _TOKEN.findall(request.subject):
        try:
            claim = tokens.read(UNSUBSCRIBE, candidate, max_age_days)
        except TokenError:
            continue
        with transaction() as session:
            result = leave(session, claim, clock, source="mailto")
        return Outcome(_action(result), f"subscriber {claim.subscriber_id} (signed request)", request.sender)
    sender = request.sender
    if not _ASKS.match(_PREFIXES.sub("", request.subject)):
        return Outcome(NOT_A_REQUEST, f"from {sender or 'nobody'}: the subject does not ask to unsubscribe")
    if not sender:
        return Outcome(NOT_A_REQUEST, "it asks to unsubscribe, but has no single From address")
    try:
        with transaction() as session:
            result = leave_by_address(session, sender, clock, source="mailto")
    except UsageError:
        return Outcome(NOT_A_REQUEST, f"it asks to unsubscribe, from {sender[:80]!r}: not a valid address")
    return Outcome(_action(result), sender, sender)


def _action(result: LeaveResult) -> str:
    return "already" if result == LeaveResult.ALREADY else result.value
