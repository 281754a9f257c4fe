"""Editions in the store: found by date, listed for the people and processes that look after them
(the admin's pages, the workers, the scheduler's status), and made or remade while still open.

Each list is one query returning model rows. Which states leave an edition open, its stories
chosen again when it is sent, is ``OPEN_EDITION_STATUSES``; what else a status means, and
what may change it, is decided by the callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, TypeGuard

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from newsletter.errors import ConflictError
from newsletter.store.articles import assign_articles
from newsletter.store.models import Delivery, DeliveryStatus, Edition, EditionStatus


def editions_before(session: Session, before: date | None, limit: int) -> list[Edition]:
    """Up to ``limit`` editions dated before ``before`` (None: from the newest), newest first, in every
    state: the admin pages back through them by date, made, skipped and sent alike."""
    query = select(Edition).order_by(Edition.date.desc()).limit(limit)
    if before is not None:
        query = query.where(Edition.date < before)
    return list(session.scalars(query))


def enqueued_editions(session: Session) -> list[Edition]:
    """Editions being sent whose delivery rows have been made (``enqueued_at`` is set once they are),
    oldest first: the ones a worker claims deliveries from."""
    query = (
        select(Edition)
        .where(Edition.status == EditionStatus.SENDING, Edition.enqueued_at.is_not(None))
        .order_by(Edition.date)
    )
    return list(session.scalars(query))


def any_editions(session: Session) -> bool:
    """Whether any edition was ever made: on a fresh install there is no missed send to report."""
    return (session.scalar(select(func.count()).select_from(Edition)) or 0) > 0


def edition_for(session: Session, day: date) -> Edition | None:
    return session.scalars(select(Edition).where(Edition.date == day)).first()


def previous_edition(session: Session, day: date) -> Edition | None:
    """The latest edition dated before ``day`` that has gone out (or started to): its cutoff
    is where the next window may start. A skipped day sent nothing, so it does not count:
    a story from before it is not "too old" while no edition has gone out since."""
    query = (
        select(Edition)
        .where(Edition.date < day, Edition.status.in_([EditionStatus.SENDING, EditionStatus.SENT]))
        .order_by(Edition.date.desc())
        .limit(1)
    )
    return session.scalars(query).first()


OPEN_EDITION_STATUSES = (EditionStatus.READY, EditionStatus.SKIPPED)
"""An edition in these states has sent nothing yet: its stories are chosen again when it is sent."""


def has_gone_out(edition: Edition | None) -> TypeGuard[Edition]:
    """Whether an edition has started going out, so that its stories are fixed."""
    return edition is not None and edition.status not in OPEN_EDITION_STATUSES


def save_open_edition(
    session: Session, day: date, values: dict[str, Any], article_ids: Sequence[int], existing: Edition | None
) -> Edition:
    """Make the edition for ``day``, or remake one still open, holding exactly these articles.

    In the caller's transaction. The remake is conditional on the edition still being open,
    and the articles are taken only if still free, so a race with another process raises
    ``ConflictError`` and the caller's transaction rolls back whole.
    """
    if existing is None:
        edition = Edition(date=day, **values)
        session.add(edition)
        session.flush()
    else:
        changed = session.execute(
            update(Edition)
            .where(Edition.id == existing.id, Edition.status.in_(OPEN_EDITION_STATUSES), Edition.enqueued_at.is_(None))
            .values(**values)
        )
        if not changed.rowcount:  # type: ignore[attr-defined]
            raise ConflictError(f"the edition of {day} started going out while it was being remade")
        edition = session.get(Edition, existing.id, populate_existing=True)  # type: ignore[assignment]
    if assign_articles(session, edition.id, article_ids) != len(article_ids):
        raise ConflictError(f"another edition took one of the articles of the edition of {day} meanwhile")
    return edition


def list_editions(session: Session, limit: int = 10) -> Sequence[Edition]:
    return session.scalars(select(Edition).order_by(Edition.date.desc()).limit(limit)).all()


def unfinished_editions(session: Session) -> Sequence[Edition]:
    """Editions a crash or a deferral left half-sent, oldest first."""
    query = select(Edition).where(Edition.status == EditionStatus.SENDING).order_by(Edition.date)
    return session.scalars(query).all()


def edition_progress(session: Session, edition_id: int) -> tuple[int, int, datetime | None]:
    """(open now: pending or claimed, deferred, the soonest deferred retry) of an edition being sent."""
    rows = session.execute(
        select(Delivery.status, func.count(), func.min(Delivery.next_attempt_at))
        .where(
            Delivery.edition_id == edition_id,
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.DEFERRED]),
        )
        .group_by(Delivery.status)
    ).all()
    counts = {DeliveryStatus(status): (n, soonest) for status, n, soonest in rows}
    deferred, next_retry = counts.get(DeliveryStatus.DEFERRED, (0, None))
    open_now = sum(counts.get(s, (0, None))[0] for s in (DeliveryStatus.PENDING, DeliveryStatus.SENDING))
    return open_now, deferred, next_retry


__all__ = [
    "OPEN_EDITION_STATUSES",
    "any_editions",
    "edition_for",
    "edition_progress",
    "editions_before",
    "enqueued_editions",
    "has_gone_out",
    "list_editions",
    "previous_edition",
    "save_open_edition",
    "unfinished_editions",
]
