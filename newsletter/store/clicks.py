"""Tracked links in the store: each edition's links by position, readers' clicks on them, and the counts.

An edition's links are written once, when the edition is made, and fixed once it starts
going out: the click endpoint redirects only to a URL found here, so a code can never send
a reader anywhere the edition did not link to. Clicks (and opens, as position 0) arrive in
batches from the web process (``newsletter.clickrecorder``): per batch, one transaction
and one insert statement executed for all its rows at once. The clicks table has no
foreign keys, so writing a click never waits on the rows a send is writing. A click from a
reader since removed is kept, without the reader (``subscriber_id`` NULL): it counts in
totals, never in unique counts.

The counts are read here too, for ``newsletter report`` and the admin's charts: one
query per question, whatever the number of editions asked about.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, case, delete, distinct, func, insert, literal_column, select, update
from sqlalchemy.orm import Session

from newsletter.errors import EditionFrozenError, MessageError, StoreError
from newsletter.store.editions import has_gone_out
from newsletter.store.models import Click, Delivery, Edition, EditionLink, Subscriber
from newsletter.store.readers import LOOKUP_CHUNK, MAX_SUBSCRIBER_ID
from newsletter.tracking import trackable_url

OPEN_POSITION = 0
"""The position an open (the 1×1 image) is recorded at; links are numbered from 1."""
"""The longest link that can be tracked (the column's width); a longer one should go in the mail as it is."""
MAX_ID = 2**31 - 1
"""Ids and positions are INTEGER on PostgreSQL: a larger number names nothing, and must not reach a query."""
INSERT_CHUNK = 1_000
"""Links per INSERT ... VALUES: 3 parameters each, well under SQLite's 32,766 and PostgreSQL's 65,535."""

# Declarative types __table__ as any FromClause (a class may map a join); these map tables.
_C = cast(Table, Click.__table__)
_L = cast(Table, EditionLink.__table__)
_IS_LINK = _C.c.position > literal_column("0")
_IS_OPEN = _C.c.position == literal_column("0")
_INSERT_CLICK = insert(_C)


@dataclass(frozen=True, slots=True)
class ClickRow:
    """One click (or open) to be written: who, on what, and when the request came."""

    edition_id: int
    position: int  # OPEN_POSITION for an open
    subscriber_id: int | None
    at: datetime


@dataclass(frozen=True)
class EditionLinks:
    """An edition's tracked links by position, and whether they can still change."""

    links: dict[int, str]
    fixed: bool  # the edition has started going out: these links are final


@dataclass(frozen=True)
class LinkCount:
    """Clicks on one link of an edition: readers who clicked it, and clicks in all."""

    position: int
    url: str
    unique: int  # readers still on the list who clicked it at least once
    total: int  # every recorded click, including those of readers since removed


@dataclass(frozen=True)
class ClickTotals:
    """One edition's clicks and opens, for a report line or a chart's point."""

    unique_clickers: int  # readers who clicked any link
    clicks: int  # every recorded click on a link
    opens_unique: int  # readers whose copy loaded the open-tracking image (0 with opens off)


# --- an edition's links ---------------------------------------------------------------------


def save_edition_links(session: Session, edition_id: int, urls: Sequence[str]) -> None:
    """Make ``urls`` the edition's links, at positions 1, 2, … in that order. Never commits.

    Idempotent, so the edition can be remade (and this called again) until it goes out:
    the old links are replaced. Once the edition has started going out its links are
    fixed, since readers hold codes naming their positions: the same list again changes
    nothing, a different one raises ``EditionFrozenError``. The edition row is locked
    first on PostgreSQL, so a send starting meanwhile waits for this transaction.

    ``MessageError`` when a URL is not ``trackable_url`` (leave such a link untracked);
    ``StoreError`` when there is no such edition.
    """
    for position, url in enumerate(urls, start=1):
        if not trackable_url(url):
            raise MessageError(f"link {position} of edition {edition_id} cannot be tracked: {url[:80]!r}")
    edition = (
        session.scalars(select(Edition).where(Edition.id == edition_id).with_for_update()).first()
        if 0 < edition_id <= MAX_ID
        else None
    )
    if edition is None:
        raise StoreError(f"no edition has the id {edition_id}: its links cannot be saved")
    wanted = dict(enumerate(urls, start=1))
    if _links_fixed(edition):
        if _links(session, edition_id) != wanted:
            raise EditionFrozenError(edition.date, edition.status.value, "its tracked links cannot change")
        return
    session.execute(delete(EditionLink).where(EditionLink.edition_id == edition_id))
    rows = [{"edition_id": edition_id, "position": p, "url": u} for p, u in wanted.items()]
    for i in range(0, len(rows), INSERT_CHUNK):
        session.execute(insert(EditionLink).values(rows[i : i + INSERT_CHUNK]))


def edition_links(session: Session, edition_id: int) -> EditionLinks | None:
    """The edition's links, or None when there is no such edition (deleted, or a number never used).

    The web process keeps the answer for editions whose links are ``fixed``, so a click
    on an edition that has gone out needs no query at all.
    """
    if not 0 < edition_id <= MAX_ID:
        return None
    edition = session.get(Edition, edition_id)
    if edition is None:
        return None
    return EditionLinks(_links(session, edition_id), _links_fixed(edition))


def _links(session: Session, edition_id: int) -> dict[int, str]:
    rows = session.execute(select(_L.c.position, _L.c.url).where(_L.c.edition_id == edition_id))
    return {position: url for position, url in rows}


def _links_fixed(edition: Edition) -> bool:
    """Links are fixed from the moment deliveries may exist: codes naming positions may be out."""
    return has_gone_out(edition) or edition.enqueued_at is not None


# --- recording clicks -------------------------------------------------------------------------


def sent_times(session: Session, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], datetime]:
    """When each (edition, subscriber)'s copy was sent, for those that have been: the scanner rule's clock.

    One query per edition among the pairs (per 500 readers), through the deliveries'
    unique (edition, subscriber) index. A reader never sent to, or since removed, is absent.
    """
    wanted: dict[int, set[int]] = {}
    for edition_id, subscriber_id in pairs:
        if 0 < edition_id <= MAX_ID and 0 < subscriber_id <= MAX_SUBSCRIBER_ID:
            wanted.setdefault(edition_id, set()).add(subscriber_id)
    found: dict[tuple[int, int], datetime] = {}
    for edition_id, readers in wanted.items():
        ids = sorted(readers)
        for i in range(0, len(ids), LOOKUP_CHUNK):
            # Neither column is NULL in these rows (the WHERE asks for both), whatever their types allow.
            rows = cast(
                "Iterable[tuple[int, datetime]]",
                session.execute(
                    select(Delivery.subscriber_id, Delivery.sent_at).where(
                        Delivery.edition_id == edition_id,
                        Delivery.subscriber_id.in_(ids[i : i + LOOKUP_CHUNK]),
                        Delivery.sent_at.is_not(None),
                    )
                ),
            )
            for subscriber_id, sent_at in rows:
                found[(edition_id, subscriber_id)] = sent_at
    return found


def record_clicks(session: Session, rows: Sequence[ClickRow]) -> int:
    """Write a batch of clicks with one insert statement in the caller's transaction; returns the rows written.

    A click naming a reader who is no longer on the list is written without the reader
    (anonymous), so the link's total still counts it. On PostgreSQL the readers named are
    read ``FOR KEY SHARE``: a removal running meanwhile waits for this transaction, and
    one that has already deleted the row is seen as gone. That lock conflicts only with
    deleting a reader, never with a send, which reads readers and writes deliveries.
    Never commits.
    """
    if not rows:
        return 0
    named = {r.subscriber_id for r in rows if r.subscriber_id is not None and 0 < r.subscriber_id <= MAX_SUBSCRIBER_ID}
    present = _present_subscribers(session, named)
    values = [
        {
            "edition_id": r.edition_id,
            "position": r.position,
            "subscriber_id": r.subscriber_id if r.subscriber_id in present else None,
            "at": r.at,
        }
        for r in rows
        if 0 < r.edition_id <= MAX_ID and 0 <= r.position <= MAX_ID
    ]
    if values:
        # One statement for the batch, compiled once and cached: the driver runs it for
        # every row (SQLite's executemany, psycopg's pipeline) in one call.
        session.connection().execute(_INSERT_CLICK, values)
    return len(values)


def _present_subscribers(session: Session, ids: Collection[int]) -> set[int]:
    present: set[int] = set()
    wanted = sorted(ids)
    for i in range(0, len(wanted), LOOKUP_CHUNK):
        query = select(Subscriber.id).where(Subscriber.id.in_(wanted[i : i + LOOKUP_CHUNK]))
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(key_share=True, read=True)
        present.update(session.scalars(query))
    return present


def forget_clicks_of(session: Session, subscriber_id: int) -> int:
    """Make a reader's clicks anonymous (they stay counted in totals); returns how many. Never commits.

    For removing a reader: there is no foreign key to do it, so call this in the same
    transaction, after the subscriber row is deleted. In that order a batch of clicks
    being written at the same moment either finishes first (and is made anonymous here)
    or waits for the removal and then finds the reader gone.
    """
    if not 0 < subscriber_id <= MAX_SUBSCRIBER_ID:
        return 0
    changed = cast(
        "CursorResult[Any]",  # what an UPDATE returns; Session.execute is typed for any statement
        session.execute(update(Click).where(Click.subscriber_id == subscriber_id).values(subscriber_id=None)),
    )
    return int(changed.rowcount)


# --- reading them back -------------------------------------------------------------------------


def edition_link_counts(session: Session, edition_id: int) -> list[LinkCount]:
    """Every link of the edition with its clicks, most clicked (total) first, ties by position.

    Links nobody clicked are listed with zeros; opens are not links and are left out.
    """
    if not 0 < edition_id <= MAX_ID:
        return []
    counted = (
        select(
            _C.c.position,
            func.count(distinct(_C.c.subscriber_id)).label("unique"),
            func.count().label("total"),
        )
        .where(_C.c.edition_id == edition_id, _IS_LINK)
        .group_by(_C.c.position)
        .subquery()
    )
    total = func.coalesce(counted.c.total, 0)
    query = (
        select(_L.c.position, _L.c.url, func.coalesce(counted.c.unique, 0), total)
        .select_from(_L.outerjoin(counted, counted.c.position == _L.c.position))
        .where(_L.c.edition_id == edition_id)
        .order_by(total.desc(), _L.c.position)
    )
    return [LinkCount(position, url, unique, n) for position, url, unique, n in session.execute(query)]


def unique_clickers(session: Session, edition_id: int) -> int:
    """Readers (still on the list) who clicked at least one link of the edition."""
    if not 0 < edition_id <= MAX_ID:
        return 0
    query = select(func.count(distinct(_C.c.subscriber_id))).where(_C.c.edition_id == edition_id, _IS_LINK)
    return session.scalar(query) or 0


def click_totals(session: Session, edition_ids: Iterable[int]) -> dict[int, ClickTotals]:
    """Clicks and opens of each edition asked about, in one query per 500 editions; zeros for none.

    Every id asked about has an entry, so a caller can index the result without checking.
    """
    asked = list(edition_ids)
    ids = sorted({e for e in asked if 0 < e <= MAX_ID})
    totals = {e: ClickTotals(0, 0, 0) for e in asked}
    clicker = case((_IS_LINK, _C.c.subscriber_id))
    opener = case((_IS_OPEN, _C.c.subscriber_id))
    for i in range(0, len(ids), LOOKUP_CHUNK):
        query = (
            select(
                _C.c.edition_id,
                func.count(distinct(clicker)),
                func.coalesce(func.sum(case((_IS_LINK, 1), else_=0)), 0),
                func.count(distinct(opener)),
            )
            .where(_C.c.edition_id.in_(ids[i : i + LOOKUP_CHUNK]))
            .group_by(_C.c.edition_id)
        )
        for edition_id, clickers, clicks, openers in session.execute(query):
            totals[edition_id] = ClickTotals(clickers, int(clicks), openers)
    return totals
