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

    Four queries: today's counts by status, rows created in the window by day and source
    (index on ``created_at``), rows confirmed by day (index on ``confirmed_at``), and rows
    that left by day, status and whether they had confirmed (readers who unsubscribed, by
    the index on ``unsubscribed_at``; readers who bounced, through the status index, dated
    by their latest "bounced" event). ``reports.status_history`` says what the method can
    and cannot see.
    """
    days = days_between(first, last)
    start, end = day_bounds(zone, first, last)
    segments = offset_segments(zone, start, end)
    now = {status.value: n for status, n in count_subscribers(session).items()}

    created = (
        select(_local_day(session, _S.created_at, segments).label("day"), _S.source.label("source"))
        .where(_S.created_at >= start, _S.created_at < end)
        .subquery()
    )
    signup_rows = [
        (_as_date(day), source, n)
        for day, source, n in session.execute(
            select(created.c.day, created.c.source, func.count()).group_by(created.c.day, created.c.source)
        )
    ]
    joined: dict[date, int] = {}
    for day, _source, n in signup_rows:
        joined[day] = joined.get(day, 0) + n

    confirmed_q = (
        select(_local_day(session, _S.confirmed_at, segments).label("day"))
        .where(_S.confirmed_at >= start, _S.confirmed_at < end)
        .subquery()
    )
    confirmed = {
        _as_date(day): n
        for day, n in session.execute(select(confirmed_q.c.day, func.count()).group_by(confirmed_q.c.day))
    }

    left: list[Left] = []
    unsubscribed = (
        select(
            _local_day(session, _S.unsubscribed_at, segments).label("day"),
            _S.confirmed_at.is_not(None).label("confirmed"),
        )
        .where(
            _S.unsubscribed_at >= start,
            _S.unsubscribed_at < end,
            _S.status == SubscriberStatus.UNSUBSCRIBED,
        )
        .subquery()
    )
    for day, was_confirmed, n in session.execute(
        select(unsubscribed.c.day, unsubscribed.c.confirmed, func.count()).group_by(
            unsubscribed.c.day, unsubscribed.c.confirmed
        )
    ):
        left.append(Left(_as_date(day), "unsubscribed", bool(was_confirmed), n))

    latest_bounce = (
        select(func.max(_E.at)).where(_E.subscriber_id == _S.id, _E.event == "bounced").correlate(_S).scalar_subquery()
    )
    bounced_at = func.coalesce(latest_bounce, _S.updated_at)
    bounced_rows = (
        select(bounced_at.label("at"), _S.confirmed_at.is_not(None).label("confirmed"))
        .where(_S.status == SubscriberStatus.BOUNCED, _S.updated_at >= start)
        .subquery()
    )
    bounced = (
        select(_local_day(session, bounced_rows.c.at, segments).label("day"), bounced_rows.c.confirmed)
        .where(and_(bounced_rows.c.at >= start, bounced_rows.c.at < end))
        .subquery()
    )
    for day, was_confirmed, n in session.execute(
        select(bounced.c.day, bounced.c.confirmed, func.count()).group_by(bounced.c.day, bounced.c.confirmed)
    ):
        left.append(Left(_as_date(day), "bounced", bool(was_confirmed), n))

    history = status_history(days, now, joined, confirmed, left)
    return Growth(history, signups_by_source(days, signup_rows))


def report_window(today: date, days: int) -> tuple[date, date]:
    """The ``days`` local days ending today, as (first, last)."""
    return today - timedelta(days=days - 1), today
