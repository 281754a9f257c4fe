"""Getting articles into the store: upsert by a stable guid.

Feed and JSON ingestion build ``ArticleInput`` values and hand them to ``upsert_article``;
the CLI's ``articles add`` does the same for one article typed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy.orm import Session

from newsletter.clock import Clock
from newsletter.errors import UsageError
from newsletter.store.models import Article
from newsletter.store.store import article_by_guid


@dataclass(frozen=True)
class ArticleInput:
    """An article as a source describes it, already cleaned."""

    guid: str
    url: str
    title: str
    published_at: datetime
    standfirst: str = ""
    body: str = ""
    image_url: str = ""
    image_alt: str = ""
    image_caption: str = ""
    author: str = ""
    section: str = ""
    issue_number: str = ""

    def __post_init__(self) -> None:
        if not self.guid.strip():
            raise UsageError("an article needs a guid (or a URL to use as one)")
        if not self.title.strip():
            raise UsageError(f"article {self.guid}: the title is empty")
        if not self.url.startswith(("http://", "https://")):
            raise UsageError(f"article {self.guid}: the URL must start with http:// or https://")
        if self.published_at.tzinfo is None:
            raise UsageError(f"article {self.guid}: the publication time needs a time zone")


_FIELDS = [f.name for f in fields(ArticleInput) if f.name != "guid"]


def upsert_article(session: Session, data: ArticleInput, clock: Clock) -> str:
    """Insert or update by guid; returns "new", "updated" or "unchanged"."""
    now = clock.now()
    existing = article_by_guid(session, data.guid)
    if existing is None:
        session.add(Article(guid=data.guid, **{f: getattr(data, f) for f in _FIELDS}, created_at=now, updated_at=now))
        session.flush()
        return "new"
    changed = False
    for name in _FIELDS:
        value = getattr(data, name)
        if getattr(existing, name) != value:
            setattr(existing, name, value)
            changed = True
    if changed:
        existing.updated_at = now
        return "updated"
    return "unchanged"
