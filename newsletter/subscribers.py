"""The subscriber list: validating addresses, joining, confirming, leaving, counting.

Addresses are validated with email-validator without DNS lookups (nothing here may reach
the network by default) and stored lower-cased, so "Ana@Example.org" and "ana@example.org"
are one reader. Every status change goes through ``set_status``, which keeps the
timestamps truthful and writes a ``SubscriberEvent``, the record ``stats`` counts from:

    subscribed    someone asked to join (a pending sign-up, or a new request after leaving)
    confirmed     became active: a confirmed sign-up, or added as active by staff or an import
    reactivated   active again after unsubscribing or bouncing
    unsubscribed  left (web page, one-click, mailto, staff)
    bounced       the address stopped accepting mail
    removed       the row was deleted; the event keeps no link to it

Someone who left is never made active again except by their own fresh double opt-in or
an explicit, confirmed ``reactivate`` by staff, recorded with who did it.

Text is checked here, where every interface (CLI, CSV import, web form) enters: names are
kept as typed (trimmed, never reordered), and no control character gets in, so nothing
stored can later retitle or recolour the terminal of whoever lists it. A reader's own
time zone is checked by ``timezones.check_zone`` on the same way in.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.orm import Session, object_session

from newsletter.clock import Clock
from newsletter.errors import UsageError
from newsletter.store.bounces import edition_exists
from newsletter.store.clicks import forget_clicks_of
from newsletter.store.deliveries import settle_for_removal
from newsletter.store.models import Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.store.readers import (
    delete_subscriber,
    insert_subscriber_if_new,
    set_timezone,
    subscriber_by_email,
    subscriber_by_id,
    subscribers_after,
    subscribers_before,
    subscribers_by_email,
)
from newsletter.store.subscriber_events import events_since, latest_event
from newsletter.timezones import check_zone
from newsletter.tokens import TokenClaim

MAX_NAME = 200
MAX_EMAIL = 254
MAX_SOURCE = 50  # the column's width

SUBSCRIBED = "subscribed"
CONFIRMED = "confirmed"
REACTIVATED = "reactivated"
UNSUBSCRIBED = "unsubscribed"
BOUNCED = "bounced"
REMOVED = "removed"

LEFT = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED)
"""Readers who left: made active again only with their consent, confirmed by whoever does it."""

# C0 controls except tab, DEL and C1 controls: the characters a terminal acts on. Lone
# surrogates are what undecodable bytes in a command line become; no database stores them.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_OR_TAB = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class InvalidAddressError(UsageError):
    """Raised when an email address is malformed, has a line break, or is not deliverable in form.

    ``reason`` says which (``EMPTY``, ``LINE_BREAK``, ``TOO_LONG`` or ``MALFORMED``) and
    ``detail`` what the validator found, so a form can word its own message without
    taking this one apart.
    """

    EMPTY = "empty"
    LINE_BREAK = "line-break"
    TOO_LONG = "too-long"
    MALFORMED = "malformed"

    def __init__(self, message: str, *, reason: str = MALFORMED, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(message)


class InvalidTextError(UsageError):
    """Raised when a name or source holds control characters or is too long; ``field`` names which."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}")


class NotListedError(UsageError):
    """Raised when addresses (or ids) to act on are not on the list; nothing has been changed."""

    def __init__(self, missing: Sequence[str | int]) -> None:
        self.missing = tuple(missing)
        shown = ", ".join(f"id {m}" if isinstance(m, int) else escape_controls(m) for m in self.missing[:5])
        more = f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
        super().__init__(f"not on the list: {shown}{more}; nothing was changed")


class ConsentRequiredError(UsageError):
    """Raised when re-activating a reader who left is asked for without confirming they agreed to it."""

    def __init__(self, email: str, status: SubscriberStatus) -> None:
        self.email = email
        self.status = status
        super().__init__(
            f"{email} is {status.value}: making them active again needs their consent, confirmed explicitly"
        )


class NotPendingError(UsageError):
    """Raised when a new confirmation link is asked for a reader who is not pending; ``status`` says what they are.

    An active reader has nothing to confirm; one who left comes back only by signing up
    again themselves, so staff cannot send them a link that would do it.
    """

    def __init__(self, email: str, status: SubscriberStatus) -> None:
        self.email = email
        self.status = status
        if status == SubscriberStatus.ACTIVE:
            message = f"{email} is already active: there is nothing to confirm"
        else:
            message = f"{email} is {status.value}: to come back they sign up again through the form themselves"
        super().__init__(escape_controls(message))


def escape_controls(text: str) -> str:
    """``text`` with every control character shown as an escape (ESC as ``\\x1b``), safe to print.

    For output: a row stored before names were checked, or an address echoed back in an
    error, must not be able to retitle or recolour the terminal it is printed on.
    """
    return _CONTROL_OR_TAB.sub(lambda m: ascii(m.group())[1:-1], text)


def _refuse_controls(field: str, text: str) -> None:
    found = _CONTROL.search(text)
    if found is None:
        return
    char = found.group()
    if char in "\r\n":
        raise InvalidTextError(field, "cannot contain line breaks")
    if "\ud800" <= char <= "\udfff":
        raise InvalidTextError(field, "is not valid text (bytes that are not UTF-8)")
    raise InvalidTextError(field, f"cannot contain control characters (found {escape_controls(char)})")


def normalise_email(raw: str, *, check_deliverability: bool = False) -> str:
    """The canonical form of an address, or ``InvalidAddressError`` saying what is wrong with it."""
    if any(c in raw for c in "\r\n\x00"):
        raise InvalidAddressError(
            f"{raw[:80]!r} is not an email address: it contains a line break", reason=InvalidAddressError.LINE_BREAK
        )
    text = raw.strip()
    if not text:
        raise InvalidAddressError("the email address is empty", reason=InvalidAddressError.EMPTY)
    if len(text) > MAX_EMAIL:
        raise InvalidAddressError(
            f"{escape_controls(text[:40])}…: an email address has at most {MAX_EMAIL} characters",
            reason=InvalidAddressError.TOO_LONG,
        )
    try:
        info = validate_email(text, check_deliverability=check_deliverability, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddressError(
            f"{text!r} is not a valid email address: {exc}", reason=InvalidAddressError.MALFORMED, detail=str(exc)
        ) from None
    return (info.ascii_email or info.normalized).lower()


def clean_name(raw: str) -> str:
    """A name as typed, trimmed, with runs of spaces made one; never reordered.

    "Li Wei" stays "Li Wei" and "García, Ana" stays as it is: only the reader knows which
    part is which. A tab becomes a space; any other control character is refused
    (``InvalidTextError``), for the greeting, the To header and every list that shows it.
    """
    text = raw.replace("\t", " ")
    _refuse_controls("a subscriber's name", text)
    name = " ".join(text.split())
    if len(name) > MAX_NAME:
        raise InvalidTextError("a subscriber's name", f"has at most {MAX_NAME} characters")
    return name


def clean_source(raw: str, field: str = "a source") -> str:
    """A source or "who did it" label (``--source``, "admin:ana"), checked like a name."""
    text = raw.strip()
    _refuse_controls(field, text)
    if len(text) > MAX_SOURCE:
        raise InvalidTextError(field, f"has at most {MAX_SOURCE} characters")
    return text


# --- events and status ------------------------------------------------------------------


def record_event(
    session: Session,
    subscriber_id: int | None,
    event: str,
    source: str,
    at: datetime,
    edition_id: int | None = None,
    detail: str = "",
) -> None:
    session.add(
        SubscriberEvent(
            subscriber_id=subscriber_id,
            event=event,
            source=source[:MAX_SOURCE],
            at=at,
            edition_id=edition_id,
            detail=detail,
        )
    )


def _event_for(old: SubscriberStatus, new: SubscriberStatus) -> str | None:
    if new == SubscriberStatus.ACTIVE:
        return CONFIRMED if old == SubscriberStatus.PENDING else REACTIVATED
    return {SubscriberStatus.UNSUBSCRIBED: UNSUBSCRIBED, SubscriberStatus.BOUNCED: BOUNCED}.get(new)


def set_status(
    subscriber: Subscriber, status: SubscriberStatus, clock: Clock, *, source: str = "", edition_id: int | None = None
) -> bool:
    """Change a status and its timestamps, recording the event; returns whether anything changed.

    The event goes into the session the subscriber belongs to, so it commits (or rolls
    back) together with the change. ``edition_id`` names the edition that led to it (the
    one whose unsubscribe link was used), for the edition's report.
    """
    if subscriber.status == status:
        return False
    now = clock.now()
    event = _event_for(subscriber.status, status)
    subscriber.status = status
    subscriber.updated_at = now
    if status == SubscriberStatus.ACTIVE:
        subscriber.confirmed_at = subscriber.confirmed_at or now
        subscriber.unsubscribed_at = None
    elif status == SubscriberStatus.UNSUBSCRIBED:
        subscriber.unsubscribed_at = now
    session = object_session(subscriber)
    if event is not None and session is not None and subscriber.id is not None:
        record_event(session, subscriber.id, event, source, now, edition_id)
    return True


@dataclass(frozen=True)
class AddResult:
    subscriber: Subscriber
    created: bool


def new_subscriber(
    address: str, name: str, status: SubscriberStatus, source: str, now: datetime, timezone: str = ""
) -> Subscriber:
    """A row for a new reader; ``timezone`` is "" (the newsroom's) or a name ``check_zone`` returned."""
    return Subscriber(
        email=address,
        name=name,
        status=status,
        source=source[:MAX_SOURCE],
        timezone=timezone,
        created_at=now,
        updated_at=now,
        confirmed_at=now if status == SubscriberStatus.ACTIVE else None,
    )


def add_subscriber(
    session: Session,
    email: str,
    clock: Clock,
    *,
    name: str = "",
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    source: str = "cli",
    force: bool = False,
    by: str = "",
) -> AddResult:
    """Add a reader, or return the existing one; someone who left stays left unless ``force``.

    ``force`` is staff confirming the reader agreed to come back; the "reactivated" event
    records ``by`` (who did it, "cli:ana") rather than ``source``, when given.
    """
    address = normalise_email(email)
    cleaned = clean_name(name)
    source = clean_source(source)
    who = clean_source(by, "who did it") if by else source
    existing = subscriber_by_email(session, address)
    if existing is None:
        now = clock.now()
        created = insert_subscriber_if_new(session, new_subscriber(address, cleaned, status, source, now))
        if created is not None:
            record_event(
                session, created.id, CONFIRMED if status == SubscriberStatus.ACTIVE else SUBSCRIBED, source, now
            )
            return AddResult(created, created=True)
        existing = subscriber_by_email(session, address)
        assert existing is not None
    if force or (existing.status == SubscriberStatus.PENDING and status == SubscriberStatus.ACTIVE):
        set_status(existing, status, clock, source=who if existing.status in LEFT else source)
    if cleaned and force:
        existing.name = cleaned
    return AddResult(existing, created=False)


def change_status(session: Session, subscriber_id: int, status: SubscriberStatus, clock: Clock, source: str) -> bool:
    """Staff changing one reader's status; ``UsageError`` if there is no such reader."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise UsageError(f"no subscriber with id {subscriber_id}")
    return set_status(subscriber, status, clock, source=source)


def reactivate(session: Session, subscriber_id: int, clock: Clock, *, by: str, confirmed: bool) -> bool:
    """Make a reader active again on behalf of staff; returns whether anything changed.

    Someone who unsubscribed or bounced comes back only with their consent, so unless the
    staff member ``confirmed`` it this raises ``ConsentRequiredError`` and changes nothing.
    ``by`` is who did it, recorded as the event's source ("admin:ana"). A pending reader is
    activated as staff adding them would; an active one is left alone.

    :raises NotListedError: no subscriber has this id.
    """
    who = clean_source(by, "who did it")
    if not who:
        raise InvalidTextError("who did it", "must be given (a staff member's name)")
    subscriber = subscriber_by_id(session, subscriber_id, for_update=True)
    if subscriber is None:
        raise NotListedError([subscriber_id])
    if subscriber.status in LEFT and not confirmed:
        raise ConsentRequiredError(subscriber.email, subscriber.status)
    return set_status(subscriber, SubscriberStatus.ACTIVE, clock, source=who)


@dataclass(frozen=True)
class ZoneChange:
    """A reader's time zone before and after an edit ("" is the newsroom's)."""

    email: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def change_zone(
    session: Session,
    zone: str,
    clock: Clock,
    *,
    field: str,
    email: str | None = None,
    subscriber_id: int | None = None,
) -> ZoneChange:
    """Staff giving one reader (named by address or by id) their own time zone, or taking it away.

    Any status: a pending or departed reader keeps the zone for when they are active. The
    zone is checked before the reader is looked up, so a bad zone is the error whoever
    it was for; ``field`` names where it was typed, for that error.

    :raises ValidationError: ``zone`` is not "" / "none" nor a zone the tz database has.
    :raises NotListedError: nobody on the list has that address or id.
    """
    wanted = check_zone(zone, field)
    if email is not None:
        address = normalise_email(email)
        subscriber = subscribers_by_email(session, [address], for_update=True).get(address)
        missing: str | int = address
    else:
        subscriber = subscriber_by_id(session, subscriber_id or 0, for_update=True)
        missing = subscriber_id or 0
    if subscriber is None:
        raise NotListedError([missing])
    before = subscriber.timezone
    if before != wanted:
        set_timezone(session, subscriber.id, wanted, clock.now())
    return ZoneChange(subscriber.email, before, wanted)


def pending_reader(session: Session, *, email: str | None = None, subscriber_id: int | None = None) -> Subscriber:
    """The pending reader to send a fresh confirmation link, named by address or by id.

    :raises NotListedError: nobody on the list has that address or id.
    :raises NotPendingError: the reader is active, or left (they re-subscribe themselves).
    """
    if email is not None:
        address = normalise_email(email)
        subscriber = subscriber_by_email(session, address)
        missing: str | int = address
    else:
        subscriber = subscriber_by_id(session, subscriber_id or 0)
        missing = subscriber_id or 0
    if subscriber is None:
        raise NotListedError([missing])
    if subscriber.status != SubscriberStatus.PENDING:
        raise NotPendingError(subscriber.email, subscriber.status)
    return subscriber


def _listed(session: Session, emails: Iterable[str], *, for_update: bool = False) -> list[Subscriber]:
    """The subscribers for ``emails``, once each in the order given, or ``NotListedError`` naming the rest.

    Every address is checked before anything changes, so a typo in one of several stops
    the whole command rather than leaving it half done.
    """
    addresses = list(dict.fromkeys(normalise_email(e) for e in emails))
    found = subscribers_by_email(session, addresses, for_update=for_update)
    missing = [a for a in addresses if a not in found]
    if missing:
        raise NotListedError(missing)
    return [found[a] for a in addresses]


@dataclass(frozen=True)
class Unsubscribed:
    email: str
    was: SubscriberStatus  # the status before: UNSUBSCRIBED means there was nothing to do


def unsubscribe_addresses(session: Session, emails: Iterable[str], clock: Clock, *, source: str) -> list[Unsubscribed]:
    """Staff unsubscribing readers: the rows and their history stay, and an event records it.

    All or nothing: ``NotListedError`` if any address is not on the list.
    """
    source = clean_source(source)
    done = []
    for subscriber in _listed(session, emails, for_update=True):
        was = subscriber.status
        set_status(subscriber, SubscriberStatus.UNSUBSCRIBED, clock, source=source)
        done.append(Unsubscribed(subscriber.email, was))
    return done


@dataclass(frozen=True)
class Removed:
    email: str
    skipped: int  # deliveries still to be sent that were skipped instead


def remove_subscribers(session: Session, emails: Iterable[str], clock: Clock, *, source: str) -> list[Removed]:
    """Delete readers (erasure requests), keeping every edition's counts and no trace of the address.

    Their delivery rows stay without a subscriber, so an edition still says it went to as
    many readers as it did; the ones not yet sent are skipped first, in this same
    transaction, or the edition would wait for them for ever. A "removed" event without a
    link keeps the day's count; their clicks stay counted, anonymous. All or nothing:
    ``NotListedError`` if any address is not on the list.
    """
    source = clean_source(source)
    removed = []
    for subscriber in _listed(session, emails, for_update=True):
        email = subscriber.email
        skipped = settle_for_removal(session.connection(), subscriber.id)
        reader_id = subscriber.id
        delete_subscriber(session, subscriber)
        forget_clicks_of(session, reader_id)  # clicks keep counting, but name nobody
        record_event(session, None, REMOVED, source, clock.now())
        removed.append(Removed(email, skipped))
    return removed


def remove_subscriber(session: Session, email: str, clock: Clock, *, source: str = "cli") -> bool:
    """Remove one reader as ``remove_subscribers`` does; False if the address is not on the list."""
    try:
        remove_subscribers(session, [email], clock, source=source)
    except NotListedError:
        return False
    return True


# --- the reader's own actions ------------------------------------------------------------


@dataclass(frozen=True)
class Signup:
    """What a sign-up request led to; the web page shows the same thing whatever it is."""

    subscriber_id: int
    email: str
    send_confirmation: bool


TIMEZONE_FIELD = "timezone"  # the sign-up form's field, named in its errors


def request_subscription(
    session: Session, email: str, clock: Clock, *, name: str = "", source: str = "web", timezone: str = ""
) -> Signup:
    """Record a request to join; the caller mails a confirmation link when ``send_confirmation``.

    A new address becomes pending; a pending one gets its link again; an active one is
    left alone. Someone who unsubscribed or bounced stays so: the request is recorded, and
    only confirming the link it sends makes them active again.

    The reader's ``timezone`` ("" when they gave none) travels with the request: a new
    reader's row holds it from the start, a pending reader's takes the latest one given,
    and for someone who left it waits in the request's event until they confirm (so a
    stranger typing their address cannot move their morning). An active reader's zone is
    never changed from the form, and an empty one never wipes a zone already stored.
    """
    address = normalise_email(email)
    cleaned = clean_name(name)
    source = clean_source(source)
    zone = check_zone(timezone, TIMEZONE_FIELD)
    now = clock.now()
    subscriber = subscriber_by_email(session, address)
    if subscriber is None:
        subscriber = insert_subscriber_if_new(
            session, new_subscriber(address, cleaned, SubscriberStatus.PENDING, source, now, zone)
        ) or subscriber_by_email(session, address)
        assert subscriber is not None
        record_event(session, subscriber.id, SUBSCRIBED, source, now)
        return Signup(subscriber.id, address, send_confirmation=True)
    if subscriber.status == SubscriberStatus.ACTIVE:
        return Signup(subscriber.id, address, send_confirmation=False)
    if subscriber.status == SubscriberStatus.PENDING:
        if zone and zone != subscriber.timezone:
            set_timezone(session, subscriber.id, zone, now)
    else:
        record_event(session, subscriber.id, SUBSCRIBED, source, now, detail=zone)
    return Signup(subscriber.id, address, send_confirmation=True)


class ConfirmResult(enum.StrEnum):
    CONFIRMED = "confirmed"
    REACTIVATED = "reactivated"
    ALREADY = "already"
    STALE = "stale"  # a link from before the reader left, with no request since
    SUPERSEDED = "superseded"  # a link from before the reader left; a newer one went out since
    UNKNOWN = "unknown"  # no such subscriber (removed), or the row is for another address


def subscriber_for(session: Session, claim: TokenClaim) -> Subscriber | None:
    """The subscriber a token names, only if it still has the address the token was made for."""
    if claim.subscriber_id <= 0:
        return None
    subscriber = session.get(Subscriber, claim.subscriber_id)
    return subscriber if subscriber is not None and claim.matches(subscriber.email) else None


def _asked_since_leaving(session: Session, subscriber: Subscriber) -> bool:
    asked = latest_event(session, subscriber.id, SUBSCRIBED)
    left = latest_event(session, subscriber.id, UNSUBSCRIBED, BOUNCED)
    if asked is None:
        return False
    if left is not None:
        return asked.id > left.id
    # Left without an event (a bounce recorded by the send loop): compare times instead.
    return asked.at >= _left_at(session, subscriber)


def _left_at(session: Session, subscriber: Subscriber) -> datetime:
    """When a reader who left last left: their latest leaving event, else the row's own times."""
    left = latest_event(session, subscriber.id, UNSUBSCRIBED, BOUNCED)
    if left is not None:
        return left.at
    return subscriber.unsubscribed_at or subscriber.updated_at


def _issued_before(issued_at: datetime, moment: datetime) -> bool:
    """Whether a token signed at ``issued_at`` predates ``moment``.

    Token stamps are whole seconds, so a token from the same second as ``moment`` counts
    as issued after it: a real departure and a sign-up that follows are never that close.
    """
    return int(issued_at.timestamp()) < int(moment.timestamp())


def confirm_subscription(
    session: Session,
    claim: TokenClaim,
    clock: Clock,
    *,
    source: str = "web",
    issued_at: datetime | None = None,
) -> ConfirmResult:
    """Activate the subscriber a valid confirm token names (double opt-in).

    Someone who left comes back only by a link issued after they left, in answer to a
    request they made since: a link from an older email (kept, forwarded, re-read by a
    scanner) must not undo their leaving just because somebody has signed the address up
    again meanwhile. ``issued_at`` is when the token was signed; callers holding the
    token pass it (without it only the request is checked).
    """
    subscriber = subscriber_for(session, claim)
    if subscriber is None:
        return ConfirmResult.UNKNOWN
    if subscriber.status == SubscriberStatus.ACTIVE:
        return ConfirmResult.ALREADY
    if subscriber.status == SubscriberStatus.PENDING:
        set_status(subscriber, SubscriberStatus.ACTIVE, clock, source=source)
        return ConfirmResult.CONFIRMED
    if not _asked_since_leaving(session, subscriber):
        return ConfirmResult.STALE
    if issued_at is not None and _issued_before(issued_at, _left_at(session, subscriber)):
        return ConfirmResult.SUPERSEDED
    _take_requested_zone(session, subscriber, clock)
    set_status(subscriber, SubscriberStatus.ACTIVE, clock, source=source)
    return ConfirmResult.REACTIVATED


def _take_requested_zone(session: Session, subscriber: Subscriber, clock: Clock) -> None:
    """A returning reader's zone from their latest request, if it gave one the tz database still has.

    A request without a zone (a browser without scripts) keeps the zone they had.
    """
    asked = latest_event(session, subscriber.id, SUBSCRIBED)
    if asked is None or not asked.detail:
        return
    try:
        zone = check_zone(asked.detail, TIMEZONE_FIELD)
    except UsageError:
        return  # removed from tz since the request: keep what they had
    if zone and zone != subscriber.timezone:
        set_timezone(session, subscriber.id, zone, clock.now())


class LeaveResult(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    ALREADY = "already"
    TEST_COPY = "test-copy"  # a token for subscriber 0: an editor's test copy
    NOT_LISTED = "not-listed"


def leave(session: Session, claim: TokenClaim, clock: Clock, *, source: str) -> LeaveResult:
    """Unsubscribe the reader a valid unsubscribe token names; idempotent."""
    if claim.subscriber_id == 0:
        return LeaveResult.TEST_COPY
    subscriber = subscriber_for(session, claim)
    if subscriber is None:
        return LeaveResult.NOT_LISTED
    edition_id = claim.edition_id if claim.edition_id and edition_exists(session, claim.edition_id) else None
    return _leave(subscriber, clock, source, edition_id)


def leave_by_address(session: Session, email: str, clock: Clock, *, source: str) -> LeaveResult:
    """Unsubscribe an address if it is on the list (mailto requests without a token)."""
    subscriber = subscriber_by_email(session, normalise_email(email))
    return LeaveResult.NOT_LISTED if subscriber is None else _leave(subscriber, clock, source)


def _leave(subscriber: Subscriber, clock: Clock, source: str, edition_id: int | None = None) -> LeaveResult:
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        return LeaveResult.ALREADY
    set_status(subscriber, SubscriberStatus.UNSUBSCRIBED, clock, source=source, edition_id=edition_id)
    return LeaveResult.UNSUBSCRIBED


# --- browsing, exporting, counting ---------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of subscribers, with the keys to the pages either side (0: none)."""

    rows: Sequence[Subscriber]
    previous_before: int
    next_after: int


def page_subscribers(
    session: Session,
    *,
    status: SubscriberStatus | None = None,
    search: str = "",
    after_id: int = 0,
    before_id: int = 0,
    size: int = 50,
) -> Page:
    """Keyset paging in id order: each page costs the same however deep in a big list."""
    search = search.strip()
    if before_id:
        rows = subscribers_before(session, before_id, size + 1, status=status, search=search)
        more_before = len(rows) > size
        rows = rows[:size][::-1]
        return Page(rows, rows[0].id if more_before and rows else 0, rows[-1].id if rows else 0)
    rows = subscribers_after(session, after_id, size + 1, status=status, search=search)
    more_after = len(rows) > size
    rows = rows[:size]
    return Page(rows, rows[0].id if after_id and rows else 0, rows[-1].id if more_after else 0)


@dataclass(frozen=True)
class DayCounts:
    day: date
    signups: int = 0
    joined: int = 0
    unsubscribed: int = 0
    bounced: int = 0
    removed: int = 0

    @property
    def left(self) -> int:
        return self.unsubscribed + self.bounced + self.removed


def daily_counts(session: Session, zone: ZoneInfo, today: date, days: int) -> list[DayCounts]:
    """Joins and leaves per local day, oldest first, for the ``days`` days up to ``today``."""
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time(0), zone)
    tally: dict[date, Counter[str]] = {first + timedelta(days=i): Counter() for i in range(days)}
    for event, at in events_since(session, since):
        counter = tally.get(at.astimezone(zone).date())
        if counter is not None:
            counter[event] += 1
    return [
        DayCounts(
            day,
            signups=c[SUBSCRIBED],
            joined=c[CONFIRMED] + c[REACTIVATED],
            unsubscribed=c[UNSUBSCRIBED],
            bounced=c[BOUNCED],
            removed=c[REMOVED],
        )
        for day, c in tally.items()
    ]
