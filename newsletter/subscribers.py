"""The subscriber list: validating and normalising addresses, adding, changing status.

Addresses are validated with email-validator without DNS lookups (nothing here may reach
the network by default) and stored lower-cased, so "Ana@Example.org" and "ana@example.org"
are one reader. Status changes go through ``set_status`` so timestamps stay truthful.
"""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.orm import Session

from newsletter.clock import Clock
from newsletter.errors import UsageError
from newsletter.store.models import Subscriber, SubscriberStatus
from newsletter.store.store import subscriber_by_email

MAX_NAME = 200


class InvalidAddressError(UsageError):
    """Raised when an email address is malformed, has a line break, or is not deliverable in form."""


def normalise_email(raw: str, *, check_deliverability: bool = False) -> str:
    """The canonical form of an address, or ``InvalidAddressError`` saying what is wrong with it."""
    if any(c in raw for c in "\r\n\x00"):
        raise InvalidAddressError(f"{raw[:80]!r} is not an email address: it contains a line break")
    text = raw.strip()
    if not text:
        raise InvalidAddressError("the email address is empty")
    if len(text) > 254:
        raise InvalidAddressError(f"{text[:40]}…: an email address has at most 254 characters")
    try:
        info = validate_email(text, check_deliverability=check_deliverability, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddressError(f"{text!r} is not a valid email address: {exc}") from None
    return (info.ascii_email or info.normalized).lower()


def clean_name(raw: str) -> str:
    if any(c in raw for c in "\r\n\x00"):
        raise UsageError("a subscriber's name cannot contain line breaks")
    name = " ".join(raw.split())
    if len(name) > MAX_NAME:
        raise UsageError(f"a subscriber's name has at most {MAX_NAME} characters")
    return name


@dataclass(frozen=True)
class AddResult:
    subscriber: Subscriber
    created: bool


def add_subscriber(
    session: Session,
    email: str,
    clock: Clock,
    *,
    name: str = "",
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    source: str = "cli",
    force: bool = False,
) -> AddResult:
    """Add a reader, or return the existing one; someone who left stays left unless ``force``."""
    address = normalise_email(email)
    now = clock.now()
    existing = subscriber_by_email(session, address)
    if existing is not None:
        if force or (existing.status == SubscriberStatus.PENDING and status == SubscriberStatus.ACTIVE):
            set_status(existing, status, clock)
        if name and force:
            existing.name = clean_name(name)
        return AddResult(existing, created=False)
    subscriber = Subscriber(
        email=address,
        name=clean_name(name),
        status=status,
        source=source,
        created_at=now,
        updated_at=now,
        confirmed_at=now if status == SubscriberStatus.ACTIVE else None,
    )
    session.add(subscriber)
    session.flush()
    return AddResult(subscriber, created=True)


def set_status(subscriber: Subscriber, status: SubscriberStatus, clock: Clock) -> bool:
    """Change a status and its timestamps; returns whether anything changed."""
    if subscriber.status == status:
        return False
    now = clock.now()
    subscriber.status = status
    subscriber.updated_at = now
    if status == SubscriberStatus.ACTIVE:
        subscriber.confirmed_at = subscriber.confirmed_at or now
        subscriber.unsubscribed_at = None
    elif status == SubscriberStatus.UNSUBSCRIBED:
        subscriber.unsubscribed_at = now
    return True
