"""The counts behind ``newsletter report`` and the admin's charts, each in a bounded number of queries.

Every query here is sized for a list of a million readers and a year of editions: it
reads an index range (an edition's events, the sign-ups of a few months), never a whole
table, and it never scans the deliveries of many editions. Clicks and opens are read from
the rollups ``store.clicks`` keeps exact as it records them, a row per edition and per
link, never from the raw rows (an edition's opens alone are 200,000). An edition that has
finished sending keeps its delivery counts on its own row (``publish.finish_edition``
writes them, and nothing changes a finished edition's deliveries afterwards), so those
are read there; only an edition still going out is counted live from its deliveries.

The figures themselves (rates, rankings, the list's history) are computed by the pure
functions of ``newsletter.reports`` from what these return.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Date,
    Executable,
    SQLColumnExpression,
    String,
    and_,
    case,
    cast,
    func,
    literal_column,
    outerjoin,
    select,
)
from sqlalchemy.orm import Session

from newsletter.reports import (
    EditionFigures,
    Left,
    SourceSeries,
    StatusDay,
    day_bounds,
    days_between,
    edition_figures,
    offset_segments,
    signups_by_source,
    status_history,
)
from newsletter.store.clicks import click_totals, edition_link_counts
from newsletter.store.deliveries import status_counts
from newsletter.store.models import Edition, EditionStatus, Subscriber, SubscriberEvent, SubscriberStatus
from newsletter.store.readers import LOOKUP_CHUNK, count_subscribers

GONE_OUT = (EditionStatus.SENDING, EditionStatus.SENT)
"""Editions that went out (or are going out): a skipped or unsent day has nothing to report."""
EDITION_EVENTS = ("unsubscribed", "hard_bounce", "soft_bounce", "sender_block", "complaint")
"""The subscriber events counted per edition: readers who left because of it, and what the mailbox said."""
MAX_EDITION_ID = 2**31 - 1

_E = SubscriberEvent
_S = Subscriber


@dataclass(frozen=True)
class EditionRow:
    """An edition as the report needs it: no HTML, which would be megabytes over a year of editions."""

    id: int
    date: date
    subject: str
    status: EditionStatus
    recipients: int
    sent: int
    failed: int
    deferred: int
    skipped: int


_EDITION_COLUMNS = (
    Edition.id,
    Edition.date,
    Edition.subject,
    Edition.status,
    Edition.recipient_count,
    Edition.sent_count,
    Edition.failed_count,
    Edition.deferred_count,
    Edition.skipped_count,
)


def _rows(session: Session, query: Executable) -> list[EditionRow]:
    return [EditionRow(*row) for row in session.execute(query)]


def edition_on(session: Session, day: date) -> EditionRow | None:
    """The edition dated ``day`` whatever its state, or None."""
    found = _rows(session, select(*_EDITION_COLUMNS).where(Edition.date == day))
    return found[0] if found else None


def latest_edition_out(session: Session) -> EditionRow | None:
    """The latest edition that went out (or is going out), or None before the first."""
    query = select(*_EDITION_COLUMNS).where(Edition.status.in_(GONE_OUT)).order_by(Edition.date.desc()).limit(1)
    found = _rows(session, query)
    return found[0] if found else None


def latest_editions_out(session: Session, count: int) -> list[EditionRow]:
    """The ``count`` latest editions that went out, oldest first: the admin's charts."""
    query = select(*_EDITION_COLUMNS).where(Edition.status.in_(GONE_OUT)).order_by(Edition.date.desc()).limit(count)
    return _rows(session, query)[::-1]


def editions_out_between(session: Session, first: date, last: date) -> list[EditionRow]:
    """Editions dated ``first`` to ``last`` that went out, oldest first; skipped and unsent days are left out."""
    query = (
        select(*_EDITION_COLUMNS)
        .where(Edition.date >= first, Edition.date <= last, Edition.status.in_(GONE_OUT))
        .order_by(Edition.date)
    )
    return _rows(session, query)


def _settled(edition: EditionRow) -> tuple[int, int, int, int]:
    return edition.sent, edition.failed, edition.deferred, edition.skipped


def delivery_counts(session: Session, editions: Sequence[EditionRow]) -> dict[int, dict[str, int]]:
    """Deliveries by status per edition: from the edition row once it is sent, counted live while it is going out."""
    counts: dict[int, dict[str, int]] = {}
    for edition in editions:
        if edition.status == EditionStatus.SENT:
            counts[edition.id] = {
                "sent": edition.sent,
                "failed": edition.failed,
                "deferred": edition.deferred,
                "skipped": edition.skipped,
                # Whatever else the stored total holds (nothing, once an edition is sent).
                "pending": max(0, edition.recipients - sum(_settled(edition))),
            }
        else:
            live = status_counts(session.connection(), edition.id)
            counts[edition.id] = {status.value: n for status, n in live.items()}
    return counts


def edition_event_counts(session: Session, edition_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Distinct readers per event (``EDITION_EVENTS``) about each edition, in one query per 500 editions.

    A reader is counted once per kind however many reports they sent, and a reader
    removed since counts as one of their own, as ``store.bounces.edition_feedback`` counts
    them. (That function also counts each edition's delivered mail from its deliveries,
    which over many editions of a large list is millions of rows; the report takes
    delivered from the edition row instead, so it asks the events table directly.)
    """
    wanted = sorted({i for i in edition_ids if 0 < i <= MAX_EDITION_ID})
    counts: dict[int, dict[str, int]] = {i: {} for i in edition_ids}
    reader = func.coalesce(_E.subscriber_id, -_E.id)
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        query = (
            select(_E.edition_id, _E.event, func.count(func.distinct(reader)))
            .where(_E.edition_id.in_(wanted[start : start + LOOKUP_CHUNK]), _E.event.in_(EDITION_EVENTS))
            .group_by(_E.edition_id, _E.event)
        )
        # The edition is never NULL in these rows (the WHERE names the editions), whatever its type allows.
        rows = typing.cast("Iterable[tuple[int, str, int]]", session.execute(query))
        for edition_id, event, readers in rows:
            counts[edition_id][event] = readers
    return counts


def edition_reports(
    session: Session, editions: Sequence[EditionRow], *, opens: bool, with_links: bool = True
) -> list[EditionFigures]:
    """The figures of each edition, in the order given.

    A handful of queries whatever the number of editions, plus one per edition for its
    links when ``with_links`` (the charts do without them).

    :param opens: show unique opens (when opens are tracked); without it the figures
        have no opens.
    """
    ids = [e.id for e in editions]
    deliveries = delivery_counts(session, editions)
    events = edition_event_counts(session, ids)
    clicks = click_totals(session, ids)
    reports = []
    for edition in editions:
        links = (
            [(c.position, c.url, c.unique, c.total) for c in edition_link_counts(session, edition.id)]
            if with_links
            else []
        )
        totals = clicks[edition.id]
        reports.append(
            edition_figures(
                day=edition.date,
                subject=edition.subject,
                status=edition.status.value,
                deliveries=deliveries[edition.id],
                events=events[edition.id],
                unique_clickers=totals.unique_clickers,
                clicks=totals.clicks,
                opens_unique=totals.opens_unique if opens else None,
                links=links,
            )
        )
    return reports


# --- the list over time ------------------------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    """The list over some days: readers by status at the end of each day, and sign-ups by source."""

    history: list[StatusDay]
    signups: SourceSeries


def _local_day(
    session: Session, column: SQLColumnExpression[datetime | None], segments: list[tuple[datetime, int]]
) -> ColumnElement[object]:
    """SQL for the local date of a UTC timestamp column, for rows from the first segment's start on.

    Each stretch of one UTC offset is shifted by its own offset (``reports.offset_segments``),
    so the same query counts by local day on SQLite (which has no time zones) and on
    PostgreSQL. The offsets are whole seconds computed here, written into the SQL as
    numbers: the expression appears once, in a subquery, and the outer query groups by it.
    """
    postgres = session.get_bind().dialect.name == "postgresql"

    def shifted(offset: int) -> ColumnElement:
        if postgres:
            local = func.timezone("UTC", column) + literal_column(f"interval '{int(offset)} seconds'")
            return cast(local, Date)
        return func.date(column, literal_column(f"'{int(offset):+d} seconds'"), type_=String)

    if len(segments) == 1:
        return shifted(segments[0][1])
    whens = [(column < starts, shifted(offset)) for (_, offset), (starts, _) in pairwise(segments)]
    return case(*whens, else_=shifted(segments[-1][1]))


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def list_growth(session: Session, zone: ZoneInfo, first: date, last: date) -> Growth:
    """Readers by status at the end of each local day ``first``..``last`` (the last is today), and sign-ups by source.

    Five queries, each reading an index range of the window, never the whole list:
    today's counts by status, then rows created, confirmed, unsubscribed and bounced in
    the window, by day. ``reports.status_history`` says what the method can and cannot see.
    """
    days = days_between(first, last)
    start, end = day_bounds(zone, first, last)
    segments = offset_segments(zone, start, end)
    now = {status.value: n for status, n in count_subscribers(session).items()}
    signup_rows = _signups_by_day(session, segments, start, end)
    joined: dict[date, int] = {}
    for day, _source, n in signup_rows:
        joined[day] = joined.get(day, 0) + n
    confirmed = _confirmed_by_day(session, segments, start, end)
    left = _unsubscribed_by_day(session, segments, start, end) + _bounced_by_day(session, segments, start, end)
    history = status_history(days, now, joined, confirmed, left)
    return Growth(history, signups_by_source(days, signup_rows))


_IS_UNSUBSCRIBED = _S.status == literal_column(f"'{SubscriberStatus.UNSUBSCRIBED.value}'")
_IS_BOUNCED = _S.status == literal_column(f"'{SubscriberStatus.BOUNCED.value}'")
"""Written as literals, not parameters, so that both databases see a partial index of that status applies."""


def _signups_by_day(
    session: Session, segments: list[tuple[datetime, int]], start: datetime, end: datetime
) -> list[tuple[date, str, int]]:
    """Rows created in ``[start, end)`` by local day and source (index on ``created_at``)."""
    created = (
        select(_local_day(session, _S.created_at, segments).label("day"), _S.source.label("source"))
        .where(_S.created_at >= start, _S.created_at < end)
        .subquery()
    )
    query = select(created.c.day, created.c.source, func.count()).group_by(created.c.day, created.c.source)
    return [(_as_date(day), source, n) for day, source, n in session.execute(query)]


def _confirmed_by_day(
    session: Session, segments: list[tuple[datetime, int]], start: datetime, end: datetime
) -> dict[date, int]:
    """Rows first confirmed in ``[start, end)`` by local day (index on ``confirmed_at`` alone)."""
    confirmed = (
        select(_local_day(session, _S.confirmed_at, segments).label("day"))
        .where(_S.confirmed_at >= start, _S.confirmed_at < end)
        .subquery()
    )
    query = select(confirmed.c.day, func.count()).group_by(confirmed.c.day)
    return {_as_date(day): n for day, n in session.execute(query)}


def _unsubscribed_by_day(
    session: Session, segments: list[tuple[datetime, int]], start: datetime, end: datetime
) -> list[Left]:
    """Readers who unsubscribed in ``[start, end)``, by local day and whether they had confirmed.

    Read from the partial index of unsubscribed readers by ``unsubscribed_at`` alone,
    which holds ``confirmed_at`` too: through the status index instead, SQLite read all
    120,000 unsubscribed rows of a list of a million.
    """
    unsubscribed = (
        select(
            _local_day(session, _S.unsubscribed_at, segments).label("day"),
            _S.confirmed_at.is_not(None).label("confirmed"),
        )
        .where(_IS_UNSUBSCRIBED, _S.unsubscribed_at >= start, _S.unsubscribed_at < end)
        .subquery()
    )
    query = select(unsubscribed.c.day, unsubscribed.c.confirmed, func.count()).group_by(
        unsubscribed.c.day, unsubscribed.c.confirmed
    )
    return [
        Left(_as_date(day), "unsubscribed", bool(was_confirmed), n) for day, was_confirmed, n in session.execute(query)
    ]


def _bounced_by_day(
    session: Session, segments: list[tuple[datetime, int]], start: datetime, end: datetime
) -> list[Left]:
    """Readers who bounced in ``[start, end)``, dated by their latest "bounced" event, by local day and confirmation.

    A reader's row changes when they bounce, so only rows updated since ``start`` can
    have bounced in the window: the partial index of bounced readers by ``updated_at``
    gives those (with ``confirmed_at`` and the id) without reading the table. Each one's
    latest "bounced" event is found once, by a grouped join; as a correlated subquery it
    was looked up again for every mention of the date (the day's CASE names it once per
    offset), on both databases.
    """
    latest = (
        select(
            _S.confirmed_at.is_not(None).label("confirmed"),
            func.coalesce(func.max(_E.at), _S.updated_at).label("at"),
        )
        .select_from(outerjoin(_S, _E, and_(_E.subscriber_id == _S.id, _E.event == "bounced")))
        .where(_IS_BOUNCED, _S.updated_at >= start)
        .group_by(_S.id, _S.confirmed_at, _S.updated_at)
        .subquery()
    )
    bounced = (
        select(_local_day(session, latest.c.at, segments).label("day"), latest.c.confirmed)
        .where(latest.c.at >= start, latest.c.at < end)
        .subquery()
    )
    query = select(bounced.c.day, bounced.c.confirmed, func.count()).group_by(bounced.c.day, bounced.c.confirmed)
    return [Left(_as_date(day), "bounced", bool(was_confirmed), n) for day, was_confirmed, n in session.execute(query)]


def report_window(today: date, days: int) -> tuple[date, date]:
    """The ``days`` local days ending today, as (first, last)."""
    return today - timedelta(days=days - 1), today
