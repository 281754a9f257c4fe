"""Editions listed for the people and processes that look after them: the admin's pages, the workers,
the scheduler's status.

Each list is one query returning model rows; what an edition's status means, and what
may change it, is decided by the callers.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.store.models import Edition, EditionStatus


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


__all__ = ["any_editions", "editions_before", "enqueued_editions"]
