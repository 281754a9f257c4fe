"""Bounces and complaints in the store: recording each report, and reading them back per edition and reader.

A report from the mailbox becomes a subscriber event (``hard_bounce``, ``soft_bounce``,
``sender_block`` or ``complaint``) carrying the edition it was about, the DSN status and
the server's diagnostic. ``record_feedback`` is the one state change: it locks the reader,
asks ``bounce_policy.decide`` and writes what that says, in the caller's transaction, so a
mailbox message is either wholly recorded or not at all. A ``reference`` (the caller's
hash of the message and the recipient) makes it idempotent: reading the same mailbox
twice, or from two processes, changes nothing the second time.

What a server says is untrusted text of any length: it is stored cleaned (no control
characters, no lone surrogates, which PostgreSQL refuses) and cut to the column, and the
reader's own address is taken out of it, so erasing a reader leaves no trace of their
address in the events that outlive them.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, insert, literal_column, select, update
from sqlalchemy.orm import Session

from newsletter.bounce_policy import EVENTS, PastBounce, UnknownFeedbackKindError, decide
from newsletter.store.deliveries import OPEN_STATUSES
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberEvent,
    SubscriberStatus,
)
from newsletter.store.readers import LOOKUP_CHUNK, MAX_SUBSCRIBER_ID, subscriber_by_id

SOURCE = "mailbox"  # the source of every event a report writes
COMPLAINT_SOURCE = "complaint"  # the source of the "unsubscribed" a complaint leads to
MAX_EDITION_ID = 2**31 - 1  # editions.id is INTEGER on PostgreSQL
MAX_DELIVERY_ID = 2**63 - 1  # deliveries.id is BIGINT on PostgreSQL
STATUS_WIDTH = 10
DETAIL_WIDTH = 300
REFERENCE_WIDTH = 64
ADDRESS_MARK = "[address]"  # stands in the diagnostic where the reader's address was

COMPLAINT_ALARM_RATE = 0.001
"""Complaints above 0.1 % of delivered mail: the line to act at (Gmail and Yahoo ask bulk senders for under 0.3 %)."""
COMPLAINT_ALARM_MINIMUM = 2
"""Fewer complaints than this are never "alarming", whatever the rate: see ``Feedback.alarming``."""

_E = SubscriberEvent
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")  # reorder text on screen: a diagnostic could disguise itself
_DSN_STATUS = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")


@dataclass(frozen=True)
class Recorded:
    """What recording one report did.

    ``action`` is "bounced" (now bounced), "unsubscribed" (a complaint took them off),
    "scored" (a soft bounce counted, not yet enough to bounce), "noted" (recorded, status
    unchanged: sender-side, or the reader had already left) or "already" (this reference
    was recorded before: nothing changed).
    """

    action: str
    soft_count: int = 0
    skipped: int = 0  # deliveries not yet sent that were skipped because the reader left


def record_feedback(
    session: Session,
    *,
    subscriber_id: int,
    edition_id: int | None,
    kind: str,
    status: str,
    diagnostic: str,
    reference: str,
    at: datetime,
    soft_limit: int,
    soft_window: timedelta,
) -> Recorded | None:
    """Record one report about one reader, and act on it as ``bounce_policy.decide`` says.

    None when no subscriber has that id (removed since the message went out). The
    subscriber row is locked ``FOR UPDATE`` on PostgreSQL first, so two processes reading
    reports for the same reader take turns, and a send enqueuing meanwhile waits. When the
    reader leaves (bounced, or unsubscribed by a complaint) the usual "bounced" or
    "unsubscribed" event is written too, so ``subscribers stats`` counts them, and their
    deliveries not yet sent are skipped: nothing more goes to them. Never commits.

    :param kind: "hard", "soft", "sender" or "complaint" (``UnknownFeedbackKindError`` else).
    :param status: the DSN status ("5.1.1"), or "".
    :param reference: the caller's idempotency key; the same one for the same reader again
        returns ``Recorded("already")``. An empty reference is never treated as seen.
    :param at: when the report happened: the soft-bounce window ends here.
    """
    if kind not in EVENTS:  # before any lock or write
        raise UnknownFeedbackKindError(kind)
    subscriber = subscriber_by_id(session, subscriber_id, for_update=True)
    if subscriber is None:
        return None
    reference = _reference(reference)
    if reference and _seen(session, subscriber.id, reference):
        return Recorded("already")
    if edition_id is not None and not edition_exists(session, edition_id):
        edition_id = None  # a report about an edition since deleted still counts for the reader
    earlier = [
        PastBounce(row.edition_id, row.at)
        for row in session.execute(
            select(_E.edition_id, _E.at).where(
                _E.subscriber_id == subscriber.id, _E.event == EVENTS["soft"], _E.at >= at - soft_window
            )
        )
    ]
    was = subscriber.status
    decision = decide(kind, was, earlier, edition_id, at, soft_limit=soft_limit, soft_window=soft_window)
    session.execute(
        insert(SubscriberEvent).values(
            subscriber_id=subscriber.id,
            event=decision.event,
            source=SOURCE,
            at=at,
            edition_id=edition_id,
            status=clean_text(status, STATUS_WIDTH),
            detail=clean_text(_without_address(diagnostic, subscriber.email), DETAIL_WIDTH),
            reference=reference,
        )
    )
    if decision.new_status is not None:
        _leave(session, subscriber, decision.new_status, at, edition_id)
    skipped = 0
    if subscriber.status in (SubscriberStatus.BOUNCED, SubscriberStatus.UNSUBSCRIBED):
        skipped = skip_open_deliveries(session, subscriber.id)
    if decision.new_status == SubscriberStatus.BOUNCED:
        action = "bounced"
    elif decision.new_status == SubscriberStatus.UNSUBSCRIBED:
        action = "unsubscribed"
    elif kind == "soft" and was == SubscriberStatus.ACTIVE:
        action = "scored"
    else:
        action = "noted"
    return Recorded(action, decision.soft_count, skipped)


def _reference(raw: str) -> str:
    """The reference as stored: cleaned, and a longer one replaced by its SHA-256, so two never merge by a cut."""
    cleaned = clean_text(raw, len(raw) + 1)
    if len(cleaned) <= REFERENCE_WIDTH:
        return cleaned
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _seen(session: Session, subscriber_id: int, reference: str) -> bool:
    query = select(_E.id).where(
        _E.subscriber_id == subscriber_id,
        _E.reference == reference,
        _E.reference != literal_column("''"),  # as written, so SQLite picks the partial unique index
    )
    return session.scalar(query.limit(1)) is not None


def _leave(
    session: Session, subscriber: Subscriber, status: SubscriberStatus, at: datetime, edition_id: int | None
) -> None:
    """Change the locked reader's status and write the event every other status change writes."""
    subscriber.status = status
    subscriber.updated_at = at
    if status == SubscriberStatus.UNSUBSCRIBED:
        subscriber.unsubscribed_at = at
        event, source = "unsubscribed", COMPLAINT_SOURCE
    else:
        event, source = "bounced", SOURCE
    session.flush()
    session.execute(
        insert(SubscriberEvent).values(
            subscriber_id=subscriber.id, event=event, source=source, at=at, edition_id=edition_id
        )
    )


def skip_open_deliveries(session: Session, subscriber_id: int) -> int:
    """Skip a reader's deliveries not yet sent (pending, deferred, or in flight), so they get nothing more.

    Claims skip a reader who is no longer active anyway; doing it now lets an edition that
    waits only on this reader's deferred retries finish. Unlike removal, the servers'
    replies are kept: the reader's row is. A worker already sending one records "sent"
    afterwards if it went: that is the truth.
    """
    skipped = cast(
        "CursorResult[Any]",  # what an UPDATE returns; Session.execute is typed for any statement
        session.execute(
            update(Delivery)
            .where(Delivery.subscriber_id == subscriber_id, Delivery.status.in_(OPEN_STATUSES))
            .values(status=DeliveryStatus.SKIPPED, claimed_by="", claimed_until=None, next_attempt_at=None)
            .execution_options(synchronize_session=False)
        ),
    )
    return int(skipped.rowcount or 0)


def clean_text(text: str, width: int) -> str:
    """``text`` as one line of printable text, at most ``width`` characters (cut with "…").

    Control characters and line separators become spaces; lone surrogates (undecodable
    bytes) become U+FFFD; bidirectional overrides go. PostgreSQL refuses NUL and invalid
    UTF-8, and a terminal acts on escapes, so none of them reach the database.
    """
    chars = []
    for char in _BIDI.sub("", text[: width * 8]):  # enough to fill the width after cleaning
        category = unicodedata.category(char)
        if category == "Cs":
            chars.append("\ufffd")
        elif category in ("Cc", "Zl", "Zp"):
            chars.append(" ")
        else:
            chars.append(char)
    cleaned = " ".join("".join(chars).split())
    return cleaned if len(cleaned) <= width else cleaned[: width - 1].rstrip() + "…"


def _without_address(diagnostic: str, email: str) -> str:
    if not email:
        return diagnostic
    return re.sub(re.escape(email), ADDRESS_MARK, diagnostic, flags=re.IGNORECASE)


# --- attributing a report ---------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRef:
    """A delivery, as a report is attributed by it: its edition and nonce, and its reader (None once removed)."""

    delivery_id: int
    edition_id: int
    subscriber_id: int | None
    nonce: str
    email: str | None


def delivery_ref(session: Session, delivery_id: int) -> DeliveryRef | None:
    """The delivery with this id, or None; an id outside the column's range names nothing (not an error)."""
    if not 0 < delivery_id <= MAX_DELIVERY_ID:
        return None
    row = session.execute(
        select(Delivery.id, Delivery.edition_id, Delivery.subscriber_id, Edition.nonce, Subscriber.email)
        .join(Edition, Edition.id == Delivery.edition_id)
        .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.id == delivery_id)
    ).first()
    if row is None:
        return None
    return DeliveryRef(row.id, row.edition_id, row.subscriber_id, row.nonce, row.email)


def latest_edition_sent_to(session: Session, subscriber_id: int) -> int | None:
    """The most recent edition (by date) that went to this reader: a report without a code is likely about it."""
    if not 0 < subscriber_id <= MAX_SUBSCRIBER_ID:
        return None
    query = (
        select(Delivery.edition_id)
        .join(Edition, Edition.id == Delivery.edition_id)
        .where(Delivery.subscriber_id == subscriber_id, Delivery.status == DeliveryStatus.SENT)
        .order_by(Edition.date.desc())
        .limit(1)
    )
    return session.scalar(query)


def edition_exists(session: Session, edition_id: int) -> bool:
    if not 0 < edition_id <= MAX_EDITION_ID:
        return False
    return session.scalar(select(Edition.id).where(Edition.id == edition_id)) is not None


# --- reading them back ---------------------------------------------------------------------


@dataclass(frozen=True)
class Feedback:
    """What came back about one edition: distinct readers per kind of report, and what was delivered."""

    delivered: int
    hard: int
    soft: int
    sender: int
    complaints: int
    sender_status: str = ""  # the commonest DSN status of the sender-side rejections
    sender_detail: str = ""  # and one diagnostic given with it

    @property
    def any(self) -> bool:
        return bool(self.hard or self.soft or self.sender or self.complaints)

    @property
    def complaint_rate(self) -> float:
        """Complaints per message delivered; 0 when nothing was delivered."""
        return self.complaints / self.delivered if self.delivered else 0.0

    @property
    def alarming(self) -> bool:
        """Complaints above 0.1 % of delivered, and at least ``COMPLAINT_ALARM_MINIMUM`` of them.

        The minimum is for small lists: on 300 readers one complaint is 0.33 %, but one
        reader pressing "spam" instead of "unsubscribe" is an individual's habit, not a
        sign the list is unwanted (and mailbox providers' bulk rules start at thousands
        a day). The complaint is still shown, and its reader unsubscribed; two or more in
        one edition at that rate are a pattern worth acting on.
        """
        return self.complaints >= COMPLAINT_ALARM_MINIMUM and self.complaint_rate > COMPLAINT_ALARM_RATE


_KIND_OF_EVENT = {event: kind for kind, event in EVENTS.items()}


def edition_feedback(session: Session, edition_ids: Sequence[int]) -> dict[int, Feedback]:
    """Feedback for each edition id given (all zero when nothing came back), in two or three queries.

    Readers are counted once per kind however many reports they sent; a report whose
    reader was removed since counts as a reader of its own.
    """
    wanted = list(dict.fromkeys(i for i in edition_ids if 0 < i <= MAX_EDITION_ID))
    delivered: Counter[int] = Counter()
    tally: dict[int, Counter[str]] = {i: Counter() for i in wanted}
    sender_rows: list[tuple[int, str, str, int]] = []
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        for edition_id, sent in session.execute(
            select(Delivery.edition_id, func.count())
            .where(Delivery.edition_id.in_(chunk), Delivery.status == DeliveryStatus.SENT)
            .group_by(Delivery.edition_id)
        ):
            delivered[edition_id] = sent
        reader = func.coalesce(_E.subscriber_id, -_E.id)
        # The events' edition is never NULL below (the WHERE names the editions), whatever its type allows.
        kinds = cast(
            "Iterable[tuple[int, str, int]]",
            session.execute(
                select(_E.edition_id, _E.event, func.count(func.distinct(reader)))
                .where(_E.edition_id.in_(chunk), _E.event.in_(EVENTS.values()))
                .group_by(_E.edition_id, _E.event)
            ),
        )
        for edition_id, event, readers in kinds:
            tally[edition_id][_KIND_OF_EVENT[event]] = readers
        blocked = [i for i in chunk if tally[i]["sender"]]
        if blocked:
            replies = cast(
                "Iterable[tuple[int, str, str, int]]",
                session.execute(
                    select(_E.edition_id, _E.status, _E.detail, func.count())
                    .where(_E.edition_id.in_(blocked), _E.event == EVENTS["sender"])
                    .group_by(_E.edition_id, _E.status, _E.detail)
                ),
            )
            sender_rows += [(edition_id, status, detail, n) for edition_id, status, detail, n in replies]
    commonest = _commonest_sender_reply(sender_rows)
    result = {}
    for edition_id in edition_ids:
        counts = tally.get(edition_id, Counter())
        status, detail = commonest.get(edition_id, ("", ""))
        result[edition_id] = Feedback(
            delivered=delivered[edition_id],
            hard=counts["hard"],
            soft=counts["soft"],
            sender=counts["sender"],
            complaints=counts["complaint"],
            sender_status=status,
            sender_detail=detail,
        )
    return result


def _commonest_sender_reply(rows: Sequence[tuple[int, str, str, int]]) -> dict[int, tuple[str, str]]:
    """Per edition, the commonest status among sender-side rejections and its commonest diagnostic."""
    by_status: dict[int, Counter[str]] = {}
    by_detail: dict[tuple[int, str], Counter[str]] = {}
    for edition_id, status, detail, n in rows:
        by_status.setdefault(edition_id, Counter())[status] += n
        by_detail.setdefault((edition_id, status), Counter())[detail] += n
    found = {}
    for edition_id, statuses in by_status.items():
        status = max(sorted(statuses), key=lambda s: (statuses[s], bool(s)))
        details = by_detail[(edition_id, status)]
        found[edition_id] = (status, max(sorted(details), key=lambda d: (details[d], bool(d))))
    return found


@dataclass(frozen=True)
class Reason:
    """Why a reader bounced: the report (or staff's mark) that did it."""

    at: datetime
    event: str  # hard_bounce | soft_bounce, or bounced (marked by staff, or refused while sending)
    status: str  # the DSN status, "" when none
    detail: str  # the server's diagnostic, "" when none
    edition_date: date | None
    source: str = ""  # "mailbox", "delivery" (refused at RCPT while sending), or who marked it ("admin:ana")


_BOUNCES = (EVENTS["hard"], EVENTS["soft"])


def bounce_reasons(session: Session, subscriber_ids: Sequence[int]) -> dict[int, Reason]:
    """For each of these readers with a bounce on record, the event that bounced them last.

    A bounce from the mailbox is explained by the hard or soft bounce behind it; a reader
    refused while sending (5.1.x at RCPT) by that delivery's reply; one marked bounced by
    staff by that "bounced" event and who did it. Readers never bounced are left out.
    """
    wanted = list(dict.fromkeys(i for i in subscriber_ids if 0 < i <= MAX_SUBSCRIBER_ID))
    found: dict[int, Reason] = {}
    refused: dict[int, datetime] = {}  # bounced while sending: explained by their delivery below
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        rows = session.execute(
            select(_E.subscriber_id, _E.event, _E.source, _E.at, _E.status, _E.detail, Edition.date.label("day"))
            .outerjoin(Edition, Edition.id == _E.edition_id)
            .where(_E.subscriber_id.in_(wanted[start : start + LOOKUP_CHUNK]), _E.event.in_((*_BOUNCES, "bounced")))
            .order_by(_E.subscriber_id, _E.id)
        ).all()
        history: dict[int, list[Any]] = {}
        for row in rows:
            history.setdefault(row.subscriber_id, []).append(row)
        for subscriber_id, events in history.items():
            marks = [i for i, e in enumerate(events) if e.event == "bounced"]
            mark = events[marks[-1]] if marks else None
            if mark is not None and mark.source == "delivery":
                refused[subscriber_id] = mark.at
                continue
            reports = [e for e in (events[: marks[-1]] if marks else events) if e.event in _BOUNCES]
            # A mark by staff (or a mailbox mark with no report behind it) explains itself.
            why = reports[-1] if reports and (mark is None or mark.source == SOURCE) else mark
            if why is not None:
                found[subscriber_id] = Reason(why.at, why.event, why.status, why.detail, why.day, why.source)
    found.update(_refusals(session, refused))
    return found


def _refusals(session: Session, refused: dict[int, datetime]) -> dict[int, Reason]:
    """Readers bounced by the send loop, explained by the reply their latest failed delivery got."""
    ids = list(refused)
    latest: dict[int, tuple[str, date | None]] = {}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        # The reader is never NULL in these rows (the WHERE names the readers), whatever its type allows.
        failures = cast(
            "Iterable[tuple[int, str, date]]",
            session.execute(
                select(Delivery.subscriber_id, Delivery.last_error, Edition.date)
                .join(Edition, Edition.id == Delivery.edition_id)
                .where(
                    Delivery.subscriber_id.in_(ids[start : start + LOOKUP_CHUNK]),
                    Delivery.status == DeliveryStatus.FAILED,
                    Delivery.last_error != "",
                )
                .order_by(Delivery.id)
            ),
        )
        for subscriber_id, error, edition_date in failures:
            latest[subscriber_id] = (error, edition_date)
    reasons = {}
    for subscriber_id, at in refused.items():
        error, day = latest.get(subscriber_id, ("", None))
        status = _DSN_STATUS.search(error)
        reasons[subscriber_id] = Reason(
            at, "bounced", status.group() if status else "", clean_text(error, DETAIL_WIDTH), day, "delivery"
        )
    return reasons
