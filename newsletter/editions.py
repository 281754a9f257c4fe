"""Which articles go into the edition for a date: windows, cutoffs and the shape of the issue.

Pure functions over plain data. The cutoff of the edition for date D is the send time on D
in the newsletter's time zone. The edition takes every published, unhidden article that is
in no earlier edition and was published by the cutoff, going back to the previous edition's
cutoff or ``max_age`` before this one, whichever is earlier: a story imported late, after
the edition its time belonged to was made, goes in the next one instead of being lost, and
a re-imported archive does not flood the morning. The store guarantees the "no earlier
edition" part (an article row names its one edition). Doing the arithmetic in the local zone
and converting to UTC once is what keeps the spring and autumn clock changes from moving the
send or losing an hour of articles.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

DEFAULT_MAX_AGE = timedelta(hours=48)
MORE_STORIES = "More stories"
UNSECTIONED = ""
_Date = date  # the type, for a class whose own field is named "date"


@dataclass(frozen=True)
class Window:
    """The half-open interval (start, end] of publication times an edition covers, in UTC."""

    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start < moment <= self.end


class ArticleLike(Protocol):
    """What selection and layout need to know of an article (a model row or a test double)."""

    title: str
    url: str
    standfirst: str
    section: str
    author: str
    image_url: str
    image_alt: str
    image_caption: str
    issue_number: str
    published_at: datetime
    id: int
    priority: int
    pinned_for: date | None


@dataclass(frozen=True)
class Story:
    """An article as the templates see it."""

    title: str
    url: str
    id: int = 0
    priority: int = 0
    pinned: bool = False
    standfirst: str = ""
    section: str = ""
    author: str = ""
    image_url: str = ""
    image_alt: str = ""
    image_caption: str = ""
    issue_number: str = ""
    published_at: datetime | None = None

    @classmethod
    def from_article(cls, article: ArticleLike, day: date | None = None) -> Story:
        return cls(
            title=article.title,
            url=article.url,
            id=article.id,
            priority=article.priority,
            pinned=day is not None and article.pinned_for == day,
            standfirst=article.standfirst,
            section=article.section,
            author=article.author,
            image_url=article.image_url,
            image_alt=article.image_alt,
            image_caption=article.image_caption,
            issue_number=article.issue_number,
            published_at=article.published_at,
        )


@dataclass(frozen=True)
class Section:
    name: str  # "" for the stories with no section
    stories: tuple[Story, ...]
    heading: str = ""  # what the edition prints: the name, or Layout.more_stories for ""

    def __post_init__(self) -> None:
        if not self.heading:
            object.__setattr__(self, "heading", self.name or MORE_STORIES)


@dataclass(frozen=True)
class Layout:
    """The editors' standing order of the edition: named sections first, in this order."""

    sections: tuple[str, ...] = ()
    more_stories: str = MORE_STORIES


@dataclass(frozen=True)
class EditionPlan:
    """Everything the renderer needs for one date, and nothing about any reader."""

    date: date
    window: Window
    subject: str
    lead: Story | None
    sections: tuple[Section, ...] = field(default_factory=tuple)
    previous: _Date | None = None  # the last edition that went out before this one, if any

    @property
    def story_count(self) -> int:
        return (1 if self.lead else 0) + sum(len(s.stories) for s in self.sections)

    @property
    def is_empty(self) -> bool:
        return self.lead is None

    @property
    def stories(self) -> tuple[Story, ...]:
        """Every story in reading order: the lead, then each section's."""
        return ((self.lead,) if self.lead else ()) + tuple(s for sec in self.sections for s in sec.stories)


def cutoff(day: date, send_time: time, zone: ZoneInfo) -> datetime:
    """The instant of the send on ``day``: wall-clock ``send_time`` in ``zone``, as UTC.

    A wall time that does not exist (inside a spring-forward gap) is read with the offset in
    force before the change, so it lands as far past the gap as it was into it: 01:30 on
    29 March 2026 in London is 02:30 BST (01:30 UTC), the instant APScheduler's cron trigger
    fires for it too. One that happens twice (autumn) resolves to the first occurrence:
    01:30 on 25 October 2026 is 01:30 BST (00:30 UTC).
    """
    # fold=0 (PEP 495) picks the offset in force before a change, in a gap and in a repeat.
    return datetime.combine(day, send_time, tzinfo=zone).astimezone(UTC)


def window_for(
    day: date,
    send_time: time,
    zone: ZoneInfo,
    previous_cutoff: datetime | None,
    max_age: timedelta = DEFAULT_MAX_AGE,
) -> Window:
    """The publication times the edition for ``day`` may take, among articles in no edition yet.

    Back to ``max_age`` before the cutoff, so late arrivals from before the previous cutoff
    still go out; and back to the previous edition's cutoff when that is earlier (after a
    weekend without editions), so nothing published since the last edition is too old.
    """
    end = cutoff(day, send_time, zone)
    start = end - max_age
    if previous_cutoff is not None and previous_cutoff < start:
        start = previous_cutoff
    return Window(start=min(start, end), end=end)


def local_date(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def edition_date_due(now: datetime, send_time: time, zone: ZoneInfo) -> date:
    """The most recent date whose cutoff has passed: the edition a scheduler should be sending."""
    today = local_date(now, zone)
    return today if cutoff(today, send_time, zone) <= now else today - timedelta(days=1)


def long_date(day: date) -> str:
    """'Tuesday 24 November 2026': the form a British newsroom prints on its masthead."""
    return f"{day:%A} {day.day} {day:%B %Y}"


def counted(n: int, noun: str, nouns: str = "") -> str:
    """'1 article', '3 articles', '1,200 readers': counts in messages read as English.

    :param nouns: the plural when it is not ``noun`` + "s" ("deliveries").
    """
    return f"1 {noun}" if n == 1 else f"{n:,} {nouns or noun + 's'}"


def subject_for(template: str, *, name: str, publication: str, day: date, count: int) -> str:
    return template.format(name=name, publication=publication, date=long_date(day), count=count)


def belongs(article: ArticleLike, day: date, window: Window) -> bool:
    """The selection rule for an article in no edition yet: in the window (unless pinned for a
    later date, whose edition it waits for), or pinned for this very date."""
    if article.published_at > window.end:
        return False
    if article.pinned_for == day:
        return True
    return article.published_at in window and (article.pinned_for is None or article.pinned_for <= day)


def rank(story: Story) -> tuple[int, datetime]:
    """Higher priority first, then the newest: the order of stories inside a section."""
    return (story.priority, story.published_at or datetime.min.replace(tzinfo=UTC))


def choose_lead(stories: Sequence[Story]) -> Story | None:
    """The pinned story; else the highest-priority story with a picture, the newest of equals;
    with no pictures at all, simply the highest-priority, newest story."""
    if not stories:
        return None
    pinned = [s for s in stories if s.pinned]
    with_image = [s for s in stories if s.image_url]
    return max(pinned or with_image or stories, key=rank)


def group_by_section(stories: Iterable[Story], layout: Layout = Layout()) -> tuple[Section, ...]:
    """Sections in the layout's order, then any others by their first story, then the
    unsectioned ones last; inside each, higher priority first, then the newest."""
    named = {name.casefold(): n for n, name in enumerate(layout.sections)}
    groups: dict[str, list[Story]] = {}
    spelling: dict[str, str] = {}
    for story in sorted(stories, key=rank, reverse=True):
        name = story.section.strip()
        key = name.casefold()
        groups.setdefault(key, []).append(story)
        spelling.setdefault(key, layout.sections[named[key]] if key in named else name)
    unlisted = len(named)

    def order(item: tuple[int, str]) -> tuple[int, int]:
        first, key = item
        if key == UNSECTIONED:
            return (unlisted + 1, 0)
        return (named[key], 0) if key in named else (unlisted, first)

    keys = sorted(((n, key) for n, key in enumerate(groups)), key=order)
    return tuple(
        Section(name=spelling[key], stories=tuple(groups[key]), heading=spelling[key] or layout.more_stories)
        for _, key in keys
    )


def plan_edition(
    day: date,
    window: Window,
    articles: Iterable[ArticleLike],
    subject_template: str,
    *,
    name: str,
    publication: str,
    layout: Layout = Layout(),
    previous: date | None = None,
) -> EditionPlan:
    """Lay out an edition from the articles already selected for it.

    Every article handed in is in the window or pinned for ``day``; the selection itself
    (which excludes hidden ones and those in an edition already) is the store's query.
    """
    stories = [Story.from_article(a, day) for a in articles if belongs(a, day, window)]
    lead = choose_lead(stories)
    rest = [s for s in stories if s is not lead]
    subject = subject_for(subject_template, name=name, publication=publication, day=day, count=len(stories))
    sections = group_by_section(rest, layout)
    return EditionPlan(date=day, window=window, subject=subject, lead=lead, sections=sections, previous=previous)


def since_words(day: date, previous: date | None) -> str:
    """'since yesterday’s edition', 'since Friday’s edition', or '' for a first edition."""
    if previous is None:
        return ""
    if previous == day - timedelta(days=1):
        return "since yesterday’s edition"
    if timedelta(days=1) < day - previous < timedelta(days=7):
        return f"since {previous:%A}’s edition"
    return "since the last edition"
