"""The plain data a classification gives: one ``Finding`` per message, one ``Failed`` per reader.

Nothing here reads mail. These types are what the mailbox reader and ``bounce_policy``
consume, so they stay small, frozen and free of any parsing state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_DIAGNOSTIC = 300  # characters of a diagnostic, as Failed promises


class Kind(enum.StrEnum):
    """What a message, or one recipient in it, amounts to."""

    HARD = "hard"  # user unknown, host/domain unknown, mailbox moved/disabled/closed
    SOFT = "soft"  # mailbox full, any 4.x.x, expired/delayed, greylisted, message too large
    SENDER = "sender"  # our problem, not the reader's: spam/policy, DMARC/SPF/DKIM, blocklists, rate limits
    COMPLAINT = "complaint"  # an ARF feedback report or a provider's feedback loop
    AUTOREPLY = "autoreply"  # vacation, out-of-office, challenge-response, read receipts, success reports
    UNKNOWN = "unknown"  # a person writing, or an automatic message nothing could be read from


@dataclass(frozen=True)
class Failed:
    """One recipient named by a report."""

    address: str  # lower-cased addr-spec, "" if none could be read
    kind: Kind  # HARD, SOFT or SENDER (COMPLAINT for the reported recipient of an ARF)
    status: str  # RFC 3463 enhanced status "5.1.1", or "" when none
    diagnostic: str  # one line, at most 300 characters, control characters removed


@dataclass(frozen=True)
class Finding:
    """Everything ``classify`` could read from one message."""

    kind: Kind  # the message's class: for reports, that of the first recipient
    recipients: tuple[Failed, ...]
    status: str  # status of the first recipient (or "")
    diagnostic: str  # diagnostic of the first recipient (or a short summary)
    return_codes: tuple[str, ...]  # VERP codes from the address the report was delivered to
    message_ids: tuple[str, ...]  # Message-IDs of the returned original message, "<...>" kept
    delivery_refs: tuple[str, ...]  # X-Newsletter-Delivery values in the returned original
    feedback_type: str  # ARF Feedback-Type ("abuse", "fraud", ...) for complaints, else ""
    automatic: bool  # the message says it is automatic (headers, null sender, report type), or is a report


def build_finding(
    kind: Kind,
    recipients: tuple[Failed, ...],
    codes: tuple[str, ...],
    ids: tuple[str, ...],
    refs: tuple[str, ...],
    feedback_type: str,
    automatic: bool,
    summary: str = "",
) -> Finding:
    """The ``Finding``, its status and diagnostic those of the first recipient (the summary when there is none)."""
    first = recipients[0] if recipients else None
    return Finding(
        kind=kind,
        recipients=recipients,
        status=first.status if first else "",
        diagnostic=(first.diagnostic if first and first.diagnostic else summary)[:MAX_DIAGNOSTIC],
        return_codes=codes,
        message_ids=ids,
        delivery_refs=refs,
        feedback_type=feedback_type,
        automatic=automatic,
    )
