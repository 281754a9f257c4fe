"""Selection: cutoffs and windows in Europe/London across the clock changes, with pinned dates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from newsletter.editions import (
    Story,
    Window,
    choose_lead,
    cutoff,
    edition_date_due,
    group_by_section,
    long_date,
    plan_edition,
    subject_for,
    window_for,
)
from newsletter.preparation import prepare_edition
from newsletter.store.models import Article
from tests.conftest import add_article

LONDON = ZoneInfo("Europe/London")
SIX = time(6, 0)
US = timedelta(microseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@dataclass
class Art:
    """Just what selection reads of an article."""

    title: str
    published_at: datetime
    url: str = "https://news.example.com/a"
    standfirst: str = ""
    section: str = ""
    author: str = ""
    image_url: str = ""
    image_alt: str = ""
    image_caption: str = ""
    issue_number: str = ""
    id: int = 0
    priority: int = 0
    pinned_for: date | None = None


def plan(day: date, window: Window, articles: list[Art], subject: str = "{name}: {date}"):
    return plan_edition(day, window, articles, subject, name="Breakfast in red", publication="The Example Gazette")


# --- cutoffs and windows ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected_utc"),
    [
        (date(2026, 11, 24), utc(2026, 11, 24, 6, 0)),  # GMT
        (date(2026, 7, 15), utc(2026, 7, 15, 5, 0)),  # BST
        (date(2026, 3, 29), utc(2026, 3, 29, 5, 0)),  # clocks went forward at 01:00 GMT
        (date(2026, 10, 25), utc(2026, 10, 25, 6, 0)),  # clocks went back at 02:00 BST
    ],
)
def test_cutoff_is_the_local_send_time(day: date, expected_utc: datetime) -> None:
    moment = cutoff(day, SIX, LONDON)
    assert moment == expected_utc and moment.tzinfo == UTC
    assert moment.astimezone(LONDON).time() == SIX


@pytest.mark.parametrize(
    ("day", "previous_day", "hours"),
    [
        (date(2026, 11, 24), date(2026, 11, 23), 24),
        (date(2026, 7, 15), date(2026, 7, 14), 24),
        (date(2026, 3, 29), date(2026, 3, 28), 23),  # spring forward: a 23-hour window
        (date(2026, 3, 30), date(2026, 3, 29), 24),
        (date(2026, 10, 25), date(2026, 10, 24), 25),  # autumn back: a 25-hour window
        (date(2026, 10, 26), date(2026, 10, 25), 24),
    ],
)
def test_window_reaches_back_to_the_previous_cutoff_when_that_is_older(
    day: date, previous_day: date, hours: int
) -> None:
    previous = cutoff(previous_day, SIX, LONDON)
    window = window_for(day, SIX, LONDON, previous, max_age=timedelta(hours=12))
    assert window.start == previous
    assert window.end == cutoff(day, SIX, LONDON)
    assert window.end - window.start == timedelta(hours=hours)


@pytest.mark.parametrize("day", [date(2026, 11, 24), date(2026, 3, 29), date(2026, 10, 25)])
def test_window_reaches_back_the_maximum_age_for_late_arrivals(day: date) -> None:
    """48 hours by default: a story imported after the edition its time belonged to still goes."""
    previous = cutoff(day - timedelta(days=1), SIX, LONDON)
    for earlier in (None, previous):
        window = window_for(day, SIX, LONDON, earlier)
        assert window.end == cutoff(day, SIX, LONDON)
        assert window.end - window.start == timedelta(hours=48)


def test_after_a_weekend_without_editions_the_window_reaches_back_to_friday() -> None:
    friday = cutoff(date(2026, 11, 20), SIX, LONDON)
    window = window_for(date(2026, 11, 23), SIX, LONDON, friday)
    assert window.start == friday


def test_window_is_open_at_the_start_and_closed_at_the_end() -> None:
    window = Window(utc(2026, 11, 23, 6), utc(2026, 11, 24, 6))
    assert window.end in window
    assert window.start not in window
    assert window.start + US in window
    assert window.end + US not in window


def test_a_previous_cutoff_after_this_one_does_not_narrow_the_window() -> None:
    """Sending an older date after a newer one: it still takes what is free up to its cutoff."""
    window = window_for(date(2026, 11, 24), SIX, LONDON, utc(2026, 11, 24, 7))
    assert window == Window(utc(2026, 11, 22, 6), utc(2026, 11, 24, 6))


def test_send_time_in_the_spring_gap_resolves_as_documented() -> None:
    # 01:30 does not exist on 29 March 2026 in London: read with GMT, it is 02:30 BST.
    moment = cutoff(date(2026, 3, 29), time(1, 30), LONDON)
    assert moment == utc(2026, 3, 29, 1, 30)
    assert moment.astimezone(LONDON).replace(tzinfo=None) == datetime(2026, 3, 29, 2, 30)
    # the gap's start is its end
    assert cutoff(date(2026, 3, 29), time(1, 0), LONDON) == utc(2026, 3, 29, 1, 0)
    # and the windows either side still meet, with nothing lost
    hour = timedelta(hours=1)  # a short maximum age: the windows run from cutoff to cutoff
    before = window_for(date(2026, 3, 29), time(1, 30), LONDON, cutoff(date(2026, 3, 28), time(1, 30), LONDON), hour)
    after = window_for(date(2026, 3, 30), time(1, 30), LONDON, before.end, hour)
    assert before.end - before.start == timedelta(hours=24)
    assert after.start == before.end and after.end - after.start == timedelta(hours=23)


def test_send_time_in_the_repeated_autumn_hour_is_its_first_occurrence() -> None:
    moment = cutoff(date(2026, 10, 25), time(1, 30), LONDON)
    assert moment == utc(2026, 10, 25, 0, 30)  # 01:30 BST, not the 01:30 GMT an hour later
    assert moment.astimezone(LONDON).utcoffset() == timedelta(hours=1)
    previous = cutoff(date(2026, 10, 24), time(1, 30), LONDON)
    window = window_for(date(2026, 10, 25), time(1, 30), LONDON, previous, timedelta(hours=1))
    assert window.end - window.start == timedelta(hours=24)


def test_other_time_zones() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    assert cutoff(date(2026, 11, 24), SIX, tokyo) == utc(2026, 11, 23, 21, 0)
    new_york = ZoneInfo("America/New_York")
    assert cutoff(date(2026, 11, 1), SIX, new_york) == utc(2026, 11, 1, 11, 0)  # EST from 02:00 that day


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (utc(2026, 11, 24, 5, 59, 59), date(2026, 11, 23)),
        (utc(2026, 11, 24, 6, 0), date(2026, 11, 24)),
        (utc(2026, 11, 24, 23, 59), date(2026, 11, 24)),
        (utc(2026, 7, 15, 4, 59), date(2026, 7, 14)),
        (utc(2026, 7, 15, 5, 0), date(2026, 7, 15)),
        (utc(2026, 7, 14, 23, 30), date(2026, 7, 14)),  # already 15 July in London, before its send
        (utc(2026, 3, 29, 4, 59), date(2026, 3, 28)),
        (utc(2026, 3, 29, 5, 0), date(2026, 3, 29)),
        (utc(2026, 10, 25, 5, 59), date(2026, 10, 24)),
        (utc(2026, 10, 25, 6, 0), date(2026, 10, 25)),
    ],
)
def test_edition_date_due_before_and_after_the_send_time(now: datetime, due: date) -> None:
    assert edition_date_due(now, SIX, LONDON) == due


# --- which articles, and how they are laid out ------------------------------------------


def test_article_exactly_at_the_cutoff_is_in_that_edition_and_a_microsecond_later_in_the_next() -> None:
    end = cutoff(date(2026, 11, 24), SIX, LONDON)
    at_cutoff = Art("At the cutoff", end)
    just_after = Art("Just after", end + US)
    first = plan(date(2026, 11, 24), window_for(date(2026, 11, 24), SIX, LONDON, None), [at_cutoff, just_after])
    # The store hands the next edition only articles in no edition yet.
    second = plan(date(2026, 11, 25), window_for(date(2026, 11, 25), SIX, LONDON, end), [just_after])
    assert [s.title for s in _all(first)] == ["At the cutoff"]
    assert [s.title for s in _all(second)] == ["Just after"]


def test_articles_outside_the_window_are_left_out() -> None:
    window = window_for(date(2026, 11, 24), SIX, LONDON, None)
    arts = [Art("Too old", window.start), Art("In", window.start + US), Art("Too new", window.end + US)]
    assert [s.title for s in _all(plan(date(2026, 11, 24), window, arts))] == ["In"]


def test_empty_edition() -> None:
    edition = plan(date(2026, 11, 24), window_for(date(2026, 11, 24), SIX, LONDON, None), [])
    assert edition.is_empty and edition.lead is None and edition.sections == ()
    assert edition.story_count == 0


def test_the_newest_story_with_a_picture_leads() -> None:
    end = cutoff(date(2026, 11, 24), SIX, LONDON)
    arts = [
        Art("Newest, no picture", end - timedelta(minutes=5)),
        Art("Older, with picture", end - timedelta(hours=2), image_url="https://img.example.com/1.jpg"),
        Art("Oldest, with picture", end - timedelta(hours=3), image_url="https://img.example.com/2.jpg"),
    ]
    edition = plan(date(2026, 11, 24), window_for(date(2026, 11, 24), SIX, LONDON, None), arts)
    assert edition.lead is not None and edition.lead.title == "Older, with picture"
    assert [s.title for s in _all(edition)] == ["Older, with picture", "Newest, no picture", "Oldest, with picture"]
    assert edition.story_count == 3


def test_without_pictures_the_newest_leads() -> None:
    stories = [Story("B", "https://x/b"), Story("A", "https://x/a")]
    assert choose_lead(stories) is stories[0]
    assert choose_lead([]) is None


def test_sections_in_order_of_their_newest_story() -> None:
    end = cutoff(date(2026, 11, 24), SIX, LONDON)
    arts = [
        Art("Lead", end - timedelta(minutes=1), section="News", image_url="https://img.example.com/l.jpg"),
        Art("Match report", end - timedelta(minutes=2), section="Sport"),
        Art("Council vote", end - timedelta(minutes=3), section="News"),
        Art("Review", end - timedelta(minutes=4), section=" Culture "),
        Art("Transfer", end - timedelta(minutes=5), section="Sport"),
        Art("Unfiled", end - timedelta(minutes=6)),
        Art("Gallery", end - timedelta(minutes=7), section="Culture"),
    ]
    edition = plan(date(2026, 11, 24), window_for(date(2026, 11, 24), SIX, LONDON, None), arts)
    assert edition.lead is not None and edition.lead.title == "Lead"
    assert [(s.name, [x.title for x in s.stories]) for s in edition.sections] == [
        ("Sport", ["Match report", "Transfer"]),
        ("News", ["Council vote"]),
        ("Culture", ["Review", "Gallery"]),
        ("", ["Unfiled"]),
    ]


def test_group_by_section_keeps_story_order() -> None:
    stories = [Story("1", "u", section="A"), Story("2", "u", section="B"), Story("3", "u", section="A")]
    assert [(s.name, [x.title for x in s.stories]) for s in group_by_section(stories)] == [
        ("A", ["1", "3"]),
        ("B", ["2"]),
    ]


def test_subject_formatting() -> None:
    assert long_date(date(2026, 11, 24)) == "Tuesday 24 November 2026"
    assert long_date(date(2026, 3, 1)) == "Sunday 1 March 2026"
    kwargs = {"name": "Breakfast in red", "publication": "The Example Gazette", "day": date(2026, 11, 24)}
    assert subject_for("{name}: {date}", count=3, **kwargs) == "Breakfast in red: Tuesday 24 November 2026"
    assert (
        subject_for("{publication} — {count} stories for {date}", count=7, **kwargs)
        == "The Example Gazette — 7 stories for Tuesday 24 November 2026"
    )
    end = cutoff(date(2026, 11, 24), SIX, LONDON)
    edition = plan(
        date(2026, 11, 24),
        window_for(date(2026, 11, 24), SIX, LONDON, None),
        [Art("a", end), Art("b", end - US)],
        subject="{count} for {name}",
    )
    assert edition.subject == "2 for Breakfast in red"


def _all(edition) -> list[Story]:
    return ([edition.lead] if edition.lead else []) + [s for section in edition.sections for s in section.stories]


# --- the same boundary through the store, on SQLite and PostgreSQL -------------------------


def test_store_boundary_at_the_cutoff(store, clock, ctx) -> None:
    end = utc(2026, 11, 24, 6, 0)
    add_article(store, clock, "at-cutoff", end)
    add_article(store, clock, "just-after", end + US)
    add_article(store, clock, "first-window-start", end - timedelta(hours=48))  # excluded: window is open there
    prepare_edition(ctx, date(2026, 11, 24))
    clock.set(utc(2026, 11, 25, 6, 30))
    prepare_edition(ctx, date(2026, 11, 25))
    with store.session() as session:
        placed = {a.guid: (a.edition.date if a.edition else None) for a in session.scalars(select(Article))}
    assert placed == {
        "at-cutoff": date(2026, 11, 24),
        "just-after": date(2026, 11, 25),
        "first-window-start": None,
    }


def test_counts_read_as_english() -> None:
    from newsletter.editions import counted

    assert counted(1, "article") == "1 article"
    assert counted(1200, "reader") == "1,200 readers"
    assert counted(0, "story", "stories") == "0 stories"
    assert counted(2, "unsent delivery", "unsent deliveries") == "2 unsent deliveries"
