"""Tracked links in the store: each edition's links by position, readers' clicks on them, and the counts.

An edition's links are written once, when the edition is made, and fixed once it starts
going out: the click endpoint redirects only to a URL found here, so a code can never send
a reader anywhere the edition did not link to. Clicks (and opens, as position 0) arrive in
batches from the web process (``newsletter.clickrecorder``): per batch, one transaction
and one insert statement executed for all its rows at once. The clicks table has no
foreign keys, so writing a click never waits on the rows a send is writing. A click from a
reader since removed is kept, without the reader (``subscriber_id`` NULL): it counts in
totals, never in unique counts.

The counts are read here too, for ``newsletter report`` and the admin's charts, from two
rollups rather than the raw rows: ``clicks_by_edition`` (readers who clicked, clicks,
readers who opened) and ``clicks_by_link`` (readers and clicks per link). Counting distinct
readers from the raw rows reads every click and open of an edition, 2.2 s for the last
30 editions of a list of a million; the rollups answer in milliseconds. They are never a
cache: ``record_clicks`` adds each batch to them in the batch's own transaction, with the
edition's rollup row locked, so concurrent writers (one per web process) count a reader
once, and ``forget_clicks_of`` takes a removed reader out of the unique counts as it makes
their clicks anonymous. Migration 0016 filled them from the clicks recorded before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Insert,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsletter.errors import EditionFrozenError, MessageError, StoreError
from newsletter.store.editions import has_gone_out
from newsletter.store.models import (
    Click,
    ClicksByEdition,
    ClicksByLink,
    Delivery,
    Edition,
    EditionLink,
    Subscriber,
)
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
_BY_EDITION = cast(Table, ClicksByEdition.__table__)
_BY_LINK = cast(Table, ClicksByLink.__table__)
_INSERT_CLICK = insert(_C)
# A batch's additions (or a removal's subtractions) to its rollup rows, each statement
# executed once for all the rows it changes.
_ADD_TO_EDITION = (
    update(_BY_EDITION)
    .where(_BY_EDITION.c.edition_id == bindparam("edition"))
    .values(
        clickers=_BY_EDITION.c.clickers + bindparam("add_clickers"),
        clicks=_BY_EDITION.c.clicks + bindparam("add_clicks"),
        openers=_BY_EDITION.c.openers + bindparam("add_openers"),
    )
)
_ADD_TO_LINK = (
    update(_BY_LINK)
    .where(_BY_LINK.c.edition_id == bindparam("edition"), _BY_LINK.c.position == bindparam("link"))
    .values(
        readers=_BY_LINK.c.readers + bindparam("add_readers"),
        clicks=_BY_LINK.c.clicks + bindparam("add_clicks"),
    )
)


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
        connection = session.connection()
        # Counted before the rows go in: the unique counts ask who had clicked before.
        _add_to_rollups(connection, values)
        # One statement for the batch, compiled once and cached: the driver runs it for
        # every row (SQLite's executemany, psycopg's pipeline) in one call.
        connection.execute(_INSERT_CLICK, values)
    return len(values)


def _add_to_rollups(connection: Connection, values: Sequence[dict[str, Any]]) -> None:
    """Add a batch of clicks, about to be written, to ``clicks_by_edition`` and ``clicks_by_link``.

    The batch's editions' rollup rows are locked first (``_lock_rollups``), so a reader's
    earlier clicks are all committed and visible when this asks which of the batch's
    readers had clicked before: two writers recording the same reader's first click at
    the same moment count it once, the second after the first has committed. A reader
    clicking twice in one batch is one new reader too.
    """
    editions = sorted({v["edition_id"] for v in values})
    _lock_rollups(connection, editions)
    links = sorted({(v["edition_id"], v["position"]) for v in values if v["position"] != OPEN_POSITION})
    _ensure_link_rows(connection, links)
    named = {(v["edition_id"], v["position"], v["subscriber_id"]) for v in values if v["subscriber_id"] is not None}
    before = _clicked_before(connection, named)
    new = named - before
    link_readers = Counter((e, p) for e, p, _ in new if p != OPEN_POSITION)
    openers = Counter(e for e, p, _ in new if p == OPEN_POSITION)
    clicked_before = {(e, s) for e, p, s in before if p != OPEN_POSITION}
    clickers = Counter(e for e, s in {(e, s) for e, p, s in new if p != OPEN_POSITION} - clicked_before)
    link_clicks = Counter((v["edition_id"], v["position"]) for v in values if v["position"] != OPEN_POSITION)
    edition_clicks = Counter(v["edition_id"] for v in values if v["position"] != OPEN_POSITION)
    if links:
        connection.execute(
            _ADD_TO_LINK,
            [
                {"edition": e, "link": p, "add_readers": link_readers[(e, p)], "add_clicks": link_clicks[(e, p)]}
                for e, p in links
            ],
        )
    connection.execute(
        _ADD_TO_EDITION,
        [
            {"edition": e, "add_clickers": clickers[e], "add_clicks": edition_clicks[e], "add_openers": openers[e]}
            for e in editions
        ],
    )


def _insert_missing(connection: Connection, table: Table) -> Insert:
    """An INSERT that leaves a row whose key is already there as it is (and waits for one being inserted)."""
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    return dialect_insert(table).on_conflict_do_nothing()


def _lock_rollups(connection: Connection, editions: Sequence[int]) -> None:
    """Make sure the editions' ``clicks_by_edition`` rows exist, and lock them until the transaction ends.

    Every writer of an edition's clicks or of its rollups (``record_clicks``,
    ``forget_clicks_of``) takes this lock first, so they take turns per edition. The
    rows are created and locked in id order, so two writers never wait on each other in
    a circle. On SQLite a writing transaction holds the whole database (BEGIN IMMEDIATE)
    and the FOR UPDATE is left out.
    """
    connection.execute(
        _insert_missing(connection, _BY_EDITION),
        [{"edition_id": e, "clickers": 0, "clicks": 0, "openers": 0} for e in editions],
    )
    for i in range(0, len(editions), LOOKUP_CHUNK):
        chunk = editions[i : i + LOOKUP_CHUNK]
        connection.execute(
            select(_BY_EDITION.c.edition_id)
            .where(_BY_EDITION.c.edition_id.in_(chunk))
            .order_by(_BY_EDITION.c.edition_id)
            .with_for_update()
        ).all()


def _ensure_link_rows(connection: Connection, links: Sequence[tuple[int, int]]) -> None:
    """Make sure each (edition, position) has its ``clicks_by_link`` row; its edition's row is locked already."""
    if links:
        connection.execute(
            _insert_missing(connection, _BY_LINK),
            [{"edition_id": e, "position": p, "readers": 0, "clicks": 0} for e, p in links],
        )


def _clicked_before(connection: Connection, named: Collection[tuple[int, int, int]]) -> set[tuple[int, int, int]]:
    """Which of these (edition, position, reader) have a click already, and the readers' other positions there.

    One query per edition (per 500 readers), through the (reader, edition, position) index.
    """
    readers: dict[int, set[int]] = {}
    for edition_id, _, subscriber_id in named:
        readers.setdefault(edition_id, set()).add(subscriber_id)
    found: set[tuple[int, int, int]] = set()
    for edition_id, ids in sorted(readers.items()):
        wanted = sorted(ids)
        for i in range(0, len(wanted), LOOKUP_CHUNK):
            rows = connection.execute(
                select(_C.c.subscriber_id, _C.c.position)
                .where(_C.c.subscriber_id.in_(wanted[i : i + LOOKUP_CHUNK]), _C.c.edition_id == edition_id)
                .distinct()
            )
            found.update((edition_id, position, subscriber_id) for subscriber_id, position in rows)
    return found


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
    or waits for the removal and then finds the reader gone. The reader leaves the unique
    counts of every edition and link they clicked (``clicks_by_edition``,
    ``clicks_by_link``), under the same per-edition locks ``record_clicks`` takes.
    """
    if not 0 < subscriber_id <= MAX_SUBSCRIBER_ID:
        return 0
    connection = session.connection()
    clicked = {
        (edition_id, position)
        for edition_id, position in connection.execute(
            select(_C.c.edition_id, _C.c.position).where(_C.c.subscriber_id == subscriber_id).distinct()
        )
    }
    if not clicked:
        return 0
    editions = sorted({e for e, _ in clicked})
    _lock_rollups(connection, editions)
    changed = cast(
        "CursorResult[Any]",  # what an UPDATE returns; Session.execute is typed for any statement
        session.execute(update(Click).where(Click.subscriber_id == subscriber_id).values(subscriber_id=None)),
    )
    links = sorted((e, p) for e, p in clicked if p != OPEN_POSITION)
    if links:
        connection.execute(
            _ADD_TO_LINK, [{"edition": e, "link": p, "add_readers": -1, "add_clicks": 0} for e, p in links]
        )
    clicker_of = {e for e, _ in links}
    opener_of = {e for e, p in clicked if p == OPEN_POSITION}
    connection.execute(
        _ADD_TO_EDITION,
        [
            {"edition": e, "add_clickers": -int(e in clicker_of), "add_clicks": 0, "add_openers": -int(e in opener_of)}
            for e in editions
        ],
    )
    return int(changed.rowcount)


# --- reading them back -------------------------------------------------------------------------


def edition_link_counts(session: Session, edition_id: int) -> list[LinkCount]:
    """Every link of the edition with its clicks, most clicked (total) first, ties by position.

    Links nobody clicked are listed with zeros; opens are not links and are left out.
    Read from ``clicks_by_link``: one row per link, however many clicks.
    """
    if not 0 < edition_id <= MAX_ID:
        return []
    counted = and_(_BY_LINK.c.edition_id == _L.c.edition_id, _BY_LINK.c.position == _L.c.position)
    total = func.coalesce(_BY_LINK.c.clicks, 0)
    query = (
        select(_L.c.position, _L.c.url, func.coalesce(_BY_LINK.c.readers, 0), total)
        .select_from(_L.outerjoin(_BY_LINK, counted))
        .where(_L.c.edition_id == edition_id)
        .order_by(total.desc(), _L.c.position)
    )
    return [LinkCount(position, url, unique, n) for position, url, unique, n in session.execute(query)]


def unique_clickers(session: Session, edition_id: int) -> int:
    """Readers (still on the list) who clicked at least one link of the edition."""
    if not 0 < edition_id <= MAX_ID:
        return 0
    query = select(_BY_EDITION.c.clickers).where(_BY_EDITION.c.edition_id == edition_id)
    return session.scalar(query) or 0


def click_totals(session: Session, edition_ids: Iterable[int]) -> dict[int, ClickTotals]:
    """Clicks and opens of each edition asked about, in one query per 500 editions; zeros for none.

    Every id asked about has an entry, so a caller can index the result without checking.
    Read from ``clicks_by_edition``: a row per edition, however many clicks and opens.
    """
    asked = list(edition_ids)
    ids = sorted({e for e in asked if 0 < e <= MAX_ID})
    totals = {e: ClickTotals(0, 0, 0) for e in asked}
    for i in range(0, len(ids), LOOKUP_CHUNK):
        query = select(
            _BY_EDITION.c.edition_id, _BY_EDITION.c.clickers, _BY_EDITION.c.clicks, _BY_EDITION.c.openers
        ).where(_BY_EDITION.c.edition_id.in_(ids[i : i + LOOKUP_CHUNK]))
        for edition_id, clickers, clicks, openers in session.execute(query):
            totals[edition_id] = ClickTotals(clickers, clicks, openers)
    return totals
