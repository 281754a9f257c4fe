"""Charts as inline SVG, drawn on the server: no script, no stylesheet of their own, nothing fetched.

The admin's pages forbid scripts and inline styles (``web.security.PAGE_CSP``), so a
chart is plain SVG markup whose look comes from classes in ``site.css`` (``tone-0`` to
``tone-5``, a palette that stays apart for the common colour-vision deficiencies).

Why hand-written rather than a charting library: pygal, the light one, writes its look
into a ``<style>`` element that this CSP refuses, and sizes its text in the units of its
``viewBox``, so a chart scaled down to a phone has 5-pixel labels; matplotlib is tens of
megabytes for the same problem. Here the outer ``<svg>`` has no ``viewBox``: it is as
wide as its box (``width="100%"``) and a fixed number of pixels high, horizontal
positions are percentages and vertical ones pixels, so bars and lines stretch with the
page while text stays at its CSS size at 375 and at 1,200 pixels. Date labels that
would collide on a phone carry the class ``wide``, which ``site.css`` shows only on
wider screens.

Every chart has a ``<title>`` and a ``<desc>`` that says what it shows in words
(``role="img"``), and ``Chart.rows`` carries the numbers for a table beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from xml.sax.saxutils import escape

from markupsafe import Markup

from newsletter.reports import OTHER, EditionFigures, SourceSeries, StatusDay

TOP = 10  # room above the plot for the highest gridline's label, level with its line
AXIS_CHAR = 7  # pixels per character of a gridline's label (12 px Arial digits are about 6.7)
BOTTOM = 24  # room below it for the date labels
LABEL_WIDTH = 76  # pixels a date label and its gap need (about 12 px text, "24 Nov")
NARROW_WIDTH = 280  # the plot's width on a small phone (320 px screen, less the page's margins)
WIDE_WIDTH = 620  # and from 700 px screens up, where ``site.css`` shows the ``wide`` labels
EDGE = 0.12  # labels this close to either end are anchored at the end, not centred, so they stay inside


@dataclass(frozen=True)
class Series:
    """One row of values to draw, with the palette colour (``tone``, 0-5, see site.css) to draw it in."""

    name: str
    values: Sequence[float]
    tone: int = 0


@dataclass(frozen=True)
class Chart:
    """A chart's SVG, what it says in words, and its numbers as table rows (first column: the label)."""

    svg: Markup
    title: str
    description: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    legend: tuple[tuple[str, int], ...]  # (series name, tone) when there is more than one series, else ()
    axis: Markup  # the gridlines' values, drawn to go on the chart's left


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Gridline values from 0 up to at least ``top``, about ``count`` steps of 1, 2, 2.5 or 5 times a power of ten."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(s * power for s in (1, 2, 2.5, 5, 10) if raw <= s * power * (1 + 1e-9))
    steps = math.ceil(top / step - 1e-9)
    return [i * step for i in range(steps + 1)]


def compact_number(value: float) -> str:
    """1,250,000 as "1.25M", 2,500 as "2.5k", 40 as "40": an axis label short enough for a phone."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(value) >= size:
            return f"{value / size:.2f}".rstrip("0").rstrip(".") + suffix
    if value == int(value):
        return f"{int(value)}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def compact_percent(value: float) -> str:
    """0.045 as "4.5%": a rate on an axis."""
    return f"{value * 100:.2f}".rstrip("0").rstrip(".") + "%"


def label_steps(count: int) -> tuple[int, int]:
    """Every how many points a label fits: (on wide screens, on narrow ones), the narrow a multiple of the wide."""
    wide = max(1, math.ceil(count * LABEL_WIDTH / WIDE_WIDTH))
    narrow = max(1, math.ceil(count * LABEL_WIDTH / NARROW_WIDTH))
    narrow = math.ceil(narrow / wide) * wide
    return wide, narrow


def _pct(value: float) -> str:
    return f"{value * 100:.3f}".rstrip("0").rstrip(".") + "%"


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


class _Frame:
    """The drawing area of one chart: maps a point's index to a horizontal fraction and a value to a pixel row."""

    def __init__(self, count: int, top_value: float, height: int) -> None:
        self.count = count
        self.ticks = nice_ticks(top_value)
        self.top_value = self.ticks[-1]
        self.height = height
        self.plot = height - TOP - BOTTOM

    def y(self, value: float) -> float:
        share = value / self.top_value if self.top_value else 0.0
        return TOP + self.plot * (1 - min(max(share, 0.0), 1.0))

    def left(self, index: int) -> float:
        return index / self.count

    def centre(self, index: int) -> float:
        return (index + 0.5) / self.count


def _open(chart_id: str, title: str, description: str, height: int, kind: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" width="100%" height="{height}" '
        f'role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" focusable="false">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
    ]


def _grid(frame: _Frame) -> list[str]:
    lines = ['<g class="grid">']
    for tick in frame.ticks:
        y = _num(frame.y(tick))
        lines.append(f'<line x1="0" x2="100%" y1="{y}" y2="{y}"/>')
    lines.append("</g>")
    return lines


def _axis(frame: _Frame, tick_format: Callable[[float], str]) -> Markup:
    """The gridlines' values, in an SVG of their own beside the chart, right-aligned against it.

    A column of fixed width (from the longest label) keeps them off the bars at any
    width; it is hidden from assistive technology, which has the title, the description
    and the table instead.
    """
    labels = [(frame.y(tick), escape(tick_format(tick))) for tick in frame.ticks]
    width = 8 + AXIS_CHAR * max(len(text) for _, text in labels)
    texts = "".join(f'<text x="{width - 5}" y="{_num(y + 4)}" text-anchor="end">{text}</text>' for y, text in labels)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-axis" width="{width}" height="{frame.height}" '
        f'aria-hidden="true" focusable="false">{texts}</svg>'
    )


def _x_labels(frame: _Frame, labels: Sequence[str], *, centred: bool) -> list[str]:
    """Labels for some points, the latest always; those only wide screens have room for are class ``wide``."""
    wide, narrow = label_steps(len(labels))
    lines = ['<g class="x-labels">']
    y = frame.height - 6
    last = len(labels) - 1
    for index in range(last, -1, -wide):
        where = frame.centre(index) if centred else (index / last if last else 0.5)
        # At the ends, a label is anchored a few pixels inside, so its halo stays in the chart too.
        if where >= 1 - EDGE:
            anchor, x, dx = "end", (frame.left(index + 1) if centred else 1.0), -3
        elif where <= EDGE:
            anchor, x, dx = "start", (frame.left(index) if centred else 0.0), 3
        else:
            anchor, x, dx = "middle", where, 0
        css = "x-label" if (last - index) % narrow == 0 else "x-label wide"
        shift = f' dx="{dx}"' if dx else ""
        text = escape(labels[index])
        lines.append(f'<text class="{css}" x="{_pct(x)}"{shift} y="{y}" text-anchor="{anchor}">{text}</text>')
    lines.append("</g>")
    return lines


def _describe(title: str, labels: Sequence[str], series: Sequence[Series], value_format: Callable[[float], str]) -> str:
    """The chart in words: its span, and for each series its latest, highest and lowest value."""
    if not labels:
        return f"{title}: no data."
    parts = [f"{title}, {len(labels)} points from {labels[0]} to {labels[-1]}."]
    for one in series:
        if not one.values:
            continue
        values = list(one.values)
        high = max(range(len(values)), key=lambda i: (values[i], i))
        low = min(range(len(values)), key=lambda i: (values[i], -i))
        parts.append(
            f"{one.name}: latest {value_format(values[-1])}; highest {value_format(values[high])} "
            f"({labels[high]}); lowest {value_format(values[low])} ({labels[low]})."
        )
    return " ".join(parts)


def _table(
    labels: Sequence[str], series: Sequence[Series], value_format: Callable[[float], str], total: bool
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    columns = ("", *(s.name for s in series), *(("total",) if total else ()))
    rows = []
    for i, label in enumerate(labels):
        values = [s.values[i] for s in series]
        cells = [value_format(v) for v in values]
        if total:
            cells.append(value_format(sum(values)))
        rows.append((label, *cells))
    return columns, tuple(rows)


def bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    full_labels: Sequence[str] | None = None,
    value_format: Callable[[float], str] = lambda v: f"{v:,.0f}",
    tick_format: Callable[[float], str] = compact_number,
    height: int = 200,
) -> Chart:
    """Columns, one per label, the series stacked bottom to top in the order given.

    :param labels: short labels for the axis ("24 Nov"); ``full_labels`` (default the
        same) name the points in the description and the table ("2026-11-24").
    """
    full = list(full_labels or labels)
    count = len(labels)
    sums = [sum(s.values[i] for s in series) for i in range(count)]
    frame = _Frame(count, max(sums, default=0), height)
    description = _describe(title, full, series, value_format)
    parts = _open(chart_id, title, description, height, "bars")
    parts += _grid(frame)
    gap = 0.18 if count <= 60 else 0.0  # narrow bars of a long series touch, like an area
    width = (1 - gap) / count if count else 0
    for one in series:
        parts.append(f'<g class="bars tone-{int(one.tone) % 6}">')
        for i in range(count):
            below = sum(s.values[i] for s in series[: series.index(one)])
            value = one.values[i]
            if value <= 0:
                continue
            top, bottom = frame.y(below + value), frame.y(below)
            x = frame.left(i) + gap / count / 2
            # A touch wider than the slot when bars touch, so no hairline shows between them.
            w = width + (0.0004 if not gap else 0)
            parts.append(
                f'<rect x="{_pct(x)}" width="{_pct(w)}" y="{_num(top)}" height="{_num(max(bottom - top, 0.5))}"/>'
            )
        parts.append("</g>")
    parts += _x_labels(frame, labels, centred=True)
    parts.append("</svg>")
    columns, rows = _table(full, series, value_format, total=len(series) > 1)
    legend = tuple((s.name, s.tone) for s in series) if len(series) > 1 else ()
    return Chart(Markup("".join(parts)), title, description, columns, rows, legend, _axis(frame, tick_format))


def line_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    full_labels: Sequence[str] | None = None,
    value_format: Callable[[float], str] = compact_percent,
    tick_format: Callable[[float], str] = compact_percent,
    height: int = 200,
) -> Chart:
    """A line with a dot per point for each series, points centred on the slots of a ``bar_chart`` of the same labels.

    Centred the same way, a line chart stacked under a bar chart of the same editions
    lines up with it point for point.
    """
    full = list(full_labels or labels)
    count = len(labels)
    frame = _Frame(count, max((v for s in series for v in s.values), default=0), height)
    description = _describe(title, full, series, value_format)
    parts = _open(chart_id, title, description, height, "lines")
    parts += _grid(frame)
    for one in series:
        points = [(_pct(frame.centre(i)), _num(frame.y(v))) for i, v in enumerate(one.values)]
        parts.append(f'<g class="line tone-{int(one.tone) % 6}">')
        for (x1, y1), (x2, y2) in pairwise(points):
            parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"/>')
        for x, y in points:
            parts.append(f'<circle cx="{x}" cy="{y}" r="3"/>')
        parts.append("</g>")
    parts += _x_labels(frame, labels, centred=True)
    parts.append("</svg>")
    columns, rows = _table(full, series, value_format, total=False)
    legend = tuple((s.name, s.tone) for s in series) if len(series) > 1 else ()
    return Chart(Markup("".join(parts)), title, description, columns, rows, legend, _axis(frame, tick_format))


# --- the admin's charts ----------------------------------------------------------------------------


def _short_day(day: date) -> str:
    return f"{day.day} {day.strftime('%b')}"


def edition_charts(editions: Sequence[EditionFigures]) -> list[Chart]:
    """Delivered, click-through rate and unsubscribes of these editions (oldest first), one chart each.

    The three share their horizontal slots, so stacked on a page they line up edition
    for edition.
    """
    if not editions:
        return []
    labels = [_short_day(e.date) for e in editions]
    full = [e.date.isoformat() for e in editions]
    return [
        bar_chart(
            "delivered", "Delivered per edition", labels, [Series("delivered", [e.delivered for e in editions])],
            full_labels=full,
        ),
        line_chart(
            "click-through",
            "Click-through rate per edition",
            labels,
            [Series("click-through rate", [e.click_through_rate for e in editions], tone=3)],
            full_labels=full,
        ),
        bar_chart(
            "unsubscribes",
            "Unsubscribes per edition",
            labels,
            [Series("unsubscribes", [e.unsubscribes for e in editions], tone=2)],
            full_labels=full,
        ),
    ]  # fmt: skip


STATUS_TONES = {"active": 0, "pending": 1, "unsubscribed": 2, "bounced": 3}


def status_chart(history: Sequence[StatusDay]) -> Chart | None:
    """Readers by status at the end of each day, stacked: active at the bottom, those who left on top."""
    if not history:
        return None
    labels = [_short_day(d.day) for d in history]
    series = [Series(status, [d.count(status) for d in history], tone=tone) for status, tone in STATUS_TONES.items()]
    return bar_chart(
        "list-status",
        "Subscribers by status",
        labels,
        series,
        full_labels=[d.day.isoformat() for d in history],
        height=240,
    )


def signups_chart(signups: SourceSeries) -> Chart | None:
    """Sign-ups per day, stacked by source group (the largest at the bottom, "other" on top)."""
    if not signups.days:
        return None
    labels = [_short_day(day) for day in signups.days]
    series = [
        Series(name, list(counts), tone=(4 + i) % 6 if name != OTHER else 2)
        for i, (name, counts) in enumerate(zip(signups.groups, signups.counts, strict=True))
    ]
    return bar_chart(
        "signups",
        "Sign-ups per day by source",
        labels,
        series,
        full_labels=[day.isoformat() for day in signups.days],
        height=240,
    )
