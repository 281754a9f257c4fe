"""What a bounce or a complaint does to a reader: one pure decision over plain data.

The mailbox reader classifies each failed recipient ("hard", "soft", "sender",
"complaint"); ``store.bounces.record_feedback`` reads the reader's status and earlier soft
bounces, asks ``decide``, and writes what it says. Keeping the rules here, with no session
and no clock, lets the table of cases be tested directly (as ``due.decide`` is).

The rules, and why:

- **hard** (5.1.x: no such mailbox or domain) bounces an active or pending reader at once.
  The address is dead; every further message to it is a strike against the sender's
  reputation, and providers count mail to unknown users as a spammer's mark.
- **soft** (a full mailbox, a server down for the day) bounces an active reader only when
  it keeps happening: ``soft_limit`` different editions within ``soft_window``. One
  edition that failed twice (a retry, two reports of one message) counts once; a soft
  bounce no edition is known for counts once per calendar day (UTC) instead. Older soft
  bounces are stale and do not count, as Mailman's "bounce info stale after": a mailbox
  full in March says nothing about one in May.
- **sender** (5.7.x policy, blocklists, authentication failures) is about us, not the
  reader: it never changes a reader's status. Bouncing readers for it would empty the
  list while the real fault (SPF, DKIM, DMARC, a listed IP) stays; the sender must act.
- **complaint** (an ARF report: the reader pressed "this is spam") unsubscribes at once,
  from active, pending or bounced. It is the strongest "stop" a reader can say, and
  mailing a complainer again is what gets a sender blocked; it is recorded as
  unsubscribed (not bounced) because the reader chose to leave, so only their own new
  consent can bring them back.
- A reader who already left (unsubscribed or bounced) is never made active again by any
  of this: a report is evidence against sending, never for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from newsletter.errors import UsageError
from newsletter.store.models import SubscriberStatus

HARD = "hard"
SOFT = "soft"
SENDER = "sender"
COMPLAINT = "complaint"

EVENTS = {HARD: "hard_bounce", SOFT: "soft_bounce", SENDER: "sender_block", COMPLAINT: "complaint"}
"""The subscriber event each kind of report is recorded as."""

_STILL_ON = (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING)


class UnknownFeedbackKindError(UsageError):
    """Raised when a report's kind is none of "hard", "soft", "sender" or "complaint"; ``kind`` holds it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"unknown kind of bounce report {kind[:40]!r}: expected one of {', '.join(EVENTS)}")


@dataclass(frozen=True)
class PastBounce:
    """An earlier soft bounce of this reader: which edition (if known) and when."""

    edition_id: int | None
    at: datetime


@dataclass(frozen=True)
class Decision:
    event: str  # "hard_bounce" | "soft_bounce" | "sender_block" | "complaint"
    new_status: SubscriberStatus | None  # BOUNCED / UNSUBSCRIBED, or None: leave the reader as they are
    soft_count: int  # soft bounces on different editions within the window, this one included (0 for other kinds)


def decide(
    kind: str,
    status: SubscriberStatus,
    earlier_soft: Sequence[PastBounce],
    edition_id: int | None,
    now: datetime,
    *,
    soft_limit: int,
    soft_window: timedelta,
) -> Decision:
    """What one report does to a reader whose status is ``status``; pure.

    :param earlier_soft: the reader's earlier soft bounces; stale ones may be included,
        they are left out here.
    :param edition_id: the edition the report is about, when known.
    :param now: when this report happened; the window ends here.
    :raises UnknownFeedbackKindError: ``kind`` is not one of ``EVENTS``.
    """
    if kind not in EVENTS:
        raise UnknownFeedbackKindError(kind)
    event = EVENTS[kind]
    if kind == HARD:
        return Decision(event, SubscriberStatus.BOUNCED if status in _STILL_ON else None, 0)
    if kind == COMPLAINT:
        return Decision(event, None if status == SubscriberStatus.UNSUBSCRIBED else SubscriberStatus.UNSUBSCRIBED, 0)
    if kind == SENDER:
        return Decision(event, None, 0)
    count = soft_count(earlier_soft, edition_id, now, soft_window)
    # Only an active reader is bounced for soft bounces: a pending one gets no editions, and
    # their confirmation mail has its own retries and expiry.
    bounce = status == SubscriberStatus.ACTIVE and count >= soft_limit
    return Decision(event, SubscriberStatus.BOUNCED if bounce else None, count)


def soft_count(earlier: Sequence[PastBounce], edition_id: int | None, now: datetime, window: timedelta) -> int:
    """Distinct editions (or days, for bounces with no edition) among soft bounces in the window, this one included.

    A bounce dated after ``now`` (reports read out of order) is recent, not stale, so it counts.
    """
    start = now - window
    seen = {_occasion(b.edition_id, b.at) for b in earlier if b.at >= start}
    seen.add(_occasion(edition_id, now))
    return len(seen)


def _occasion(edition_id: int | None, at: datetime) -> tuple[str, int | date]:
    """What makes two soft bounces one: the same edition, or without one the same UTC day."""
    if edition_id is not None:
        return ("edition", edition_id)
    return ("day", at.astimezone(UTC).date() if at.tzinfo else at.date())
