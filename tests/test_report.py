"""`newsletter report` and the admin's charts: figures on seeded editions, their wording, the SVG they draw.

The figures are tested three ways: the pure functions on plain numbers; the store's
counts on a seeded edition (deliveries, clicks, opens, bounces, complaints, unsubscribes
that name the edition) on SQLite and PostgreSQL, read back through the command's text
and JSON; and the admin's overview and edition pages that show them.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from newsletter import charts
from newsletter.cli import cli
from newsletter.clock import FixedClock
from newsletter.reports import (
    Left,
    edition_figures,
    figures_json,
    offset_segments,
    rank_links,
    rate,
    report_lines,
    shorten_url,
    signups_by_source,
    source_family,
    status_history,
    summary_line,
)
from newsletter.store import Store
from newsletter.store import deliveries as delivery_log
from newsletter.store.clicks import ClickRow, record_clicks
from newsletter.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionLink,
    EditionStatus,
    Subscriber,
    SubscriberEvent,
    SubscriberStatus,
)
from newsletter.store.reports import list_growth
from tests.conftest import add_subscribers
from tests.test_cli import write_config
from tests.test_web_admin import app, staff  # noqa: F401 - fixtures: the admin app and a logged-in client

LONDON = ZoneInfo("Europe/London")
SVG = "{http://www.w3.org/2000/svg}"
REQUIRED_KEYS = {"date", "readers", "sent", "unique_clickers", "clicks", "unsubscribes", "links"}


# --- seeding ------------------------------------------------------------------------------------


def seed_edition(
    store: Store,
    day: date,
    *,
    statuses: list[DeliveryStatus],
    links: list[str],
    clicks: list[tuple[int, int | None]] = (),  # type: ignore[assignment]
    events: list[tuple[str, int | None]] = (),  # type: ignore[assignment]
    status: EditionStatus = EditionStatus.SENT,
) -> int:
    """An edition of ``day`` with a delivery per status given (readers 1, 2, ... in order), its links and clicks.

    Its stored counts are the live ones, as ``publish.finish_edition`` leaves a sent edition.
    """
    at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=6)
    with store.session() as session:
        edition = Edition(
            date=day,
            window_start=at - timedelta(days=1),
            window_end=at,
            subject=f"The news of {day}",
            status=status,
            nonce="n" * 32,
            created_at=at,
        )
        session.add(edition)
        session.flush()
        readers = session.query(Subscriber.id).order_by(Subscriber.id).limit(len(statuses)).all()
        session.add_all(
            Delivery(edition_id=edition.id, subscriber_id=reader.id, status=state, attempts=1)
            for reader, state in zip(readers, statuses, strict=True)
        )
        session.add_all(EditionLink(edition_id=edition.id, position=i, url=u) for i, u in enumerate(links, 1))
        # As the click endpoint writes them, so the rollups the report reads count them.
        record_clicks(session, [ClickRow(edition.id, p, s, at + timedelta(hours=1)) for p, s in clicks])
        session.add_all(
            SubscriberEvent(subscriber_id=s, event=e, source="test", at=at + timedelta(hours=2), edition_id=edition.id)
            for e, s in events
        )
        edition_id = edition.id
    with store.engine.begin() as conn:
        delivery_log.store_counts(conn, edition_id, delivery_log.status_counts(conn, edition_id))
    return edition_id


SENT, FAILED, DEFERRED = DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.DEFERRED
LINKS = [
    "https://news.example.com/2026/11/24/council-approves-the-budget-after-a-long-night?utm_source=newsletter",
    "https://news.example.com/sport/derby",
    "https://news.example.com/weather",
]


def seed_busy_edition(store: Store, day: date) -> int:
    """8 sent, 1 failed, 1 deferred; link 2 clicked most; opens by 3; bounces, a complaint, 2 unsubscribes."""
    return seed_edition(
        store,
        day,
        statuses=[SENT] * 8 + [FAILED, DEFERRED],
        links=LINKS,
        clicks=[(2, 1), (2, 1), (2, 2), (2, 3), (1, 1), (1, 4), (2, None), (0, 1), (0, 5), (0, 6), (0, 6)],
        events=[
            ("hard_bounce", 7),
            ("soft_bounce", 8),
            ("soft_bounce", 8),  # the same reader twice: one reader
            ("complaint", 6),
            ("unsubscribed", 6),
            ("unsubscribed", 5),
            ("subscribed", 4),  # not about leaving: not counted
        ],
    )


def site_config(tmp_path: Path, db_url: str, **extra: dict[str, object]) -> Path:
    return write_config(tmp_path / "newsletter.toml", db_url, None, **extra)


def report(runner: CliRunner, config: Path, *args: str, code: int = 0):
    result = runner.invoke(cli, ["--config", str(config), "report", *args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def today_in_london() -> date:
    return datetime.now(UTC).astimezone(LONDON).date()


# --- the command -----------------------------------------------------------------------------------


def test_report_of_the_latest_edition_in_text_and_json(
    db_url: str, store: Store, clock: FixedClock, runner: CliRunner, tmp_path: Path
) -> None:
    add_subscribers(store, clock, 10)
    today = today_in_london()
    seed_edition(store, today - timedelta(days=3), statuses=[SENT] * 2, links=LINKS[:1])
    seed_busy_edition(store, today - timedelta(days=1))
    seed_edition(store, today, statuses=[], links=[], status=EditionStatus.SKIPPED)  # not gone out: never "latest"
    config = site_config(tmp_path, db_url, tracking={"opens": True})

    text = report(runner, config).stdout
    assert text.startswith(f"edition of {today - timedelta(days=1)} (sent): The news of")
    assert "readers:      10: 8 sent, 1 deferred, 1 failed" in text
    assert "bounced:      1 hard, 1 soft" in text
    assert "complaints:   1 (12.50 % of 8 delivered)" in text
    assert "unsubscribes: 2 (25.00 %)" in text
    assert "clicks:       4 readers clicked (50.00 % click-through), 7 clicks in all" in text
    assert "opens:        3 readers (37.50 %)" in text
    rows = [line.split() for line in text.splitlines() if re.match(r"\s+\d+\s+\d", line)]
    assert [row[1:3] for row in rows] == [["3", "5"], ["2", "2"], ["0", "0"]]  # most clicked first
    assert rows[0][3] == "news.example.com/sport/derby"
    shortened = rows[1][3]
    assert "…" in shortened and len(shortened) <= 60 and shortened.endswith("?…")

    (line,) = report(runner, config, "--json").stdout.splitlines()
    data = json.loads(line)
    assert set(data) >= REQUIRED_KEYS
    assert data["date"] == (today - timedelta(days=1)).isoformat()
    assert (data["readers"], data["sent"], data["failed"], data["deferred"]) == (10, 8, 1, 1)
    assert (data["hard_bounces"], data["soft_bounces"], data["complaints"]) == (1, 1, 1)
    assert (data["unique_clickers"], data["clicks"], data["unsubscribes"], data["opens_unique"]) == (4, 7, 2, 3)
    assert data["click_through_rate"] == 0.5 and data["complaint_rate"] == 0.125
    assert data["links"][0] == {"url": LINKS[1], "unique": 3, "total": 5}
    assert data["links"][1] == {"url": LINKS[0], "unique": 2, "total": 2}  # whole, query string and all
    assert all(set(link) == {"url", "unique", "total"} for link in data["links"])


def test_report_days_lists_editions_that_went_out(
    db_url: str, store: Store, clock: FixedClock, runner: CliRunner, tmp_path: Path
) -> None:
    add_subscribers(store, clock, 10)
    today = today_in_london()
    seed_busy_edition(store, today - timedelta(days=2))
    seed_edition(store, today - timedelta(days=5), statuses=[SENT] * 3, links=LINKS, clicks=[(1, 1)])
    seed_edition(store, today - timedelta(days=4), statuses=[], links=[], status=EditionStatus.SKIPPED)
    seed_edition(store, today - timedelta(days=40), statuses=[SENT] * 3, links=LINKS)  # older than 30 days
    config = site_config(tmp_path, db_url)

    lines = report(runner, config, "--days", "30").stdout.splitlines()
    assert lines[0].split()[:3] == ["date", "readers", "sent"]
    assert [line.split()[0] for line in lines[1:]] == [
        (today - timedelta(days=5)).isoformat(),
        (today - timedelta(days=2)).isoformat(),
    ]
    assert lines[2].split()[1:4] == ["10", "8", "1"] and "50.00%" in lines[2]

    objects = [json.loads(line) for line in report(runner, config, "--days", "30", "--json").stdout.splitlines()]
    assert [o["date"] for o in objects] == [(today - timedelta(days=d)).isoformat() for d in (5, 2)]
    assert all(set(o) >= REQUIRED_KEYS for o in objects)
    assert "opens_unique" not in objects[0]  # opens are not tracked by default
    assert objects[0]["links"][0] == {"url": LINKS[0], "unique": 1, "total": 1}

    assert report(runner, config, "--days", "1").stdout.strip() == "no edition went out in the last 1 days"
    assert report(runner, config, "--days", "1", "--json").stdout == ""


def test_an_edition_with_no_clicks_and_no_links(
    db_url: str, store: Store, clock: FixedClock, runner: CliRunner, tmp_path: Path
) -> None:
    add_subscribers(store, clock, 3)
    day = date(2026, 11, 20)
    seed_edition(store, day, statuses=[SENT, SENT, FAILED], links=[])
    config = site_config(tmp_path, db_url)
    text = report(runner, config, "--date", day.isoformat()).stdout
    assert "clicks:       0 readers clicked (0.00 % click-through), 0 clicks in all" in text
    assert "links:        none recorded" in text
    data = json.loads(report(runner, config, "--date", day.isoformat(), "--json").stdout)
    assert (data["unique_clickers"], data["clicks"], data["links"], data["unsubscribes"]) == (0, 0, [], 0)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--days", "0"], "--days '0' is not a number of days from 1 to 366"),
        (["--days", "-1"], "--days '-1' is not a number of days"),
        (["--days", "100000"], "--days '100000' is not a number of days"),
        (["--days", "thirty"], "is not a number of days"),
        (["--days"], "Option '--days' requires an argument"),
        (["--date", "2026-13-01"], "--date '2026-13-01' is not a date like 2026-11-24"),
        (["--date", "0001-01-01"], "is out of range"),
        (["--date", "x" * 10_000], "is not a date"),
        (["--date", "2026-11-24", "--days", "3"], "give one or the other"),
        (["--date", "2026-11-23"], "there is no edition of 2026-11-23"),
        (["--date", "2026-11-22"], "the edition of 2026-11-22 has not gone out (skipped)"),
        (["--weeks", "2"], "No such option '--weeks'"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(
    db_url: str, store: Store, runner: CliRunner, tmp_path: Path, args: list[str], words: str
) -> None:
    seed_edition(store, date(2026, 11, 22), statuses=[], links=[], status=EditionStatus.SKIPPED)
    result = report(runner, site_config(tmp_path, db_url), *args, code=2)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert words in result.stderr
    assert len(result.stderr) < 300


def test_before_any_edition(db_url: str, store: Store, runner: CliRunner, tmp_path: Path) -> None:
    config = site_config(tmp_path, db_url)
    assert report(runner, config).stdout == "no edition has gone out yet\n"
    assert report(runner, config, "--json").stdout == ""


def test_help_has_examples(runner: CliRunner) -> None:
    text = runner.invoke(cli, ["report", "--help"]).output
    assert "Example" in text and "newsletter report --days 30 --json" in text


# --- the pure figures --------------------------------------------------------------------------------


def test_figures_from_plain_counts() -> None:
    figures = edition_figures(
        day=date(2026, 11, 24),
        subject="S",
        status="sent",
        deliveries={"sent": 200, "failed": 3, "deferred": 2, "pending": 4, "sending": 1, "skipped": 5},
        events={"unsubscribed": 4, "complaint": 1, "hard_bounce": 2, "soft_bounce": 6, "sender_block": 1},
        unique_clickers=10,
        clicks=25,
        opens_unique=None,
        links=[(1, "https://a.example/", 3, 4), (2, "https://b.example/", 5, 9), (3, "https://c.example/", 3, 4)],
    )
    assert (figures.readers, figures.delivered, figures.unsent) == (215, 200, 5)
    assert figures.click_through_rate == 0.05 and figures.unsubscribe_rate == 0.02
    assert figures.complaint_rate == 0.005 and figures.open_rate is None
    assert [link.position for link in figures.links] == [2, 1, 3]  # most clicks, then reading order
    data = figures_json(figures)
    assert set(data) >= REQUIRED_KEYS and "opens_unique" not in data
    assert json.loads(json.dumps(data)) == data
    assert "still to send" in report_lines(figures)[1]
    assert summary_line(figures).split()[:3] == ["2026-11-24", "215", "200"]


def test_nothing_delivered_has_no_rates() -> None:
    figures = edition_figures(
        day=date(2026, 11, 24), subject="", status="sending", deliveries={"pending": 5}, events={},
        unique_clickers=0, clicks=0, opens_unique=0,
    )  # fmt: skip
    assert figures.click_through_rate == figures.complaint_rate == figures.open_rate == 0.0
    assert rate(1, 0) == 0.0 and rate(1, -3) == 0.0
    assert figures_json(figures)["opens_unique"] == 0


def test_link_ranking_is_stable() -> None:
    ranked = rank_links([(3, "c", 1, 1), (1, "a", 1, 1), (2, "b", 2, 1)])
    assert [link.url for link in ranked] == ["b", "a", "c"]


@pytest.mark.parametrize(
    ("url", "width", "expected"),
    [
        ("https://www.example.com/", 60, "example.com"),
        ("https://example.com/a/b/?x=1", 60, "example.com/a/b?…"),
        ("http://example.com/story", 60, "example.com/story"),
        ("https://example.com/" + "a" * 100 + "/end", 30, None),
        ("not a url at all", 60, "not a url at all"),
        ("https://[::1", 60, "https://[::1"),
    ],
)
def test_shortened_urls(url: str, width: int, expected: str | None) -> None:
    short = shorten_url(url, width)
    assert len(short) <= width
    if expected is not None:
        assert short == expected
    else:
        assert short.startswith("example.com/aaa") and short.endswith("a/end") and "…" in short


def test_offset_segments_follow_the_clock_change() -> None:
    start = datetime(2026, 10, 20, tzinfo=UTC)
    segments = offset_segments(LONDON, start, datetime(2026, 11, 5, tzinfo=UTC))
    assert segments == [(start, 3600), (datetime(2026, 10, 25, 1, 0, tzinfo=UTC), 0)]
    assert offset_segments(ZoneInfo("UTC"), start, start + timedelta(days=90)) == [(start, 0)]
    india = offset_segments(ZoneInfo("Asia/Kolkata"), start, start + timedelta(days=3))
    assert india == [(start, 19800)]


def test_status_history_walks_back_from_today() -> None:
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(4)]
    history = status_history(
        days,
        now={"active": 10, "pending": 2, "unsubscribed": 3, "bounced": 1},
        joined={days[1]: 4, days[3]: 1},
        confirmed={days[2]: 3},
        left=[Left(days[3], "unsubscribed", True, 2), Left(days[2], "bounced", False, 1)],
    )
    last = history[-1]
    assert (last.active, last.pending, last.unsubscribed, last.bounced) == (10, 2, 3, 1)
    day3 = history[2]  # before day 4's join (1) and unsubscribes (2 who were active)
    assert (day3.active, day3.pending, day3.unsubscribed, day3.bounced) == (12, 1, 1, 1)
    day2 = history[1]  # before day 3's confirmations (3) and a pending reader's bounce
    assert (day2.active, day2.pending, day2.unsubscribed, day2.bounced) == (9, 5, 1, 0)
    day1 = history[0]  # before day 2's four sign-ups
    assert (day1.active, day1.pending) == (9, 1)


def test_sources_are_grouped_by_family_with_the_rest_as_other() -> None:
    days = [date(2026, 11, 1), date(2026, 11, 2)]
    rows = [
        (days[0], "web", 10),
        (days[1], "web", 5),
        (days[0], "article:/2026/11/a", 4),
        (days[1], "article:/2026/11/b", 6),
        (days[0], "import", 8),
        (days[0], "admin:ana", 1),
        (days[1], "cli", 1),
        (days[1], "", 2),
        (days[1], "api", 1),
        (date(2020, 1, 1), "web", 99),  # outside the days: ignored
    ]
    series = signups_by_source(days, rows, groups=3)
    assert series.groups == ("web", "article", "import", "other")
    assert series.counts[0] == (10, 5) and series.counts[1] == (4, 6) and series.counts[3] == (1, 4)
    assert series.top_sources[0] == ("web", 15) and ("(none)", 2) in series.top_sources
    assert source_family("article:/x") == "article" and source_family("") == "(none)"
    small = signups_by_source(days, rows[:3], groups=3)
    assert small.groups == ("web", "article") and small.total(0) == 15


# --- the charts -------------------------------------------------------------------------------------


def _parsed(chart: charts.Chart) -> ET.Element:
    root = ET.fromstring(str(chart.svg))
    assert root.tag == f"{SVG}svg" and root.get("role") == "img" and root.get("width") == "100%"
    assert root.find(f"{SVG}title").text and root.find(f"{SVG}desc").text
    for element in root.iter():
        assert element.tag.removeprefix(SVG) not in ("script", "foreignObject", "style", "a", "image")
        assert not any(name.lower().startswith("on") or name == "style" for name in element.attrib)
    assert "viewBox" not in root.attrib  # text keeps its CSS size at every width
    return root


def test_charts_are_well_formed_svg_without_scripts() -> None:
    labels = [f"{d} Nov" for d in range(1, 31)]
    hostile = 'a <script>alert(1)</script> & "b"'
    bars = charts.bar_chart(
        "t1", hostile, labels, [charts.Series(hostile, [i * 1000 for i in range(30)]), charts.Series("x", [5] * 30)]
    )
    root = _parsed(bars)
    assert hostile in root.find(f"{SVG}title").text  # escaped in the markup, intact once parsed
    assert len(root.findall(f".//{SVG}rect")) == 59  # the first day's zero is not drawn
    assert bars.rows[0] == ("1 Nov", "0", "5", "5") and bars.legend == ((hostile, 0), ("x", 0))
    axis = ET.fromstring(str(bars.axis))
    assert axis.get("aria-hidden") == "true"
    assert [t.text for t in axis.iter(f"{SVG}text")] == ["0", "10k", "20k", "30k"]
    line = charts.line_chart("t2", "Rate", labels, [charts.Series("rate", [i / 100 for i in range(30)])])
    root = _parsed(line)
    assert len(root.findall(f".//{SVG}circle")) == 30 and len(root.findall(f".//{SVG}line")) > 29
    labelled = [t for t in root.iter(f"{SVG}text") if "x-label" in (t.get("class") or "")]
    assert labelled[0].text == "30 Nov" and labelled[0].get("text-anchor") == "end"  # the latest, always
    always = [t for t in labelled if t.get("class") == "x-label"]
    assert 2 <= len(always) <= 4 < len(labelled)  # a phone shows a few, a wide screen more
    assert "30 points from 1 Nov to 30 Nov" in line.description
    empty = charts.bar_chart("t3", "Nothing", [], [charts.Series("n", [])])
    _parsed(empty)


def test_axis_ticks_and_label_spacing() -> None:
    assert charts.nice_ticks(9_812) == [0, 2500, 5000, 7500, 10000]
    assert charts.nice_ticks(0) == [0.0, 1.0]
    assert charts.nice_ticks(0.043)[-1] >= 0.043
    assert charts.compact_number(1_250_000) == "1.25M" and charts.compact_number(2500) == "2.5k"
    assert charts.compact_percent(0.045) == "4.5%"
    wide, narrow = charts.label_steps(90)
    assert narrow % wide == 0 and 90 / narrow * charts.LABEL_WIDTH <= charts.NARROW_WIDTH + charts.LABEL_WIDTH


# --- the list's growth ---------------------------------------------------------------------------------


def test_list_growth_by_local_day(db_url: str, store: Store) -> None:
    today = date(2026, 11, 24)

    def at(day: int, hour: int = 12) -> datetime:
        return datetime(2026, 11, day, hour, tzinfo=UTC)

    with store.session() as session:
        rows = [
            # (source, status, created, confirmed, unsubscribed)
            ("web", SubscriberStatus.ACTIVE, at(1), at(1), None),
            ("web", SubscriberStatus.ACTIVE, at(20), at(21), None),
            ("import", SubscriberStatus.ACTIVE, at(22, 23), at(22, 23), None),  # 23:00 UTC is still the 22nd in winter
            ("article:/2026/11/story", SubscriberStatus.PENDING, at(23), None, None),
            ("web", SubscriberStatus.UNSUBSCRIBED, at(10), at(10), at(23)),
            ("web", SubscriberStatus.BOUNCED, at(15), at(15), None),
        ]
        for i, (source, status, created, confirmed, left) in enumerate(rows):
            session.add(
                Subscriber(
                    email=f"g{i}@example.org", status=status, source=source, created_at=created,
                    updated_at=left or confirmed or created, confirmed_at=confirmed, unsubscribed_at=left,
                )
            )  # fmt: skip
        session.flush()
        bounced = session.query(Subscriber).filter_by(status=SubscriberStatus.BOUNCED).one()
        bounced.updated_at = at(24, 5)  # a later edit; the event says when they bounced
        session.add(SubscriberEvent(subscriber_id=bounced.id, event="bounced", source="mailbox", at=at(22)))
    with store.session() as session:
        growth = list_growth(session, LONDON, today - timedelta(days=9), today)
    by_day = {d.day: d for d in growth.history}
    assert [by_day[date(2026, 11, 24)].count(s) for s in ("active", "pending", "unsubscribed", "bounced")] == [
        3,
        1,
        1,
        1,
    ]
    assert (by_day[date(2026, 11, 22)].active, by_day[date(2026, 11, 22)].bounced) == (4, 1)
    assert (by_day[date(2026, 11, 21)].active, by_day[date(2026, 11, 21)].bounced) == (4, 0)
    assert (by_day[date(2026, 11, 20)].active, by_day[date(2026, 11, 20)].pending) == (3, 1)
    assert by_day[date(2026, 11, 15)].active == 3  # the reader of the 20th had not joined yet
    signups = dict(zip(growth.signups.groups, growth.signups.counts, strict=True))
    assert signups["import"][growth.signups.days.index(date(2026, 11, 22))] == 1
    assert sum(signups["web"]) == 2  # the 20th, and the 15th's who later bounced; the 1st is outside the days
    assert sum(signups["article"]) == 1


def test_readers_who_left_are_dated_by_their_latest_bounce_or_their_row(db_url: str, store: Store) -> None:
    """Bounced readers by their latest "bounced" event (else their row's last change), unsubscribed ones by
    ``unsubscribed_at``; each left the status they had (active if they had confirmed, else pending)."""
    today = date(2026, 11, 24)

    def at(day: int, hour: int = 12) -> datetime:
        return datetime(2026, 11, day, hour, tzinfo=UTC)

    with store.session() as session:
        rows = [
            # (status, confirmed, updated, unsubscribed, "bounced" events)
            (SubscriberStatus.BOUNCED, at(1), at(24, 5), None, [at(18), at(21)]),  # the latest counts: the 21st
            (SubscriberStatus.BOUNCED, None, at(19), None, []),  # never confirmed, no event: its row's date
            (SubscriberStatus.BOUNCED, at(1), at(2), None, [at(2)]),  # before the days shown
            (SubscriberStatus.UNSUBSCRIBED, None, at(20), at(20), []),
            (SubscriberStatus.UNSUBSCRIBED, at(1), at(23), at(23), []),
            (SubscriberStatus.ACTIVE, at(1), at(22, 13), at(22), []),  # left and came back: never counted as gone
        ]
        for i, (status, confirmed, updated, left, bounces) in enumerate(rows):
            reader = Subscriber(
                email=f"l{i}@example.org", status=status, source="web", created_at=at(1), updated_at=updated,
                confirmed_at=confirmed, unsubscribed_at=left,
            )  # fmt: skip
            session.add(reader)
            session.flush()
            session.add_all(
                SubscriberEvent(subscriber_id=reader.id, event="bounced", source="mailbox", at=t) for t in bounces
            )
    with store.session() as session:
        growth = list_growth(session, LONDON, today - timedelta(days=9), today)
    by_day = {d.day: [d.active, d.pending, d.unsubscribed, d.bounced] for d in growth.history}
    assert by_day[date(2026, 11, 24)] == by_day[date(2026, 11, 23)] == [1, 0, 2, 3]
    assert by_day[date(2026, 11, 22)] == by_day[date(2026, 11, 21)] == [2, 0, 1, 3]
    assert by_day[date(2026, 11, 20)] == [3, 0, 1, 2]
    assert by_day[date(2026, 11, 19)] == [3, 1, 0, 2]
    assert by_day[date(2026, 11, 18)] == by_day[date(2026, 11, 15)] == [3, 2, 0, 1]


# --- the admin pages ---------------------------------------------------------------------------------------


def test_admin_home_shows_the_charts(store: Store, clock: FixedClock, staff: FlaskClient) -> None:  # noqa: F811
    add_subscribers(store, clock, 10)
    for days_ago in (1, 2, 4):
        seed_busy_edition(store, date(2026, 11, 24) - timedelta(days=days_ago))
    page = staff.get("/admin/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "script" not in page.headers["Content-Security-Policy"]
    assert "<script" not in html
    for title in ("Delivered per edition", "Click-through rate per edition", "Unsubscribes per edition",
                  "Subscribers by status", "Sign-ups per day by source"):  # fmt: skip
        assert f">{title}<" in html
    svgs = [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", html, re.S)]
    assert len([svg for svg in svgs if svg.get("role") == "img"]) == 5
    assert len([svg for svg in svgs if svg.get("aria-hidden") == "true"]) == 5  # their axes
    assert "2026-11-23" in html and "50.00 % click-through" in html
    assert "<summary>The numbers</summary>" in html


def test_admin_home_before_any_edition(staff: FlaskClient) -> None:  # noqa: F811
    html = staff.get("/admin/").get_data(as_text=True)
    assert "No edition has gone out yet." in html and "Subscribers by status" in html


def test_admin_edition_page_shows_the_figures_and_links(
    store: Store,
    clock: FixedClock,
    staff: FlaskClient,  # noqa: F811
) -> None:
    add_subscribers(store, clock, 10)
    seed_busy_edition(store, date(2026, 11, 23))
    html = staff.get("/admin/editions/2026-11-23").get_data(as_text=True)
    assert "Readers&#39; response" in html or "Readers' response" in html
    table = html.split('<table class="data links">', 1)[1].split("</table>", 1)[0]
    urls = re.findall(r'<a href="([^"]+)"', table)
    assert urls == [LINKS[1], LINKS[0].replace("&", "&amp;"), LINKS[2]]
    assert "50.00 %" in html and "25.00 %" in html
    seed_edition(store, date(2026, 11, 24), statuses=[], links=[], status=EditionStatus.READY)
    assert "the edition has not gone out" in staff.get("/admin/editions/2026-11-24").get_data(as_text=True)
    for odd in ("2026-02-30", "x" * 500, "9999-12-31"):
        assert staff.get(f"/admin/editions/{odd}").status_code == 404


def test_sign_ups_are_counted_by_local_day_across_the_clock_change(db_url: str, store: Store) -> None:
    """The clocks go back at 01:00 UTC on 25 October 2026: before it London is UTC+1, after it UTC."""
    moments = [
        datetime(2026, 10, 24, 22, 59, tzinfo=UTC),  # 23:59 BST on the 24th
        datetime(2026, 10, 24, 23, 30, tzinfo=UTC),  # 00:30 BST on the 25th
        datetime(2026, 10, 25, 23, 30, tzinfo=UTC),  # 23:30 GMT on the 25th
        datetime(2026, 10, 26, 0, 0, tzinfo=UTC),  # midnight GMT: the 26th
    ]
    with store.session() as session:
        for i, at in enumerate(moments):
            session.add(
                Subscriber(email=f"c{i}@example.org", status=SubscriberStatus.ACTIVE, source="web", created_at=at,
                           updated_at=at, confirmed_at=at)
            )  # fmt: skip
    with store.session() as session:
        growth = list_growth(session, LONDON, date(2026, 10, 20), date(2026, 11, 5))
    counts = dict(zip(growth.signups.days, growth.signups.counts[0], strict=True))
    assert [counts[date(2026, 10, d)] for d in (24, 25, 26)] == [1, 2, 1]
    active = {d.day: d.active for d in growth.history}
    assert [active[date(2026, 10, d)] for d in (23, 24, 25, 26)] == [0, 1, 3, 4]


def test_reading_sessions_take_no_write_lock_on_sqlite(tmp_path) -> None:
    """A report running beside a send must not hold up its commits (SQLite's single writer)."""
    from sqlalchemy import text

    from newsletter.store import Store

    store = Store(f"sqlite:///{tmp_path / 'lock.db'}")
    store.upgrade()
    other = Store(store.url)
    try:
        with store.reading() as reader:
            reader.execute(text("SELECT count(*) FROM subscribers")).scalar()
            with other.session() as writer:  # would wait 30 s for a BEGIN IMMEDIATE reader
                writer.execute(text("DELETE FROM web_attempts"))
    finally:
        store.dispose()
        other.dispose()
