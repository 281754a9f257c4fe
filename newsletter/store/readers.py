"""Readers and staff in the store: each change to a subscriber row or a staff account as one function.

The subscriber rows a command is about to change are read ``FOR UPDATE`` on PostgreSQL, so
a send enqueuing at the same moment waits for the change instead of adding a delivery for a
row that is going away. (SQLite takes the whole database for each write transaction.)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.store.models import StaffUser, Subscriber, SubscriberEvent, SubscriberStatus

LOOKUP_CHUNK = 500  # addresses per IN (...): well under every driver's parameter limit
MAX_SUBSCRIBER_ID = 2**31 - 1  # the id column's range on PostgreSQL: a larger number names nobody


# --- subscribers --------------------------------------------------------------------------


def subscribers_by_email(
    session: Session, addresses: Collection[str], *, for_update: bool = False
) -> dict[str, Subscriber]:
    """The listed subscribers among ``addresses`` (already normalised), keyed by address.

    ``for_update`` locks the rows until the transaction ends, for a caller about to change them.
    """
    found: dict[str, Subscriber] = {}
    wanted = list(dict.fromkeys(addresses))
    for i in range(0, len(wanted), LOOKUP_CHUNK):
        query = select(Subscriber).where(Subscriber.email.in_(wanted[i : i + LOOKUP_CHUNK]))
        if for_update:
            query = query.with_for_update()
        found.update((s.email, s) for s in session.scalars(query))
    return found


def insert_subscribers(
    session: Session, subscribers: Sequence[Subscriber], event: str, source: str, at: datetime
) -> None:
    """Insert new readers, and one ``event`` each, in the caller's transaction (an import's rows)."""
    session.add_all(subscribers)
    session.flush()
    session.execute(
        insert(SubscriberEvent),
        [{"subscriber_id": s.id, "event": event, "source": source[:50], "at": at} for s in subscribers],
    )


def subscriber_by_id(session: Session, subscriber_id: int, *, for_update: bool = False) -> Subscriber | None:
    """One subscriber by id, locked with ``for_update`` like ``subscribers_by_email``."""
    if not 0 < subscriber_id <= MAX_SUBSCRIBER_ID:
        return None  # PostgreSQL would refuse the comparison rather than find nothing
    query = select(Subscriber).where(Subscriber.id == subscriber_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def set_timezone(session: Session, subscriber_id: int, zone: str, at: datetime) -> bool:
    """Give a reader their own time zone ("" for the newsroom's); False if there is no such reader.

    ``zone`` has been through ``timezones.check_zone``: this stores it as it is. The
    UPDATE takes the row's lock, so a send grouping readers by zone at the same moment
    sees the old zone or the new one, never a mix.
    """
    if not 0 < subscriber_id <= MAX_SUBSCRIBER_ID:
        return False
    changed = session.execute(
        update(Subscriber).where(Subscriber.id == subscriber_id).values(timezone=zone, updated_at=at)
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


def active_zone_counts(session: Session) -> dict[str, int]:
    """Active readers per time zone ("" for the newsroom's), largest first: one grouped query.

    Read from ``ix_subscribers_status_timezone`` alone, without touching the table.
    """
    rows = session.execute(
        select(Subscriber.timezone, func.count())
        .where(Subscriber.status == SubscriberStatus.ACTIVE)
        .group_by(Subscriber.timezone)
    ).all()
    return dict(sorted(((zone, count) for zone, count in rows), key=lambda item: (-item[1], item[0])))


def delete_subscriber(session: Session, subscriber: Subscriber) -> None:
    """Delete the row; the database sets its deliveries' and events' subscriber_id to NULL.

    The caller settles the reader's open deliveries first (see
    ``deliveries.settle_for_removal``): a claim joins subscribers, so an open delivery
    without one would never be sent nor skipped.
    """
    session.execute(delete(Subscriber).where(Subscriber.id == subscriber.id))
    if subscriber in session:
        session.expunge(subscriber)


def subscriber_by_email(session: Session, email: str) -> Subscriber | None:
    return session.scalars(select(Subscriber).where(Subscriber.email == email.lower())).first()


def list_subscribers(
    session: Session,
    *,
    status: SubscriberStatus | None = None,
    search: str = "",
    after_id: int = 0,
    limit: int | None = 100,
) -> Sequence[Subscriber]:
    """A page of subscribers in id order; keyset paging keeps big lists cheap."""
    query = select(Subscriber).where(Subscriber.id > after_id).order_by(Subscriber.id)
    if status is not None:
        query = query.where(Subscriber.status == status)
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(or_(Subscriber.email.like(pattern), func.lower(Subscriber.name).like(pattern)))
    if limit is not None:
        query = query.limit(limit)
    return session.scalars(query).all()


def add_active_subscribers(
    engine: Engine,
    people: Iterable[tuple[str, str] | tuple[str, str, str]],
    source: str,
    now: datetime,
    *,
    chunk: int = 10_000,
) -> int:
    """Insert (email, name) or (email, name, time zone) tuples as active readers, ``chunk`` rows per transaction.

    For seeding (the demo, the benchmarks): addresses must be new and already normal, and
    zones already checked; the list is streamed, so it never sits in memory or in one
    transaction.
    """
    added = 0
    rows: list[dict[str, Any]] = []

    def flush() -> None:
        with engine.begin() as conn:
            conn.execute(insert(Subscriber), rows)

    for email, name, *zone in people:
        rows.append(
            {
                "email": email,
                "name": name,
                "timezone": zone[0] if zone else "",
                "status": SubscriberStatus.ACTIVE,
                "source": source,
                "created_at": now,
                "updated_at": now,
                "confirmed_at": now,
            }
        )
        if len(rows) == chunk:
            flush()
            added += len(rows)
            rows = []
    if rows:
        flush()
        added += len(rows)
    return added


def count_subscribers(session: Session) -> dict[SubscriberStatus, int]:
    rows = session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all()
    counts = dict.fromkeys(SubscriberStatus, 0)
    counts.update({status: n for status, n in rows})
    return counts


# --- staff ----------------------------------------------------------------------------------


def staff_users(session: Session) -> Sequence[StaffUser]:
    """Every staff account, by name."""
    return session.scalars(select(StaffUser).order_by(StaffUser.username)).all()


def staff_user_named(session: Session, username: str) -> StaffUser | None:
    return session.scalars(select(StaffUser).where(StaffUser.username == username)).first()


def set_staff_password_hash(session: Session, username: str, password_hash: str) -> bool:
    """Store a new password hash; False if there is no such user.

    The admin's session stamp is derived from the hash, so every session opened with the
    old password ends with this change.
    """
    changed = session.execute(
        update(StaffUser).where(StaffUser.username == username).values(password_hash=password_hash)
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


def delete_staff_user(session: Session, username: str) -> bool:
    """Delete a staff account; False if there is no such user. Their admin sessions end with the row."""
    deleted = session.execute(delete(StaffUser).where(StaffUser.username == username))
    return bool(deleted.rowcount)  # type: ignore[attr-defined]


def count_staff_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(StaffUser)) or 0


# --- adding one reader, browsing the list ------------------------------------------------------


def insert_subscriber_if_new(session: Session, subscriber: Subscriber) -> Subscriber | None:
    """Insert one new reader, or return None when another process listed the address a moment earlier.

    The insert runs in a savepoint, so losing that race to the unique address leaves the
    caller's transaction usable: it then reads the row the other process added.
    """
    try:
        with session.begin_nested():
            session.add(subscriber)
            session.flush()
    except IntegrityError:
        return None
    return subscriber


def _like(text: str) -> str:
    """A LIKE pattern for ``text`` anywhere, its own %, _ and \\ matched literally."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _browsing(status: SubscriberStatus | None, search: str) -> Select[Subscriber]:
    query = select(Subscriber)
    if status is not None:
        query = query.where(Subscriber.status == status)
    if search:
        pattern = _like(search)
        query = query.where(
            or_(Subscriber.email.like(pattern, escape="\\"), func.lower(Subscriber.name).like(pattern, escape="\\"))
        )
    return query


def subscribers_after(
    session: Session, after_id: int, limit: int, *, status: SubscriberStatus | None = None, search: str = ""
) -> list[Subscriber]:
    """Up to ``limit`` subscribers after ``after_id`` in id order, with ``status`` and ``search`` (in
    the address or name) if given: keyset paging, so a page deep in a big list costs what the first does.
    """
    # Beyond the id range PostgreSQL refuses the comparison instead of finding nothing.
    after_id = min(after_id, MAX_SUBSCRIBER_ID)
    query = _browsing(status, search).where(Subscriber.id > after_id).order_by(Subscriber.id).limit(limit)
    return list(session.scalars(query))


def subscribers_before(
    session: Session, before_id: int, limit: int, *, status: SubscriberStatus | None = None, search: str = ""
) -> list[Subscriber]:
    """Up to ``limit`` subscribers before ``before_id``, nearest first (the page back, read backwards),
    filtered as ``subscribers_after`` is."""
    before_id = min(before_id, MAX_SUBSCRIBER_ID)
    query = _browsing(status, search).where(Subscriber.id < before_id).order_by(Subscriber.id.desc()).limit(limit)
    return list(session.scalars(query))
