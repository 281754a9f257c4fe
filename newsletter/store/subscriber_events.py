"""The subscribers' history read back: the queries over ``subscriber_events``.

Events are written by ``subscribers.record_event`` in the same transaction as the change
they record. They are read back for two things: the consent rules, which ask what a
reader did last (asked to join, or left), and the joins-and-leaves chart, which counts
what happened since a moment.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.store.models import SubscriberEvent


def latest_event(session: Session, subscriber_id: int, *events: str) -> SubscriberEvent | None:
    """The reader's newest event among ``events``: by id, the order they were written in, as two
    events in the same second would tie on their times."""
    query = (
        select(SubscriberEvent)
        .where(SubscriberEvent.subscriber_id == subscriber_id, SubscriberEvent.event.in_(events))
        .order_by(SubscriberEvent.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def events_since(session: Session, since: datetime) -> Iterable[tuple[str, datetime]]:
    """(event, when) for every event from ``since`` on, in no order: the chart buckets them by local day.

    Only the two columns the chart counts are read, never the reports' diagnostics.
    """
    query = select(SubscriberEvent.event, SubscriberEvent.at).where(SubscriberEvent.at >= since)
    return session.execute(query)


__all__ = ["events_since", "latest_event"]
