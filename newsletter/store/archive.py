"""The public archive's view of the editions: only those that went out, newest first.

An edition counts once it has started going out (sending or sent). One made but not yet
sent could still change, and a skipped day sent nothing, so neither is ever listed: the
archive and its feed show what readers were sent. Nothing here touches a reader.

The lead headline is not stored with the edition, so it is found again with the rule the
renderer used (``editions.choose_lead``) over the edition's own articles. Only the
columns that rule reads are loaded, never the article bodies or the edition's HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.editions import Story, choose_lead
from newsletter.store.models import Article, Edition, EditionStatus

PUBLISHED = (EditionStatus.SENDING, EditionStatus.SENT)
_EPOCH = datetime.min.replace(tzinfo=UTC)

# What ``choose_lead`` and ``Story.from_article`` read of an article: everything but the body.
_STORY_COLUMNS = (
    Article.edition_id,
    Article.id,
    Article.title,
    Article.url,
    Article.standfirst,
    Article.section,
    Article.author,
    Article.image_url,
    Article.image_alt,
    Article.image_caption,
    Article.issue_number,
    Article.published_at,
    Article.priority,
    Article.pinned_for,
)


@dataclass(frozen=True)
class ArchivedEdition:
    """One line of the archive, and one entry of its feed."""

    date: date
    subject: str
    story_count: int
    lead_title: str  # "" only for an edition whose stories were all removed since
    went_out: datetime  # when it started going out (UTC)


def count_published_editions(session: Session) -> int:
    query = select(func.count()).select_from(Edition).where(Edition.status.in_(PUBLISHED))
    return int(session.scalar(query) or 0)


def published_editions(session: Session, *, offset: int = 0, limit: int = 20) -> list[ArchivedEdition]:
    """The editions that went out, newest date first: ``limit`` of them after the first ``offset``."""
    rows = session.execute(
        select(
            Edition.id,
            Edition.date,
            Edition.subject,
            Edition.article_count,
            Edition.started_at,
            Edition.enqueued_at,
            Edition.created_at,
        )
        .where(Edition.status.in_(PUBLISHED))
        .order_by(Edition.date.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    leads = _lead_titles(session, {row.id: row.date for row in rows})
    return [
        ArchivedEdition(
            date=row.date,
            subject=row.subject,
            story_count=row.article_count,
            lead_title=leads.get(row.id, ""),
            went_out=row.started_at or row.enqueued_at or row.created_at,
        )
        for row in rows
    ]


def _lead_titles(session: Session, days: dict[int, date]) -> dict[int, str]:
    """Each edition's lead headline, by the rule that chose it: pinned, else a picture, else priority."""
    if not days:
        return {}
    stories: dict[int, list[Story]] = {}
    query = select(*_STORY_COLUMNS).where(Article.edition_id.in_(list(days)))
    for row in session.execute(query):
        stories.setdefault(row.edition_id, []).append(Story.from_article(row, days[row.edition_id]))
    leads: dict[int, str] = {}
    for edition_id, found in stories.items():
        lead = choose_lead(_in_order(found))
        leads[edition_id] = lead.title if lead else ""
    return leads


def _in_order(stories: Sequence[Story]) -> list[Story]:
    """Newest first, as the edition was planned: ``choose_lead`` keeps the first of exact equals."""
    return sorted(stories, key=lambda s: (s.published_at or _EPOCH, s.id), reverse=True)
