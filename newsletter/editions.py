"""Which articles go into the edition for a date: windows, cutoffs and the shape of the issue.

Pure functions over plain data. The cutoff of the edition for date D is the send time on D
in the newsletter's time zone; the edition covers ``previous cutoff < published_at <= cutoff``.
Doing the arithmetic in the local zone and converting to UTC once is what keeps the spring
and autumn clock changes from moving the send or losing an hour of articles.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

FIRST_EDITION_SPAN = timedelta(hours=24)
UNSECTIONED = ""


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


@dataclass(frozen=True)
class Story:
    """An article as the templates see it."""

    title: str
    url: str
    standfirst: str = ""
    section: str = ""
    author: str = ""
    image_url: str = ""
    image_alt: str = ""
    image_caption: str = ""
    issue_number: str = ""
    published_at: datetime | None = None

    @classmethod
    def from_article(cls, article: ArticleLike) -> Story:
        return cls(
            title=article.title,
            url=article.url,
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
    name: str
    stories: tuple[Story, ...]


@dataclass(frozen=True)
class EditionPlan:
    """Everything the renderer needs for one date, and nothing about any reader."""

    date: date
    window: Window
    subject: str
    lead: Story | None
    sections: tuple[Section, ...] = field(default_factory=tuple)

    @property
    def story_count(self) -> int:
        return (1 if self.lead else 0) + sum(len(s.stories) for s in self.sections)

    @property
    def is_empty(self) -> bool:
        return self.lead is None


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


def window_for(day: date, send_time: time, zone: ZoneInfo, previous_cutoff: datetime | None) -> Window:
    """The window of the edition for ``day``; the first edition covers the 24 hours before its cutoff."""
    end = cutoff(day, send_time, zone)
    start = previous_cutoff if previous_cutoff is not None else end - FIRST_EDITION_SPAN
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


def subject_for(template: str, *, name: str, publication: str, day: date, count: int) -> str:
    return template.format(name=name, publication=publication, date=long_date(day), count=count)


def choose_lead(stories: Sequence[Story]) -> Story | None:
    """The newest story with a picture leads; with no pictures at all, simply the newest."""
    if not stories:
        return None
    with_image = [s for s in stories if s.image_url]
    return (with_image or list(stories))[0]


def group_by_section(stories: Iterable[Story]) -> tuple[Section, ...]:
    """Sections in order of their newest story; stories keep their (newest first) order."""
    order: dict[str, list[Story]] = {}
    for story in stories:
        order.setdefault(story.section.strip(), []).append(story)
    return tuple(Section(name=name, stories=tuple(items)) for name, items in order.items())


def plan_edition(
    day: date, window: Window, articles: Iterable[ArticleLike], subject_template: str, *, name: str, publication: str
) -> EditionPlan:
    """Lay out an edition from the articles already selected for its window (newest first)."""
    stories = sorted(
        (Story.from_article(a) for a in articles if a.published_at in window),
        key=lambda s: s.published_at or window.end,
        reverse=True,
    )
    lead = choose_lead(stories)
    rest = [s for s in stories if s is not lead]
    subject = subject_for(subject_template, name=name, publication=publication, day=day, count=len(stories))
    return EditionPlan(date=day, window=window, subject=subject, lead=lead, sections=group_by_section(rest))
