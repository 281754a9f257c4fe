"""What an edition did, and how the list grew: figures computed from plain counts, and their wording.

Nothing here touches the database or the clock. ``newsletter.store.reports`` gathers the
counts (deliveries, events, clicks, subscriber timestamps) and hands them to these
functions; the ``report`` command and the admin pages only format what comes back. So a
rate has one definition, tested directly on numbers, whichever screen shows it.

Definitions, the same everywhere:

- *delivered* is the mail the receiving servers accepted (deliveries ``sent``), as in
  ``status`` and the bounce figures; a bounce that comes back later is counted under
  bounces, not taken off delivered.
- *click-through rate* is unique clickers over delivered; *complaint rate* and
  *unsubscribe rate* are over delivered too. Each is 0 when nothing was delivered.
- *unique clickers* are distinct readers with a click on any link (opens are position 0
  and never count as clicks). A click whose reader was removed since stays in the totals
  but cannot be told apart from another's, so it adds to no unique count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

URL_WIDTH = 60  # a shortened link in the text report
OTHER = "other"
NO_SOURCE = "(none)"
SOURCE_GROUPS = 4  # sources charted by name; the rest are "other"


def rate(part: int, whole: int) -> float:
    """``part / whole``, or 0.0 when ``whole`` is 0: an edition that delivered nothing has no rates."""
    return part / whole if whole > 0 else 0.0


def percent(value: float, decimals: int = 2) -> str:
    """'4.14 %': two decimals by default, since the thresholds that matter are tenths of a percent."""
    return f"{value * 100:.{decimals}f} %"


# --- one edition -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkFigures:
    """One link of an edition and how often it was followed."""

    position: int
    url: str
    unique: int  # distinct readers
    total: int  # every recorded click


@dataclass(frozen=True)
class EditionFigures:
    """Everything the report says about one edition; rates are properties, so they cannot disagree."""

    date: date
    subject: str
    status: str
    readers: int  # deliveries made for the edition, whatever became of them
    sent: int
    deferred: int
    failed: int
    skipped: int
    unsent: int  # pending or in flight: the edition is still going out
    hard_bounces: int
    soft_bounces: int
    sender_rejections: int
    complaints: int
    unsubscribes: int
    unique_clickers: int
    clicks: int
    opens_unique: int | None  # None when opens are not tracked
    links: tuple[LinkFigures, ...] = field(default=())

    @property
    def delivered(self) -> int:
        return self.sent

    @property
    def click_through_rate(self) -> float:
        return rate(self.unique_clickers, self.delivered)

    @property
    def complaint_rate(self) -> float:
        return rate(self.complaints, self.delivered)

    @property
    def unsubscribe_rate(self) -> float:
        return rate(self.unsubscribes, self.delivered)

    @property
    def open_rate(self) -> float | None:
        return None if self.opens_unique is None else rate(self.opens_unique, self.delivered)


def rank_links(links: Iterable[tuple[int, str, int, int]]) -> tuple[LinkFigures, ...]:
    """(position, url, unique, total) rows as links, most clicked first.

    Most clicks first, then most readers, then the order in the edition: a tie keeps the
    reading order, so the ranking is stable from one run to the next.
    """
    ranked = sorted(links, key=lambda row: (-row[3], -row[2], row[0]))
    return tuple(LinkFigures(position, url, unique, total) for position, url, unique, total in ranked)


def edition_figures(
    *,
    day: date,
    subject: str,
    status: str,
    deliveries: Mapping[str, int],
    events: Mapping[str, int],
    unique_clickers: int,
    clicks: int,
    opens_unique: int | None,
    links: Iterable[tuple[int, str, int, int]] = (),
) -> EditionFigures:
    """An edition's figures from its counts.

    :param deliveries: deliveries by status ("sent", "failed", ...); missing ones are 0.
    :param events: distinct readers per subscriber event about this edition
        ("unsubscribed", "hard_bounce", "soft_bounce", "sender_block", "complaint").
    :param opens_unique: distinct readers who opened it, or None when opens are not tracked.
    """
    count = {key: max(0, int(value)) for key, value in deliveries.items()}
    return EditionFigures(
        date=day,
        subject=subject,
        status=status,
        readers=sum(count.values()),
        sent=count.get("sent", 0),
        deferred=count.get("deferred", 0),
        failed=count.get("failed", 0),
        skipped=count.get("skipped", 0),
        unsent=count.get("pending", 0) + count.get("sending", 0),
        hard_bounces=events.get("hard_bounce", 0),
        soft_bounces=events.get("soft_bounce", 0),
        sender_rejections=events.get("sender_block", 0),
        complaints=events.get("complaint", 0),
        unsubscribes=events.get("unsubscribed", 0),
        unique_clickers=unique_clickers,
        clicks=clicks,
        opens_unique=opens_unique,
        links=rank_links(links),
    )


def figures_json(figures: EditionFigures) -> dict[str, Any]:
    """The JSON object of one edition: counts as integers, rates as fractions (0.0414), links whole."""
    data: dict[str, Any] = {
        "date": figures.date.isoformat(),
        "subject": figures.subject,
        "status": figures.status,
        "readers": figures.readers,
        "sent": figures.sent,
        "deferred": figures.deferred,
        "failed": figures.failed,
        "skipped": figures.skipped,
        "unsent": figures.unsent,
        "delivered": figures.delivered,
        "hard_bounces": figures.hard_bounces,
        "soft_bounces": figures.soft_bounces,
        "sender_rejections": figures.sender_rejections,
        "complaints": figures.complaints,
        "complaint_rate": round(figures.complaint_rate, 6),
        "unsubscribes": figures.unsubscribes,
        "unsubscribe_rate": round(figures.unsubscribe_rate, 6),
        "unique_clickers": figures.unique_clickers,
        "clicks": figures.clicks,
        "click_through_rate": round(figures.click_through_rate, 6),
    }
    if figures.opens_unique is not None:
        data["opens_unique"] = figures.opens_unique
        data["open_rate"] = round(figures.open_rate or 0.0, 6)
    data["links"] = [{"url": link.url, "unique": link.unique, "total": link.total} for link in figures.links]
    return data


def shorten_url(url: str, width: int = URL_WIDTH) -> str:
    """A link as a person scans it in a terminal: no scheme, no "www.", no query, the middle cut.

    The host and the end of the path are what tell two stories apart, so the cut, marked
    "…", falls in the middle; a query string is shown as "?…". The result is at most
    ``width`` characters (``width`` is at least 10).
    """
    width = max(width, 10)
    text = " ".join(url.split())  # a stored URL has no spaces; never let one break a column
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if parts is not None and parts.netloc:
        host = parts.netloc.removeprefix("www.")
        path = parts.path.rstrip("/") if parts.path != "/" else ""
        text = host + path + ("?…" if parts.query else "")
    if len(text) <= width:
        return text
    keep = width - 1
    head = keep // 2 + keep % 2
    return text[:head] + "…" + text[len(text) - (keep - head) :]


def report_lines(figures: EditionFigures, *, url_width: int = URL_WIDTH) -> list[str]:
    """The text report of one edition, a line per figure, then its links, most clicked first."""
    f = figures
    lines = [f"edition of {f.date.isoformat()} ({f.status}): {f.subject}"]
    sent = [f"{f.sent:,} sent", f"{f.deferred:,} deferred", f"{f.failed:,} failed"]
    if f.skipped:
        sent.append(f"{f.skipped:,} skipped")
    if f.unsent:
        sent.append(f"{f.unsent:,} still to send")
    lines.append(f"  readers:      {f.readers:,}: " + ", ".join(sent))
    lines.append(
        f"  bounced:      {f.hard_bounces:,} hard, {f.soft_bounces:,} soft"
        + (f", {f.sender_rejections:,} refused because of the sender" if f.sender_rejections else "")
    )
    lines.append(f"  complaints:   {f.complaints:,} ({percent(f.complaint_rate)} of {f.delivered:,} delivered)")
    lines.append(f"  unsubscribes: {f.unsubscribes:,} ({percent(f.unsubscribe_rate)})")
    lines.append(
        f"  clicks:       {f.unique_clickers:,} {_readers(f.unique_clickers)} clicked "
        f"({percent(f.click_through_rate)} click-through), {f.clicks:,} {_plural(f.clicks, 'click')} in all"
    )
    if f.opens_unique is not None:
        lines.append(f"  opens:        {f.opens_unique:,} {_readers(f.opens_unique)} ({percent(f.open_rate or 0.0)})")
    if not f.links:
        lines.append("  links:        none recorded")
        return lines
    lines.append(f"  links, most clicked first ({len(f.links)}):")
    rank_width = len(str(len(f.links)))
    lines.append(f"    {'':>{rank_width}}  {'readers':>7} {'clicks':>7}  link")
    for rank, link in enumerate(f.links, 1):
        lines.append(
            f"    {rank:>{rank_width}}  {link.unique:>7,} {link.total:>7,}  {shorten_url(link.url, url_width)}"
        )
    return lines


SUMMARY_HEADER = (
    f"{'date':<10} {'readers':>9} {'sent':>9} {'failed':>7} {'bounced':>7} {'compl.':>6} {'unsub.':>6} "
    f"{'clickers':>8} {'CTR':>7} {'clicks':>8}"
)


def summary_line(figures: EditionFigures) -> str:
    """One edition in one line, under ``SUMMARY_HEADER``: for ``report --days``."""
    f = figures
    ctr = f"{f.click_through_rate * 100:.2f}%"
    return (
        f"{f.date.isoformat():<10} {f.readers:>9,} {f.sent:>9,} {f.failed:>7,} "
        f"{f.hard_bounces + f.soft_bounces:>7,} {f.complaints:>6,} {f.unsubscribes:>6,} "
        f"{f.unique_clickers:>8,} {ctr:>7} {f.clicks:>8,}"
    )


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def _readers(n: int) -> str:
    return "reader" if n == 1 else "readers"


# --- days in the newsletter's time zone ----------------------------------------------------------


def day_bounds(zone: ZoneInfo, first: date, last: date) -> tuple[datetime, datetime]:
    """The UTC instants where local day ``first`` starts and local day ``last`` ends."""
    start = datetime.combine(first, datetime.min.time(), zone).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
    return start, end


def offset_segments(zone: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """The stretches of ``[start, end)`` with one UTC offset: (where each starts, in UTC; offset in seconds).

    Counting by local day in SQL needs the offset of each timestamp, and neither SQLite
    nor a portable query knows time zones; but over a few months a zone changes offset
    only a handful of times, so a query can shift each stretch by its own offset. The
    changes are found to the minute (every real one falls on a whole minute).
    """
    segments = [(start, _offset(zone, start))]
    step = timedelta(hours=1)
    here = start
    while here < end:
        there = min(here + step, end)
        if _offset(zone, there) != segments[-1][1] and there < end:
            low, high = here, there  # the offset changes somewhere in (low, high]
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                middle = middle.replace(second=0, microsecond=0)
                if middle <= low:
                    break
                if _offset(zone, middle) == segments[-1][1]:
                    low = middle
                else:
                    high = middle
            segments.append((high, _offset(zone, high)))
        here = there
    return segments


def _offset(zone: ZoneInfo, moment: datetime) -> int:
    offset = moment.astimezone(zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# --- the list over time ----------------------------------------------------------------------------

STATUSES = ("active", "pending", "unsubscribed", "bounced")


@dataclass(frozen=True)
class StatusDay:
    """How many readers were in each status at the end of one local day."""

    day: date
    active: int
    pending: int
    unsubscribed: int
    bounced: int

    def count(self, status: str) -> int:
        value: int = getattr(self, status)
        return value


@dataclass(frozen=True)
class Left:
    """Readers who left (unsubscribed or bounced) on one day: ``confirmed`` tells from which status."""

    day: date
    status: str  # "unsubscribed" | "bounced"
    confirmed: bool  # they had confirmed, so they left "active"; else they left "pending"
    count: int


def status_history(
    days: Sequence[date],
    now: Mapping[str, int],
    joined: Mapping[date, int],
    confirmed: Mapping[date, int],
    left: Iterable[Left],
) -> list[StatusDay]:
    """Readers by status at the end of each day, walked back from today's exact counts.

    Each subscriber row is taken to have been pending from ``created_at``, active from
    ``confirmed_at`` and in its present status (unsubscribed or bounced) from when it
    left. Today's counts are exact, so a day's state is today's minus every change after
    that day. What this cannot see: a reader who left and came back shows as active all
    along; a removed reader is gone from every day (an erasure erases their history); and
    a reader who bounced is dated by their latest "bounced" event. Counts never go below 0.

    :param days: consecutive days, oldest first, ending today.
    :param now: the present count per status ("active", "pending", ...).
    :param joined: rows created on each day (of ``days``).
    :param confirmed: rows first confirmed on each day.
    :param left: rows that left on each day, by status and whether they had confirmed.
    """
    state = {status: now.get(status, 0) for status in STATUSES}
    leaving: dict[date, list[Left]] = {}
    for row in left:
        leaving.setdefault(row.day, []).append(row)
    history = []
    for day in reversed(days):
        history.append(StatusDay(day, **{status: max(0, n) for status, n in state.items()}))
        # Undo this day's changes: what remains is the state at the end of the day before.
        state["pending"] -= joined.get(day, 0)
        state["pending"] += confirmed.get(day, 0)
        state["active"] -= confirmed.get(day, 0)
        for row in leaving.get(day, ()):
            state[row.status] -= row.count
            state["active" if row.confirmed else "pending"] += row.count
    history.reverse()
    return history


def source_family(source: str) -> str:
    """What a sign-up's source is an instance of: "article:/2026/11/story" is "article", "admin:ana" is "admin"."""
    family = source.split(":", 1)[0].strip()
    return family or NO_SOURCE


@dataclass(frozen=True)
class SourceSeries:
    """Sign-ups per day by source group, groups largest first with "other" last."""

    days: tuple[date, ...]
    groups: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]  # counts[g][d]: group g on day d
    top_sources: tuple[tuple[str, int], ...]  # the exact sources with most sign-ups

    def total(self, group: int) -> int:
        return sum(self.counts[group])


def signups_by_source(
    days: Sequence[date], rows: Iterable[tuple[date, str, int]], *, groups: int = SOURCE_GROUPS, top: int = 10
) -> SourceSeries:
    """(day, source, count) rows as a few groups: the ``groups`` largest source families, then "other".

    Sources name where a reader signed up, and article pages give one source each
    ("article:/2026/11/story"), so exact sources are too many to chart: they are grouped
    by family (the part before ":"). The exact ones that brought most readers are kept in
    ``top_sources`` for a table.
    """
    index = {day: i for i, day in enumerate(days)}
    by_family: dict[str, list[int]] = {}
    by_source: dict[str, int] = {}
    for day, source, count in rows:
        if day not in index:
            continue
        series = by_family.setdefault(source_family(source), [0] * len(days))
        series[index[day]] += count
        by_source[source or NO_SOURCE] = by_source.get(source or NO_SOURCE, 0) + count
    ranked = sorted(by_family, key=lambda name: (-sum(by_family[name]), name))
    named = [name for name in ranked if name != OTHER][:groups] if len(ranked) > groups + 1 else ranked
    rest = [name for name in ranked if name not in named]
    names = list(named)
    counts = [tuple(by_family[name]) for name in named]
    if rest:
        names.append(OTHER)
        counts.append(tuple(sum(by_family[name][i] for name in rest) for i in range(len(days))))
    best = sorted(by_source.items(), key=lambda item: (-item[1], item[0]))[:top]
    return SourceSeries(tuple(days), tuple(names), tuple(counts), tuple(best))
